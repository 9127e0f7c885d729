"""Any task's batches and outputs: tensors, tuples, lists or dicts of them. The loop moves them to
the device and hands the model's outputs to the loss as they are (in float32); accuracy is
measured only where the outputs are class logits for class-index targets."""

from __future__ import annotations

from typing import Any

import torch


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (through tuples, lists and dicts) on ``device``."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def as_float(obj: Any) -> Any:
    """``obj`` with every floating tensor in float32 (a bf16 autocast's outputs, for the loss)."""
    if torch.is_tensor(obj):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: as_float(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(as_float(v) for v in obj)
    return obj


def same_batch(x: Any, y: Any) -> bool:
    """Whether inputs ``x`` and targets ``y`` are tensors with one batch dimension in common
    (so that a slice of the samples cuts both alike)."""
    return (
        torch.is_tensor(x)
        and torch.is_tensor(y)
        and x.dim() > 0
        and y.dim() > 0
        and x.shape[0] == y.shape[0]
    )


def is_class_logits(out: Any, targets: Any) -> bool:
    """Whether ``out`` [N, classes] scores classes for the class indices ``targets`` [N]."""
    return (
        torch.is_tensor(out)
        and torch.is_tensor(targets)
        and out.dim() == 2
        and targets.dim() == 1
        and targets.shape[0] == out.shape[0]
        and not targets.is_floating_point()
    )


def batch_size(x: Any) -> int:
    """The number of samples in a batch of inputs (the first tensor's first dimension)."""
    if torch.is_tensor(x):
        return int(x.shape[0])
    items = x.values() if isinstance(x, dict) else x
    for v in items:
        return batch_size(v)
    return 0
