"""``dsaprune prune``, ``dsaprune inspect`` and ``dsaprune export``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import models, surgery
from ..api import prune
from ..cost import COSTS, make_cost
from ..export import export_onnx
from ..grouping import find_groups
from ..reports import write_report
from ..train import distributed
from .files import open_model
from .prepare import prepare, run_folder
from .spec import RunSpec


def _model(args) -> tuple[torch.nn.Module, str, int | None]:
    if args.checkpoint:  # a train or prune run's last.pt, or a pruned model.pt
        m, info = open_model(args.checkpoint)
        n = info["num_classes"]
        return m, info["model_name"], None if n is None else int(n)
    return None, args.model, None


def run_prune(args: argparse.Namespace, progress: bool = True) -> dict:
    trained = bool(args.checkpoint or getattr(args, "weights", None))
    spec = RunSpec.from_args(args, trained=trained)
    with run_folder(args):
        return _run_prune(args, spec, progress)


def _run_prune(args: argparse.Namespace, spec: RunSpec, progress: bool) -> dict:
    seed = spec.train.seed
    run = prepare(args, seed=seed, channels_last=spec.train.channels_last)
    dist, splits = run.dist, run.splits
    try:
        budget = spec.budget or "flops=0.5"
        model, name, n_cls = _model(args)
        if n_cls is not None and n_cls != splits.num_classes:
            raise ValueError(
                f"{args.checkpoint} has {n_cls} classes, the data {splits.num_classes}"
            )
        weights = getattr(args, "weights", None)
        if model is None:
            torch.manual_seed(seed)
            model = models.create(name, num_classes=splits.num_classes)
            if weights:
                fresh = models.load_weights(model, weights)
                if fresh and dist.is_main:
                    print(f"{weights}: {', '.join(fresh)} left freshly initialised (classes)")
        bs = spec.train.batch_size
        full = run.loader(splits.train, bs, train=True)
        te = run.loader(splits.test, 256, train=False)
        res = prune(
            model,
            full,  # prune() holds out 10% of each class where DSA reads held-out batches
            budget=budget,
            epochs=spec.epochs,
            test_data=te,
            out_dir=args.out,
            resume=bool(getattr(args, "resume", False)),
            model_name=name,
            progress=progress,
            dist=dist,
            pretrained=bool(args.checkpoint or weights),
            meta={
                "num_classes": splits.num_classes,
                "dataset": args.dataset,
                "mean": splits.mean,
                "std": splits.std,
            },
            report_latency=getattr(args, "latency_report", None) is not False,
            latency_batch=spec.latency_batch,
            **spec.prune_settings(),
        )
        res.report["command"] = "dsaprune " + " ".join(getattr(args, "argv", []) or [])
        res.report["dataset"] = args.dataset
        res.report["num_classes"] = splits.num_classes
        if dist.is_main:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            surgery.save(
                res.model.cpu(),
                out / "model.pt",
                model_name=name,
                num_classes=splits.num_classes,
                dataset=args.dataset,
                mean=splits.mean,
                std=splits.std,
            )
            write_report(res.report, out)
        return {"result": res, "splits": splits, "dist": dist}
    finally:
        distributed.cleanup()


def cmd_prune(args: argparse.Namespace) -> int:
    out = run_prune(args, progress=not args.quiet)
    if out["dist"].is_main:
        r = out["result"].report
        lat = r.get("latency")
        speed = f", measured speed-up {lat['measured_speedup']:.2f}x" if lat else ""
        print(
            f"pruned {r['model']} to {r['budget']}: {r['budget_kind']} ratio "
            f"{r['budget_ratio']:.4f}{' (masked)' if r['masked'] else ''}{speed}, test accuracy "
            f"{100 * r['acc_after']:.2f}%, budget met by {r['met_by']}; model and report in "
            f"{args.out}/"
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    model, name, _ = _model(args)
    if model is None:
        model = models.create(name)
    size = models.input_size(name)
    G = find_groups(model.eval(), torch.zeros(1, *size))
    kinds = [k for k in COSTS if make_cost(k).counted]
    if getattr(args, "latency", False):
        kinds.append("latency")
    opts = dict(device=getattr(args, "device", "cpu"), batch=getattr(args, "latency_batch", 1))
    costs = {k: make_cost(k, **opts) for k in kinds}
    forms = {k: c.model(G, progress=True) for k, c in costs.items()}
    K = len(G.prunable)
    print(f"{name}: {len(G)} channel groups ({K} prunable); input {size}")
    for k, c in costs.items():
        print(f"  {c.describe(forms[k])}")
    heads = "".join(f" {k + ' %':>10}" for k in kinds)
    print(
        f"{'group':>5} {'channels':>8}{heads}  members (% = share of the cost its channels touch)"
    )
    for k, g in enumerate(G.prunable):
        a = torch.ones(K, dtype=torch.float64)
        a[k] = 0.0  # what this group's channels account for
        shares = "".join(f" {100 * (1 - float(f.ratio(a))):>10.1f}" for f in forms.values())
        print(f"{g.index:>5} {g.channels:>8}{shares}  {g.describe()}")
    for g in G:
        if not g.prunable:
            dashes = "".join(f" {'–':>10}" for _ in forms)
            print(f"{g.index:>5} {g.channels:>8}{dashes}  {g.describe()} (not pruned)")
    print(
        "smallest feasible budgets: " + ", ".join(f"{k}={f.floor():.4f}" for k, f in forms.items())
    )
    return 0


def load_model_file(path: str) -> tuple[torch.nn.Module, str]:
    """A pruned-model file (``model.pt``) or a train / prune run's ``last.pt``, as a model."""
    model, info = open_model(path)
    return model, info["model_name"] or ""


def cmd_export(args: argparse.Namespace) -> int:
    model, name = load_model_file(args.checkpoint)
    size = tuple(args.input_size) if args.input_size else models.input_size(name)
    out = export_onnx(model, args.onnx, size, opset=args.opset)
    print(f"wrote {out} ({name}, input [batch, {', '.join(map(str, size))}])")
    return 0
