"""How much of a paired difference between two methods is the test images' own noise.

The tables' standard errors (``common.paired``) come from the spread over seeds: they treat the
5,000 images of a test half as fixed. A second half of the same size would rank two close
methods differently even with the seeds held. This script scores the end-to-end bench's pruned
networks (``bench/end_to_end.py``'s run folders, method ``A`` against method ``B`` under the same
seeds) image by image and resamples the images of each half (a bootstrap, the same resampled
images for every seed): the spread of the mean difference over those resamples is the part the
seed standard error leaves out.

    python bench/image_noise.py --runs runs/end_to_end --name resnet20 --seeds 3,4,5 \\
        --budgets 0.5,0.33 --methods dsa,group_fisher
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import test_halves
from end_to_end import run_folder


def correct(model_file: Path, loader) -> torch.Tensor:
    """1.0 where the network classifies a test image right, else 0.0, in the test set's order."""
    from dsaprune import load

    model = load(str(model_file)).eval()
    with torch.no_grad():
        return torch.cat([(model(x).argmax(1) == y).float() for x, y in loader])


def half_noise(d: torch.Tensor, resamples: int, g: torch.Generator) -> dict:
    """From per-image differences ``d`` [seeds, images] (points) on one half: the mean
    difference, each seed's, the seed standard error, and the standard error of the mean under
    resampling the images (the same resample for every seed, as the images are shared)."""
    per_seed = d.mean(1)
    k, n = d.shape
    boot = torch.stack([d[:, torch.randint(n, (n,), generator=g)].mean() for _ in range(resamples)])
    return {
        "mean": float(per_seed.mean()),
        "per_seed": per_seed.tolist(),
        "seed_se": float(per_seed.std() / k**0.5) if k > 1 else float("nan"),
        "image_se": float(boot.std()),
        "discordant": float((d != 0).float().mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/end_to_end")
    p.add_argument("--name", default="resnet20")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=[0.5])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--methods", type=lambda s: s.split(","), default=["dsa", "group_fisher"])
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--resamples", type=int, default=2000)
    a = p.parse_args(argv)
    if len(a.methods) != 2:
        p.error("--methods takes two methods: A,B (the difference is A − B)")

    from dsaprune.data import load_splits, make_loader

    splits = load_splits("cifar10", a.data)
    halves = dict(zip(("dev", "final"), test_halves(splits.test.labels), strict=True))
    loader = make_loader(splits.test, splits, 500, train=False)
    g = torch.Generator().manual_seed(0)
    print(f"{a.methods[0]} − {a.methods[1]}, seeds {a.seeds}, percentage points")
    for b in a.budgets:
        diffs = []
        for seed in a.seeds:
            pair = [
                correct(run_folder(a.runs, a.name, m, b, a.epochs, seed) / "model.pt", loader)
                for m in a.methods
            ]
            diffs.append(pair[0] - pair[1])
        d = 100 * torch.stack(diffs)  # [seeds, images]
        for half, idx in halves.items():
            r = half_noise(d[:, idx], a.resamples, g)
            print(
                f"flops={b:g} {half:5s}: mean {r['mean']:+.2f} (per seed "
                f"{' / '.join(f'{x:+.2f}' for x in r['per_seed'])}), seed SE {r['seed_se']:.2f}, "
                f"image-resampling SE {r['image_se']:.2f}, images the two classify differently "
                f"{100 * r['discordant']:.1f}%"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
