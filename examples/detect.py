"""Prune a torchvision detector inside its own training loop.

RetinaNet on a ResNet-18 FPN backbone (BatchNorm, no pretrained weights) learns to find the
shape in each built-in shapes scene (one box per image, 10 classes) in a plain PyTorch loop,
with torchvision's own losses, while ``dsaprune.Pruner`` allocates and removes channels to half
the FLOPs. The detector returns its losses only in training mode, so the Pruner's held-out
batches run through ``forward`` (the detector's own call with targets, BN on running
statistics). The run trains masked (``physical=False``) so that, at the end, the masked
network's head outputs can be compared with the physically cut one's; it reports counted FLOPs
against the budget and the mean AP at IoU 0.5 of torchvision's own post-processing.

torchvision's non-maximum suppression is a compiled operator, and a torchvision built for
another torch (the package registry's CUDA build beside a CPU torch) cannot load it. Then this
example hands torchvision's post-processing a plain PyTorch NMS (``nms`` below, the same greedy
rule), in this process only; everything else is torchvision's code.

    python examples/detect.py            # 64x64 scenes, 800 steps: about 30 min on 2 CPU cores
    python examples/detect.py --small    # the setting the tests run: 16 steps of 4
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import torch
from torch import nn

import dsaprune
from dsaprune.data.shapes import CLASSES, make_shape_scenes
from dsaprune.models.external import import_torchvision


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in plain PyTorch: the indices kept, by falling score. The
    overlaps of every pair are computed at once; the greedy pass reads rows of them (an untrained
    head sends thousands of boxes here, and a pass that recomputed them per kept box was most
    of the example's time)."""
    from torchvision.ops.boxes import box_iou

    order = scores.argsort(descending=True)
    ranked = boxes[order]
    over = (box_iou(ranked, ranked) > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def torchvision_with_nms() -> str:
    """Import torchvision's detection code; returns which NMS its post-processing uses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision without its compiled operators: said here
        import_torchvision()
        import torchvision.ops.boxes as box_ops
    try:
        box_ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)
        return "compiled"
    except (RuntimeError, AttributeError):
        box_ops.nms = nms  # batched_nms looks it up here at every call
        return "plain PyTorch (the compiled operator does not load)"


def scenes(n: int, seed: int, size: int, batch: int):
    """(images in [0, 1], targets) batches; the detector normalises the images itself."""
    data, _, boxes = make_shape_scenes(n, seed=seed, size=size)
    x = data.images.permute(0, 3, 1, 2).float() / 255
    t = [{"boxes": boxes[i : i + 1], "labels": data.labels[i : i + 1]} for i in range(n)]
    return [(x[i : i + batch], t[i : i + batch]) for i in range(0, n, batch)]


def build(size: int) -> nn.Module:
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        norm_layer=nn.BatchNorm2d,  # trainable BN: what DSA's channel importances read
        trainable_layers=5,
        returned_layers=[2, 3, 4],
    )
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 4)
    # scores above 0.01 are decoded (torchvision's default is 0.05): more recall points for AP,
    # and an untrained head's (prior 0.01) boxes reach the NMS too
    return RetinaNet(
        backbone, len(CLASSES), min_size=size, max_size=size, anchor_generator=anchors,
        score_thresh=0.01, detections_per_img=20,
    )  # fmt: skip


def losses(model: nn.Module, images: torch.Tensor, targets: list[dict]) -> dict:
    """The detector's own losses. Its root module's training flag alone selects them, so the
    Pruner's held-out pass keeps every BN layer on running statistics."""
    was = model.training
    model.training = True
    try:
        return model(list(images), targets)
    finally:
        model.training = was


def total(out: dict, _targets) -> torch.Tensor:
    return sum(out.values())


@torch.no_grad()
def head_outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The head's raw class logits and box regressions, before any decoding."""
    model.eval()
    batch, _ = model.transform(list(images))
    out = model.head(list(model.backbone(batch.tensors).values()))
    return torch.cat([out["cls_logits"], out["bbox_regression"]], 2)


@torch.no_grad()
def mean_ap(model: nn.Module, batches, iou: float = 0.5) -> tuple[float, int]:
    """(mean over classes of the all-point interpolated average precision at ``iou``, the
    number of detections decoded)."""
    from torchvision.ops.boxes import box_iou

    model.eval()
    found = {c: [] for c in range(len(CLASSES))}  # (score, true positive)
    decoded = 0
    n_true = torch.zeros(len(CLASSES))
    for x, targets in batches:
        for det, t in zip(model(list(x)), targets, strict=True):
            decoded += len(det["boxes"])
            n_true[t["labels"]] += 1
            matched = False
            for b, s, c in zip(det["boxes"], det["scores"], det["labels"], strict=True):
                hit = c == t["labels"][0] and box_iou(b[None], t["boxes"])[0, 0] >= iou
                found[int(c)].append((float(s), bool(hit and not matched)))
                matched = matched or bool(hit)
    aps = []
    for c, dets in found.items():
        if n_true[c] == 0:
            continue
        dets.sort(key=lambda d: -d[0])
        tp = torch.tensor([d[1] for d in dets], dtype=torch.float64)
        if tp.numel() == 0:
            aps.append(0.0)
            continue
        recall = tp.cumsum(0) / n_true[c]
        precision = tp.cumsum(0) / torch.arange(1, tp.numel() + 1)
        # precision made non-increasing from the right, summed over the recall steps
        precision = precision.flip(0).cummax(0).values.flip(0)
        steps = torch.cat([recall[:1], recall.diff()])
        aps.append(float((precision * steps).sum()))
    return sum(aps) / len(aps), decoded


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--steps", type=int, default=800, help="optimizer steps in all")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--budget", default="flops=0.5")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="16 steps of 4 (for the tests)")
    a = p.parse_args(argv)
    if a.small:
        a.steps, a.batch = 16, 4
    which_nms = torchvision_with_nms()
    torch.manual_seed(a.seed)
    model = build(a.size)
    train = scenes(a.steps * a.batch, a.seed, a.size, a.batch)
    val = scenes(4 * a.batch, a.seed + 1, a.size, a.batch)  # DSA's held-out batches
    test = scenes(8 * a.batch, a.seed + 2, a.size, a.batch)

    pruner = dsaprune.Pruner(
        model, train[0][0][:1], a.budget, total_steps=a.steps, val_data=val, loss_fn=total,
        forward=losses, physical=False, window_end_fraction=0.5,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, a.steps)
    for step, (x, targets) in enumerate(train):
        model.train()
        loss = sum(model(list(x), targets).values())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # early RetinaNet steps spike
        optimizer.step()
        schedule.step()
        pruner.step()
        if step % max(1, a.steps // 10) == 0:
            print(f"step {step}: loss {loss.item():.3f}, phase {pruner.phase}", flush=True)

    x = test[0][0]
    masked_out = head_outputs(model, x)
    map_masked, _ = mean_ap(model, test)
    pruner.cut()  # the masked channels removed for real
    cut_out = head_outputs(model, x)
    res = pruner.finish()
    r = res.report
    map_cut, decoded = mean_ap(res.model, test)
    result = {
        "nms": which_nms,
        "budget": r["budget"],
        "flops_ratio": r["flops_ratio"],
        "flops_after": r["flops_after"],
        "flops_counted": dsaprune.count_flops(res.model, (3, a.size, a.size)),
        "max_output_difference": float((masked_out - cut_out).abs().max()),
        "map50_masked": map_masked,
        "map50_cut": map_cut,
        "detections_cut": decoded,
        "met_by": r["met_by"],
        "keep_counts": r["keep_counts"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
