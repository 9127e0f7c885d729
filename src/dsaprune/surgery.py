"""Physical channel removal (through Torch-Pruning), hard masks, and the pruned-model file.

A pruned model is saved as weights plus a description of every layer's widths, never as pickled
code: ``save(model, path)`` / ``load(path)`` rebuild it from the zoo name (or from an unpruned
instance that the caller passes), and the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .gates import GateHooks, pad_groups
from .grouping import LAYERS, NORMS, Groups
from .io import atomic_torch_save

FORMAT = "dsaprune-pruned-model"


def top_channels(importance: torch.Tensor, n: int, unit: int = 1) -> torch.Tensor:
    """Indices of the ``n`` most important channels, in ascending order. With ``unit`` u > 1
    (a grouped convolution's u groups), the channels are u blocks of C/u and the same positions
    are kept in every block, chosen by their importance summed over the blocks."""
    if unit <= 1:
        return importance.topk(n).indices.sort().values
    if n % unit or importance.numel() % unit:
        raise ValueError(f"{n} of {importance.numel()} channels is not whole units of {unit}")
    width = importance.numel() // unit
    local = importance.reshape(unit, width).sum(0).topk(n // unit).indices.sort().values
    return (torch.arange(unit).unsqueeze(1) * width + local).flatten()


def prune_groups(groups: Groups, keep: list[torch.Tensor]) -> None:
    """Remove, in place, every channel of each prunable group that is not in ``keep[k]``."""
    for g, kept in zip(groups.prunable, keep, strict=True):
        drop = sorted(set(range(g.channels)) - {int(i) for i in kept})
        if not drop:
            continue
        if len(drop) >= g.channels:
            raise ValueError(f"group {g.index} would lose all {g.channels} channels")
        if g.unit > 1 and not _same_in_every_block(drop, g.channels, g.unit):
            raise ValueError(
                f"group {g.index} ({g.describe()}) feeds a convolution of {g.unit} groups: it "
                f"must drop the same positions in each of its {g.unit} blocks (see top_channels)"
            )
        module, handler = g.root
        tg = groups.graph.get_pruning_group(module, handler, drop)
        tg.prune()
        _cut_layer_params(groups.model, g.channel_params, kept)


def _cut_layer_params(model: nn.Module, names: list[str], kept: torch.Tensor) -> None:
    """Cut the per-output-channel parameters that a layer owns besides its weight and bias (a
    weight-standardised convolution's gain); Torch-Pruning cuts the others."""
    for name in names:
        m, attr = _owner(model, name)
        if not isinstance(m, LAYERS):
            continue
        p = getattr(m, attr)
        idx = kept.to(device=p.device, dtype=torch.long).sort().values
        setattr(m, attr, nn.Parameter(p.data.index_select(0, idx), p.requires_grad))


@torch.no_grad()
def masked_then_pruned(
    groups: Groups, keep: list[torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs on ``x`` with the channels outside ``keep`` masked to zero, then
    with them physically removed (in place): equal, when the groups describe the network."""
    masks = HardMasks(groups, keep)
    masked = groups.model(x)
    masks.remove()
    prune_groups(groups, keep)
    return masked, groups.model(x)


def _same_in_every_block(drop: list[int], channels: int, unit: int) -> bool:
    width = channels // unit
    blocks = [
        sorted(i - b * width for i in drop if b * width <= i < (b + 1) * width) for b in range(unit)
    ]
    return all(blk == blocks[0] for blk in blocks)


class HardMasks(GateHooks):
    """Zero the pruned channels with forward hooks (the network keeps its shape)."""

    def __init__(self, groups: Groups, keep: list[torch.Tensor]) -> None:
        super().__init__(groups)
        masks = []
        for g, kept in zip(groups.prunable, keep, strict=True):
            m = torch.zeros(g.channels)
            m[kept] = 1.0
            masks.append(m)
        self.set(pad_groups(masks, fill=0.0)[0])


def widths(model: nn.Module) -> dict[str, dict[str, int]]:
    """Every resizable layer's widths: what ``load`` needs to rebuild the pruned shapes."""
    out: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.Linear):
            out[name] = {"in": m.in_features, "out": m.out_features}
        elif isinstance(m, NORMS):
            out[name] = {"out": m.num_features}
        elif isinstance(m, nn.LayerNorm):
            out[name] = {"shape": list(m.normalized_shape)}
        elif isinstance(m, nn.GroupNorm):
            out[name] = {"out": m.num_channels}
    return out


def apply_widths(model: nn.Module, w: dict[str, dict[str, int]]) -> nn.Module:
    """Resize the layers of an unpruned ``model`` in place to the widths ``w`` (fresh weights)."""
    for name, spec in w.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no layer {name!r}: another architecture") from None
        if isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels, m.groups = spec["in"], spec["out"], spec["groups"]
            shape = (spec["out"], spec["in"] // spec["groups"], *m.kernel_size)
            m.weight = nn.Parameter(torch.empty(shape))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(spec["out"]))
        elif isinstance(m, nn.Linear):
            m.in_features, m.out_features = spec["in"], spec["out"]
            m.weight = nn.Parameter(torch.empty(spec["out"], spec["in"]))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(spec["out"]))
        elif isinstance(m, NORMS):
            c = spec["out"]
            m.num_features = c
            if m.affine:
                m.weight, m.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))
            if m.track_running_stats:
                m.running_mean, m.running_var = torch.zeros(c), torch.ones(c)
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = tuple(spec["shape"])
        elif isinstance(m, nn.GroupNorm):
            m.num_channels = spec["out"]
        else:
            raise ValueError(f"layer {name!r} is a {type(m).__name__}, not a resizable layer")
    return model


def _resize_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter and buffer the shape it has in ``state`` (the pruned norms' weights,
    per-channel parameters such as a layer scale); the values come from ``load_state_dict``."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for key, saved in state.items():
        t = own.get(key)
        if t is None or t.shape == saved.shape:
            continue
        m, attr = _owner(model, key)
        fresh = torch.empty(saved.shape, dtype=t.dtype)
        setattr(
            m, attr, nn.Parameter(fresh, t.requires_grad) if isinstance(t, nn.Parameter) else fresh
        )


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module that holds parameter or buffer ``name``, and the attribute it is under."""
    owner, _, attr = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), attr


def save(model: nn.Module, path: str | Path, *, model_name: str = "", **meta) -> None:
    """Save a (pruned) model as weights plus widths; ``meta`` is stored alongside."""
    sd = model.state_dict()
    state = {k: v.detach().cpu() for k, v in sd.items()}
    # each module's state-dict version (some, such as MNASNet's, refuse to load without it)
    versions = {k: dict(v) for k, v in getattr(sd, "_metadata", {}).items()}
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": 1,
            "model_name": model_name,
            "widths": widths(model),
            "state_dict": state,
            "state_versions": versions,
            **meta,
        },
        path,
    )


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save`. Zoo models need nothing more; for other models pass
    an unpruned instance of the same architecture as ``model``."""
    from . import models

    d = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dsaprune pruned-model file")
    if model is None:
        if not d.get("model_name"):
            raise ValueError(f"{path}: not a zoo model; pass an unpruned instance as model=")
        num_classes = d.get("num_classes")
        model = models.create(d["model_name"], num_classes=num_classes)
    apply_widths(model, d["widths"])
    _resize_tensors(model, d["state_dict"])
    state = OrderedDict(d["state_dict"])
    state._metadata = OrderedDict(d.get("state_versions", {}))  # type: ignore[attr-defined]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: the weights do not fit the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): another architecture"
        )
    return model.eval()
