"""``dsaprune demo``: a trained network shipped with the package, pruned to one budget by DSA
and by the strongest one-shot method (``group_fisher``) and ``uniform``, several seeds each, so
that the table shows the spread as well as the means. Needs no files and no download."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from ..cost import count_flops, count_params, measure_latency
from ..models.pretrained import DEMO_WEIGHTS
from .prune import run_prune


def _mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def cmd_demo(args: argparse.Namespace) -> int:
    if not DEMO_WEIGHTS.exists():
        raise FileNotFoundError(
            f"{DEMO_WEIGHTS} is missing from this installation: reinstall dsaprune, or make it "
            "with `python bench/demo_weights.py` in a source checkout"
        )
    methods, seeds = args.methods.split(","), list(range(args.seeds))
    print(
        f"dsaprune demo: a ResNet-20 trained on the built-in 'shapes' data (shipped with the "
        f"package) pruned to {args.budget} by {', '.join(methods)}, each with {args.epochs:g} "
        f"epoch(s) of training from the trained weights, {len(seeds)} seeds"
    )
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        for m in methods:
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
                out=str(Path(args.out) / f"{m}_s{seed}"),
                budget=args.budget,
                method=m,
                seed=seed,
                epochs_default=args.epochs,
                config=None,
                force=True,  # the demo's own folders: a second demo replaces the first
                argv=["demo"],
                lr=args.lr,
                latency_report=False,  # the demo times the networks together below
            )
            t0 = time.perf_counter()
            res = run_prune(ns, progress=False)["result"]
            r = res.report
            runs[m].append(
                {"acc": r["acc_after"], "before": r.get("acc_before"), "model": res.model.cpu()}
            )
            print(
                f"  {m:<13} seed {seed}: test accuracy {100 * r['acc_after']:.2f}% "
                f"(FLOPs ratio {r['flops_ratio']:.3f}, {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    before = runs[methods[0]][0]["before"]
    if before is not None:
        print(f"\nthe trained network before pruning: test accuracy {100 * before:.2f}%")
    ref = "dsa" if "dsa" in methods else methods[0]
    head = f"{ref} − method (paired ± SE)"
    print(f"{'method':<13} {'test acc % (mean ± SE)':>23} {'per seed':>24} {head:>28}")
    for m in methods:
        accs = [100 * x["acc"] for x in runs[m]]
        mean, se = _mean_se(accs)
        per = " / ".join(f"{a:.2f}" for a in accs)
        diff = ""
        if m != ref:
            d = [100 * (a["acc"] - b["acc"]) for a, b in zip(runs[ref], runs[m], strict=True)]
            dm, dse = _mean_se(d)
            beyond = "beyond" if abs(dm) > 2 * dse else "within"
            diff = f"{dm:+.2f} ± {dse:.2f} ({beyond} 2 SE)"
        print(f"{m:<13} {mean:>15.2f} ± {se:.2f} {per:>24} {diff:>28}")
    nets = [runs[m][0]["model"] for m in methods]
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
