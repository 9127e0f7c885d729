"""``find_groups``: trace a model, turn Torch-Pruning's groups into ``ChannelGroup``s, and leave
unpruned (with a warning saying why) every group that cannot lose channels and stay exact:
groups through a channel shuffle, of mixed widths, with overlapping inputs, or whose channels do
not arrive where the graph says (checked by probing the traced network)."""

from __future__ import annotations

import math
import traceback
import warnings

import torch
from torch import nn

from ..gates import GateHooks, pad_groups
from .graph import _Graph
from .groups import LAYERS, NORMS, ChannelGroup, Groups, TraceError, _record_shapes


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


@torch.no_grad()
def _check_same_layers_run(model: nn.Module, example: torch.Tensor) -> None:
    """Refuse a forward whose layers depend on the input's values (``if x.mean() > 0``): the
    trace sees one branch, so the other's channels would be grouped with nothing and fail
    mid-training with a channel mismatch. Runs the example, its negation and noise of its
    scale, and compares which layers ran."""
    if not torch.is_tensor(example) or not example.is_floating_point():
        return
    ran: set[str] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, _o, n=n: ran.add(n))
        for n, m in model.named_modules()
        if isinstance(m, LAYERS + NORMS)
    ]
    g = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(example.shape, generator=g).to(example) * example.std().clamp_min(1.0)
    seen = []
    try:
        for x in (example, -example, noise):
            ran.clear()
            model(x)
            seen.append(set(ran))
    finally:
        for h in hooks:
            h.remove()
    differ = sorted(set.union(*seen) - set.intersection(*seen))
    if differ:
        some = ", ".join(differ[:6]) + (" …" if len(differ) > 6 else "")
        raise TraceError(
            f"the model's forward runs different layers for different inputs ({some} run for "
            "some inputs only): a branch on the input's "
            "values cannot be traced into channel groups. Prune a copy of the model whose forward "
            "takes one path for every input"
        )


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
        _check_same_layers_run(model, example_inputs)
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
