"""End to end from a trained network: ``dsaprune prune --checkpoint`` with each method, as a user
runs it, scored on the final half of the test set.

Each row is one ``dsaprune prune --checkpoint REF --method M --budget KIND=B --epochs E --seed S``
process (KIND ``flops`` unless ``--kind params``; library defaults otherwise: DSA allocates inside
the fine-tune, the one-shot methods prune at its start). The pruned ``model.pt`` is then evaluated
on the *final* half of the CIFAR-10 test images (``common.test_halves``); the dev half is where
settings are chosen, so no reported number took part in a choice. Rows go to
``bench/results/end_to_end_<name>.json`` as they finish (a stopped run resumes: finished rows are
kept, an interrupted process continues from its ``last.pt``), and the table, with DSA minus each
method paired by seed, to the ``.md``. Each row also keeps which of the half's images its network
classifies right, so the table gives the test images' own share of each difference beside the seeds'
(``common.half_noise``); ``--per-image`` adds them to older rows, making a gone run folder again
from the row's command and checking that it scores what the row says. Variants, on the dev half
only, run one method under a ``--label``: with ``--dsa-config`` (its settings from a YAML file, e.g.
``bench/variants/*.yaml``) or ``--counts-of METHOD`` (that method's allocations at the same budget
and seed, applied with ``--method given`` and fine-tuned for the whole schedule).

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

import torch
from common import (
    RESULTS,
    ROOT,
    accuracy,
    budget_tag,
    comma_list,
    commit,
    half_noise,
    pack_correct,
    paired,
    paired_images,
    test_halves,
)

METHODS = ("dsa", "group_fisher", "group_fisher_iterative", "magnitude", "uniform")
KINDS = {"flops": "f", "params": "p"}  # budget kind -> its letter in run folder names


@functools.cache
def _splits(data: str):
    from dsaprune.data import load_splits

    return load_splits("cifar10", data)  # decoded once per process, not once per row


def half_correct(model_file: Path, data: str, split: str) -> torch.Tensor:
    """Which images of the ``split`` ("dev" or "final") half of the test set the network
    classifies right (bool, in the half's order); its mean is the half's accuracy."""
    from dsaprune import evaluate, load
    from dsaprune.data import make_loader

    splits = _splits(data)
    half = dict(zip(("dev", "final"), test_halves(splits.test.labels), strict=True))[split]
    loader = make_loader(splits.test.subset(half, f"[{split}]"), splits, 500, train=False)
    return evaluate(load(str(model_file)), loader, per_sample=True)["correct"]


def prune_once(argv: list[str], run_dir: Path) -> bool:
    """One ``dsaprune`` process with ``argv`` into ``run_dir``, unless that run finished already
    (continued from its ``last.pt`` if it was stopped); whether it ran."""
    if (run_dir / "model.pt").exists() and (run_dir / "report.json").exists():
        return False
    if (run_dir / "last.pt").exists():
        argv = [*argv, "--resume"]
    proc = subprocess.run([sys.executable, "-m", "dsaprune", *argv], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(f"{run_dir.name} failed (exit {proc.returncode})")
    return True


def add_per_image(row: dict, a: argparse.Namespace, made_at: str) -> None:
    """Give an older row its per-image results: its run folder, made again from the row's own
    command where it is gone, must score exactly the row's accuracy (else nothing changes)."""
    argv = shlex.split(row["command"])[1:]  # after "dsaprune"
    run_dir = ROOT / argv[argv.index("--out") + 1]
    remade = prune_once(argv, run_dir)
    correct = half_correct(run_dir / "model.pt", a.data, a.split)
    acc, published = accuracy(correct), row[f"acc_{a.split}"]
    if acc != published:
        raise SystemExit(
            f"{run_dir.name}: made again at {made_at}, it scores {100 * acc:.2f} on the {a.split} "
            f"half where its row (made at {row['commit']}) says {100 * published:.2f}; the row is "
            "left as it is. Name the code change that moved it before replacing the row."
        )
    row[f"correct_{a.split}"] = pack_correct(correct)
    if remade:
        row["remade_at"] = made_at
    print(f"{run_dir.name}: per-image results added ({a.split} half "
          f"{100 * acc:.2f}{', made again' if remade else ''})", flush=True)  # fmt: skip


def run_folder(
    runs: str, name: str, method: str, budget: float, epochs: float, seed: int, kind: str = "flops"
) -> Path:
    """The run folder of one ``dsaprune prune`` of this bench."""
    return Path(runs) / f"{name}_{method}_{KINDS[kind]}{budget_tag(budget)}_e{epochs:g}_s{seed}"


def row_kind(row: dict) -> str:
    """A row's budget kind (rows made before ``--kind`` existed are FLOPs rows)."""
    return row.get("kind", "flops")


def given_counts(a: argparse.Namespace, budget: float, seed: int) -> str:
    """The keep counts of the ``--counts-of`` method's run at this budget and seed (its run
    folder's report), as ``--keep-counts`` takes them."""
    src = run_folder(a.runs, a.name, a.counts_of, budget, a.epochs, seed, a.kind) / "report.json"
    if not src.is_file():
        raise SystemExit(f"{src} is missing: make the {a.counts_of} rows (same budgets and seeds) "
                         "first; --counts-of applies their allocations")  # fmt: skip
    return ",".join(str(n) for n in json.loads(src.read_text())["keep_counts"])


def results_name(name: str, split: str) -> str:
    return f"end_to_end_{name}" + ("" if split == "final" else f"_{split}")


def run(a: argparse.Namespace) -> dict:
    out_path = RESULTS / f"{results_name(a.name, a.split)}.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(name=a.name, reference=Path(a.checkpoint).as_posix(), epochs=a.epochs,
               split=a.split)  # fmt: skip
    rows = out.setdefault("rows", [])
    done = {(row_kind(r), r["method"], r["budget"], r["seed"]): r for r in rows}
    made_at = commit()  # the code this process runs
    # A finished run scored again on the other half was made by the commit that row records.
    other = RESULTS / f"{results_name(a.name, 'final' if a.split == 'dev' else 'dev')}.json"
    other_rows = json.loads(other.read_text())["rows"] if other.exists() else []
    made_by = {(row_kind(r), r["method"], r["budget"], r["seed"]): r["commit"] for r in other_rows}
    from dsaprune.io import atomic_write_json

    for b in a.budgets:
        for seed in a.seeds:
            for method in a.methods:
                label = a.label or method  # a variant runs one method
                key = (a.kind, label, b, seed)
                if key in done:
                    row = done[key]
                    if a.per_image and f"correct_{a.split}" not in row:
                        add_per_image(row, a, made_at)
                        atomic_write_json(out, out_path)
                    continue
                run_dir = run_folder(a.runs, a.name, label, b, a.epochs, seed, a.kind)
                argv = ["prune", "--checkpoint", a.checkpoint, "--dataset", "cifar10", "--data",
                        a.data, "--budget", f"{a.kind}={b:g}", "--method", method, "--epochs",
                        f"{a.epochs:g}", "--seed", str(seed), "--out", str(run_dir),
                        "--quiet"]  # fmt: skip
                if a.counts_of and label != method:  # another run's allocation, fine-tuned whole
                    argv[argv.index("--method") + 1] = "given"
                    argv += ["--keep-counts", given_counts(a, b, seed)]
                elif label != method:  # a variant: its settings from a file
                    argv += ["--config", a.dsa_config]
                t0 = time.perf_counter()
                # a finished run is scored again (on the other half), not rerun
                finished = not prune_once(argv, run_dir)
                rep = json.loads((run_dir / "report.json").read_text())
                correct = half_correct(run_dir / "model.pt", a.data, a.split)
                r = {
                    "method": label,
                    **({} if a.kind == "flops" else {"kind": a.kind}),
                    "budget": b,
                    "seed": seed,
                    f"acc_{a.split}": accuracy(correct),
                    f"correct_{a.split}": pack_correct(correct),
                    "flops_ratio": rep["flops_ratio"],
                    "params_ratio": rep["params_ratio"],
                    "keep_ratios": [g["keep_ratio"] for g in rep["groups"]],
                    "wall_s": time.perf_counter() - t0,
                    "commit": made_by.get(key, "unknown") if finished else made_at,
                    "command": "dsaprune " + shlex.join(argv),
                }
                rows.append(r)
                print(f"{label:12s} {a.kind}={b:<5g} seed {seed}: {a.split}-half accuracy "
                      f"{100 * r[f'acc_{a.split}']:.2f} (ratio {r[f'{a.kind}_ratio']:.4f}, "
                      f"{r['wall_s']:.0f} s)", flush=True)  # fmt: skip
                atomic_write_json(out, out_path)  # after every row: a stopped run resumes
    return out


def image_share(rows: list[dict], a: str, b: str, split: str) -> dict | None:
    """``common.half_noise`` of a − b (points) over the seeds both have, where every one of
    those rows carries its per-image results; None otherwise."""
    d = paired_images(rows, a, b, f"correct_{split}")
    return None if d is None else half_noise(100 * d)


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
        "*DSA − method*: paired by seed, ± the standard error over seeds (which treats these "
        "5,000 images as fixed). *± images*: the standard error of the same mean when the "
        "half's images are resampled (2,000 bootstrap resamples, one shared by all seeds), the "
        "share of the difference another 5,000 images could move; *± both*: the two added in "
        "variance. *differ*: the share of images the two methods' networks classify "
        "differently, averaged over seeds. A difference inside about twice *± both* is a tie.",
        "",
        f"| budget | method | seeds | {split}-half acc % (mean) | per seed | DSA − method "
        "(± seeds) | ± images | ± both | differ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells = sorted({(row_kind(r), r["budget"]) for r in rows}, key=lambda c: (c[0], -c[1]))
    for kind, b in cells:
        at = [r for r in rows if (row_kind(r), r["budget"]) == (kind, b)]
        shown = f"{b:g}" if kind == "flops" else f"{kind} {b:g}"
        by = {}
        for r in at:
            by.setdefault(r["method"], {})[r["seed"]] = 100 * r[f"acc_{split}"]
        for m in [*[m for m in METHODS if m in by], *sorted(set(by) - set(METHODS))]:
            accs = by[m]
            mean = sum(accs.values()) / len(accs)
            d = paired(by.get("dsa", {}), accs) if m != "dsa" else None
            diff = f"{d['mean']:+.2f} ± {d['se']:.2f} ({d['n']} seeds)" if d else ""
            img = image_share(at, "dsa", m, split) if d else None
            extra = (
                f"± {img['image_se']:.2f} | ± {img['se']:.2f} | {100 * img['discordant']:.1f}%"
                if img
                else ("– | – | –" if d else " |  | ")
            )
            per = " / ".join(f"{accs[s]:.2f}" for s in sorted(accs))
            lines.append(f"| {shown} | {m} | {len(accs)} | {mean:.2f} | {per} | {diff} | {extra} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="bench/reference/cifar10_resnet20.pt")
    p.add_argument("--name", default="resnet20")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--budgets", type=comma_list(float), default=[0.5])
    p.add_argument("--kind", choices=tuple(KINDS), default="flops",
                   help="the budget: a fraction of the FLOPs or of the parameters")  # fmt: skip
    p.add_argument("--seeds", type=comma_list(int), default=[0, 1, 2])
    p.add_argument("--methods", type=comma_list(), default=list(METHODS))
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--runs", default="runs/end_to_end", help="run folders (not committed)")
    p.add_argument("--split", choices=("final", "dev"), default="final")
    p.add_argument("--dsa-config", help="YAML of DSAConfig settings (a `dsa:` section) for a "
                   "variant's rows, of the one method in --methods; with --label")  # fmt: skip
    p.add_argument("--counts-of", metavar="METHOD",
                   help="a variant whose rows apply the keep counts of the same budget and seed's "
                   "METHOD run (--method given): that allocation, fine-tuned from the checkpoint "
                   "for the whole schedule; with --label")  # fmt: skip
    p.add_argument("--label", default="", help="record the variant's rows under this name")
    p.add_argument("--per-image", action="store_true",
                   help="add per-image results to finished rows that lack them (their run folder "
                   "made again from the row's command where it is gone)")  # fmt: skip
    p.add_argument("--tables-only", action="store_true")
    a = p.parse_args(argv)
    if bool(a.label) != (bool(a.dsa_config) or bool(a.counts_of)):
        p.error("a variant needs a --label and --dsa-config or --counts-of")
    if a.label and len(a.methods) != 1:
        p.error(f"a variant's rows are one method's; --methods gives {len(a.methods)}")
    if a.dsa_config and a.counts_of:
        p.error("a variant takes its DSA settings (--dsa-config) or another run's counts "
                "(--counts-of), not both")  # fmt: skip
    if a.label and a.split == "final":
        p.error("variants are compared on the dev half; the final half measures the defaults")
    path = RESULTS / f"{results_name(a.name, a.split)}.json"
    out = json.loads(path.read_text()) if a.tables_only else run(a)
    from dsaprune.io import atomic_write_text

    atomic_write_text(markdown(out), RESULTS / f"{results_name(a.name, a.split)}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
