"""What the bench scripts share: the repository's paths (and ``src`` on the import path, so a
script runs from a clone without installing), run-folder names, the commit a row was made at,
the dev / final halves of a test set, paired differences with their standard errors, and the
test images' own share of a difference (per-image results, resampled)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# weight steps in a CIFAR-10 epoch at batch 128: 50,000 images, the last partial batch dropped
# (training loaders drop it), so the settings a run's length decides are computed as it did
CIFAR10_STEPS_PER_EPOCH = 50_000 // 128
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

# the tables' paired differences are the ones `dsaprune compare` prints
from dsaprune.cli.compare import paired  # noqa: E402, F401


def budget_tag(b: float) -> str:
    """A budget in run folder names: 0.333 -> 33p3."""
    return f"{round(100 * b, 1):g}".replace(".", "p")


def commit() -> str:
    """The commit the working tree is at, with ``+dirty`` when it has uncommitted changes to
    tracked files outside ``bench/results`` (a row made so cannot be reproduced from its commit
    alone; the result files a run writes do not count). Call it when a run starts: that is the
    code the run executes. ``BENCH_COMMIT`` names it where the tree travels without its
    history (a GPU machine gets a copy of the working tree)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def comma_list(kind: type = str):
    """An argparse ``type``: "a,b" -> [kind("a"), kind("b")], empty items dropped; a bad item is
    reported as an invalid "comma-separated <kind>" value."""

    def parse(s: str) -> list:
        return [kind(x) for x in s.split(",") if x]

    parse.__name__ = f"comma-separated {kind.__name__}"
    return parse


def test_halves(labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(dev, final) indices: a fixed, class-balanced half of a test set each. Settings are
    chosen on dev; final gives one number per frozen configuration. Each class's images are
    permuted with ``seed`` and split in two (an odd count gives final the extra image)."""
    g = torch.Generator().manual_seed(seed)
    dev, final = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        dev.append(idx[: len(idx) // 2])
        final.append(idx[len(idx) // 2 :])
    return torch.cat(dev).sort()[0], torch.cat(final).sort()[0]


def accuracy(correct: torch.Tensor) -> float:
    return int(correct.sum()) / correct.numel()  # in float64, as ``evaluate`` counts it


def pack_correct(correct: torch.Tensor) -> dict:
    """Per-image right / wrong (one per test image) as hex, 8 images a byte, so a row of a
    result file carries them and a table can resample the images without the networks."""
    bits = correct.flatten().bool().to(torch.uint8)
    n = len(bits)
    bits = torch.cat([bits, bits.new_zeros(-n % 8)]).view(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return {"images": n, "hex": bytes((bits * weights).sum(1, dtype=torch.uint8).tolist()).hex()}


def unpack_correct(packed: dict) -> torch.Tensor:
    """``pack_correct``'s inverse, as bool."""
    raw = torch.tensor(list(bytes.fromhex(packed["hex"])), dtype=torch.uint8)
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    return ((raw[:, None] >> shifts) & 1).flatten()[: packed["images"]].bool()


def paired_images(rows: list[dict], a: str, b: str, key: str) -> torch.Tensor | None:
    """Per-image right-minus-right of method ``a`` against ``b`` (rows of one budget, ``key``
    the rows' packed per-image results), [seeds both have, images] in -1 / 0 / 1; None where a
    paired row lacks them."""
    by = {(r["method"], r["seed"]): r.get(key) for r in rows if r["method"] in (a, b)}
    seeds = sorted({s for m, s in by if m == a} & {s for m, s in by if m == b})
    if not seeds or any(by[(m, s)] is None for m in (a, b) for s in seeds):
        return None
    return torch.stack(
        [unpack_correct(by[(a, s)]).float() - unpack_correct(by[(b, s)]).float() for s in seeds]
    )


def half_noise(d: torch.Tensor, resamples: int = 2000, seed: int = 0) -> dict:
    """From per-image differences ``d`` [seeds, images] (points) on one test half: the mean
    difference, each seed's, the seed standard error, the standard error of the mean under
    resampling the images (a bootstrap; one resample shared by every seed, as the seeds see the
    same images), and the share of images the two sides classify differently.

    The seed standard error treats the images as fixed; another half of the same size would
    move the mean by ``image_se`` even with the seeds held, so the two add in variance."""
    g = torch.Generator().manual_seed(seed)
    per_seed = d.mean(1)
    k, n = d.shape
    boot = torch.stack([d[:, torch.randint(n, (n,), generator=g)].mean() for _ in range(resamples)])
    seed_se = float(per_seed.std() / k**0.5) if k > 1 else math.nan
    image_se = float(boot.std())
    return {
        "mean": float(per_seed.mean()),
        "per_seed": per_seed.tolist(),
        "seed_se": seed_se,
        "image_se": image_se,
        "se": math.hypot(seed_se, image_se),
        "discordant": float((d != 0).float().mean()),
    }
