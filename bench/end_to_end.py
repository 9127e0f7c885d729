"""End to end from a trained network: ``dsaprune prune --checkpoint`` with each method, as a user
runs it, scored on the final half of the test set.

Each row is one ``dsaprune prune --checkpoint REF --method M --budget flops=B --epochs E --seed S``
process (library defaults otherwise: DSA allocates inside the fine-tune, the one-shot methods
prune at its start). The pruned ``model.pt`` is then evaluated on the *final* half of the
CIFAR-10 test images (``common.test_halves``); the dev half is where settings are chosen, so no
reported number took part in a choice. Rows go to ``bench/results/end_to_end_<name>.json`` as
they finish (a stopped run resumes: finished rows are kept, an interrupted process continues
from its ``last.pt``), and the table, with DSA minus each method paired by seed, to the ``.md``.

    python bench/end_to_end.py --checkpoint bench/reference/cifar10_resnet20.pt \\
        --name resnet20 --budgets 0.5,0.33 --seeds 0,1,2 --epochs 2
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, budget_tag, commit, paired, test_halves

METHODS = ("dsa", "group_fisher", "group_fisher_iterative", "magnitude", "uniform")


@functools.cache
def _splits(data: str):
    from dsaprune.data import load_splits

    return load_splits("cifar10", data)  # decoded once per process, not once per row


def half_accuracy(model_file: Path, data: str, split: str) -> float:
    """Accuracy on the ``split`` ("dev" or "final") half of the test images."""
    from dsaprune import load
    from dsaprune.data import make_loader
    from dsaprune.train import evaluate

    splits = _splits(data)
    half = dict(zip(("dev", "final"), test_halves(splits.test.labels), strict=True))[split]
    loader = make_loader(splits.test.subset(half, f"[{split}]"), splits, 500, train=False)
    return evaluate(load(str(model_file)), loader)["acc"]


def run_folder(runs: str, name: str, method: str, budget: float, epochs: float, seed: int) -> Path:
    """The run folder of one ``dsaprune prune`` of this bench (``bench/image_noise.py`` reads
    the same folders)."""
    return Path(runs) / f"{name}_{method}_f{budget_tag(budget)}_e{epochs:g}_s{seed}"


def results_name(name: str, split: str) -> str:
    return f"end_to_end_{name}" + ("" if split == "final" else f"_{split}")


def run(a: argparse.Namespace) -> dict:
    out_path = RESULTS / f"{results_name(a.name, a.split)}.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(name=a.name, reference=Path(a.checkpoint).as_posix(), epochs=a.epochs,
               split=a.split)  # fmt: skip
    rows = out.setdefault("rows", [])
    done = {(r["method"], r["budget"], r["seed"]) for r in rows}
    made_at = commit()  # the code this process runs
    # A finished run scored again on the other half was made by the commit that row records.
    other = RESULTS / f"{results_name(a.name, 'final' if a.split == 'dev' else 'dev')}.json"
    other_rows = json.loads(other.read_text())["rows"] if other.exists() else []
    made_by = {(r["method"], r["budget"], r["seed"]): r["commit"] for r in other_rows}
    for b in a.budgets:
        for seed in a.seeds:
            for method in a.methods:
                label = a.label if a.label and method == "dsa" else method
                if (label, b, seed) in done:
                    continue
                run_dir = run_folder(a.runs, a.name, label, b, a.epochs, seed)
                argv = ["prune", "--checkpoint", a.checkpoint, "--dataset", "cifar10", "--data",
                        a.data, "--budget", f"flops={b:g}", "--method", method, "--epochs",
                        f"{a.epochs:g}", "--seed", str(seed), "--out", str(run_dir),
                        "--quiet"]  # fmt: skip
                if label != method:  # a variant: its DSA settings from a file
                    argv += ["--config", a.dsa_config]
                t0 = time.perf_counter()
                finished = (run_dir / "model.pt").exists() and (run_dir / "report.json").exists()
                if not finished:  # a finished run is scored again (on the other half), not rerun
                    if (run_dir / "last.pt").exists():
                        argv.append("--resume")
                    proc = subprocess.run([sys.executable, "-m", "dsaprune", *argv], cwd=ROOT,
                                          capture_output=True, text=True)  # fmt: skip
                    if proc.returncode != 0:
                        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
                        raise SystemExit(f"{run_dir.name} failed (exit {proc.returncode})")
                rep = json.loads((run_dir / "report.json").read_text())
                r = {
                    "method": label,
                    "budget": b,
                    "seed": seed,
                    f"acc_{a.split}": half_accuracy(run_dir / "model.pt", a.data, a.split),
                    "flops_ratio": rep["flops_ratio"],
                    "keep_ratios": [g["keep_ratio"] for g in rep["groups"]],
                    "wall_s": time.perf_counter() - t0,
                    "commit": made_by.get((label, b, seed), "unknown") if finished else made_at,
                    "command": "dsaprune " + shlex.join(argv),
                }
                rows.append(r)
                print(f"{label:12s} flops={b:<5g} seed {seed}: {a.split}-half accuracy "
                      f"{100 * r[f'acc_{a.split}']:.2f} (ratio {r['flops_ratio']:.4f}, "
                      f"{r['wall_s']:.0f} s)", flush=True)  # fmt: skip
                from dsaprune.io import atomic_write_json

                atomic_write_json(out, out_path)  # after every row: a stopped run resumes
    return out


def markdown(out: dict) -> str:
    rows, split = out["rows"], out.get("split", "final")
    lines = [
        f"# End to end from a trained {out['name']}: `dsaprune prune --checkpoint`, "
        f"{out['epochs']:g} epochs",
        "",
        f"Reference: `{out['reference']}`. Each row: one `dsaprune prune --checkpoint` with the "
        f"library's defaults, its pruned `model.pt` scored on the {split} half of the CIFAR-10 "
        "test images (5,000, class-balanced; settings are chosen on the dev half, the final "
        "half measures them once). Commands and commits per row: in the `.json` beside this "
        "file. Made by "
        "`python bench/end_to_end.py` (see its docstring).",
        "",
        f"| budget | method | seeds | {split}-half acc % (mean) | per seed | DSA − method "
        "(paired, ± SE) |",
        "|---|---|---|---|---|---|",
    ]
    for b in sorted({r["budget"] for r in rows}, reverse=True):
        by = {}
        for r in rows:
            if r["budget"] == b:
                by.setdefault(r["method"], {})[r["seed"]] = 100 * r[f"acc_{split}"]
        for m in [*[m for m in METHODS if m in by], *sorted(set(by) - set(METHODS))]:
            accs = by[m]
            mean = sum(accs.values()) / len(accs)
            d = paired(by.get("dsa", {}), accs) if m != "dsa" else None
            diff = f"{d['mean']:+.2f} ± {d['se']:.2f} ({d['n']} seeds)" if d else ""
            per = " / ".join(f"{accs[s]:.2f}" for s in sorted(accs))
            lines.append(f"| {b:g} | {m} | {len(accs)} | {mean:.2f} | {per} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="bench/reference/cifar10_resnet20.pt")
    p.add_argument("--name", default="resnet20")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=[0.5])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--runs", default="runs/end_to_end", help="run folders (not committed)")
    p.add_argument("--split", choices=("final", "dev"), default="final")
    p.add_argument("--dsa-config", help="YAML of DSA settings for a variant's rows; with --label")
    p.add_argument("--label", default="", help="record the variant's DSA rows under this name")
    p.add_argument("--tables-only", action="store_true")
    a = p.parse_args(argv)
    if bool(a.label) != bool(a.dsa_config):
        p.error("a variant needs both --dsa-config and --label")
    if a.label and a.split == "final":
        p.error("variants are compared on the dev half; the final half measures the defaults")
    path = RESULTS / f"{results_name(a.name, a.split)}.json"
    out = json.loads(path.read_text()) if a.tables_only else run(a)
    from dsaprune.io import atomic_write_text

    atomic_write_text(markdown(out), RESULTS / f"{results_name(a.name, a.split)}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
