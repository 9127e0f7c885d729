"""Training throughput (images/s) of the real trainer for ResNet-20 and ResNet-56, in eager mode,
with channels_last, and compiled, measured side by side in one run on the current device.

    python bench/train_throughput.py [--models resnet20,resnet56] [--steps 40]
        [--modes eager,channels_last,compile] [--batch-size 128] [--device auto]

It also prints what the paper's CIFAR-10 schedule (300 epochs of 50,000 images) would take at
the measured rate. Data augmentation on the device is included in every step.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dsaprune import models
from dsaprune.data import DeviceLoader, channel_stats, make_shapes
from dsaprune.train import TrainConfig, Trainer, distributed

MODES = {
    "eager": dict(channels_last=False, compile=False),
    "channels_last": dict(channels_last=True, compile=False),
    "compile": dict(channels_last=True, compile=True),
}


def measure(model_name: str, mode: str, steps: int, batch: int, device: torch.device) -> float:
    data = make_shapes(batch * steps, seed=0)
    mean, std = channel_stats(data.images)
    opts = MODES[mode]
    cl = opts["channels_last"] and device.type == "cuda"
    loader = DeviceLoader(
        data, batch, train=True, mean=mean, std=std, device=device, channels_last=cl
    )
    cfg = TrainConfig(epochs=1000, batch_size=batch, **opts)
    torch.manual_seed(0)
    t = Trainer(
        models.create(model_name),
        loader,
        None,
        cfg,
        dist=distributed.DistInfo(device=device),
        progress=False,
    )
    t.train_epoch()  # warm-up: compilation, allocator, cuDNN autotuning
    t0 = time.perf_counter()
    rec = t.train_epoch()
    dt = time.perf_counter() - t0
    assert abs(dt - rec["epoch_time_s"]) < 1.0
    return rec["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--modes", default="eager,channels_last,compile")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    device = distributed.setup(a.device).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, batch {a.batch_size}, "
        f"{a.steps} timed steps after one warm-up pass"
    )
    if device.type != "cuda":
        print("note: channels_last and bf16 apply on CUDA only; on CPU those rows are eager")
    print(f"{'model':<10} {'mode':<14} {'images/s':>10} {'vs eager':>9} {'300 epochs':>12}")
    rows = []
    for m in a.models.split(","):
        base = None
        for mode in a.modes.split(","):
            try:
                ips = measure(m, mode, a.steps, a.batch_size, device)
            except Exception as e:  # e.g. no C compiler for torch.compile on this machine
                print(f"{m:<10} {mode:<14} failed: {type(e).__name__}: {str(e)[:80]}")
                continue
            base = base or ips
            full = 300 * 50_000 / ips
            print(f"{m:<10} {mode:<14} {ips:>10.0f} {ips / base:>8.2f}x {full / 60:>10.1f} min")
            rows.append(
                {
                    "model": m,
                    "mode": mode,
                    "images_per_s": ips,
                    "device": name,
                    "full_schedule_min": full / 60,
                }
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
