"""Prune a torchvision segmentation network inside its own training loop.

LR-ASPP on MobileNetV3-Large learns to segment the built-in shapes scenes (one shape per image;
11 classes with the background) in a plain PyTorch loop, while ``dsaprune.Pruner`` allocates
and removes channels to half the FLOPs. The loss reads the network's dict output (``out``).
The run trains masked (``physical=False``) so that, at the end, the masked network's outputs can
be compared with the physically cut one's; then it reports counted FLOPs against the budget
and the mean IoU on held-out scenes, before and after the cut.

    python examples/segment.py            # 64x64 scenes, 600 steps: about 20 min on 2 CPU cores
    python examples/segment.py --small    # the setting the tests run: 32x32, 24 steps

Needs torchvision's model definitions (``pip install --no-deps torchvision``; its compiled
operators are not used).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch
from torch import nn

import dsaprune
from dsaprune.data import channel_stats
from dsaprune.data.shapes import CLASSES, make_shape_scenes
from dsaprune.models.external import import_torchvision

N_CLASSES = len(CLASSES) + 1  # and the background


def scenes(n: int, seed: int, size: int, batch: int, stats=None):
    """Normalised (images, per-pixel classes) batches, and the normalisation."""
    data, seg, _ = make_shape_scenes(n, seed=seed, size=size)
    mean, std = stats or channel_stats(data.images)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = (data.images.permute(0, 3, 1, 2).float() / 255 - m) / s
    return [(x[i : i + batch], seg[i : i + batch]) for i in range(0, n, batch)], (mean, std)


def loss_fn(out: dict, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out["out"], target)


@torch.no_grad()
def mean_iou(model: nn.Module, batches) -> float:
    """Intersection over union per class, averaged over the classes present."""
    model.eval()
    inter = torch.zeros(N_CLASSES)
    union = torch.zeros(N_CLASSES)
    for x, y in batches:
        pred = model(x)["out"].argmax(1)
        for c in range(N_CLASSES):
            p, t = pred == c, y == c
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps in all")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--budget", default="flops=0.5")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="32x32, 24 steps of 8 (for the tests)")
    a = p.parse_args(argv)
    if a.small:
        a.size, a.steps, a.batch = 32, 24, 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision without its compiled operators: said once
        import_torchvision()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large
    torch.manual_seed(a.seed)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=N_CLASSES)
    train, stats = scenes(a.steps * a.batch, a.seed, a.size, a.batch)
    val, _ = scenes(4 * a.batch, a.seed + 1, a.size, a.batch, stats)  # DSA's held-out batches
    test, _ = scenes(8 * a.batch, a.seed + 2, a.size, a.batch, stats)

    pruner = dsaprune.Pruner(
        model, train[0][0][:1], a.budget, total_steps=a.steps, val_data=val, loss_fn=loss_fn,
        physical=False, window_end_fraction=0.5,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=4e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, a.steps)
    for step, (x, y) in enumerate(train):
        model.train()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        pruner.step()
        if step % max(1, a.steps // 10) == 0:
            print(f"step {step}: loss {loss.item():.3f}, phase {pruner.phase}", flush=True)

    model.eval()
    x = test[0][0]
    with torch.no_grad():
        masked_out = model(x)["out"]
    miou_masked = mean_iou(model, test)
    pruner.cut()  # the masked channels removed for real
    with torch.no_grad():
        cut_out = model(x)["out"]
    res = pruner.finish()
    r = res.report
    result = {
        "budget": r["budget"],
        "flops_ratio": r["flops_ratio"],
        "flops_after": r["flops_after"],
        "flops_counted": dsaprune.count_flops(res.model, (3, a.size, a.size)),
        "max_output_difference": float((masked_out - cut_out).abs().max()),
        "miou_masked": miou_masked,
        "miou_cut": mean_iou(res.model, test),
        "met_by": r["met_by"],
        "keep_counts": r["keep_counts"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
