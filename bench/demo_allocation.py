"""Why the Fisher allocators trail ``uniform`` on the demo's task: two measurements on the
network the demo ships (``dsaprune/models/pretrained/resnet20_shapes.pt``), scored on 4,000
freshly drawn shapes images (seed 777: neither its training set nor the demo's test set).

``removal``: per group, the loss the coupled Fisher predicts for removing the group's 25 / 50 /
75 / 90% cheapest channels (the sum of their ½·mean g², on 20 training batches) against the
loss that removal really costs (the other groups whole, BN running statistics, 10 other
training batches).

``finetune``: allocations at 30% FLOPs applied to the shipped weights (channels kept in Fisher
order) and fine-tuned as the demo fine-tunes (batch 128, augmented, SGD lr 0.01 with cosine
decay over 39 steps), 3 fine-tune seeds each: ``group_fisher`` (its Fisher on 20 plain or
augmented training batches, ``--fisher-seeds`` draws of the latter; ``--fisher-batches`` other
than its 20), ``uniform``, and any
``--counts`` (e.g. the keep counts in a demo run's report.md). ``--offset N`` starts the
fine-tune N steps into the schedule, as a DSA run whose window took those steps does.

``score RUN_DIR``: the pruned models a ``dsaprune demo --out RUN_DIR`` wrote, scored on the same
fresh images (so the demo's own runs and the fine-tunes above are read on one set).

    python bench/demo_allocation.py removal
    python bench/demo_allocation.py score runs/demo
    python bench/demo_allocation.py finetune [--counts "15,10,...;13,1,..."] [--offset 9] \\
        [--fisher-seeds 0,1,2,3] [--fisher-batches 78] [--only-counts]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from dsaprune import (
    find_groups,
    flops_model,
    load,
    load_splits,
    make_loader,
    models,
    shift_to_budget,
)
from dsaprune.allocation import greedy_keep_counts
from dsaprune.data.shapes import make_shapes
from dsaprune.estimators import channel_fisher
from dsaprune.gates import GateHooks, pad_groups
from dsaprune.models.pretrained import DEMO_WEIGHTS
from dsaprune.models.weights import load_weights

BUDGET, STEPS, LR = 0.3, 39, 0.01  # the demo's task (cli/main.py: DEMO_BUDGET, ½ epoch, DEMO_LR)


class Task:
    def __init__(self) -> None:
        self.splits = load_splits("shapes", None, image_size=32)
        self.mean = torch.tensor(self.splits.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.splits.std).view(1, 3, 1, 1)
        fresh = make_shapes(4000, seed=777)
        self.x_eval, self.y_eval = self.norm(fresh.images), fresh.labels
        self.base = self.net()
        self.groups = find_groups(self.base, torch.randn(1, 3, 32, 32))
        self.P = self.groups.prunable
        self.cost = flops_model(self.groups)
        self.C = torch.tensor([g.channels for g in self.P], dtype=torch.float64)
        _, self.valid = pad_groups([torch.ones(g.channels) for g in self.P])

    def norm(self, images: torch.Tensor) -> torch.Tensor:
        return (images.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std

    def net(self) -> torch.nn.Module:
        m = models.create("resnet20", self.splits.num_classes)
        load_weights(m, DEMO_WEIGHTS)
        return m.float().eval()

    def batches(self, n: int, seed: int, augmented: bool, size: int = 128) -> list:
        if augmented:
            loader = make_loader(
                self.splits.train, self.splits, size, train=True, seed=seed, workers=0
            )
            return [b for _, b in zip(range(n), loader, strict=False)]
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.splits.train.labels.numel(), generator=g)[: n * size]
        x, y = self.norm(self.splits.train.images[idx]), self.splits.train.labels[idx]
        return [(x[i : i + size], y[i : i + size]) for i in range(0, n * size, size)]

    def fisher(self, seed: int, augmented: bool, n: int = 20) -> list[torch.Tensor]:
        return channel_fisher(
            self.base, self.groups, self.batches(n, seed, augmented), F.cross_entropy, n
        )

    def accuracy(self, forward) -> float:
        """% of the fresh images ``forward`` classifies right (in batches of 500)."""
        with torch.no_grad():
            n = len(self.y_eval)
            out = torch.cat([forward(self.x_eval[i : i + 500]) for i in range(0, n, 500)])
        return 100 * float((out.argmax(1) == self.y_eval).double().mean())

    def masks(self, counts: torch.Tensor, fisher: list[torch.Tensor]) -> torch.Tensor:
        m = torch.zeros(self.valid.shape)
        for k in range(len(self.P)):
            m[k, torch.argsort(fisher[k].double(), descending=True)[: int(counts[k])]] = 1
        return m


def masked(hooks: GateHooks, m: torch.Tensor, model, x):
    hooks.set(m.expand(x.shape[0], *m.shape).clone())
    try:
        return model(x)
    finally:
        hooks.clear()


def removal(t: Task) -> None:
    batches = t.batches(30, 0, augmented=False)  # one permutation: the two sets share no image
    fisher = channel_fisher(t.base, t.groups, batches[:20], F.cross_entropy, 20)
    truth = batches[20:]
    hooks = GateHooks(t.groups)

    def loss(m: torch.Tensor) -> tuple[float, float]:
        total, right, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in truth:
                out = masked(hooks, m, t.base, x)
                total += float(F.cross_entropy(out, y, reduction="sum"))
                right += int((out.argmax(1) == y).sum())
                n += y.numel()
        return total / n, 100 * right / n

    base, acc = loss(torch.ones(t.valid.shape))
    print(f"whole network: loss {base:.4f}, accuracy {acc:.2f}% on 10 training batches")
    print("| group | channels | removed | Fisher's loss | true loss | true / Fisher | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for k, g in enumerate(t.P):
        order = torch.argsort(fisher[k].double())
        for frac in (0.25, 0.5, 0.75, 0.9):
            r = max(1, round(frac * g.channels))
            m = torch.ones(t.valid.shape)
            m[k, order[:r]] = 0
            lo, a = loss(m)
            pred = float(fisher[k].double()[order[:r]].sum())
            print(f"| {k} {g.producers[0]} | {g.channels} | {r} | {pred:.4f} | {lo - base:.4f} | "
                  f"{(lo - base) / pred:.1f} | {a:.1f} |")  # fmt: skip


def finetune(t: Task, counts: torch.Tensor, fisher, offset: int) -> list[float]:
    accs = []
    m = t.masks(counts, fisher)
    for seed in range(3):
        model = t.net()
        hooks = GateHooks(find_groups(model, torch.randn(1, 3, 32, 32)))
        opt = torch.optim.SGD(
            model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, nesterov=True
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
        with warnings.catch_warnings():  # stepping the schedule alone is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(offset):  # the schedule's steps a DSA window took
                sched.step()
        loader = make_loader(t.splits.train, t.splits, 128, train=True, seed=seed, workers=0)
        model.train()
        for _, (x, y) in zip(range(STEPS - offset), loader, strict=False):
            loss = F.cross_entropy(masked(hooks, m, model, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        accs.append(t.accuracy(lambda x, model=model, hooks=hooks: masked(hooks, m, model, x)))
    return accs


def score(t: Task, run_dir: Path) -> None:
    rows: dict[str, list[str]] = {}
    for f in sorted(run_dir.glob("*_s*/model.pt")):
        method, seed = f.parent.name.rsplit("_s", 1)
        acc = t.accuracy(load(f).float().eval())
        rows.setdefault(method, []).append(f"seed {seed} {acc:.2f}")
    for method, accs in rows.items():
        print(f"{method}: " + " / ".join(accs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["removal", "finetune", "score"])
    p.add_argument("run_dir", nargs="?", default="runs/demo", help="score: a demo's --out")
    p.add_argument("--counts", default="", help="keep counts per group, ';' between allocations")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--fisher-seeds", default="0")
    p.add_argument(
        "--fisher-batches",
        type=int,
        default=20,
        help="group_fisher's batches (at most 78, an epoch)",
    )
    p.add_argument("--only-counts", action="store_true", help="skip group_fisher and uniform")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    t = Task()
    if a.what == "removal":
        removal(t)
        return 0
    if a.what == "score":
        score(t, Path(a.run_dir))
        return 0
    plain = t.fisher(0, augmented=False, n=a.fisher_batches)
    allocs: list[tuple[str, torch.Tensor, list]] = []
    if not a.only_counts:
        gf = torch.tensor(greedy_keep_counts(plain, t.cost, BUDGET), dtype=torch.float64)
        allocs.append(("group_fisher, Fisher on plain batches", gf, plain))
        for s in [int(v) for v in a.fisher_seeds.split(",")]:
            f = t.fisher(100 + s, augmented=True, n=a.fisher_batches)
            gf = torch.tensor(greedy_keep_counts(f, t.cost, BUDGET), dtype=torch.float64)
            allocs.append((f"group_fisher, Fisher on augmented batches (draw {s})", gf, f))
        theta, _ = shift_to_budget(torch.zeros(len(t.P), dtype=torch.float64), t.cost, BUDGET)
        allocs.append(
            ("uniform", torch.clamp(torch.round(torch.sigmoid(theta) * t.C), min=1), plain)
        )
    for i, c in enumerate(v for v in a.counts.split(";") if v):
        allocs.append((f"counts {i + 1}", torch.tensor([float(x) for x in c.split(",")]), plain))
    print(f"fine-tune: {STEPS - a.offset} of {STEPS} cosine steps (offset {a.offset}), lr {LR}")
    print("| allocation | FLOPs | keep counts | accuracy, fine-tune seeds 0 / 1 / 2 | mean |")
    print("|---|---|---|---|---|")
    for name, counts, fisher in allocs:
        accs = finetune(t, counts, fisher, a.offset)
        keep = " ".join(str(int(v)) for v in counts)
        flops = float(t.cost.ratio(counts.double() / t.C))
        per = " / ".join(f"{v:.2f}" for v in accs)
        print(f"| {name} | {flops:.3f} | {keep} | {per} | {sum(accs) / 3:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
