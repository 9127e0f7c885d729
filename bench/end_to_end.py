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
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, budget_tag, commit, paired, test_halves

METHODS = ("dsa", "group_fisher", "magnitude", "uniform")


def final_accuracy(model_file: Path, data: str) -> float:
    from dsaprune import load
    from dsaprune.data import load_splits, make_loader
    from dsaprune.train import evaluate

    splits = load_splits("cifar10", data)
    _, final = test_halves(splits.test.labels)
    loader = make_loader(splits.test.subset(final, "[final]"), splits, 500, train=False)
    return evaluate(load(str(model_file)), loader)["acc"]


def run(a: argparse.Namespace) -> dict:
    out_path = RESULTS / f"end_to_end_{a.name}.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(name=a.name, reference=Path(a.checkpoint).as_posix(), epochs=a.epochs,
               split="final")  # fmt: skip
    rows = out.setdefault("rows", [])
    done = {(r["method"], r["budget"], r["seed"]) for r in rows}
    made_at = commit()  # the code this process runs
    for b in a.budgets:
        for seed in a.seeds:
            for method in a.methods:
                if (method, b, seed) in done:
                    continue
                run_dir = Path(a.runs) / f"{a.name}_{method}_f{budget_tag(b)}_e{a.epochs:g}_s{seed}"
                argv = ["prune", "--checkpoint", a.checkpoint, "--dataset", "cifar10", "--data",
                        a.data, "--budget", f"flops={b:g}", "--method", method, "--epochs",
                        f"{a.epochs:g}", "--seed", str(seed), "--out", str(run_dir),
                        "--quiet"]  # fmt: skip
                if (run_dir / "last.pt").exists() and not (run_dir / "model.pt").exists():
                    argv.append("--resume")
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "dsaprune", *argv], cwd=ROOT,
                                      capture_output=True, text=True)  # fmt: skip
                if proc.returncode != 0:
                    print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
                    raise SystemExit(f"{run_dir.name} failed (exit {proc.returncode})")
                rep = json.loads((run_dir / "report.json").read_text())
                r = {
                    "method": method,
                    "budget": b,
                    "seed": seed,
                    "acc_final": final_accuracy(run_dir / "model.pt", a.data),
                    "flops_ratio": rep["flops_ratio"],
                    "keep_ratios": [g["keep_ratio"] for g in rep["groups"]],
                    "wall_s": time.perf_counter() - t0,
                    "commit": made_at,
                    "command": "dsaprune " + shlex.join(argv),
                }
                rows.append(r)
                print(f"{method:12s} flops={b:<5g} seed {seed}: final-half accuracy "
                      f"{100 * r['acc_final']:.2f} (ratio {r['flops_ratio']:.4f}, "
                      f"{r['wall_s']:.0f} s)", flush=True)  # fmt: skip
                from dsaprune.io import atomic_write_json

                atomic_write_json(out, out_path)  # after every row: a stopped run resumes
    return out


def markdown(out: dict) -> str:
    rows = out["rows"]
    lines = [
        f"# End to end from a trained {out['name']}: `dsaprune prune --checkpoint`, "
        f"{out['epochs']:g} epochs",
        "",
        f"Reference: `{out['reference']}`. Each row: one `dsaprune prune --checkpoint` with the "
        "library's defaults, its pruned `model.pt` scored on the final half of the CIFAR-10 "
        "test images (5,000, class-balanced; settings are chosen on the other half). Commands "
        "and commits per row: `end_to_end_" + out["name"] + ".json`. Made by "
        "`python bench/end_to_end.py` (see its docstring).",
        "",
        "| budget | method | seeds | final-half acc % (mean) | per seed | DSA − method "
        "(paired, ± SE) |",
        "|---|---|---|---|---|---|",
    ]
    for b in sorted({r["budget"] for r in rows}, reverse=True):
        by = {}
        for r in rows:
            if r["budget"] == b:
                by.setdefault(r["method"], {})[r["seed"]] = 100 * r["acc_final"]
        for m in [m for m in METHODS if m in by]:
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
    p.add_argument("--tables-only", action="store_true")
    a = p.parse_args(argv)
    if a.tables_only:
        out = json.loads((RESULTS / f"end_to_end_{a.name}.json").read_text())
    else:
        out = run(a)
    from dsaprune.io import atomic_write_text

    atomic_write_text(markdown(out), RESULTS / f"end_to_end_{a.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
