"""Wall-clock timing of forward passes on the target device.

Machines are noisy, so every comparison is timed interleaved: each round times every candidate
once (one untimed call to warm the caches, then a block of repetitions long enough to swamp the
timer; without the warm call, a 7.7 ms ResNet-56 measured 10 ms when six other networks ran
between its blocks), and each candidate's time is the
fastest round (as ``timeit`` advises: slower rounds measure what else the machine was doing; on
the shared 2-core CPU bursts of other load made medians of the same network differ by 1.6×
between runs). Inputs come from a private generator and module weights are never drawn from
the global one, so measuring inside a training run leaves its random stream untouched.

The C allocator is part of what is measured. With glibc's defaults, a block above its mmap
threshold (at most 32 MiB) is mapped fresh on every allocation and handed back on free, and
freed memory at the top of the heap is trimmed, so each forward pass touches new pages: on the
2-core CPU a MobileNetV2-CIFAR forward at batch 64 took 136,000 minor page faults and 300 ms,
against 149 ms once freed memory stays in the process (``steady_malloc``), and ResNet-20's
47 ms against 33–37 ms. Timings with the faults in them were not repeatable (the same pair of
networks measured latency ratios 0.46 and 0.62 minutes apart); without them the latency model
fitted its calibration copies within 4% instead of up to 91%. Batch 1 stays below the threshold.
``page_faults_per_call`` counts them, ``malloc_name`` names the setting, and the latency cache
keys on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import platform
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_calls(
    fns: Sequence[Callable[[], object]],
    device: torch.device | str = "cpu",
    rounds: int = 7,
    min_block_s: float = 0.004,
    max_reps: int = 1000,
) -> list[float]:
    """Seconds per call of each function: the fastest of ``rounds`` interleaved rounds."""
    device = torch.device(device)
    sync = _sync(device)
    reps = []
    with torch.inference_mode():
        for fn in fns:
            fn()  # warm-up: allocator, kernel selection, lazy initialisation
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            one = max(time.perf_counter() - t0, 1e-7)
            reps.append(max(1, min(max_reps, int(min_block_s / one))))
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(rounds):
            for i, fn in enumerate(fns):
                fn()  # untimed: the previous candidate's weights left the caches cold
                sync()
                t0 = time.perf_counter()
                for _ in range(reps[i]):
                    fn()
                sync()
                samples[i].append((time.perf_counter() - t0) / reps[i])
    return [min(s) for s in samples]


_STEADY = False
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def steady_malloc() -> bool:
    """Keep freed memory in this process (glibc: never map large blocks on their own, never
    trim the heap), so that a forward pass reuses its activations' pages instead of faulting
    fresh ones in. The same as starting Python with ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=1073741824``; jemalloc or tcmalloc (``LD_PRELOAD``) behave alike.
    Changes the whole process, so deploy the pruned network the same way. Returns whether it
    took effect (False where the C library is not glibc)."""
    global _STEADY
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError, TypeError):
        return False
    _STEADY = _STEADY or ok
    return ok


def malloc_name() -> str:
    """How this process allocates memory, as far as it changes timings: ``steady``
    (``steady_malloc`` or its environment variables), the preloaded allocator's name, or
    ``system``."""
    if _STEADY or os.environ.get("MALLOC_MMAP_MAX_") == "0":
        return "steady"
    for lib in ("jemalloc", "tcmalloc", "mimalloc"):
        if lib in os.environ.get("LD_PRELOAD", ""):
            return lib
    return "system"


def page_faults_per_call(fn: Callable[[], object], calls: int = 3, warm: int = 3) -> float | None:
    """Minor page faults per call of ``fn`` after ``warm`` calls (None where the platform does
    not count them): how much fresh memory each call touches once the allocator has settled
    (right after ``steady_malloc`` the heap still grows for a call or two)."""
    try:
        import resource
    except ImportError:
        return None
    with torch.inference_mode():
        for _ in range(warm):
            fn()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return (after - before) / calls


def example_input(
    shape: Sequence[int], batch: int, device: torch.device | str, dtype=torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *shape, generator=g, dtype=dtype).to(device)


def measure_latency(
    models: nn.Module | Sequence[nn.Module],
    input_shape: Sequence[int],
    batch: int = 1,
    device: torch.device | str = "cpu",
    rounds: int = 15,
    dtype=torch.float32,
) -> float | list[float]:
    """Forward time in seconds (the fastest of ``rounds`` rounds) of one model, or of several
    timed interleaved (the fair way to compare a network with its pruned version), in eval mode
    at ``batch``."""
    single = isinstance(models, nn.Module)
    nets = [models] if single else list(models)
    x = example_input(input_shape, batch, device, dtype)
    modes = [m.training for m in nets]
    for m in nets:
        m.eval()
    try:
        times = time_calls([lambda m=m: m(x) for m in nets], device, rounds=rounds)
    finally:
        for m, was in zip(nets, modes, strict=True):
            m.train(was)
    return times[0] if single else times


def device_key(device: torch.device | str, dtype=torch.float32) -> str:
    """What latency measurements depend on besides the layer: the processor (or GPU), the
    thread count and allocator (on the CPU), the PyTorch build and the dtype. A short,
    file-name-safe string."""
    device = torch.device(device)
    if device.type == "cuda":
        what = f"cuda|{torch.cuda.get_device_name(device)}"
    else:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
            cpu = names[0] if names else cpu
        except OSError:
            pass
        what = f"cpu|{cpu}|threads={torch.get_num_threads()}|alloc={malloc_name()}"
    ident = f"{what}|torch={torch.__version__}|{dtype}"
    return f"{device.type}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"


def describe_device(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"
