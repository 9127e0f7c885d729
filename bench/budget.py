"""Budget guarantee on every zoo model: for FLOPs budgets 0.25 / 0.5 / 0.75, random logits are
shifted to the budget, rounded to whole channels with the greedy fix-up, the network is physically
pruned, and FlopCounterMode counts it. Every ratio must lie in [0.97 B, B].

    python bench/budget.py [--models a,b] [--budgets 0.25,0.5,0.75] [--round-to 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from dsaprune import count_flops, find_groups, flops_model, models, prune_groups
from dsaprune.allocation import round_channels, shift_to_budget


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(models.names()))
    p.add_argument("--budgets", default="0.25,0.5,0.75")
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"{'model':<22} {'budget':>6} {'counted':>8} {'in [0.97B, B]':>14}")
    failures = 0
    for name in a.models.split(","):
        size = models.input_size(name)
        for b in (float(v) for v in a.budgets.split(",")):
            torch.manual_seed(a.seed)
            m = models.create(name).eval()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # option-A streams: reported by find_groups
                G = find_groups(m, torch.zeros(1, *size))
            F = flops_model(G)
            theta = torch.randn(len(G.prunable), dtype=torch.float64)
            theta, _ = shift_to_budget(theta, F, b)
            n = round_channels(
                torch.sigmoid(theta), [g.channels for g in G.prunable], F, b, a.round_to
            )
            prune_groups(G, [torch.arange(k) for k in n])
            ratio = count_flops(m, size) / F.full
            ok = 0.97 * b <= ratio <= b
            failures += not ok
            print(f"{name:<22} {b:>6.3f} {ratio:>8.4f} {'yes' if ok else 'NO':>14}")
    print(f"{failures} of {len(a.models.split(',')) * len(a.budgets.split(','))} outside the range")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
