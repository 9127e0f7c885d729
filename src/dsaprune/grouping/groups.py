"""What a traced model's channel groups are: each group's members (producers, BN, consumers with
their input indices), its width and unit, and every convolution's and linear layer's recorded
shape, which the cost models read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

LAYERS = (nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm2d, nn.BatchNorm1d)


class TraceError(RuntimeError):
    """The model could not be traced into channel groups."""


@dataclass
class LayerShape:
    """What one convolution / linear layer saw in the recording forward pass (batch 1)."""

    name: str
    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    groups: int
    kernel: int  # kh * kw (1 for linear)
    out_spatial: int  # H_out * W_out (1 for linear)
    bias: bool
    order: int  # position in execution order
    in_spatial: tuple[int, ...] = (1,)  # the input's spatial size (rows for a linear layer)

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups == self.in_channels == self.out_channels > 1

    @property
    def flops(self) -> int:
        """FlopCounterMode's count: 2 per multiply-add, no bias adds."""
        return (
            2
            * self.out_spatial
            * self.out_channels
            * (self.in_channels // self.groups)
            * (self.kernel)
        )

    @property
    def weight_params(self) -> int:
        return self.out_channels * (self.in_channels // self.groups) * self.kernel


@dataclass
class ChannelGroup:
    index: int
    channels: int
    producers: list[str]  # conv / linear layers whose output channels are this group
    norms: list[str]  # BN layers on this group's channels
    consumers: dict[str, list[int]]  # layer -> the input-channel indices that are this group
    prunable: bool = True
    masked: list[str] = field(default_factory=list)  # modules whose outputs carry the mask
    importance_from: str = ""  # BN (or, without BN, conv) that supplies channel importance
    # channels are dropped in whole units: 1, or u when a convolution of u groups (not
    # depthwise) takes or makes them, which must lose the same positions in each of its groups
    unit: int = 1
    # other parameters that lose this group's channels (LayerNorm over channels, a layer scale)
    channel_params: list[str] = field(default_factory=list)
    # where the group's channels sit in a BN wider than the group (a BN after a concatenation,
    # as in DenseNet), by BN name; a BN absent here is the group's own width
    positions: dict[str, list[int]] = field(default_factory=dict)

    def at(self, name: str) -> list[int] | None:
        """The group's channel positions within member ``name``, or None for all of them."""
        return self.positions.get(name)

    root: tuple[nn.Module, object] | None = field(default=None, repr=False)

    def describe(self) -> str:
        return ", ".join(self.producers) + (f" (+{len(self.norms)} BN)" if self.norms else "")


class Groups:
    """The channel groups of one model, with the recorded layer shapes."""

    def __init__(self, model, graph, groups, shapes, names, input_shape, ignored=()) -> None:
        self.model, self.graph = model, graph
        self.ignored: list[str] = list(ignored)  # the caller's ignored_layers
        self.groups: list[ChannelGroup] = groups
        self.shapes: dict[str, LayerShape] = shapes
        self.names: dict[nn.Module, str] = names
        self.input_shape = input_shape

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        return iter(self.groups)

    def __getitem__(self, i: int) -> ChannelGroup:
        return self.groups[i]

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)


def _record_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, LayerShape]:
    shapes: dict[str, LayerShape] = {}
    hooks = []
    current: list[str] = []

    def pre(name):
        def hook(_m, _inp):
            current.append(name)

        return hook

    def post(name, m):
        def hook(_m, _inp, out):
            current.pop()
            if isinstance(m, nn.Conv2d):
                s = LayerShape(
                    name,
                    "conv",
                    m.in_channels,
                    m.out_channels,
                    m.groups,
                    m.kernel_size[0] * m.kernel_size[1],
                    out.shape[2] * out.shape[3],
                    m.bias is not None,
                    len(shapes),
                    tuple(_inp[0].shape[2:]),
                )
            elif isinstance(m, nn.Linear):
                rows = out.numel() // out.shape[-1]
                s = LayerShape(
                    name,
                    "linear",
                    m.in_features,
                    m.out_features,
                    1,
                    1,
                    rows,
                    m.bias is not None,
                    len(shapes),
                    tuple(_inp[0].shape[1:-1]),
                )
            else:
                return
            seen = shapes.get(name)
            if seen is None:
                shapes[name] = s
            else:  # a shared layer (a detector's head over every feature level): its calls add
                shapes[name] = replace(seen, out_spatial=seen.out_spatial + s.out_spatial)

        return hook

    for name, m in model.named_modules():
        if name and not list(m.children()):
            hooks.append(m.register_forward_pre_hook(pre(name)))
            hooks.append(m.register_forward_hook(post(name, m)))
    try:
        with torch.no_grad():
            model(example)
    except Exception as e:
        where = current[-1] if current else "<model>"
        raise TraceError(
            f"the forward pass failed in module {where!r} ({type(e).__name__}: {e}); fix the "
            f"input shape, or pass ignored_layers=[{where!r}] to leave that module unpruned"
        ) from e
    finally:
        for h in hooks:
            h.remove()
    return shapes
