"""Prune an Ultralytics YOLO detector, built from its YAML, inside a hand-written training loop.

YOLOv8n (``yolov8n.yaml``, no pretrained weights) learns to find the shape in each built-in
shapes scene with Ultralytics' own detection loss, while ``dsaprune.Pruner`` allocates and
removes channels to half the FLOPs. The Pruner's held-out batches run through ``forward``,
which puts the Detect head in training mode (it returns the raw feature maps the loss reads)
while every BN layer stays on running statistics. The run trains masked
(``physical=False``), then compares the masked network's outputs with the physically cut one's
and reports the counted FLOPs against the budget.

Needs the ``ultralytics`` package, installed beside the CPU torch without letting pip replace
it (about 560 MB of dependencies; nothing is downloaded at run time: the network is built from
the YAML inside the package)::

    pip install --no-deps ultralytics ultralytics-thop
    pip install opencv-python-headless polars scipy psutil requests py-cpuinfo

    python examples/yolo.py            # 64x64 scenes, 400 steps
    python examples/yolo.py --small    # 8 steps of 8
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import warnings

import torch
from torch import nn

import dsaprune
from dsaprune.data.shapes import CLASSES, make_shape_scenes
from dsaprune.models.external import import_torchvision


def scenes(n: int, seed: int, size: int, batch: int):
    """(images in [0, 1], Ultralytics' batch dict: one normalised xywh box per image)."""
    data, _, boxes = make_shape_scenes(n, seed=seed, size=size)
    x = data.images.permute(0, 3, 1, 2).float() / 255
    centre, extent = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    xywh = torch.cat([centre, extent], 1) / size
    out = []
    for i in range(0, n, batch):
        k = min(batch, n - i)
        target = {
            "batch_idx": torch.arange(k).float(),
            "cls": data.labels[i : i + k, None].float(),
            "bboxes": xywh[i : i + k],
        }
        out.append((x[i : i + k], target))
    return out


def build() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision without its compiled operators
        import_torchvision()
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False)
    model.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)  # the loss's gains
    return model


def forward(model: nn.Module, images: torch.Tensor, _targets) -> list[torch.Tensor]:
    """The raw feature maps the loss reads: the Detect head decodes boxes in eval mode."""
    head = model.model[-1]
    was = head.training
    head.training = True
    try:
        return model(images)
    finally:
        head.training = was


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--budget", default="flops=0.5")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="8 steps of 8 (for the tests)")
    a = p.parse_args(argv)
    if a.small:
        a.steps, a.batch = 8, 8
    torch.manual_seed(a.seed)
    model = build()

    def loss_fn(preds, batch: dict) -> torch.Tensor:
        loss, _ = model.loss(batch, preds)  # Ultralytics' own: box, class and DFL terms
        return loss.sum() / len(batch["batch_idx"])

    train = scenes(a.steps * a.batch, a.seed, a.size, a.batch)
    val = scenes(2 * a.batch, a.seed + 1, a.size, a.batch)  # DSA's held-out batches
    pruner = dsaprune.Pruner(
        model, train[0][0][:1], a.budget, total_steps=a.steps, val_data=val, loss_fn=loss_fn,
        forward=forward, physical=False, window_end_fraction=0.6,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    for step, (x, target) in enumerate(train):
        model.train()
        loss = loss_fn(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        pruner.step()
        if step % max(1, a.steps // 10) == 0:
            print(f"step {step}: loss {loss.item():.3f}, phase {pruner.phase}", flush=True)

    model.eval()
    x = val[0][0]
    with torch.no_grad():
        masked_out = model(x)[0]
        pruner.cut()  # the masked channels removed for real
        cut_out = model(x)[0]
    res = pruner.finish()
    r = res.report
    with torch.no_grad():
        val_loss = float(loss_fn(forward(res.model, *val[0]), val[0][1]))
    result = {
        "budget": r["budget"],
        "flops_ratio": r["flops_ratio"],
        "flops_after": r["flops_after"],
        "flops_counted": dsaprune.count_flops(res.model, (3, a.size, a.size)),
        "max_output_difference": float((masked_out - cut_out).abs().max()),
        "val_loss": val_loss,
        "met_by": r["met_by"],
        "prunable_groups": len(r["groups"]),
        "keep_counts": r["keep_counts"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
