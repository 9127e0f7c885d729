"""The paper's CIFAR-10 table (its Table 2) at its full schedule, finished across short GPU windows.

ResNet-20 and ResNet-56, each unpruned and pruned by DSA to 75%, 50% and 33.3% of the FLOPs, 300
epochs on the paper's schedule (``configs/cifar10_<model>_flops<NN>.yaml``; the unpruned run
trains on its ``train:`` settings). ``--baselines uniform,ssl,morphnet`` adds those methods at
50%. One command, run again in every window until the table is complete:

    python bench/paper_table.py --device cuda --parallel 8 --minutes 9

- Runs are packed ``--parallel`` at a time onto the device (one CIFAR ResNet leaves a GPU mostly
  idle). On CUDA each run uses the fast path: data on the device, bf16, channels_last and the
  compiled step in CUDA graphs (``--compile``; ``--no-fast`` runs the eager fp32 path).
- Every run writes ``last.pt`` after each epoch. At ``--minutes`` the runs are interrupted as
  Ctrl-C does, so a window that ends costs at most the epoch in progress.
- The run folders (``--runs``, default ``bench/paper_table_runs/``) hold the logs, metrics and
  the checkpoints that an unfinished run continues from. They are committed, so that the next
  window continues the table. A finished run keeps its report and pruned model, not its
  checkpoint.
- ``bench/results/paper_table.{json,md}`` hold our accuracy, drop and measured FLOPs ratio for
  each run, the paper's beside it, and the progress of the runs not finished yet.

``--plan`` starts nothing: it prints the runs, what is left of each, and the device minutes that
are left at ``--throughput`` (images/s summed over the packed runs, ResNet-20 equivalent).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
from pathlib import Path

from cifar10_table import (  # noqa: E402 (the bench's scripts)
    PAPER,
    PAPER_BASE,
    Job,
    exit_code,
    recorded,
    run_all,
    window,
)
from common import ROOT, budget_tag, comma_list  # noqa: E402

BUDGETS = (0.75, 0.5, 0.333)
BASELINES = ("uniform", "ssl", "morphnet")
# relative cost of an image: ResNet-56 has 2.8x the layers and FLOPs of ResNet-20 (its steps are
# about 3x as long on the CPU); a DSA run adds its allocation (1.25x a plain step over the
# allocation phase on the CPU, docs/benchmarks.md), a third of the schedule
COST = {"resnet20": 1.0, "resnet56": 3.0}
DSA_OVERHEAD = 1 + 0.25 / 3
TRAIN_IMAGES = 50_000


def config_file(model: str, budget: float) -> str:
    return f"configs/cifar10_{model}_flops{round(100 * budget)}.yaml"


def plan(a: argparse.Namespace) -> list[Job]:
    common = ["--dataset", a.dataset, "--data", a.data, "--device", a.device, "--quiet"]
    if a.fast:
        common += ["--compile"]
    if a.epochs:
        common += ["--epochs", f"{a.epochs:g}"]
    runs = Path(a.runs)
    jobs = []
    for m in a.models:
        cfg = ["--config", config_file(m, 0.5)]  # the schedule; its budget is not read by train
        out = runs / f"{m}_unpruned"
        argv = ["train", "--model", m, *cfg, *common, "--out", str(out)]
        jobs.append(Job(m, "unpruned", 1.0, out, argv))
        for b in a.budgets:
            methods = ["dsa", *(a.baselines if abs(b - 0.5) < 1e-9 else [])]
            for method in methods:
                out = runs / f"{m}_{method}_f{budget_tag(b)}"
                argv = ["prune", "--model", m, "--config", config_file(m, b), "--method", method,
                        *common, "--out", str(out)]  # fmt: skip
                jobs.append(Job(m, method, b, out, argv))
    return jobs


@functools.cache
def _config_epochs(model: str) -> float:
    import yaml

    return float(yaml.safe_load((ROOT / config_file(model, 0.5)).read_text())["epochs"])


def _epochs_of(a: argparse.Namespace, j: Job) -> float:
    return a.epochs or _config_epochs(j.model)


def progress(j: Job) -> tuple[float, float | None]:
    """How far a run's schedule is, in epochs, and its last test accuracy (%); a finished run's
    accuracy is its report's, after pruning."""
    path = j.out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    hist = [json.loads(x) for x in lines if x.strip()]
    if not hist:
        return 0.0, None
    at = float(hist[-1]["schedule_epoch"])
    rep = j.out / "report.json"
    if rep.exists():
        return at, 100 * json.loads(rep.read_text())["acc_after"]
    acc = hist[-1].get("test_acc")
    return at, None if acc is None else 100 * acc


def _paper(j: Job) -> tuple[float, float, float] | None:
    """The paper's (FLOPs %, accuracy %, drop) for a run, or None."""
    if j.method == "unpruned":
        base = PAPER_BASE.get(j.model)
        return None if base is None else (100.0, base, 0.0)
    cell = PAPER.get((j.model, round(j.budget, 3)), {}).get(j.method)
    if cell is None:
        return None
    f, acc, drop = (v.strip().rstrip("†").replace("−", "-") for v in cell.split(","))
    return float(f), float(acc), float(drop)


def rows(jobs: list[Job], a: argparse.Namespace) -> list[dict]:
    out = []
    base = {}
    for j in jobs:
        epochs, acc = progress(j)
        total = _epochs_of(a, j)
        done = j.done_file.exists()
        r = {
            "model": j.model,
            "method": j.method,
            "budget": j.budget,
            "state": "done" if done else ("in progress" if epochs else "not started"),
            "epochs_done": epochs,
            "epochs": total,
            "acc": acc,
            "command": j.command,
        }
        if done and j.method != "unpruned":
            rep = json.loads((j.out / "report.json").read_text())
            r["flops_ratio"] = rep["flops_ratio"]
            r["keep_ratios"] = [g["keep_ratio"] for g in rep["groups"]]
        if done and j.method == "unpruned":
            base[j.model] = acc
        paper = _paper(j)
        if paper:
            r["paper_flops_pct"], r["paper_acc"], r["paper_drop"] = paper
        out.append(r)
    for r in out:
        b = base.get(r["model"])
        if r["state"] == "done" and r["method"] != "unpruned" and b is not None:
            r["drop"] = r["acc"] - b
            if "paper_drop" in r:
                r["drop_minus_paper"] = r["drop"] - r["paper_drop"]
    return out


def device_minutes(rs: list[dict], throughput: float) -> float:
    """Device minutes the unfinished runs still need at ``throughput`` images/s (ResNet-20
    equivalent, summed over the runs packed onto the device)."""
    images = 0.0
    for r in rs:
        left = max(0.0, r["epochs"] - r["epochs_done"]) if r["state"] != "done" else 0.0
        extra = DSA_OVERHEAD if r["method"] == "dsa" else 1.0
        images += left * TRAIN_IMAGES * COST.get(r["model"], 1.0) * extra
    return images / throughput / 60


def _f(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def markdown(rs: list[dict], a: argparse.Namespace, argv: list[str], device: str) -> str:
    left = device_minutes(rs, a.throughput)
    n_done = sum(r["state"] == "done" for r in rs)
    lines = [
        "# The paper's CIFAR-10 table, at its 300-epoch schedule",
        "",
        f"Made by `python bench/paper_table.py {shlex.join(argv)}`; runs made on {device}. "
        "Each run's command is in `paper_table.json`. Accuracy: top-1 on the 10,000 test "
        "images after the last epoch. Drop: against our unpruned run of the same model and "
        "schedule. Paper: ../shared/docs/dsa-method.md §7 (their baselines: ResNet-20 92.17%, "
        "ResNet-56 93.12%).",
        "",
        f"**{n_done} of {len(rs)} runs finished.** The rest need about {left:.0f} device "
        f"minutes at {a.throughput:,.0f} images/s (ResNet-20 equivalent, summed over the "
        "packed runs); run the same command again to continue.",
        "",
        "| model | method | budget | state | epochs | FLOPs ratio | acc % | drop | paper FLOPs % "
        "| paper acc % | paper drop | our drop − paper's |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        budget = "–" if r["method"] == "unpruned" else f"{100 * r['budget']:.1f}%"
        state = r["state"]
        acc = _f(r["acc"], ".2f")
        if state == "in progress" and acc:
            acc += " (so far)"
        ratio = "1" if r["method"] == "unpruned" else _f(r.get("flops_ratio"), ".4f")
        lines.append(
            f"| {r['model']} | {r['method']} | {budget} | {state} | "
            f"{r['epochs_done']:.4g}/{r['epochs']:g} | {ratio} | {acc} | "
            f"{_f(r.get('drop'), '+.2f')} | "
            f"{_f(r.get('paper_flops_pct'), '.1f')} | {_f(r.get('paper_acc'), '.2f')} | "
            f"{_f(r.get('paper_drop'), '+.2f')} | {_f(r.get('drop_minus_paper'), '+.2f')} |"
        )
    return "\n".join(lines) + "\n"


def tidy(jobs: list[Job]) -> None:
    """A finished run keeps its report, metrics, log and pruned model; its checkpoint, needed
    only to continue, is removed so that the committed folders stay small."""
    for j in jobs:
        if j.done_file.exists():
            (j.out / "last.pt").unlink(missing_ok=True)


def _device(a: argparse.Namespace) -> str:
    import torch

    if a.device != "cpu" and torch.cuda.is_available():
        fast = "fast path" if a.fast else "eager fp32"
        return f"{torch.cuda.get_device_name(0)} ({a.parallel} runs at once, {fast})"
    return "cpu"


def main(argv: list[str] | None = None, stop=None) -> int:
    """``stop``: a callable polled while runs are going that ends the window when it returns
    True (the default: ``--minutes`` have passed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=comma_list(), default=["resnet20", "resnet56"])
    p.add_argument("--budgets", type=comma_list(float),
                   default=list(BUDGETS))  # fmt: skip
    p.add_argument(
        "--baselines",
        type=comma_list(),
        default=[],
        help=f"methods also run at 50%% ({', '.join(BASELINES)}) [none]",
    )
    p.add_argument("--epochs", type=float, help="override the configs' 300 epochs (smoke runs)")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--device", default="auto")
    p.add_argument("--parallel", type=int, default=8, help="runs at once [8]")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="the compiled step (--compile) in every run [on]")  # fmt: skip
    p.add_argument("--minutes", type=float, help="end the window after this long")
    p.add_argument("--runs", default="bench/paper_table_runs", help="run folders (committed)")
    p.add_argument("--results", default="bench/results")
    p.add_argument(
        "--throughput",
        type=float,
        default=36_000.0,
        help="images/s summed over the packed runs, for the estimate [36,000: 7x the 5,150 of "
        "one eager ResNet-20 run on an H100]",
    )
    p.add_argument("--plan", action="store_true", help="start nothing; print what is left")
    a = p.parse_args(argv)
    bad = set(a.baselines) - set(BASELINES)
    if bad:
        p.error(f"unknown baselines {sorted(bad)}; known: {', '.join(BASELINES)}")
    jobs = plan(a)
    if not a.plan:
        run_all(jobs, a.parallel, _device(a), stop or window(a.minutes))
        tidy(jobs)
    rs = rows(jobs, a)
    for r in rs:
        done = f"{r['epochs_done']:.4g}/{r['epochs']:g}"
        print(f"{r['model']:9s} {r['method']:9s} {r['budget']:<6g} {r['state']:12s} {done} "
              f"acc {_f(r['acc'], '.2f') or '-'}")  # fmt: skip
    print(f"left: about {device_minutes(rs, a.throughput):.0f} device minutes at "
          f"{a.throughput:,.0f} images/s")  # fmt: skip
    if a.plan:
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    from dsaprune.io import atomic_write_json, atomic_write_text

    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rs, res / "paper_table.json")
    shown = recorded(argv, {"--plan": 0, "--minutes": 1})  # one window's length, not the table's
    atomic_write_text(markdown(rs, a, shown, _device(a)), res / "paper_table.md")
    return exit_code(jobs)


if __name__ == "__main__":
    sys.exit(main())
