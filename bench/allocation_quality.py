"""Is this allocation better? Every method's keep ratios applied to one trained network, side by
side, in minutes on a CPU.

For a reference network (a ``dsaprune.save`` file or a training checkpoint) and each FLOPs
budget, every method decides the keep ratios:

- ``uniform``: one keep ratio for every group, solved for the budget;
- ``magnitude``: one global threshold on relative filter L1 norms (channels chosen by L1);
- ``dsa`` (``dsa_ste``: with the paper's straight-through estimator): a DSA allocation run from
  the reference weights (``--alloc-epochs`` on the 90% training split, the allocation window the
  whole run, lr ``--alloc-lr``), once per seed; only its keep ratios are taken;
- ``group_fisher``: one-shot Group Fisher on the reference weights;
  ``group_fisher_iterative``: its rounds over the same allocation run as DSA's (on the whole
  training set, as the method trains), only its keep ratios taken;
- ``random``: ``--random`` allocations, each group's keep ratio drawn uniformly in [0.05, 1],
  then all logits shifted together to the budget;
- ``run_<method>`` (e.g. ``run_dsa``): the channel counts a finished run of that method ended
  with (its ``report.json`` in ``--from-runs``, in the folder ``bench/cifar10_table.py`` names
  for that method, budget and seed). This separates a method's allocation from its training
  schedule: the table compares whole pipelines, these rows compare what each pipeline
  allocated, on the same weights.

Every allocation is rounded to whole channels the same way (cost ≤ budget), applied to the
*reference* weights (each group keeps its most important channels in the library's order for the
method: the coupled Fisher cost on 20 training batches for DSA, uniform and random, as
``importance: fisher``; its own Fisher costs for group_fisher; L1 for magnitude), physically
pruned, and measured on the 10,000 test images twice: after
re-estimating BN statistics on 20 training batches with no weight update, and after one fixed
fine-tune (``--finetune-steps`` SGD steps at lr ``--finetune-lr``, the same batches for every
method of a seed). Writes ``bench/results/allocation_quality_<name>.json``, regenerates
``allocation_quality.{json,md}`` from every network's file, and plots each method beside the
spread of the random allocations. ``--device cuda`` runs the allocation runs and fine-tunes on a
GPU, where several processes may add rows to one file at once (``bench/gpu_allocation_quality.sh``
runs a job list so); ``--per-image`` gives older rows the per-image results they lack.

    python bench/allocation_quality.py --checkpoint bench/reference/cifar10_resnet20.pt \\
        --name resnet20
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from common import (
    RESULTS,
    budget_tag,
    commit,
    half_noise,
    pack_correct,
    paired,
    paired_images,
    test_halves,
)
from torch import nn

import dsaprune
from dsaprune.allocation import magnitude_keep_ratios, round_channels, shift_to_budget
from dsaprune.cli.prune import load_model_file
from dsaprune.cost import count_flops, flops_model
from dsaprune.data import load_splits, make_loader, split_train_val
from dsaprune.estimators import channel_fisher
from dsaprune.grouping import channel_importance, find_groups
from dsaprune.io import atomic_write_bytes, atomic_write_json
from dsaprune.methods import Decision, make_method
from dsaprune.surgery import prune_groups, top_channels
from dsaprune.train import evaluate, recalibrate_bn

SPLITS = ("dev", "final")
# the methods with a long fine-tune
NAMED = ("dsa", "group_fisher", "group_fisher_iterative", "magnitude", "uniform")


class Bench:
    def __init__(self, model: nn.Module, a: argparse.Namespace) -> None:
        self.a, self.ref = a, model.to(a.device).eval()
        self.splits = load_splits("cifar10", a.data)
        self.train90, self.val10 = split_train_val(self.splits.train)
        dev, final = test_halves(self.splits.test.labels)
        half = {"dev": dev, "final": final}[a.split]
        self.test = make_loader(
            self.splits.test.subset(half, f"[{a.split}]"),
            self.splits,
            500,
            train=False,
            device=a.device,
        )
        self.fisher_imp: dict[tuple[float, int], list[torch.Tensor]] = {}
        self.orders: dict[int, list[torch.Tensor]] = {}
        self.example = next(iter(self.test))[0][:1]
        self.groups = find_groups(copy.deepcopy(model), self.example)
        self.cost = flops_model(self.groups)
        self.channels = [g.channels for g in self.groups.prunable]
        self.full_flops = count_flops(model, tuple(self.example.shape[1:]))

    # -- allocations ---------------------------------------------------------------------------
    def counts(self, alpha: torch.Tensor, budget: float) -> list[int]:
        return round_channels(alpha, self.channels, self.cost, budget, 1)

    def uniform(self, budget: float, seed: int) -> list[int]:
        theta, _ = shift_to_budget(torch.zeros(len(self.channels)), self.cost, budget)
        return self.counts(torch.sigmoid(theta), budget)

    def magnitude(self, budget: float, seed: int) -> list[int]:
        imp = channel_importance(self.groups, "l1")
        return self.counts(magnitude_keep_ratios(imp, self.cost, budget), budget)

    def random(self, budget: float, seed: int) -> list[int]:
        g = torch.Generator().manual_seed(1000 + seed)
        u = 0.05 + 0.95 * torch.rand(len(self.channels), generator=g, dtype=torch.float64)
        theta, _ = shift_to_budget(torch.logit(u), self.cost, budget)
        return self.counts(torch.sigmoid(theta), budget)

    def group_fisher(self, budget: float, seed: int) -> list[int]:
        """The library's ``group_fisher`` method on training batches of this seed; its channels
        are then chosen by its Fisher costs (``measure``)."""
        train = make_loader(
            self.splits.train, self.splits, 128, train=True, device=self.a.device, seed=seed
        )
        m = copy.deepcopy(self.ref)
        G = find_groups(m, self.example)
        decision = Decision(G, self.cost, budget, "bn_first", model=m, batches=train,
                            loss_fn=nn.CrossEntropyLoss())  # fmt: skip
        alpha, self.fisher_imp[(budget, seed)] = make_method("group_fisher").keep_ratios(decision)
        return self.counts(alpha, budget)

    def fisher_order(self, seed: int) -> list[torch.Tensor]:
        """The channels' coupled Fisher costs on the reference weights, on 20 training batches
        of this seed: the order DSA keeps channels in by default (``importance: fisher``)."""
        if seed not in self.orders:
            train = make_loader(
                self.splits.train, self.splits, 128, train=True, device=self.a.device, seed=seed
            )
            m = copy.deepcopy(self.ref)
            G = find_groups(m, self.example)
            self.orders[seed] = channel_fisher(m, G, train, nn.CrossEntropyLoss(), 20)
        return self.orders[seed]

    def dsa(self, budget: float, seed: int, estimator: str = "fisher") -> list[int]:
        settings = dict(self.a.dsa_settings)
        estimator = settings.pop("estimator", estimator)  # --dsa-set estimator=NAME
        return self.allocation_run(budget, seed, estimator=estimator, **settings)

    def group_fisher_iterative(self, budget: float, seed: int) -> list[int]:
        return self.allocation_run(budget, seed, method="group_fisher_iterative")

    def allocation_run(self, budget: float, seed: int, **settings) -> list[int]:
        """The channel counts a run of the library from the reference weights ends with: the
        allocation window the whole run, the budget met 90% of the way through it."""
        a = self.a
        kw = dict(device=a.device, seed=seed)
        bs = 128
        run = dict(
            budget=f"flops={budget}",
            epochs=a.alloc_epochs,
            lr=a.alloc_lr,
            warmup_epochs=0,
            weight_decay=5e-4,
            seed=seed,
            warmup_fraction=0.0,
            window_end_fraction=1.0,
            target_fraction=0.9,
            progress=False,
            device=a.device,
            report_latency=False,  # only the keep ratios are taken
        )
        res = dsaprune.prune(
            copy.deepcopy(self.ref),
            make_loader(self.train90, self.splits, bs, train=True, **kw),
            make_loader(self.val10, self.splits, bs, train=True, **kw),
            full_train_data=make_loader(self.splits.train, self.splits, bs, train=True, **kw),
            **(run | settings),  # a variant may set any of them, the run's length too
        )
        return [int(g["channels_after"]) for g in res.report["groups"]]

    def dsa_ste(self, budget: float, seed: int) -> list[int]:
        return self.dsa(budget, seed, "ste")

    def from_run(self, method: str, budget: float, seed: int) -> list[int]:
        """The channel counts of the table run of ``method`` at this budget and seed."""
        sfx = f"_s{seed}" if seed else ""
        tag = budget_tag(budget)
        name = re.compile(rf"{re.escape(self.a.name)}_{method}_f{tag}_e[0-9.]+(_ft[0-9.]+)?{sfx}")
        runs = Path(self.a.from_runs)
        found = sorted(p for p in runs.glob("*") if name.fullmatch(p.name))
        if len(found) != 1 or not (found[0] / "report.json").exists():
            raise SystemExit(
                f"run_{method}: expected one finished run folder matching {name.pattern} with a "
                f"report.json in {runs}, found {[p.name for p in found]}"
            )
        counts = [
            g["channels_after"]
            for g in json.loads((found[0] / "report.json").read_text())["groups"]
        ]
        if len(counts) != len(self.channels):
            raise SystemExit(
                f"{found[0]} has {len(counts)} groups, the reference network {len(self.channels)}: "
                "not the same architecture"
            )
        return counts

    # -- measurement ---------------------------------------------------------------------------
    def channel_source(self, method: str, budget: float, seed: int, ft_seed: int):
        """Which channels each group keeps, for ``measure``: an importance source, or the
        per-group importances of the method's own measurement."""
        if method in ("magnitude", "run_magnitude"):
            return "l1"
        if method == "group_fisher":
            return self.fisher_imp[(budget, seed)]
        if method in ("dsa", "dsa_ste") and "importance" in self.a.dsa_settings:
            return self.a.dsa_settings["importance"]  # a variant's own order
        if method in ("dsa", "dsa_ste", "uniform", "random", "group_fisher_iterative"):
            # the library's channel order for these (importance: fisher), measured on the
            # reference weights with the training batches of the fine-tune's seed
            return self.fisher_order(ft_seed)
        return "bn_first"

    def measure(self, counts: list[int], seed: int, channels_by, long_ft: bool) -> dict:
        """Prune the reference to ``counts`` (channels by ``channels_by``: an importance source
        or per-group importances), then test accuracy after BN re-estimation (20 batches), after
        ``--finetune-steps`` SGD steps and, with ``long_ft``, after ``--long-finetune-epochs``
        epochs of the same SGD in all (the same batches for every method of a seed)."""
        a = self.a
        m = copy.deepcopy(self.ref)
        G = find_groups(m, self.example)
        imp = channels_by if isinstance(channels_by, list) else channel_importance(G, channels_by)
        keep = [
            top_channels(i.cpu(), n, g.unit)
            for i, n, g in zip(imp, counts, G.prunable, strict=True)
        ]
        prune_groups(G, keep)
        flops = count_flops(m, tuple(self.example.shape[1:])) / self.full_flops
        kw = dict(device=a.device, seed=seed)
        train = make_loader(self.splits.train, self.splits, 128, train=True, **kw)
        recalibrate_bn(m, train, 20)
        out = {"flops_ratio": flops}
        self.score(m, out, ["acc_bn"])
        opt = torch.optim.SGD(
            m.parameters(), lr=a.finetune_lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        m.train()
        torch.manual_seed(seed)
        stops = {a.finetune_steps: ["acc_ft"]}
        if long_ft and a.long_finetune_epochs > 0:
            at = max(a.finetune_steps, round(a.long_finetune_epochs * len(train)))
            stops.setdefault(at, []).append("acc_ft2")
        step, epoch = 0, 0
        while step < max(stops):
            train.set_epoch(epoch)
            for x, y in train:
                loss = nn.functional.cross_entropy(m(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if step in stops:
                    self.score(m, out, stops[step])
                if step >= max(stops):
                    break
            epoch += 1
        return out

    def score(self, m: nn.Module, out: dict, columns: list[str]) -> None:
        """Each column's accuracy on the test half, and which images were right
        (``correct_<column>``, for the test images' share of a difference)."""
        ev = evaluate(m, self.test, per_sample=True)
        packed = pack_correct(ev["correct"])
        for col in columns:
            out[col] = ev["acc"]
            out[col.replace("acc_", "correct_", 1)] = packed


def percentile_rank(v: float, population: list[float]) -> float:
    """Share of the population strictly below ``v`` (ties count half)."""
    if not population:
        return float("nan")
    below = sum(p < v for p in population) + 0.5 * sum(p == v for p in population)
    return below / len(population)


def run(a: argparse.Namespace) -> dict:
    model, model_name = load_model_file(a.checkpoint)
    bench = Bench(model, a)
    ref_acc = evaluate(model, bench.test)["acc"]
    print(
        f"{a.name}: reference accuracy {ref_acc:.4f} on the {a.split} half, "
        f"{len(bench.channels)} groups",
        flush=True,
    )
    out_path = RESULTS / f"allocation_quality_{a.name}_{a.split}.json"
    with results_lock():  # the file's header and the rows it keeps
        out = json.loads(out_path.read_text()) if out_path.exists() and a.resume else {}
        kept = out.get("settings", {})
        if a.per_image and any(
            kept.get(k, getattr(a, k)) != getattr(a, k)
            for k in ("finetune_steps", "finetune_lr", "long_finetune_epochs")
        ):
            raise SystemExit(
                f"--per-image measures the rows again with their file's fine-tune settings "
                f"({kept}); pass the same --finetune-steps, --finetune-lr, --long-finetune-epochs"
            )
        # a run without the FT2 column leaves the length the file's FT2 rows were made with
        ft2 = a.long_finetune_epochs or kept.get("long_finetune_epochs", 0.0)
        out.update(
            {
                "name": a.name,
                "split": a.split,
                "model": model_name,
                "reference": Path(a.checkpoint).as_posix(),
                "reference_acc": ref_acc,
                "channels": bench.channels,
                "settings": {
                    k: getattr(a, k)
                    for k in (
                        "alloc_epochs",
                        "alloc_lr",
                        "finetune_steps",
                        "finetune_lr",
                        "random",
                    )
                }
                | {"long_finetune_epochs": ft2, "device": device_name(a.device)},
            }
        )
        command = "python bench/allocation_quality.py " + " ".join(a.argv)
        from_runs = any(m.startswith("run_") for m in a.methods.split(","))
        if not a.label and not from_runs:  # a variant's command is kept with its rows
            out["command"] = command
        rows = out.setdefault("rows", [])
        if a.long_finetune_epochs > 0:  # a named method's row without its 2-epoch column is redone
            redo = set(a.long_methods) & set(a.methods.split(","))
            rows[:] = [r for r in rows if "acc_ft2" in r or r["method"] not in redo]
        atomic_write_json(out, out_path)
    done = {row_key(r): r for r in rows}
    made_at = commit()  # the code this process runs
    label = {"dsa": a.label} if a.label else {}
    seeds = [int(s) for s in a.seeds.split(",")]
    plan = []
    for b in [float(v) for v in a.budgets.split(",")]:
        for method in a.methods.split(","):
            if method == "random":
                plan += [(method, b, s) for s in range(a.random)]
            else:
                plan += [(method, b, s) for s in seeds]
    for method, b, seed in plan:
        if (row := done.get((label.get(method, method), b, seed))) is not None:
            redo = a.per_image and "correct_bn" not in row and method in NAMED
            if redo and (again := with_per_image(bench, row, method, made_at)) is not None:
                add_row(out, out_path, again)
            continue
        t0 = time.perf_counter()
        if method.startswith("run_"):
            counts = bench.from_run(method.removeprefix("run_"), b, seed)
        else:
            counts = getattr(bench, method)(b, seed)
        t1 = time.perf_counter()
        # a random allocation's seed draws it; its fine-tunes cycle through the methods' seeds
        ft_seed = seeds[seed % len(seeds)] if method == "random" else seed
        channels_by = bench.channel_source(method, b, seed, ft_seed)
        r = bench.measure(counts, ft_seed, channels_by, long_ft=method in a.long_methods)
        if method in label:
            r.update(dsa_settings=a.dsa_settings, command=command)
        if method.startswith("run_"):
            r.update(from_runs=Path(a.from_runs).as_posix(), command=command)
        r.update(
            method=label.get(method, method),
            budget=b,
            seed=seed,
            finetune_seed=ft_seed,
            commit=made_at,
            keep_ratios=[n / c for n, c in zip(counts, bench.channels, strict=True)],
            alloc_time_s=t1 - t0,
            measure_time_s=time.perf_counter() - t1,
        )
        add_row(out, out_path, r)  # after every row: an interrupted run resumes
        ft2 = f" 2-epoch {r['acc_ft2']:.4f}" if "acc_ft2" in r else ""
        print(
            f"{r['method']:12s} flops={b:<5g} seed {seed:2d}: ratio {r['flops_ratio']:.4f} "
            f"BN-only {r['acc_bn']:.4f} fine-tuned {r['acc_ft']:.4f}{ft2} "
            f"({r['alloc_time_s']:.0f}+{r['measure_time_s']:.0f} s)",
            flush=True,
        )
    with results_lock():
        out["rows"] = json.loads(out_path.read_text())["rows"]
        summarise(out)
        atomic_write_json(out, out_path)
    return out


def with_per_image(bench: Bench, row: dict, method: str, made_at: str) -> dict | None:
    """An older row with its per-image results: its allocation (the row's keep ratios, its
    fine-tune seed, the channel order of ``method``, which made the row under its own name or a
    label) measured again must score exactly the row's accuracy in every column; else None, and
    the row stays as it is."""
    b, seed, ft_seed = row["budget"], row["seed"], row["finetune_seed"]
    counts = [round(k * c) for k, c in zip(row["keep_ratios"], bench.channels, strict=True)]
    if method == "group_fisher" and bench.group_fisher(b, seed) != counts:
        print(f"group_fisher {b} seed {seed}: its allocation made again differs; row left")
        return None
    r = bench.measure(counts, ft_seed, bench.channel_source(method, b, seed, ft_seed),
                      long_ft="acc_ft2" in row)  # fmt: skip
    cols = [c for c, _ in COLUMNS if c in row]
    if any(r.get(c) != row[c] for c in cols):
        again = ", ".join(f"{c} {r.get(c)} (row {row[c]})" for c in cols)
        print(
            f"{method} {b} seed {seed}: measured again at {made_at} it scores {again}; the row "
            f"(made at {row['commit']}) is left as it is",
            flush=True,
        )
        return None
    extra = {c.replace("acc_", "correct_", 1): r[c.replace("acc_", "correct_", 1)] for c in cols}
    print(f"{method:12s} flops={b:<5g} seed {seed:2d}: per-image results added", flush=True)
    return row | extra | {"per_image_at": made_at}


@contextlib.contextmanager
def results_lock() -> Iterator[None]:
    """Held while a process reads and writes the result files: several processes may share one
    network's file (rows side by side on a GPU), each adding its own rows."""
    fd = os.open(RESULTS, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def row_key(r: dict) -> tuple:
    return r["method"], r["budget"], r["seed"]


def add_row(out: dict, out_path: Path, row: dict) -> None:
    """Writes ``out`` with the file's rows as they are now (other processes' too) and ``row``."""
    with results_lock():
        rows = json.loads(out_path.read_text())["rows"] if out_path.exists() else []
        out["rows"] = [r for r in rows if row_key(r) != row_key(row)] + [row]
        atomic_write_json(out, out_path)


def device_name(device: str) -> str:
    """What the rows were measured on: ``cpu``, or the accelerator's own name."""
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


COLUMNS = (("acc_bn", "BN"), ("acc_ft", "FT"), ("acc_ft2", "FT2"))


def with_images(d: dict | None, rows: list[dict], method: str, col: str) -> dict | None:
    """``d`` (DSA − ``method`` in ``col``, paired by seed) with the test images' share added
    where every paired row has its per-image results: ``image_se`` (``common.half_noise``) and
    ``se_both``, the two standard errors added in variance."""
    diff = paired_images(rows, "dsa", method, col.replace("acc_", "correct_", 1))
    if not d or diff is None:
        return d
    noise = half_noise(diff)  # its seed SE is ``d``'s: the per-image means are the accuracies
    return {**d, "image_se": noise["image_se"], "se_both": noise["se"]}


def summarise(out: dict) -> None:
    """Per budget and method: mean accuracies over seeds, rank among the random allocations,
    and DSA minus each method paired by seed (mean ± standard error)."""
    summary = {}
    for b in sorted({r["budget"] for r in out["rows"]}, reverse=True):
        rows = [r for r in out["rows"] if r["budget"] == b]
        rand = [r for r in rows if r["method"] == "random"]
        s = {"random_ft": sorted(r["acc_ft"] for r in rand)}
        s["random_bn"] = sorted(r["acc_bn"] for r in rand)
        if rand:
            s["random_ft_p90"] = float(torch.tensor(s["random_ft"]).quantile(0.9))
            s["random_bn_p90"] = float(torch.tensor(s["random_bn"]).quantile(0.9))
        per_seed = {}
        for m in sorted({r["method"] for r in rows} - {"random"}):
            mr = [r for r in rows if r["method"] == m]
            v = {"keep_ratios": mr[0]["keep_ratios"], "seeds": [r["seed"] for r in mr]}
            per_seed[m] = {}
            for col, _ in COLUMNS:
                vals = {r["seed"]: r[col] for r in mr if col in r}
                if vals:
                    per_seed[m][col] = vals
                    v[f"{col}_mean"] = sum(vals.values()) / len(vals)
                    v[col] = list(vals.values())
            v["rank_ft"] = percentile_rank(v["acc_ft_mean"], s["random_ft"])
            v["rank_bn"] = percentile_rank(v["acc_bn_mean"], s["random_bn"])
            s[m] = v
        if "dsa" in per_seed:  # DSA minus each other method, paired by seed
            s["dsa_minus"] = {
                m: {
                    col: with_images(paired(per_seed["dsa"][col], per_seed[m][col]), rows, m, col)
                    for col, _ in COLUMNS
                    if col in per_seed["dsa"] and col in per_seed[m]
                }
                for m in per_seed
                if m != "dsa"
            }
        summary[str(b)] = s
    out["summary"] = summary


def _pct(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v * 100:.2f}"


def _diff(d: dict | None) -> str:
    if not d:
        return "–"
    se = "" if d["se"] != d["se"] else f" ± {d['se'] * 100:.2f}"
    if "se_both" in d and d["se_both"] == d["se_both"]:
        se += f" / {d['se_both'] * 100:.2f}"
    return f"{d['mean'] * 100:+.2f}{se} ({d['higher']}/{d['n']})"


def write_tables(results: Path = RESULTS) -> None:
    """allocation_quality.{json,md} and .png from every network's dev and final files."""
    nets = [
        json.loads(p.read_text())
        for split in SPLITS
        for p in sorted(results.glob(f"allocation_quality_*_{split}.json"))
        if "scratch" not in p.name  # a scratch run's rows are not published
    ]
    nets = [n for n in nets if n.get("rows")]
    for n in nets:  # from the rows as they are now (an interrupted run wrote no summary)
        summarise(n)
    if not nets:
        return
    atomic_write_json(
        {f"{n['name']}_{n['split']}": n for n in nets}, results / "allocation_quality.json"
    )
    lines = [
        "# Allocation quality: every method's keep ratios on one trained network",
        "",
        "Made by `bench/allocation_quality.py` (commands below) from the rows in "
        "`allocation_quality_<network>_<split>.json`. Accuracy on one half of the 10,000 "
        "CIFAR-10 test images (`dev`: settings are chosen on it; `final`: one number per frozen "
        "configuration; the halves are fixed and class-balanced, `bench/common.py`), after "
        "pruning the reference weights to each allocation: *BN* = BN statistics re-estimated, "
        "no weight update; *FT* = after the same short fine-tune; *FT2* = after a fine-tune of "
        "that many epochs (named methods only). Mean over seeds; *rank* = share of the random "
        "allocations below it; *DSA −* = DSA minus the method, paired by seed, ± standard "
        "error over seeds [/ with the test images' own noise added, where the rows carry "
        "per-image results: the half's images resampled, as in the end-to-end table], "
        "(seeds where DSA is higher / seeds).",
        "",
    ]
    for n in nets:
        st = n["settings"]
        commits = sorted({r.get("commit", "?") for r in n["rows"]})
        lines += [
            f"## {n['name']}, {n['split']} half (reference {n['reference_acc'] * 100:.2f}%)",
            "",
            f"`{n.get('command', '')}`",
            "",
            f"Fine-tune: {st['finetune_steps']} SGD steps at lr {st['finetune_lr']}, batch 128; "
            f"FT2: {st.get('long_finetune_epochs', 0)} epochs of the same SGD. DSA allocation "
            f"run: {st['alloc_epochs']} epoch(s) at lr {st['alloc_lr']}. {st['random']} random "
            "allocations per budget, fine-tuned under the methods' seeds in turn"
            + (
                " (done so far: "
                + ", ".join(str(len(v["random_ft"])) for v in n["summary"].values())
                + ")."
                if any(len(v["random_ft"]) < st["random"] for v in n["summary"].values())
                else "."
            )
            + f" Commits: {', '.join(f'`{c}`' for c in commits)}."
            + (f" Measured on {st['device']}." if st.get("device", "cpu") != "cpu" else ""),
            "",
        ]
        variants = {r["method"]: r for r in n["rows"] if r.get("dsa_settings")}
        for m, r in sorted(variants.items()):
            lines.append(
                f"Rows `{m}`: the DSA allocation run with {r['dsa_settings']} (`{r['command']}`)."
            )
        from_runs: dict[tuple[str, str], set[str]] = {}
        for r in n["rows"]:
            if r.get("from_runs"):
                from_runs.setdefault((r["method"], r["from_runs"]), set()).add(r["command"])
        for (m, runs), commands in sorted(from_runs.items()):
            lines.append(
                f"Rows `{m}`: the channel counts that the finished `{m.removeprefix('run_')}` "
                f"runs in `{runs}` (folders named as `bench/cifar10_table.py` names them) ended "
                "with, on these weights (" + "; ".join(f"`{c}`" for c in sorted(commands)) + ")."
            )
        if variants or from_runs:
            lines.append("")
        lines += [
            "| FLOPs | method | BN % | FT % | FT2 % | rank BN | rank FT | DSA − (BN) "
            "| DSA − (FT) | DSA − (FT2) | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b, s in n["summary"].items():
            minus = s.get("dsa_minus", {})
            for m, v in s.items():
                if not isinstance(v, dict) or m == "dsa_minus":
                    continue
                rank_bn, rank_ft = (
                    "–" if r != r else f"{r:.2f}" for r in (v["rank_bn"], v["rank_ft"])
                )  # no random allocations at this budget: no rank
                d = minus.get(m, {})
                lines.append(
                    f"| {b} | {m} | {_pct(v.get('acc_bn_mean'))} | {_pct(v.get('acc_ft_mean'))} "
                    f"| {_pct(v.get('acc_ft2_mean'))} | {rank_bn} | {rank_ft} "
                    f"| {_diff(d.get('acc_bn'))} | {_diff(d.get('acc_ft'))} "
                    f"| {_diff(d.get('acc_ft2'))} | {len(v['seeds'])} |"
                )
            if s["random_ft"]:
                rf, rb = s["random_ft"], s["random_bn"]
                lines.append(
                    f"| {b} | random ({len(rf)}) | {rb[0] * 100:.2f}–{rb[-1] * 100:.2f} "
                    f"(p90 {s['random_bn_p90'] * 100:.2f}) | {rf[0] * 100:.2f}–{rf[-1] * 100:.2f} "
                    f"(p90 {s['random_ft_p90'] * 100:.2f}) | | | | | | | |"
                )
        lines += ["", "Keep ratios per group (first seed):", ""]
        for b, s in n["summary"].items():
            for m, v in s.items():
                if isinstance(v, dict) and m != "dsa_minus":
                    kr = " ".join(f"{x:.2f}" for x in v["keep_ratios"])
                    lines.append(f"- {b} {m}: {kr}")
        lines.append("")
    atomic_write_bytes(("\n".join(lines) + "\n").encode(), results / "allocation_quality.md")
    plot(nets, results)


def plot(nets: list[dict], results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(n, b) for n in nets for b in n["summary"]]
    colours_named = {"group_fisher": "C2", "group_fisher_iterative": "C7"}
    fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 4), squeeze=False)
    colours = {"uniform": "C0", "magnitude": "C1", "dsa": "C3", "dsa_ste": "C4", "dsa_curv": "C3"}
    colours.update(run_dsa="C5", run_magnitude="C6", run_ssl="C9", run_morphnet="C8")
    colours.update(colours_named)
    for ax, (n, b) in zip(axes[0], cells, strict=True):
        s = n["summary"][b]
        for x, key in ((0, "random_bn"), (1, "random_ft")):
            v = torch.tensor(s[key]) * 100
            ax.scatter(torch.full_like(v, x) + torch.linspace(-0.15, 0.15, len(v)), v, s=8,
                       c="0.6", label="random" if x == 0 else None)  # fmt: skip
        for m, v in s.items():
            if isinstance(v, dict) and m != "dsa_minus":
                c = colours.get(m, "k")
                ax.plot([-0.3, 0.3], [v["acc_bn_mean"] * 100] * 2, c=c, lw=2, label=m)
                ax.plot([0.7, 1.3], [v["acc_ft_mean"] * 100] * 2, c=c, lw=2)
        ax.set_xticks([0, 1], ["BN re-estimated", "fine-tuned"])
        ax.set_title(f"{n['name']} ({n['split']}), FLOPs {b}")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = results / "allocation_quality.png.tmp"
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(results / "allocation_quality.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=False)
    p.add_argument("--name", default="resnet20")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--budgets", default="0.5,0.33")
    p.add_argument("--methods", default="uniform,magnitude,group_fisher,dsa,random")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="dev",
        help="the test half to measure on: dev (choose settings here) or final (frozen "
        "configurations only)",
    )
    p.add_argument("--random", type=int, default=20)
    p.add_argument("--alloc-epochs", type=float, default=1.0)
    p.add_argument("--alloc-lr", type=float, default=0.01)
    p.add_argument(
        "--from-runs",
        default="bench/results/cifar10_runs",
        help="run folders of bench/cifar10_table.py that the run_<method> rows read",
    )
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument(
        "--long-finetune-methods",
        default=",".join(NAMED),
        help="the methods that get the FT2 column [%(default)s]",
    )
    p.add_argument(
        "--long-finetune-epochs",
        type=float,
        default=2.0,
        help="the FT2 column: epochs of fine-tuning in all, for the named methods (0: none)",
    )
    p.add_argument(
        "--dsa-set",
        default="",
        help="DSA settings for the dsa rows, k=v,... (e.g. power=1); with --label",
    )
    p.add_argument("--label", default="", help="record the dsa rows under this method name")
    p.add_argument("--resume", action="store_true", help="keep the rows already in the file")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the allocation runs and fine-tunes run (cpu, cuda); several processes may "
        "add rows to one file at once, e.g. one per seed on a GPU",
    )
    p.add_argument("--tables-only", action="store_true", help="only rebuild the .md / .png")
    p.add_argument(
        "--per-image",
        action="store_true",
        help="add per-image results to the named methods' finished rows that lack them "
        "(each allocation measured again must score the row's accuracies exactly)",
    )
    a = p.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else argv
    a.long_methods = a.long_finetune_methods.split(",")
    a.dsa_settings = {}
    for kv in filter(None, a.dsa_set.split(",")):
        k, _, v = kv.partition("=")
        if v.lower() in ("true", "false"):
            a.dsa_settings[k] = v.lower() == "true"
            continue
        try:
            a.dsa_settings[k] = float(v) if any(c in v for c in ".e") else int(v)
        except ValueError:
            a.dsa_settings[k] = v
    if a.dsa_settings and not a.label:
        p.error("--dsa-set needs --label, so that its rows are not mistaken for the defaults'")
    if a.label and a.split == "final":
        p.error("variants are compared on the dev half; the final half measures frozen defaults")
    if not a.tables_only:
        if not a.checkpoint:
            p.error("--checkpoint is required")
        run(a)
    with results_lock():
        write_tables()
    return 0


if __name__ == "__main__":
    sys.exit(main())
