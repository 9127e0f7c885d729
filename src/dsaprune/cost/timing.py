"""Wall-clock timing of forward passes on the target device.

Machines are noisy, so every comparison is timed interleaved: each round times every candidate
once (one untimed call to warm the caches, then a block of repetitions long enough to swamp the
timer; without the warm call, a 7.7 ms ResNet-56 measured 10 ms when six other networks ran
between its blocks), and each candidate's time is the
fastest round (as ``timeit`` advises: slower rounds measure what else the machine was doing; on
the shared 2-core CPU bursts of other load made medians of the same network differ by 1.6×
between runs). Inputs come from a private generator and module weights are never drawn from
the global one, so measuring inside a training run leaves its random stream untouched.
"""

from __future__ import annotations

import hashlib
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
    thread count, the PyTorch build and the dtype. A short, file-name-safe string."""
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
        what = f"cpu|{cpu}|threads={torch.get_num_threads()}"
    ident = f"{what}|torch={torch.__version__}|{dtype}"
    return f"{device.type}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"


def describe_device(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"
