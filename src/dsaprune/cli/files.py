"""Every model file the CLI writes, read back as a model: a pruned ``model.pt``, a ``train`` run's
``last.pt`` and a ``prune`` run's ``last.pt`` (whose weights may already be pruned). So ``eval``,
``export`` and ``prune --checkpoint`` accept the outputs of ``train`` and ``prune`` alike, and a
pruned model can be pruned again to a smaller budget."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import models, surgery
from ..grouping import find_groups
from ..io import load_safely
from ..train import CheckpointError, load_model_state, read_checkpoint

INFO = ("model_name", "num_classes", "dataset", "mean", "std")
HINT = "give the model.pt of a prune run or the last.pt of a train / prune run"


def _classes_in(state: dict, model: nn.Module) -> int | None:
    """The number of outputs of the model's last linear layer, as the saved weights have it."""
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    w = state.get(f"{last[-1]}.weight") if last else None
    return int(w.shape[0]) if w is not None else None


def open_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model a dsaprune file holds, with its weights, in eval mode, and what the file records
    of it (``INFO``: zoo name, classes, data set, normalisation; None where not recorded)."""
    p = Path(path)
    raw = load_safely(p, "dsaprune model file or checkpoint", HINT, error=CheckpointError)
    if isinstance(raw, dict) and raw.get("format") == surgery.FORMAT:
        return surgery.load(p).eval(), {k: raw.get(k) for k in INFO}
    ckpt = read_checkpoint(p)
    name = ckpt.get("model_name")
    if not name:
        raise CheckpointError(f"{p}: records no model name, so its model cannot be rebuilt")
    n_cls = ckpt.get("num_classes")
    if n_cls is None:  # a prune run of an older version: the weights say it
        n_cls = _classes_in(ckpt["model"], models.create(name))
    model = models.create(name, num_classes=None if n_cls is None else int(n_cls))
    keep = (ckpt.get("callbacks", {}).get("pruner") or {}).get("keep_index")
    state = ckpt["model"]
    mine = model.state_dict()
    if keep is not None and any(
        k in state and tuple(state[k].shape) != tuple(v.shape) for k, v in mine.items()
    ):
        # a prune run's checkpoint after surgery: cut the fresh model the same way first
        groups = find_groups(model.eval(), torch.zeros(1, *models.input_size(name)))
        if len(groups.prunable) != len(keep):
            raise CheckpointError(
                f"{p}: its pruning names {len(keep)} channel groups, {name} has "
                f"{len(groups.prunable)}: the checkpoint is from another version of the model"
            )
        surgery.prune_groups(groups, [torch.tensor(k, dtype=torch.long) for k in keep])
    load_model_state(model, ckpt, p)
    info = {k: ckpt.get(k) for k in INFO}
    info["model_name"], info["num_classes"] = name, n_cls
    return model.eval(), info
