"""The CIFAR-10 comparison table: the unpruned network and every pruning method at each budget,
all on one shared schedule, on the real CIFAR-10 archive.

Each row is one ``dsaprune`` command run in its own process (the row records the command):

- ``unpruned``: ``dsaprune train`` for ``--epochs``;
- ``dsa``, ``group_fisher``, ``group_fisher_iterative``, ``uniform``, ``ssl``, ``morphnet``:
  ``dsaprune prune --model M``
  from scratch for ``--epochs`` (one training run each: allocation or penalty, pruning and the
  rest of the schedule);
- ``magnitude``: ``dsaprune prune --checkpoint`` of the unpruned run, fine-tuned for
  ``--finetune-epochs`` at ``--finetune-lr``; its pipeline cost includes the unpruned run;
- ``dsa_ckpt``: DSA on magnitude's pipeline (``--method dsa`` from the same checkpoint, on the
  same fine-tune schedule, allocating inside it), so the two differ only in the allocation and
  the channels kept. ``dsa`` against ``magnitude`` compares whole pipelines of different cost.

Runs live in ``--runs`` (one folder each). A finished run is not run again and an interrupted one
resumes from its checkpoint, so the script can be stopped and restarted. ``--parallel N`` runs N
processes at once (one CIFAR ResNet leaves a GPU mostly idle: on an H100, 12 ResNet-20 runs at
once trained about 7× as many images per second as one). Writes
``cifar10.json`` (the rows), ``cifar10.md`` (beside the paper's numbers),
``accuracy_vs_flops.png`` and each DSA run's allocation plot into ``--results``.

``--no-run`` starts nothing and writes the table from the runs that have finished, listing the
rest, so that a table spread over several sessions can be published as it stands. A finished run
whose DSA settings differ from what its command gives today (a default changed since) is kept
and marked ‡ with the settings that differ.

Pipeline hours are the summed training-epoch times of every run in the method's pipeline (without
the per-epoch test evaluation and process start-up), on the device named in the row.

    python bench/cifar10_table.py --models resnet20 --budgets 0.5 --epochs 8   # CPU, ~1.5 h
    python bench/cifar10_table.py --models resnet20 --budgets 0.5,0.333 --epochs 8 \\
        --seeds 0,1                                          # CPU, ~5 h; mean and spread
    python bench/cifar10_table.py --config configs/cifar10_resnet20_flops50.yaml --epochs 300 \\
        --parallel 6 --device cuda                                            # the paper's table

``--seeds`` repeats every run once per seed (``--seed`` of ``dsaprune``; magnitude prunes the
unpruned run of its own seed); the table then leads with the mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (  # noqa: E402  (the bench's shared helpers)
    CIFAR10_STEPS_PER_EPOCH,
    ROOT,
    budget_tag,
    comma_list,
    paired,
)

METHODS = [
    "unpruned", "dsa", "group_fisher", "group_fisher_iterative", "uniform", "magnitude",
    "dsa_ckpt", "ssl", "morphnet",
]  # fmt: skip
# rows that prune the unpruned run's checkpoint and fine-tune it: row name -> dsaprune --method
FROM_CHECKPOINT = {"magnitude": "magnitude", "dsa_ckpt": "dsa"}
# ../shared/docs/dsa-method.md §7: (FLOPs ratio %, accuracy %, drop) per (model, budget, method);
# baselines ResNet-20 92.17%, ResNet-56 93.12%; † = over budget in the paper
PAPER_BASE = {"resnet20": 92.17, "resnet56": 93.12}
PAPER = {
    ("resnet20", 0.75): {"ssl": "73.8, 91.08, −1.09", "morphnet": "74.9, 90.64, −1.53",
                         "dsa": "74.0, 92.10, −0.07"},
    ("resnet20", 0.5): {"ssl": "51.8†, 89.78, −2.39", "morphnet": "47.1, 90.1, −2.07",
                        "dsa": "49.7, 91.38, −0.79"},
    ("resnet20", 0.333): {"ssl": "34.6†, 89.06, −3.11", "morphnet": "30.5, 88.72, −3.45",
                          "dsa": "32.5, 90.24, −1.93"},
    ("resnet56", 0.75): {"ssl": "69.0, 92.06, −1.06", "morphnet": "69.2, 91.71, −1.41",
                         "dsa": "70.7, 93.08, −0.04"},
    ("resnet56", 0.5): {"ssl": "45.5, 91.22, −1.90", "morphnet": "51.9†, 91.55, −1.57",
                        "dsa": "47.8, 92.91, −0.22"},
    ("resnet56", 0.333): {"ssl": "38.1†, 91.32, −1.80", "morphnet": "39.7†, 91.21, −1.91",
                          "dsa": "32.6, 92.20, −0.92"},
}  # fmt: skip


@dataclass
class Job:
    model: str
    method: str
    budget: float  # 1.0 for the unpruned run
    out: Path
    argv: list[str]
    deps: list[Job] = field(default_factory=list)
    seed: int = 0
    proc: subprocess.Popen | None = None
    state: str = "pending"  # pending, running, done, failed; "not run" under --no-run

    @property
    def done_file(self) -> Path:
        return self.out / "table_done.json"

    @property
    def command(self) -> str:
        return "dsaprune " + shlex.join(self.argv)


def plan(a: argparse.Namespace) -> list[Job]:
    common = ["--dataset", "cifar10", "--data", a.data, "--device", a.device, "--quiet"]
    if a.config:
        common += ["--config", a.config]
    wd = ["--weight-decay", f"{a.wd:g}"] if a.wd_given else []
    sched = ["--epochs", f"{a.epochs:g}", *(["--lr", f"{a.lr:g}"] if a.lr_given else []), *wd]
    runs = Path(a.runs)
    jobs: list[Job] = []
    for seed, m in [(s, m) for s in a.seeds for m in a.models]:
        # seed 0 keeps the folder names and commands of the runs made before seeds were added
        sfx, sd = (f"_s{seed}", ["--seed", str(seed)]) if seed else ("", [])
        out = runs / f"{m}_unpruned_e{a.epochs:g}{sfx}"
        base = Job(m, "unpruned", 1.0, out, ["train", "--model", m, *sched, *sd, *common,
                                             "--out", str(out)], seed=seed)  # fmt: skip
        jobs.append(base)
        for b in a.budgets:
            for method in a.methods:
                if method == "unpruned":
                    continue
                tag = f"{m}_{method}_f{budget_tag(b)}_e{a.epochs:g}"
                if method in FROM_CHECKPOINT:
                    tag += f"_ft{a.finetune_epochs:g}"
                    src = ["--checkpoint", str(base.out / "last.pt")]
                    s = ["--epochs", f"{a.finetune_epochs:g}", "--lr", f"{a.finetune_lr:g}", *wd]
                    deps = [base]
                else:
                    src, s, deps = ["--model", m], sched, []
                out = runs / (tag + sfx)
                name = FROM_CHECKPOINT.get(method, method)
                argv = ["prune", *src, "--budget", f"flops={b:g}", "--method", name, *s, *sd,
                        *common, "--out", str(out)]  # fmt: skip
                jobs.append(Job(m, method, b, out, argv, deps, seed=seed))
    keep = set(a.methods) | ({"unpruned"} if set(a.methods) & set(FROM_CHECKPOINT) else set())
    return sorted((j for j in jobs if j.method in keep), key=_run_order)


def _run_order(j: Job) -> tuple:
    """Unpruned runs first, then the fine-tunes that need their checkpoints, then the
    rest one budget at a time with every seed, so that a stopped table leaves whole cells (both
    seeds of a budget) rather than one seed of everything. The order changes no folder or command.
    """
    stage = 0 if j.method == "unpruned" else 1 if j.method in FROM_CHECKPOINT else 2
    return stage, -j.budget, j.seed, METHODS.index(j.method)


def _interruptible() -> None:
    # a window ends its runs with SIGINT; a job started in the background (`nohup ... &` from a
    # script) inherits SIGINT ignored, and its runs would carry on to their end
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(j: Job) -> None:
    argv = list(j.argv)
    if (j.out / "last.pt").exists():
        argv.append("--resume")  # an interrupted run continues from its checkpoint
    j.out.mkdir(parents=True, exist_ok=True)
    log = open(j.out / "table.log", "a")  # noqa: SIM115 (closed with the process)
    log.write(f"\n$ dsaprune {shlex.join(argv)}\n")
    log.flush()
    j.proc = subprocess.Popen(
        [sys.executable, "-m", "dsaprune", *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=_interruptible,
    )
    j.proc.log = log  # type: ignore[attr-defined]
    j.state = "running"
    print(f"[{time.strftime('%H:%M:%S')}] start {j.out.name}", flush=True)


def _relative_log(path: Path) -> None:
    """Warnings name their source file by absolute path; a committed log names it from the
    repository root."""
    text = path.read_text()
    path.write_text(text.replace(str(ROOT) + "/", ""))


def stop_running(jobs: list[Job], grace_s: float = 120.0) -> None:
    """Interrupt every running run as Ctrl-C does (its ``last.pt`` keeps the last finished
    epoch) and wait for it; it is pending again, and the next start resumes it."""
    running = [j for j in jobs if j.state == "running"]
    for j in running:
        j.proc.send_signal(signal.SIGINT)
    for j in running:
        try:
            j.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            j.proc.kill()
            j.proc.wait()
        j.proc.log.close()
        _relative_log(j.out / "table.log")
        j.state = "pending"
        print(f"[{time.strftime('%H:%M:%S')}] stop  {j.out.name} (resumes next time)", flush=True)


def window(minutes: float | None) -> Callable[[], bool] | None:
    """A ``stop`` for :func:`run_all` that ends the window ``minutes`` from now (None: no end)."""
    if minutes is None:
        return None
    t_end = time.monotonic() + 60 * minutes
    return lambda: time.monotonic() >= t_end


POLL_S = 2.0  # how often run_all looks at its runs and at ``stop``


def run_all(
    jobs: list[Job], parallel: int, device: str = "", stop: Callable[[], bool] | None = None
) -> None:
    """Run the jobs, ``parallel`` at once, until all are done or failed, or until ``stop()``
    (polled every ``POLL_S`` seconds) says the window is over: then the running ones are
    interrupted."""
    for j in jobs:
        if j.done_file.exists():
            j.state = "done"
    while True:
        if stop is not None and stop():
            stop_running(jobs)
            return
        running = [j for j in jobs if j.state == "running"]
        for j in running:
            rc = j.proc.poll()
            if rc is None:
                continue
            j.proc.log.close()
            _relative_log(j.out / "table.log")
            if rc == 0:
                j.state = "done"
                # the device is recorded with the run, so a table written elsewhere (--no-run
                # on another machine) still names where each run was made
                j.done_file.write_text(json.dumps({"command": j.command, "device": device}))
                print(f"[{time.strftime('%H:%M:%S')}] done  {j.out.name}", flush=True)
            else:
                j.state = "failed"
                tail = (j.out / "table.log").read_text().splitlines()[-15:]
                print(f"FAILED {j.out.name} (exit {rc}):\n  " + "\n  ".join(tail), flush=True)
        for j in jobs:  # a run whose prerequisite failed cannot start
            if j.state == "pending" and any(d.state == "failed" for d in j.deps):
                j.state = "failed"
            # run folders may be kept without their checkpoints (they are not committed)
            lost = [d for d in j.deps if d.state == "done" and not (d.out / "last.pt").exists()]
            if j.state == "pending" and lost:
                j.state = "failed"
                print(f"FAILED {j.out.name}: it prunes {lost[0].out}/last.pt, which is gone; "
                      f"delete {lost[0].out} to train it again", flush=True)  # fmt: skip
        ready = [j for j in jobs if j.state == "pending" and all(d.state == "done" for d in j.deps)]
        slots = parallel - sum(j.state == "running" for j in jobs)
        for j in ready[: max(0, slots)]:
            _start(j)
        if all(j.state in ("done", "failed") for j in jobs):
            return
        time.sleep(POLL_S)


# -- results ---------------------------------------------------------------------------------------
# DSA settings added after runs were recorded, at the value those runs had in effect: a report
# without the key is compared at it, so the run is marked once the setting's default moves
BEFORE_THE_SETTING_EXISTED = {"signal_every": 1}


def _differs(j: Job, rep: dict, a: argparse.Namespace) -> dict:
    """The DSA settings in which a finished run differs from what its command gives today, as
    {setting: [the run's, today's]}: a run made before a default changed is marked, not mixed
    silently into a table of today's defaults."""
    from dataclasses import replace

    from dsaprune.cli.spec import RunSpec
    from dsaprune.methods import make_method
    from dsaprune.pruner.config import flat_settings

    method = FROM_CHECKPOINT.get(j.method, j.method)
    epochs = a.finetune_epochs if j.method in FROM_CHECKPOINT else a.epochs
    # as `dsaprune prune` builds it (from a checkpoint: no warm-up unless one is set)
    ns = argparse.Namespace(config=a.config, epochs_default=epochs)
    spec = RunSpec.from_args(ns, trained=j.method in FROM_CHECKPOINT)
    steps = round(epochs * CIFAR10_STEPS_PER_EPOCH)  # signal_every: at the run's own value
    now = flat_settings(replace(spec.dsa, method=method).for_run(epochs, steps).to_dict())
    d = {"method": method}
    ran = flat_settings(rep.get("dsa_config", {}))
    if ran:
        ran = {**BEFORE_THE_SETTING_EXISTED, **ran}
    unread = make_method(d["method"]).unread_settings()
    out = {}
    for k in sorted(set(now) & set(ran)):
        if k.split(".")[0] in unread:  # e.g. a one-shot method's run and an allocator setting
            continue
        x, y = ran[k], now[k]
        same = (
            abs(x - y) <= 1e-9 * max(1.0, abs(y))
            if isinstance(x, int | float) and isinstance(y, int | float)
            else x == y
        )
        if not same:
            out[k] = [x, y]
    return out


def _label(r: dict) -> str:
    """A row's method, marked ‡ when its run differs from today's defaults."""
    return r["method"] + (" ‡" if r.get("differs_from_defaults") else "")


def _history(j: Job) -> tuple[list[dict], dict | None]:
    rep = j.out / "report.json"
    if rep.exists():
        r = json.loads(rep.read_text())
        return r["history"], r
    lines = (j.out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()], None


def _device(a: argparse.Namespace) -> str:
    import torch

    if a.device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({a.parallel} runs at once)"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads per run)"


def rows(jobs: list[Job], a: argparse.Namespace) -> list[dict]:
    device = _device(a)
    runs = {id(j): _history(j) for j in jobs if j.state == "done"}  # (history, report)
    hours = {k: sum(h["epoch_time_s"] for h in hist) / 3600 for k, (hist, _) in runs.items()}
    acc = {k: rep["acc_after"] if rep else hist[-1]["test_acc"] for k, (hist, rep) in runs.items()}
    out = []
    for j in jobs:
        if j.state != "done":
            continue
        hist, rep = runs[id(j)]
        base = next(
            (b for b in jobs if (b.model, b.seed, b.method) == (j.model, j.seed, "unpruned")), None
        )
        base_acc = acc.get(id(base)) if base else None
        pipeline_h = hours[id(j)] + sum(hours.get(id(d), 0.0) for d in j.deps)
        epochs = hist[-1]["epoch"] + sum(runs[id(d)][0][-1]["epoch"] for d in j.deps)
        done = json.loads(j.done_file.read_text()) if j.done_file.exists() else {}
        made_on = done.get("device") or device
        row = {
            "model": j.model,
            "method": j.method,
            "budget": j.budget,
            "seed": j.seed,
            "flops_ratio": rep["flops_ratio"] if rep else 1.0,
            "acc": 100 * acc[id(j)],
            "baseline_acc": None if base_acc is None else 100 * base_acc,
            "drop": None if base_acc is None else 100 * (acc[id(j)] - base_acc),
            "epochs": epochs,
            "device": made_on,
            "gpu_hours": pipeline_h,
            "command": " && ".join([d.command for d in j.deps] + [j.command]),
        }
        if rep:
            row["met_by"] = rep.get("met_by")
            row["keep_ratios"] = [g["keep_ratio"] for g in rep["groups"]]
            differs = _differs(j, rep, a)
            if differs:
                row["differs_from_defaults"] = differs
        out.append(row)
    # shown per model and budget, whatever order the runs finished in
    return sorted(
        out, key=lambda r: (r["model"], -r["budget"], METHODS.index(r["method"]), r["seed"])
    )


def markdown(
    rs: list[dict], a: argparse.Namespace, argv: list[str], missing: list[str] = ()
) -> str:
    def key(r: dict) -> tuple:
        return r["model"], r["budget"], r.get("seed", 0)

    dsa_h = {key(r): r["gpu_hours"] for r in rs if r["method"] == "dsa"}
    seeded = len({r.get("seed", 0) for r in rs}) > 1
    lines = [
        "# CIFAR-10: DSA and the baselines on one schedule",
        "",
        f"Made by `python bench/cifar10_table.py {shlex.join(argv)}` on {rs[0]['device']}"
        if rs
        else "",
        "",
        f"Schedule: {a.epochs:g} epochs, batch 128, SGD lr {a.lr:g} "
        f"({'config ' + a.config if a.config else 'cosine'}), weight decay {a.wd:g}; "
        f"magnitude prunes the unpruned run and fine-tunes {a.finetune_epochs:g} epochs at lr "
        f"{a.finetune_lr:g}"
        + ("; dsa_ckpt allocates with DSA on that same pipeline" if "dsa_ckpt" in a.methods else "")
        + ". Accuracy is "
        "top-1 on the 10,000 test images; drop is against the unpruned run on the same "
        "schedule. Hours: summed training-epoch time of the method's "
        "whole pipeline; ÷DSA: that time over DSA's at the same budget.",
        "",
        "Paper (../shared/docs/dsa-method.md §7, 300 epochs): FLOPs %, accuracy, drop "
        "(their baselines: ResNet-20 92.17%, ResNet-56 93.12%; † over budget).",
        "",
    ]
    if missing:  # a partial table says what it lacks, so no cell is read as complete
        lines += [f"**Not run yet** ({len(missing)}): " + ", ".join(missing), ""]
    stale = sorted(
        {
            f"{k} {ran:.4g} (now {now:.4g})"
            if isinstance(ran, float) and isinstance(now, float)
            else f"{k} {ran} (now {now})"
            for r in rs
            for k, (ran, now) in r.get("differs_from_defaults", {}).items()
        }
    )
    if stale:
        lines += [
            "‡ Made before a default changed; these runs differ from what their command gives "
            "today in: " + "; ".join(stale) + ".",
            "",
        ]
    if seeded:
        lines += _seed_means(rs) + _paired(rs)
    lines += [
        "| model | budget | method | seed | FLOPs ratio | acc % | drop | hours | ÷DSA | met by "
        "| paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        paper = PAPER.get((r["model"], round(r["budget"], 3)), {}).get(r["method"], "")
        if r["method"] == "unpruned":
            paper = f"{PAPER_BASE.get(r['model'], '')}"
        d = dsa_h.get(key(r))
        ratio = f"{r['gpu_hours'] / d:.2f}" if d and r["method"] != "unpruned" else ""
        drop = "" if r["drop"] is None or r["method"] == "unpruned" else f"{r['drop']:+.2f}"
        budget = "–" if r["method"] == "unpruned" else f"{100 * r['budget']:.1f}%"
        lines.append(
            f"| {r['model']} | {budget} | {_label(r)} | {r.get('seed', 0)} | "
            f"{r['flops_ratio']:.4f} | "
            f"{r['acc']:.2f} | {drop} | {r['gpu_hours']:.3g} | {ratio} | "
            f"{r.get('met_by') or ''} | {paper} |"
        )
    return "\n".join(lines) + "\n"


def _seed_means(rs: list[dict]) -> list[str]:
    """Mean and spread over seeds per (model, budget, method): the table a claim rests on."""
    cells: dict[tuple, list[float]] = {}
    for r in rs:
        cells.setdefault((r["model"], r["budget"], _label(r)), []).append(r["acc"])
    out = [
        "Mean over seeds (spread: lowest – highest seed):",
        "",
        "| model | budget | method | seeds | mean acc % | spread |",
        "|---|---|---|---|---|---|",
    ]
    for (m, b, method), accs in cells.items():
        budget = "–" if method == "unpruned" else f"{100 * b:.1f}%"
        out.append(
            f"| {m} | {budget} | {method} | {len(accs)} | {sum(accs) / len(accs):.2f} | "
            f"{min(accs):.2f} – {max(accs):.2f} |"
        )
    return out + [""]


def _paired(rs: list[dict]) -> list[str]:
    """DSA against each other method, paired by seed (both runs of a seed share its
    initialisation and batch order): the mean difference, its standard error over the seeds,
    and in how many seeds DSA was higher. A difference within about two standard errors is not
    settled by these seeds."""
    acc = {(r["model"], r["budget"], r["method"], r.get("seed", 0)): r["acc"] for r in rs}
    out = [
        "DSA minus each method, paired by seed (SE: standard error of the mean difference):",
        "",
        "| model | budget | against | seeds | DSA − method | SE | DSA higher in |",
        "|---|---|---|---|---|---|---|",
    ]
    cells = sorted({(m, b, x) for m, b, x, _ in acc if x not in ("dsa", "unpruned")},
                   key=lambda c: (c[0], -c[1], METHODS.index(c[2])))  # fmt: skip
    for m, b, method in cells:
        dsa, other = ({s: v for (mm, bb, x, s), v in acc.items() if (mm, bb, x) == (m, b, y)}
                      for y in ("dsa", method))  # fmt: skip
        d = paired(dsa, other)
        if d is None or d["n"] < 2:
            continue
        out.append(
            f"| {m} | {100 * b:.1f}% | {method} | {d['n']} | {d['mean']:+.2f} | {d['se']:.2f} | "
            f"{d['higher']} of {d['n']} |"
        )
    return out + ["", "Every run:", ""]


def plot(rs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rs})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for method in METHODS:
            by_budget: dict[float, list[dict]] = {}
            for r in rs:
                if r["model"] == m and r["method"] == method:
                    by_budget.setdefault(r["budget"], []).append(r)
            pts = sorted(  # the mean over seeds
                (sum(r["flops_ratio"] for r in g) / len(g), sum(r["acc"] for r in g) / len(g))
                for g in by_budget.values()
            )
            if not pts:
                continue
            if method == "unpruned":
                ax.axhline(pts[0][1], color="grey", ls="--", label="unpruned")
                continue
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set_xlabel("FLOPs ratio of the pruned network")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"CIFAR-10 {m}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=comma_list(), default=["resnet20", "resnet56"])
    p.add_argument("--budgets", type=comma_list(float),
                   default=[0.75, 0.5, 0.333])  # fmt: skip
    p.add_argument("--methods", type=comma_list(), default=METHODS)
    p.add_argument(
        "--seeds",
        type=comma_list(int),
        default=[0],
        help="one run of every method per seed; magnitude and dsa_ckpt prune their seed's "
        "unpruned run [0]",
    )
    p.add_argument("--epochs", type=float, default=300.0, help="the shared schedule [300]")
    p.add_argument("--lr", type=float, help="peak learning rate [the config's, else 0.1]")
    p.add_argument("--wd", type=float, help="weight decay [the config's, else 5e-4]")
    p.add_argument("--config", help="YAML of training settings passed to every run")
    p.add_argument(
        "--finetune-epochs", type=float, help="magnitude's and dsa_ckpt's fine-tuning [epochs / 2]"
    )
    p.add_argument(
        "--finetune-lr", type=float, help="magnitude's and dsa_ckpt's fine-tuning lr [lr / 10]"
    )
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--device", default="auto")
    p.add_argument("--parallel", type=int, default=1, help="runs at once [1]")
    p.add_argument(
        "--minutes",
        type=float,
        help="end the window after this long: running runs are interrupted at their last "
        "finished epoch, the table is written from the finished ones, and the next call resumes",
    )
    p.add_argument("--runs", default="runs/table", help="run folders [runs/table]")
    p.add_argument("--results", default="bench/results", help="where tables and plots go")
    p.add_argument(
        "--no-run",
        action="store_true",
        help="start nothing: write the table from the runs that have finished and list the rest",
    )
    a = p.parse_args(argv)
    unknown = set(a.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    a.lr_given, a.wd_given = a.lr is not None, a.wd is not None
    cfg = {}
    if a.config:
        import yaml

        cfg = yaml.safe_load(Path(a.config).read_text()) or {}
        cfg = cfg.get("train", cfg)
    a.lr = a.lr if a.lr_given else float(cfg.get("lr", 0.1))
    a.wd = a.wd if a.wd_given else float(cfg.get("weight_decay", 5e-4))
    if not a.config:  # the defaults are passed explicitly, so every row's command is complete
        a.lr_given = a.wd_given = True
    a.finetune_epochs = a.finetune_epochs or a.epochs / 2
    a.finetune_lr = a.finetune_lr or a.lr / 10
    jobs = plan(a)
    if a.no_run:
        for j in jobs:
            j.state = "done" if j.done_file.exists() else "not run"
    else:
        run_all(jobs, a.parallel, _device(a), window(a.minutes))
        for j in jobs:
            if j.state == "pending":
                j.state = "not run"
    argv = recorded(argv)
    sys.path.insert(0, str(ROOT / "src"))
    rs = rows(jobs, a)
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    from dsaprune.io import atomic_write_json, atomic_write_text

    atomic_write_json(rs, res / "cifar10.json")
    missing = [j.out.name for j in jobs if j.state == "not run"]
    atomic_write_text(markdown(rs, a, argv, missing), res / "cifar10.md")
    if rs:
        plot(rs, res / "accuracy_vs_flops.png")
    for j in jobs:
        if j.method == "dsa" and j.state == "done" and (j.out / "allocation.png").exists():
            shutil.copyfile(j.out / "allocation.png", res / f"cifar10_{j.out.name}_allocation.png")
    stale = [r for r in rs if r.get("differs_from_defaults")]
    if stale:
        print(
            f"{len(stale)} finished runs differ from what their command gives today (‡ in the "
            "table); delete a run's folder to run it again with today's defaults"
        )
    return exit_code(jobs)


# Options of one invocation, not of the table: the table names the command that makes it, not
# whether this call ran anything or how long its window was. Each maps to how many values it takes.
NOT_RECORDED = {"--no-run": 0, "--minutes": 1}


def recorded(argv: list[str], options: dict[str, int] = NOT_RECORDED) -> list[str]:
    """``argv`` without ``options`` (name -> how many values follow it; ``--opt V`` or
    ``--opt=V``): the command a table records."""
    out, skip = [], 0
    for x in argv:
        if skip:
            skip -= 1
        elif x in options:
            skip = options[x]
        elif x.split("=", 1)[0] not in options:
            out.append(x)
    return out


def exit_code(jobs: list[Job]) -> int:
    """1, naming them, if any run failed; else 0."""
    failed = [j.out.name for j in jobs if j.state == "failed"]
    if failed:
        print(f"failed runs: {failed} (logs: <run>/table.log)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
