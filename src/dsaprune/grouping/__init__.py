"""Topological channel groups: the sets of channels that must be pruned together.

Torch-Pruning's ``DependencyGraph`` is the graph engine. Each group lists its *producers* (layers
whose output channels it removes: convolutions, linear layers, BN), the BN layers that carry its
mask, its *consumers* (layers whose input channels it removes, with which input indices), its
channel count and whether it may be pruned. One forward pass with hooks records the execution
order and every convolution's and linear layer's shapes, which the cost models need.

The package's parts: ``graph`` (the dependency graph engine), ``groups`` (the data: groups and
layer shapes), ``find`` (tracing and the checks that leave a group unpruned), ``importance``
(which channels a group keeps first).
"""

from .find import find_groups
from .groups import LAYERS, NORMS, ChannelGroup, Groups, LayerShape, TraceError
from .importance import bn_scales, channel_importance

__all__ = [
    "LAYERS",
    "NORMS",
    "ChannelGroup",
    "Groups",
    "LayerShape",
    "TraceError",
    "bn_scales",
    "channel_importance",
    "find_groups",
]
