"""Training throughput (images/s) of the real trainer in each phase of a DSA run, for the eager
fp32 path and the fast path side by side in one run on the current device.

    python bench/train_throughput.py [--models resnet20,resnet56] [--steps 40]
        [--modes eager,bf16,fast] [--phases warmup,allocate,pruned] [--device auto]

Modes: ``eager`` is the unmodified fp32 path (no autocast, contiguous layout, not compiled);
``bf16`` adds bf16 autocast and channels_last; ``fast`` adds the compiled step
(``torch.compile(mode="reduce-overhead")``: CUDA graphs on a GPU). bf16 and channels_last
apply on CUDA only, so on the CPU ``bf16`` is ``eager``.

Phases: ``warmup`` trains the unpruned network; ``allocate`` trains it under the gates with the
Θ-step at the frequency the paper's 300-epoch schedule uses (one per 20 weight steps);
``pruned`` trains the network after about half its FLOPs were removed. Data augmentation on
the device is included in every step. Also prints what the paper's schedule (300 epochs of
50,000 images, a third of them allocating) would take at the measured rates.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dsaprune import Pruner, models
from dsaprune.data import DeviceLoader, channel_stats, make_shapes
from dsaprune.grouping import find_groups
from dsaprune.pruner.callback import PrunerCallback
from dsaprune.surgery import prune_groups
from dsaprune.train import TrainConfig, Trainer, distributed

MODES = {
    "eager": dict(amp=False, channels_last=False, compile=False),
    "bf16": dict(amp=True, channels_last=True, compile=False),
    "fast": dict(amp=True, channels_last=True, compile=True),
}
PHASES = ("warmup", "allocate", "pruned")


def _half(model: torch.nn.Module, example: torch.Tensor) -> None:
    """Keep the first 70% of every group's channels: about half the FLOPs of a ResNet."""
    groups = find_groups(model, example)
    keep = [torch.arange(max(1, round(0.7 * g.channels))) for g in groups.prunable]
    prune_groups(groups, keep)


def measure(
    model_name: str, mode: str, phase: str, steps: int, batch: int, device: torch.device
) -> dict:
    data = make_shapes(batch * steps, seed=0)
    mean, std = channel_stats(data.images)
    opts = MODES[mode]
    cl = opts["channels_last"] and device.type == "cuda"
    kw = dict(mean=mean, std=std, device=device, channels_last=cl)
    loader = DeviceLoader(data, batch, train=True, **kw)
    cfg = TrainConfig(epochs=1000, batch_size=batch, **opts)
    torch.manual_seed(0)
    model = models.create(model_name).to(device)
    x0 = next(iter(loader))[0][:1]
    if phase == "pruned":
        _half(model, x0)
    callbacks, pruner = [], None
    if phase == "allocate":
        val = DeviceLoader(make_shapes(batch * 4, seed=1), batch, train=False, **kw)
        amp = opts["amp"] and device.type == "cuda"
        # the paper's schedule (300 epochs of 390 steps, the window a third of it), so that the
        # Θ-step comes as often as there: one per 20 weight steps
        pruner = Pruner(
            model, x0, "flops=0.5", total_steps=300 * 390, steps_per_epoch=390,
            val_data=val, train_data=loader, warmup_fraction=0.0, amp=amp,
        )  # fmt: skip
        callbacks = [PrunerCallback(pruner, loader)]
    t = Trainer(
        model, loader, None, cfg, dist=distributed.DistInfo(device=device), progress=False,
        callbacks=callbacks, steps_per_epoch=steps,
    )  # fmt: skip
    t.train_epoch()  # warm-up: compilation, allocator, cuDNN autotuning, the Fisher order
    rec = t.train_epoch()
    out = {"images_per_s": rec["images_per_s"]}
    if pruner is not None:
        out["phase_at_end"] = pruner.phase  # "allocate" unless the budget was met already
        out["theta_every"] = pruner._alloc_every()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--modes", default="eager,bf16,fast")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--steps", type=int, default=40, help="timed steps per cell [40]")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    device = distributed.setup(a.device).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, batch {a.batch_size}, "
        f"{a.steps} timed steps after one untimed pass"
    )
    if device.type != "cuda":
        print("note: bf16 and channels_last apply on CUDA only; on the CPU bf16 is eager")
    print(f"{'model':<10} {'phase':<9} {'mode':<6} {'images/s':>10} {'vs eager':>9}")
    rows = []
    for m in a.models.split(","):
        rates: dict[str, dict[str, float]] = {}
        for phase in a.phases.split(","):
            base = None
            for mode in a.modes.split(","):
                t0 = time.perf_counter()
                try:
                    r = measure(m, mode, phase, a.steps, a.batch_size, device)
                except Exception as e:  # e.g. no C compiler for torch.compile on this machine
                    print(f"{m:<10} {phase:<9} {mode:<6} failed: {type(e).__name__}: {e}"[:160])
                    continue
                ips = r["images_per_s"]
                base = base or ips
                extra = ""
                if "phase_at_end" in r:
                    extra = f"  (Θ-step every {r['theta_every']}; phase at end: "
                    extra += f"{r['phase_at_end']})"
                print(f"{m:<10} {phase:<9} {mode:<6} {ips:>10.0f} {ips / base:>8.2f}x{extra}")
                rates.setdefault(mode, {})[phase] = ips
                rows.append(
                    {"model": m, "phase": phase, "mode": mode, "device": name, **r,
                     "wall_s": time.perf_counter() - t0}
                )  # fmt: skip
        for mode, by in rates.items():
            if set(by) == set(PHASES):
                # the paper's schedule: 20 epochs warm-up, 80 allocating, 200 pruned
                s = 50_000 * (20 / by["warmup"] + 80 / by["allocate"] + 200 / by["pruned"])
                print(f"{m:<10} {mode:<6} the paper's 300 epochs: {s / 60:.1f} min (one run)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
