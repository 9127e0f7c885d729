"""``dsaprune compare``: one network, data, budget and schedule pruned by several methods,
several seeds each, and a table of each method's accuracy, its spread over the seeds and the
paired differences against DSA: what a user choosing a method for their own network needs
(one seed's difference between methods is often inside the seeds' spread). ``dsaprune demo``
is this comparison on the network shipped with the package.

Each run is an ordinary ``dsaprune prune`` run in ``OUT/<method>_s<seed>/``; ``OUT/compare.json``
records the settings and every finished run, so an interrupted comparison run again continues:
finished runs are read back, an interrupted one resumes from its last epoch."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

from ..io import RunDirError, atomic_write_json, atomic_write_text
from ..methods import METHODS
from .prune import run_prune

# arguments that say where and how verbosely, not what is compared: they may change between an
# interrupted comparison and its continuation
# (each run's seed is in its row, so a later invocation may add seeds from another --seed)
NOT_SETTINGS = ("out", "force", "quiet", "argv", "methods", "seeds", "seed", "command")


def mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean and its standard error (nan for one value)."""
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a − b over the seeds both have: mean, standard error of the mean (nan for one seed),
    count, and in how many seeds a was higher; None without a shared seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    mean, se = mean_se(d)
    return {"mean": mean, "se": se, "n": len(d), "higher": sum(x > 0 for x in d)}


def parse_methods(text: str) -> list[str]:
    """Comma-separated registered methods, each once; ``given`` is refused (it needs counts)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"--methods {text!r}: unknown method(s) {unknown or '(none given)'}; choose from "
            f"{', '.join(n for n in METHODS if not METHODS[n].takes_counts)}"
        )
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods {text!r}: a method is named twice")
    counted = [m for m in methods if METHODS[m].takes_counts]
    if counted:
        raise ValueError(
            f"--methods: {counted[0]!r} applies counts given to it, not an allocation of its own; "
            f"run it with `dsaprune prune --method {counted[0]} --keep-counts ...`"
        )
    return methods


def row_of(method: str, seed: int, report: dict, seconds: float | None) -> dict:
    """The comparison's record of one run, from its report."""
    lat = report.get("latency") or {}
    return {
        "method": method,
        "seed": seed,
        "acc_after": report.get("acc_after"),
        "acc_before": report.get("acc_before"),
        "budget_kind": report.get("budget_kind"),
        "budget_ratio": report.get("budget_ratio"),
        "flops_ratio": report.get("flops_ratio"),
        "params_ratio": report.get("params_ratio"),
        "measured_speedup": lat.get("measured_speedup"),
        "keep_counts": report.get("keep_counts"),
        "run_s": seconds,
    }


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """Per method: accuracy mean ± SE over seeds and, against the reference (``dsa`` if
    compared, else the first method), the mean ± SE of the differences paired by seed."""
    ref = "dsa" if "dsa" in methods else methods[0]
    acc = {m: {r["seed"]: 100 * r["acc_after"] for r in rows if r["method"] == m} for m in methods}
    out = []
    for m in methods:
        seeds = sorted(acc[m])
        accs = [acc[m][k] for k in seeds]
        mean, se = mean_se(accs) if accs else (float("nan"), float("nan"))
        s = {"method": m, "seeds": seeds, "acc": accs, "mean": mean, "se": se, "ref": ref}
        d = paired(acc[ref], acc[m]) if m != ref else None
        if d is not None:
            s["diff"], s["diff_se"] = d["mean"], d["se"]
            s["beyond"] = d["n"] > 1 and abs(d["mean"]) > 2 * d["se"]
        out.append(s)
    return out


def _se(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.2f}"


def table_lines(summary: list[dict]) -> list[str]:
    """The printed table: one line per method."""
    ref = summary[0]["ref"]
    head = f"{ref} − method (paired ± SE)"
    lines = [f"{'method':<13} {'test acc % (mean ± SE)':>23} {'per seed':>24} {head:>28}"]
    for s in summary:
        per = " / ".join(f"{a:.2f}" for a in s["acc"])
        diff = ""
        if "diff" in s and math.isnan(s["diff_se"]):
            diff = f"{s['diff']:+.2f} (one seed: no SE)"
        elif "diff" in s:
            where = "beyond" if s["beyond"] else "within"
            diff = f"{s['diff']:+.2f} ± {s['diff_se']:.2f} ({where} 2 SE)"
        lines.append(f"{s['method']:<13} {s['mean']:>15.2f} ± {_se(s['se'])} {per:>24} {diff:>28}")
    return lines


def markdown(settings: dict, rows: list[dict], summary: list[dict], command: str) -> str:
    """``compare.md``: the table with the costs the runs met."""
    ref = summary[0]["ref"]
    by = {m["method"]: [r for r in rows if r["method"] == m["method"]] for m in summary}

    def mean_of(m: str, key: str) -> str:
        vals = [r[key] for r in by[m] if r.get(key) is not None]
        return f"{sum(vals) / len(vals):.3f}" if vals else "–"

    out = [
        f"# {settings.get('checkpoint') or settings.get('model')}: methods compared at "
        f"{settings.get('budget') or 'the default budget'}",
        "",
        "Each run is `dsaprune prune` with the command's options and its own `--method` and "
        "`--seed` (its folder holds its model and report). Accuracy on the data's test split; "
        f"*{ref} − method*: the difference paired by seed, ± its standard error over seeds. "
        "A difference inside about twice its error is a tie.",
        "",
        f"Command: `{command}`",
        "",
    ]
    before = rows[0].get("acc_before") if rows else None
    if before is not None:
        out += [f"The trained network before pruning: test accuracy {100 * before:.2f}%.", ""]
    out += [
        f"| method | seeds | test acc % (mean ± SE) | per seed | {ref} − method | "
        "budget ratio | FLOPs ratio | params ratio | measured speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        diff = f"{s['diff']:+.2f} ± {_se(s['diff_se'])}" if "diff" in s else ""
        out.append(
            f"| {s['method']} | {len(s['seeds'])} | {s['mean']:.2f} ± {_se(s['se'])} | "
            f"{' / '.join(f'{a:.2f}' for a in s['acc'])} | {diff} | "
            f"{mean_of(s['method'], 'budget_ratio')} | {mean_of(s['method'], 'flops_ratio')} | "
            f"{mean_of(s['method'], 'params_ratio')} | "
            f"{mean_of(s['method'], 'measured_speedup')} |"
        )
    return "\n".join(out) + "\n"


def print_summary(rows: list[dict], methods: list[str]) -> list[dict]:
    """Print the network's accuracy before pruning (if measured) and the table; returns the
    summary."""
    summary = summarise(rows, methods)
    before = rows[0]["acc_before"]
    if before is not None:
        print(f"\nthe trained network before pruning: test accuracy {100 * before:.2f}%")
    print("\n".join(table_lines(summary)))
    return summary


def print_run(row: dict, reused: bool = False) -> None:
    """One line per finished run (``reused``: read back from an earlier invocation)."""
    took = "finished before" if reused or row["run_s"] is None else f"{row['run_s']:.0f} s"
    print(
        f"  {row['method']:<13} seed {row['seed']}: test accuracy {100 * row['acc_after']:.2f}% "
        f"({row['budget_kind']} ratio {row['budget_ratio']:.4f}, {took})",
        flush=True,
    )


def settings_of(args: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SETTINGS}


def run_all(
    args: argparse.Namespace,
    methods: list[str],
    seeds: list[int],
    *,
    reuse: bool,
    progress: bool,
    on_run=None,
) -> list[dict]:
    """Prune with every method and seed into ``args.out/<method>_s<seed>``; returns the rows.
    ``reuse``: read back runs a previous comparison with the same settings finished, and
    resume interrupted ones (else every run starts afresh). ``on_run(row, reused)``: called
    after each run."""
    out = Path(args.out)
    record = out / "compare.json"
    settings = settings_of(args)
    done: dict[tuple[str, int], dict] = {}
    if reuse and record.is_file():
        try:
            old = json.loads(record.read_text())
            old_settings, old_rows = old["settings"], old["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            raise RunDirError(
                f"{record}: not a readable comparison record; pass --force to start afresh "
                "or choose another --out"
            ) from None
        changed = sorted(
            k for k in set(old_settings) | set(settings) if old_settings.get(k) != settings.get(k)
        )
        if changed and old_rows:
            raise RunDirError(
                f"--out {out} holds a comparison made with other settings ({', '.join(changed)}); "
                "pass --force to replace it, or choose another --out"
            )
        # other settings with nothing finished (e.g. a first run stopped by a typo in an
        # option): start afresh rather than resume a run made with the old ones
        reuse = not changed
        done = {(r["method"], r["seed"]): r for r in old_rows}
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    # finished runs this invocation does not ask for stay in the record
    planned = {(m, s) for m in methods for s in seeds}
    kept = [r for k, r in done.items() if k not in planned]

    def save() -> None:
        atomic_write_json({"settings": settings, "rows": kept + rows}, record)

    save()
    for seed in seeds:
        for m in methods:
            folder = out / f"{m}_s{seed}"
            report_file = folder / "report.json"
            reused = (m, seed) in done and report_file.is_file()
            if reused:
                row = done[(m, seed)]
            else:
                ns = copy.copy(args)
                ns.method, ns.seed, ns.out = m, seed, str(folder)
                ns.resume = reuse and (folder / "last.pt").is_file()
                ns.force = not ns.resume  # the comparison's own folder: an unfinished run
                ns.argv = [*getattr(args, "argv", []), f"[this run: --method {m} --seed {seed}]"]
                t0 = time.perf_counter()
                res = run_prune(ns, progress=progress and not getattr(args, "quiet", False))
                row = row_of(m, seed, res["result"].report, round(time.perf_counter() - t0, 1))
            rows.append(row)
            save()
            if on_run is not None:
                on_run(row, reused)
    return rows


def cmd_compare(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "compare runs its prune runs one after another in one process; under torchrun, "
            "run `dsaprune prune --method M --seed S` for each method and seed instead"
        )
    methods = parse_methods(args.methods)
    seeds = list(range(args.seed or 0, (args.seed or 0) + args.seeds))
    print(
        f"dsaprune compare: {', '.join(methods)} at {args.budget or 'the default budget'}, "
        f"seeds {', '.join(map(str, seeds))}, into {args.out}/",
        flush=True,
    )

    rows = run_all(args, methods, seeds, reuse=not args.force, progress=True, on_run=print_run)
    summary = print_summary(rows, methods)
    command = "dsaprune " + " ".join(getattr(args, "argv", []) or [])
    md = markdown(settings_of(args), rows, summary, command)
    atomic_write_text(md, Path(args.out) / "compare.md")
    print(f"\nruns, compare.json and compare.md in {args.out}/")
    return 0
