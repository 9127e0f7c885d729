"""Cost of DSA over plain training: the time of a training step during allocation (importance
gather, the training mask and the masked forward/backward every step, plus one validation
forward/backward with the Θ-step's ``--estimator`` and one allocator step every
``alloc_every`` steps, amortised) divided by the time of a plain training step, for ResNet-20
and ResNet-56 at batch 128 on the current device. ``alloc_every`` is what the flow uses on the
CIFAR-10 schedules of ``--schedules`` epochs (390 steps per epoch at batch 128): the default
window needs at least 100 updates, so a short schedule updates more often (8 epochs: every 4
steps; 300 epochs: every 20). A schedule written with a trailing ``c`` (``2c``) is a fine-tune
from a checkpoint, as ``dsaprune prune --checkpoint`` runs it: no warm-up, so the window is the
run's first third (2 epochs: a Θ-step every 2 steps).
Plain and DSA epochs alternate in one run and the median of each is compared, so machine noise
hits both alike. Targets: ≤ 1.15 on CPU, ≤ 1.3 on GPU.

    python bench/overhead.py [--models resnet20,resnet56] [--steps 40] [--repeats 3] \\
        [--estimator ste] [--schedules 8,300,2c] [--alloc-samples 64] [--signal-bf16] \\
        [--signal-every 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from common import CIFAR10_STEPS_PER_EPOCH

from dsaprune import models
from dsaprune.allocation import AllocatorConfig
from dsaprune.cli.spec import RunSpec
from dsaprune.data import DeviceLoader, channel_stats, make_shapes
from dsaprune.pruner import DSAConfig, Pruner, PrunerCallback, alloc_interval, window_bounds
from dsaprune.train import TrainConfig, Trainer, distributed


def _schedule(epochs: float, checkpoint: bool) -> tuple[DSAConfig, int]:
    """The library defaults as ``dsaprune prune`` builds them (``--checkpoint``: no warm-up) and
    the weight steps of a CIFAR-10 schedule of ``epochs``."""
    cfg = RunSpec.from_args(argparse.Namespace(config=None), trained=checkpoint).dsa
    return cfg, round(epochs * CIFAR10_STEPS_PER_EPOCH)


def every_for(epochs: float, checkpoint: bool = False) -> int:
    """The flow's allocation interval on a CIFAR-10 schedule of ``epochs`` (library defaults)."""
    cfg, steps = _schedule(epochs, checkpoint)
    return alloc_interval(cfg, epochs, steps)


def window_for(epochs: float, checkpoint: bool = False) -> int:
    """Weight steps in the allocation window of a CIFAR-10 schedule of ``epochs``."""
    cfg, steps = _schedule(epochs, checkpoint)
    w0, w1 = window_bounds(cfg, epochs, steps)
    return w1 - w0


def signal_for(epochs: float, checkpoint: bool = False) -> int:
    """α updates per held-out pass on a CIFAR-10 schedule of ``epochs`` (library defaults: set
    by the window's length)."""
    cfg, steps = _schedule(epochs, checkpoint)
    return cfg.for_run(epochs, steps).signal_every


def parse_schedule(token: str) -> tuple[float, bool]:
    """ "8" -> (8.0, False); "2c" -> (2.0, True): a fine-tune from a checkpoint."""
    token = token.strip()
    checkpoint = token.endswith("c")
    return float(token[:-1] if checkpoint else token), checkpoint


def trainers(
    name: str,
    steps: int,
    batch: int,
    device: torch.device,
    estimator: str = "fisher",
    every: int = 20,
    alloc_samples: int | None = None,
    signal_bf16: bool = False,
    signal_every: int | None = None,
) -> tuple[Trainer, Trainer]:
    data = make_shapes(batch * steps, seed=0)
    mean, std = channel_stats(data.images)
    kw = dict(mean=mean, std=std, device=device)
    loader = DeviceLoader(data, batch, train=True, **kw)
    val = DeviceLoader(make_shapes(batch * 4, seed=1), batch, train=True, **kw)
    cfg = TrainConfig(epochs=1000, batch_size=batch)
    dist = distributed.DistInfo(device=device)
    out = []
    for with_dsa in (False, True):
        torch.manual_seed(0)
        model = models.create(name).to(device)
        callbacks, pruner = [], None
        if with_dsa:
            # allocation for the whole run, Θ moving too slowly to meet the budget: every step
            # stays an allocation step
            dcfg = DSAConfig(
                warmup_fraction=0.0,
                window_end_fraction=1.0,
                alloc_every=every,
                min_updates=1,
                estimator=estimator,
                alloc_samples=alloc_samples,
                signal_bf16=signal_bf16,
                signal_every=signal_every,
                allocator=AllocatorConfig(target_fraction=1e6),
            )
            example = torch.randn(1, *models.input_size(name), device=device)
            pruner = Pruner(
                model,
                example,
                "flops=0.5",
                total_steps=1000 * len(loader),
                val_data=val,
                train_data=loader,
                steps_per_epoch=len(loader),
                config=dcfg,
                dist=dist,
            )
            callbacks = [PrunerCallback(pruner, loader)]
            # the one-off work when the window opens (the channels' Fisher order on 20
            # batches), timed so that it can be spread over a real window's steps
            start = pruner._start_allocation

            def timed(*args, start=start, pruner=pruner):
                t0 = time.perf_counter()
                start(*args)
                pruner.events["window_start_s"] = time.perf_counter() - t0

            pruner._start_allocation = timed
        t = Trainer(model, loader, None, cfg, dist=dist, progress=False, callbacks=callbacks)
        t.train_epoch()  # warm-up (and DSA enters its allocation phase)
        if with_dsa:
            assert pruner.phase == "allocate", pruner.phase
        out.append(t)
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--steps", type=int, default=40, help="steps per timed epoch (2 α updates)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--estimator", default="fisher", help="the Θ-step's estimator [fisher]")
    p.add_argument(
        "--schedules",
        default="8,300,2c",
        help="CIFAR-10 schedules, in epochs; a trailing c: a fine-tune from a checkpoint",
    )
    p.add_argument(
        "--alloc-samples",
        type=int,
        default=DSAConfig().alloc_samples,
        help="held-out samples per Θ-step [the library default: %(default)s]",
    )
    p.add_argument(
        "--signal-bf16",
        action="store_true",
        help="the Θ-step's pass in bfloat16 on the CPU too (DSAConfig.signal_bf16)",
    )
    p.add_argument(
        "--signal-every",
        type=int,
        default=None,
        help="α updates per held-out pass (DSAConfig.signal_every) [the library's default for "
        "each schedule's window]",
    )
    a = p.parse_args()
    device = distributed.setup(a.device).device
    rows = []
    plan = [
        (name, *parse_schedule(e)) for name in a.models.split(",") for e in a.schedules.split(",")
    ]
    for name, epochs, checkpoint in plan:
        every = every_for(epochs, checkpoint)
        plain, dsa = trainers(
            name, a.steps, a.batch_size, device, a.estimator, every, a.alloc_samples,
            a.signal_bf16, a.signal_every or signal_for(epochs, checkpoint),
        )  # fmt: skip
        tp, td = [], []
        for _ in range(a.repeats):
            tp.append(plain.train_epoch()["epoch_time_s"] / a.steps)
            td.append(dsa.train_epoch()["epoch_time_s"] / a.steps)
        pruner = dsa.callbacks[0].pruner
        assert pruner.phase == "allocate"
        updates = pruner.allocator.updates
        row = {
            "model": name,
            "schedule_epochs": epochs,
            "from_checkpoint": checkpoint,
            "alloc_every": every,
            "estimator": a.estimator,
            "alloc_samples": a.alloc_samples,
            "signal_bf16": a.signal_bf16,
            "signal_every": pruner.cfg.signal_every,
            "device": str(device),
            "plain_step_ms": 1e3 * statistics.median(tp),
            "dsa_step_ms": 1e3 * statistics.median(td),
            "alpha_updates": updates,
        }
        row["ratio"] = row["dsa_step_ms"] / row["plain_step_ms"]
        # over the whole allocation phase: the window's steps plus the one-off start
        window = window_for(epochs, checkpoint)
        row["window_steps"] = window
        row["window_start_s"] = pruner.events["window_start_s"]
        row["phase_ratio"] = (window * row["dsa_step_ms"] / 1e3 + row["window_start_s"]) / (
            window * row["plain_step_ms"] / 1e3
        )
        rows.append(row)
        print(
            f"{name}, {epochs:g}-epoch schedule{' from a checkpoint' if checkpoint else ''} "
            f"(one Θ-step per {every} steps): plain "
            f"{row['plain_step_ms']:.1f} ms/step, DSA {row['dsa_step_ms']:.1f} "
            f"ms/step ({updates} α updates): ratio {row['ratio']:.3f}; over the whole "
            f"{window}-step window with its {row['window_start_s']:.1f} s start: "
            f"{row['phase_ratio']:.3f}",
            flush=True,
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
