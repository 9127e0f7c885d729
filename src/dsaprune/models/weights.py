"""Starting weights from a file: a ``state_dict`` such as torchvision's pretrained weights (the
zoo's ImageNet models use torchvision's layout and parameter names)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..io import load_safely


def _output_layer(model: nn.Module) -> str:
    last = ""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            last = name
    return last


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load the ``state_dict`` in ``path`` into ``model``. Only the output layer may differ in
    shape (another number of classes): it keeps its fresh initialisation and its parameter
    names are returned. Any other difference is refused, naming the keys."""
    p = Path(path)
    hint = "save the weights with torch.save(model.state_dict(), path)"
    sd = load_safely(p, "state_dict file", hint)
    for wrapper in ("state_dict", "model"):  # common wrappers, our checkpoints included
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p} holds no state_dict (a mapping of names to tensors)")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}  # saved from DDP
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{p} does not fit {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}; is it the "
            "state_dict of this architecture?"
        )
    out = _output_layer(model)
    differ = [k for k in own if sd[k].shape != own[k].shape]
    wrong = [k for k in differ if k.rsplit(".", 1)[0] != out]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{p} does not fit {type(model).__name__}: {k} has shape {tuple(sd[k].shape)} in the "
            f"file, {tuple(own[k].shape)} in the model"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k not in differ}, strict=False)
    return differ
