"""Topological channel groups: the sets of channels that must be pruned together.

Torch-Pruning's ``DependencyGraph`` is the graph engine. Each group lists its *producers* (layers
whose output channels it removes: convolutions, linear layers, BN), the BN layers that carry its
mask, its *consumers* (layers whose input channels it removes, with which input indices), its
channel count and whether it may be pruned. One forward pass with hooks records the execution
order and every convolution's and linear layer's shapes, which the cost models need.
"""

from __future__ import annotations

import math
import traceback
import warnings
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

LAYERS = (nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm2d, nn.BatchNorm1d)


class TraceError(RuntimeError):
    """The model could not be traced into channel groups."""


class _Graph(tp.DependencyGraph):
    """Torch-Pruning's dependency graph with a group search that explores each (layer, pruning
    operation) only for indices it has not explored there yet.

    The stock search re-explores a layer whenever it arrives with an index list it has not seen
    in exactly that form. Where channels split and rejoin in overlapping slices (ReXNet's
    partial residuals, dense concatenations) the same layer is reached with many different
    subsets, and the search grows exponentially (minutes for one network). Index mappings act on
    each index separately, so indices already explored at a layer lead nowhere new: skipping
    them gives the same group, after the final merge, in linear time.

    Channel shuffles (a reshape that splits the channels, a transpose, a reshape back) are
    found after tracing and passed as identities, recorded in ``shuffles``: their channel order
    depends on the width, so a group that crosses one cannot lose channels and keep the pruned
    network equal to the masked one. Torch-Pruning's own reshape mapping fails on them."""

    def _build_dependency(self, module2node):
        super()._build_dependency(module2node)
        _exact_concat_and_split(module2node)
        self.shuffles = _find_shuffles(module2node)
        for op in self.shuffles:
            module2node[op].type = tp.ops.OPTYPE.ELEMENTWISE  # no reshape index mapping

    def get_pruning_group(self, module, pruning_fn, idxs):
        from torch_pruning import _helpers
        from torch_pruning.dependency import index_mapping
        from torch_pruning.dependency.dependency import Dependency
        from torch_pruning.dependency.group import Group
        from torch_pruning.pruner import function

        if module not in self.module2node:
            raise ValueError(f"module {module} is not in the dependency graph")
        if isinstance(module, nn.Conv2d) and module.groups == module.out_channels > 1:
            pruning_fn = function.prune_depthwise_conv_out_channels
        start = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
        index_mapping.update_index_mapping(self)
        root = self.module2node[module]
        # (target node, operation) -> [first dependency, indices in arrival order, their idx]
        items: dict = {}

        def add(dep, at) -> None:
            entry = items.setdefault((dep.target, dep.handler), [dep, [], set()])
            for index in at:
                if index.idx not in entry[2]:
                    entry[1].append(index)
                    entry[2].add(index.idx)

        add(Dependency(pruning_fn, pruning_fn, source=root, target=root), start)
        explored = {(root, pruning_fn): set(start)}
        todo = [(root, pruning_fn, start)]
        while todo:
            node, fn, at = todo.pop()
            for dep in node.dependencies:
                if not dep.is_triggered_by(fn):
                    continue
                moved = at
                for mapping in dep.index_mapping:
                    if mapping is not None:
                        moved = mapping(moved)
                seen = explored.setdefault((dep.target, dep.handler), set())
                new = [i for i in moved if i not in seen]
                if not new:
                    continue
                seen.update(new)
                add(dep, new)
                todo.append((dep.target, dep.handler, new))
        merged = Group()
        for dep, at, _ in items.values():
            target = dep.target.module
            if isinstance(target, nn.Parameter) and any(target is p for p in self.ignored_params):
                continue
            merged.add_dep(dep, _helpers.to_plain_idxs(at))
            merged[len(merged) - 1].root_idxs = _helpers.to_root_idxs(at)
        merged._DG = self
        return merged


def _width(grad_fn, nr: int, dim: int) -> int | None:
    """The size along ``dim`` of output ``nr`` of the operation behind ``grad_fn``."""
    try:
        return int(grad_fn._input_metadata[nr].shape[dim])
    except (AttributeError, IndexError, TypeError, RuntimeError):
        return None


def _edge(consumer, producer) -> int | None:
    """Which output of ``producer`` node ``consumer`` takes (its autograd output number)."""
    nrs = {nr for f, nr in consumer.grad_fn.next_functions if f is producer.grad_fn}
    return nrs.pop() if len(nrs) == 1 else None


def _exact_concat_and_split(module2node) -> None:
    """Concatenation and split widths read from the traced tensors themselves.

    Torch-Pruning infers them by walking the graph to the nearest layer, which miscounts where
    a split's piece feeds a concatenation directly (ShuffleNetV2's pass-through half), and
    numbers a split's pieces in the order their consumers were traced, not by which piece each
    takes. Where the traced widths are not available, its own inference stays."""
    from torch_pruning.dependency.index_mapping import _SplitIndexMapping

    for op, node in module2node.items():
        fn = node.grad_fn
        dim = getattr(fn, "_saved_dim", None)
        if fn is None or dim != 1:
            continue
        if node.type == tp.ops.OPTYPE.CONCAT:
            sizes = []
            for n in node.inputs:
                nr = _edge(node, n) if n.grad_fn is not None else None
                sizes.append(None if nr is None else _width(n.grad_fn, nr, 1))
            if None not in sizes and sum(sizes) == _width(fn, 0, 1):
                op.concat_sizes = sizes
        elif node.type == tp.ops.OPTYPE.SPLIT:
            widths = [_width(fn, i, 1) for i in range(len(getattr(fn, "_input_metadata", ())))]
            pieces = [_edge(n, node) if n.grad_fn is not None else None for n in node.outputs]
            if not widths or None in widths or None in pieces:
                continue
            starts = [sum(widths[:i]) for i in range(len(widths) + 1)]
            for out, p in zip(node.outputs, pieces, strict=True):
                span = starts[p : p + 2]
                for dep in node.dependencies:
                    if dep.target is out:
                        dep.index_mapping[0] = _SplitIndexMapping(offset=span, reverse=False)
                for dep in out.dependencies:
                    if dep.target is node:
                        dep.index_mapping[0] = _SplitIndexMapping(offset=span, reverse=True)
            node.enable_index_mapping = False  # keep these mappings
            op.split_sizes, op.offsets = widths, starts


def _find_shuffles(module2node) -> set:
    """The operations of every channel shuffle: a reshape of a 4-d tensor, then transposes,
    permutes or copies, then a reshape."""
    reshape = tp.ops.OPTYPE.RESHAPE
    found: set = set()
    for op, node in module2node.items():
        sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
        if node.type != reshape or sizes is None or len(sizes) != 4:
            continue
        chain, moved, at = [op], False, node
        while len(at.outputs) == 1:
            at = at.outputs[0]
            name = at.grad_fn.name().lower() if at.grad_fn is not None else ""
            if at.type == reshape:
                if moved:
                    found.update([*chain, at.module])
                break
            if not any(k in name for k in ("transpose", "permute", "clone")):
                break
            moved |= "clone" not in name
            chain.append(at.module)
    return found


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
            shapes.setdefault(name, s)

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


def _output_layers(graph) -> list[nn.Module]:
    """The layers whose output channels are the network's outputs: walking back from every node
    that feeds nothing, through channel-preserving operations (pooling, flatten, activations,
    BN, additions), to the first convolution or linear layer on each path. So a convolutional
    classifier before global pooling (SqueezeNet) is an output layer as a final linear is."""
    stack = [n for n in graph.module2node.values() if not n.outputs]
    found: list[nn.Module] = []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, LAYERS):
            if node.module not in found:
                found.append(node.module)
            continue
        stack.extend(node.inputs)
    return found


def _importance_source(g: ChannelGroup, graph, names, shapes) -> str:
    producers = sorted(g.producers, key=lambda n: shapes[n].order if n in shapes else 1 << 30)
    for p in producers:
        node = graph.module2node.get(graph.model.get_submodule(p))
        for out in node.outputs if node else []:
            if isinstance(out.module, NORMS) and names.get(out.module) in g.norms:
                return names[out.module]
    return g.norms[0] if g.norms else (producers[0] if producers else "")


def find_groups(
    model: nn.Module,
    example_inputs: torch.Tensor,
    ignored_layers: list[str] | None = None,
) -> Groups:
    """Trace ``model`` and return its channel groups. ``ignored_layers`` (module names) and the
    network's output layers are never pruned; their groups are listed as not prunable."""
    names = {m: n for n, m in model.named_modules()}
    ignored_layers = list(ignored_layers or [])
    missing = [n for n in ignored_layers if n not in dict(model.named_modules())]
    if missing:
        raise ValueError(f"ignored_layers names no module of the model: {missing}")
    was = model.training
    model.eval()
    try:
        shapes = _record_shapes(model, example_inputs)
        ignored = [model.get_submodule(n) for n in ignored_layers]
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                # parameters used outside a layer (a layer scale) lose their last non-singleton
                # dimension's channels, which is the channel dimension for every such parameter
                # we know of; Torch-Pruning warns about each one
                warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
                graph = _Graph().build_dependency(
                    model, example_inputs, ignored_layers=ignored, verbose=False
                )
        except Exception as e:
            frames = {f.name for f in traceback.extract_tb(e.__traceback__)}
            if "update_reshape_index_mapping" in frames:
                why = (
                    "a reshape of the channel dimension that it cannot map (channel shuffles, "
                    "a reshape-transpose-reshape, are handled); pass ignored_layers=[...] "
                    "naming the layers around it, or prune a copy without the reshape"
                )
            else:
                why = "pass ignored_layers=[...] naming the custom module it fails on"
            raise TraceError(
                f"Torch-Pruning could not trace the model ({type(e).__name__}: {e}): {why}"
            ) from e
    finally:
        model.train(was)
    outputs = _output_layers(graph)
    pnames = {id(p): n for n, p in model.named_parameters()}
    groups: list[ChannelGroup] = []
    shuffled: list[ChannelGroup] = []
    for tg in graph.get_all_groups(ignored_layers=outputs + ignored, root_module_types=LAYERS):
        g = _convert(tg, graph, names, len(groups), pnames)
        g.importance_from = _importance_source(g, graph, names, shapes)
        groups.append(g)
        if any(item.dep.target.module in graph.shuffles for item in tg):
            shuffled.append(g)
    groups.sort(
        key=lambda g: min((shapes[p].order for p in g.producers if p in shapes), default=1 << 30)
    )
    for i, g in enumerate(groups):
        g.index = i
    _leave_shuffled_unpruned(shuffled)
    for g in groups:
        if g.channels < 2:
            g.prunable = False
        if not g.prunable:
            continue
        bad = _inconsistent_member(g, model, shapes)
        why = (
            f"it couples layers of different widths ({bad}); a channel-changing operation such "
            "as a zero-padding shortcut lies between them"
            if bad
            else _set_unit(g, model)
        )
        if why:
            _leave_unpruned(g, why)
    for g, why in _overlapping_inputs(groups):
        _leave_unpruned(g, why)
    no_bn = [g for g in groups if g.prunable and not g.norms]
    if no_bn:
        warnings.warn(
            f"{len(no_bn)} channel group(s) have no BN, so their channel importance is the L1 "
            f"norm of their filters: {_listed(no_bn)}",
            stacklevel=2,
        )
    found = Groups(
        model, graph, groups, shapes, names, tuple(example_inputs.shape[1:]), ignored_layers
    )
    for g, why in _check_channel_maps(found, example_inputs[:1]):
        _leave_unpruned(g, why)
    return found


def _leave_shuffled_unpruned(shuffled: list[ChannelGroup]) -> None:
    if not shuffled:
        return
    for g in shuffled:
        g.prunable = False
    warnings.warn(
        f"{len(shuffled)} channel group(s) pass through a channel shuffle, whose channel order "
        f"depends on the width, and are left unpruned: {_listed(shuffled)}; the groups that do "
        "not cross it are pruned as usual",
        stacklevel=3,
    )


def _listed(groups: list[ChannelGroup], shown: int = 6) -> str:
    """The first ``shown`` groups as "index (members)", and how many more there are."""
    listed = "; ".join(f"{g.index} ({g.describe()})" for g in groups[:shown])
    more = f" and {len(groups) - shown} more" if len(groups) > shown else ""
    return listed + more


def _leave_unpruned(g: ChannelGroup, why: str) -> None:
    g.prunable = False
    # stacklevel 3: the caller of find_groups
    warnings.warn(f"channel group {g.index} ({g.describe()}) is left unpruned: {why}", stacklevel=3)


@torch.no_grad()
def _check_channel_maps(groups: Groups, x: torch.Tensor, probes: int = 3):
    """Groups whose recorded input-channel indices are not where their channels arrive.

    Each probe zeroes one channel of every prunable group with the gates' own masks and checks
    that each consumer's input is zero at the index the group records for that channel. A
    reshape that moves channels (a channel shuffle) passes the graph as an identity, and pruning
    through it would silently compute something else; this finds it. Groups with LayerNorm over
    their channels are not checked (a normalisation over the channels does not keep a zero a
    zero)."""
    from .gates import GateHooks, pad_groups  # the gates build on the groups

    model = groups.model
    checked = [
        g
        for g in groups.prunable
        if not any(
            p.rpartition(".")[0]
            and isinstance(model.get_submodule(p.rpartition(".")[0]), (nn.LayerNorm, nn.GroupNorm))
            for p in g.channel_params
        )
    ]
    gen = torch.Generator().manual_seed(0)
    bad: dict[int, str] = {}
    was = model.training
    model.eval()
    gates = GateHooks(groups)
    try:
        for _ in range(probes):
            zero = {g.index: int(torch.randint(g.channels, (), generator=gen)) for g in checked}
            masks = [torch.ones(g.channels) for g in groups.prunable]
            for m, g in zip(masks, groups.prunable, strict=True):
                if g.index in zero:
                    m[zero[g.index]] = 0.0
            gates.set(pad_groups(masks)[0])
            seen: dict[str, torch.Tensor] = {}
            consumers = {n for g in checked for n in g.consumers}
            hooks = [
                model.get_submodule(n).register_forward_pre_hook(_keep_input(seen, n))
                for n in consumers
            ]
            try:
                model(x)
            finally:
                for h in hooks:
                    h.remove()
            for g in checked:
                for n, idxs in g.consumers.items():
                    inp = seen.get(n)
                    if inp is None or len(idxs) != g.channels or g.index in bad:
                        continue
                    last = isinstance(model.get_submodule(n), nn.Linear)
                    i = idxs[zero[g.index]]
                    col = inp[..., i] if last else inp[:, i]
                    if col.abs().max() > 0:
                        bad[g.index] = (
                            f"its channel {zero[g.index]} does not arrive at input channel {i} "
                            f"of {n}, where the dependency graph puts it (a reshape or "
                            "permutation of the channels lies between them)"
                        )
    finally:
        gates.remove()
        model.train(was)
    return [(g, bad[g.index]) for g in checked if g.index in bad]


def _keep_input(seen: dict, name: str):
    def hook(_m, inp):
        seen.setdefault(name, inp[0].detach())

    return hook


def _inconsistent_member(g: ChannelGroup, model: nn.Module, shapes) -> str:
    """The first member whose width is not the group's, or ''."""
    for n in g.producers:
        if n in shapes and shapes[n].out_channels != g.channels:
            return f"{n} has {shapes[n].out_channels} output channels, the group {g.channels}"
    for n in g.norms:
        width = len(g.at(n) or range(model.get_submodule(n).num_features))
        if width != g.channels:
            return f"{n} has {width} of its channels in a {g.channels}-channel group"
    for n, idxs in g.consumers.items():
        s = shapes.get(n)
        if s is not None and s.kind == "conv" and len(idxs) != g.channels:
            return f"{n} takes {len(idxs)} of its input channels from a {g.channels}-channel group"
    return ""


def _overlapping_inputs(groups: list[ChannelGroup]) -> list[tuple[ChannelGroup, str]]:
    """Prunable groups that share a layer's input channel with another group: their channels
    are added together there, so they cannot lose channels independently."""
    owner: dict[tuple[str, int], ChannelGroup] = {}
    out: dict[int, tuple[ChannelGroup, str]] = {}
    for g in groups:
        for layer, idxs in g.consumers.items():
            for i in idxs:
                other = owner.setdefault((layer, i), g)
                if other is g:
                    continue
                why = (
                    f"input channel {i} of {layer} is also channel-group {other.index}'s (the "
                    "two are added together), and the dependency graph did not couple them"
                )
                for h in (g, other):
                    if h.prunable and h.index not in out:
                        out[h.index] = (h, why)
    return list(out.values())


def _set_unit(g: ChannelGroup, model: nn.Module) -> str:
    """Sets ``g.unit`` from the grouped convolutions among its members; returns why the group
    cannot be pruned, or ''."""
    for n in [*g.producers, *g.consumers]:
        m = model.get_submodule(n)
        if not isinstance(m, nn.Conv2d) or m.groups == 1:
            continue
        if m.groups == m.in_channels == m.out_channels:
            continue  # depthwise: its channels are the group's own
        if m.groups in (m.in_channels, m.out_channels) or g.channels % m.groups:
            return f"{n} is a convolution of {m.groups} groups on {g.channels} channels"
        g.unit = math.lcm(g.unit, m.groups)
    if g.unit > 1 and (g.channels % g.unit or g.channels == g.unit):
        return f"its grouped convolutions need whole units of {g.unit} of its {g.channels} channels"
    return ""


def _convert(tg, graph, names, index: int, pnames: dict[int, str]) -> ChannelGroup:
    producers, norms, consumers, masked, params = [], [], {}, [], []
    positions: dict[str, list[int]] = {}
    for item in tg:
        m, fn = item.dep.target.module, item.dep.handler
        if isinstance(m, nn.Parameter) and id(m) in pnames:
            params.append(pnames[id(m)])
            continue
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m in names:
            params += [f"{names[m]}.{n}" for n, _ in m.named_parameters(recurse=False)]
            continue
        if not isinstance(m, nn.Module) or m not in names:
            continue
        n = names[m]
        if isinstance(m, NORMS):
            if n not in norms:
                norms.append(n)
            if len(item.idxs) != m.num_features:
                by_root = sorted(zip(item.root_idxs, item.idxs, strict=True))
                positions[n] = [int(i) for _, i in by_root]
        elif isinstance(m, LAYERS):
            depthwise = isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels
            if (graph.is_out_channel_pruning_fn(fn) or depthwise) and n not in producers:
                producers.append(n)
                params += _own_channel_params(n, m)
            if graph.is_in_channel_pruning_fn(fn) and not depthwise:
                consumers.setdefault(n, []).extend(int(i) for i in item.idxs)
    # the mask sits after each BN, and on any producer whose output does not go into a BN
    masked = list(norms)
    for p in producers:
        node = graph.module2node[graph.model.get_submodule(p)]
        if not any(
            isinstance(o.module, NORMS) and names.get(o.module) in norms for o in node.outputs
        ):
            masked.append(p)
    root = tg[0]
    return ChannelGroup(
        index=index,
        channels=len(root.idxs),
        producers=producers,
        norms=norms,
        consumers={k: sorted(set(v)) for k, v in consumers.items()},
        masked=masked,
        root=(root.dep.target.module, root.dep.handler),
        channel_params=sorted(set(params)),
        positions=positions,
    )


def _own_channel_params(name: str, layer: nn.Module) -> list[str]:
    """A layer's parameters besides weight and bias that hold one value per output channel (a
    weight-standardised convolution's gain), which Torch-Pruning's layer pruners do not cut."""
    width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    return [
        f"{name}.{n}"
        for n, p in layer.named_parameters(recurse=False)
        if n not in ("weight", "bias") and p.dim() >= 1 and p.shape[0] == width
    ]


def channel_importance(groups: Groups, source: str = "bn_first") -> list[torch.Tensor]:
    """Per prunable group, the detached importance of each channel: ``bn_first`` |γ| of the BN
    after the group's first convolution, ``bn_sum`` Σ|γ| over the group's BNs, ``l1`` the
    L1 norm of the first producer's filters. Groups without BN always use ``l1``."""
    out = []
    for g in groups.prunable:
        with torch.no_grad():
            if source == "bn_sum" and g.norms:
                imp = sum(bn_scales(groups, g, n).abs() for n in g.norms)
            elif source in ("bn_first", "bn_sum") and g.norms:
                imp = bn_scales(groups, g, g.importance_from).abs()
            elif source in ("bn_first", "bn_sum", "l1"):
                w = groups.module(g.producers[0]).weight
                imp = w.abs().flatten(1).sum(1)
            else:
                raise ValueError(
                    f"importance source must be bn_first, bn_sum or l1, got {source!r}"
                )
        out.append(imp.detach().float())
    return out


def bn_scales(groups: Groups, g: ChannelGroup, norm: str) -> torch.Tensor:
    """The BN scales of group ``g``'s channels in BN ``norm``, in the group's channel order."""
    w = groups.module(norm).weight
    at = g.at(norm)
    return w if at is None else w[torch.tensor(at, device=w.device)]
