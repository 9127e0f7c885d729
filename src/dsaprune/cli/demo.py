"""``dsaprune demo``: a trained network shipped with the package, pruned to one budget by DSA
and by the strongest one-shot method (``group_fisher``) and ``uniform``, several seeds each, so
that the table shows the spread as well as the means (``dsaprune compare`` on built-in settings).
Needs no files and no download."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import surgery
from ..cost import count_flops, count_params, measure_latency
from ..models.pretrained import DEMO_WEIGHTS
from .compare import parse_methods, print_run, print_summary, run_all


def cmd_demo(args: argparse.Namespace) -> int:
    if not DEMO_WEIGHTS.exists():
        raise FileNotFoundError(
            f"{DEMO_WEIGHTS} is missing from this installation: reinstall dsaprune, or make it "
            "with `python bench/demo_weights.py` in a source checkout"
        )
    methods, seeds = parse_methods(args.methods), list(range(args.seeds))
    print(
        f"dsaprune demo: a ResNet-20 trained on the built-in 'shapes' data (shipped with the "
        f"package) pruned to {args.budget} by {', '.join(methods)}, each with {args.epochs:g} "
        f"epoch(s) of training from the trained weights, {len(seeds)} seeds"
    )
    ns = argparse.Namespace(
        dataset="shapes",
        data=None,
        download=False,
        image_size=32,
        workers=0,
        device=args.device,
        model="resnet20",
        checkpoint=None,
        weights=str(DEMO_WEIGHTS),
        out=args.out,
        budget=args.budget,
        epochs_default=args.epochs,
        config=args.config,
        argv=["demo"],
        lr=args.lr,
        latency_report=False,  # the demo times the networks together below
    )
    # every run afresh: a second demo replaces the first
    rows = run_all(ns, methods, seeds, reuse=False, progress=False, on_run=print_run)
    print_summary(rows, methods)
    nets = [surgery.load(Path(args.out) / f"{m}_s{seeds[0]}" / "model.pt").eval() for m in methods]
    lat = measure_latency(nets, (3, 32, 32))
    print(f"\nseed 0's networks: {'':<6}" + "".join(f" {m:>13}" for m in methods))
    for label, vals, fmt in (
        ("FLOPs (M, 2 per MAC)", [count_flops(n) / 1e6 for n in nets], ".2f"),
        ("parameters (K)", [count_params(n) / 1e3 for n in nets], ".1f"),
        ("CPU latency, batch 1 (ms)", [1e3 * t for t in lat], ".2f"),
    ):
        print(f"{label:<26}" + "".join(f" {v:>13{fmt}}" for v in vals))
    print(
        f"\npruned models and reports: {args.out}/<method>_s<seed>/ (model.pt loads with "
        "dsaprune.load; report.md says what was cut)"
    )
    return 0
