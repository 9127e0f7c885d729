"""Checkpoints: plain tensors and Python values only, so ``torch.load(weights_only=True)`` reads
them; written atomically; checked against the model they are loaded into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..io import atomic_torch_save, load_safely
from ..surgery import FORMAT as MODEL_FORMAT

FORMAT = "dsaprune-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the model it is loaded into."""


def save_checkpoint(path: str | Path, **fields: Any) -> None:
    atomic_torch_save({"format": FORMAT, "version": 1, **fields}, path)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    ckpt = load_safely(path, "checkpoint", error=CheckpointError)
    if isinstance(ckpt, dict) and ckpt.get("format") == MODEL_FORMAT:
        name = ckpt.get("model_name", "NAME")
        raise CheckpointError(
            f"{path}: a model file written by dsaprune.save, not a training checkpoint (last.pt); "
            f"to start from its weights pass --model {name} --weights {path}"
        )
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dsaprune checkpoint (no '{FORMAT}' marker)")
    return ckpt


def check_model_name(ckpt: dict, path: str | Path, model_name: str) -> None:
    """Refuse a checkpoint of another zoo model, naming both (no check without a name)."""
    theirs = ckpt.get("model_name", "?")
    if model_name and theirs != model_name:
        raise CheckpointError(
            f"{path} holds a {theirs!r} model, not {model_name!r}; pass --model {theirs} "
            "or choose another checkpoint / output folder"
        )


def load_model_state(model: nn.Module, ckpt: dict, path: str | Path, model_name: str = "") -> None:
    """Load ``ckpt['model']`` into ``model``; a checkpoint of another architecture is refused
    with both names and the first mismatching tensor."""
    check_model_name(ckpt, path, model_name)
    state = ckpt["model"]
    mine = model.state_dict()
    for k, v in mine.items():
        if k not in state:
            raise CheckpointError(f"{path}: no tensor {k!r}; the checkpoint is of another model")
        if state[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: {k} has shape {tuple(state[k].shape)}, the model expects "
                f"{tuple(v.shape)}: the checkpoint is of another architecture or width"
            )
    extra = set(state) - set(mine)
    if extra:
        raise CheckpointError(f"{path}: unexpected tensors {sorted(extra)[:3]}; another model")
    model.load_state_dict(state)
