"""Latency as a quadratic form in the keep ratios, fitted from measurements on the target device.

Each convolution / linear layer is rebuilt in its real shape and timed at a grid of input and
output channel counts; its time is fitted as bilinear in the two keep ratios plus a constant,
t(x, y) = a·x·y + b·x + c·y + d with a, b, c, d ≥ 0, so the network stays a quadratic form and
the allocator, the budget guarantee and the rounding work unchanged. The layers' sum is
calibrated on pruned copies of the whole network, T ≈ κ·Σ layers + λ·Σ_k e_k α_k + c0 (the
element-wise work on each group's feature maps is λ's). On a CPU, channels above one vector
block count in whole blocks (``channel_block``), and a wide group may keep less than one block
only where half-block probes showed its layers getting faster (``_sub_block_groups``). Fits are
cached per device in ``$DSAPRUNE_CACHE/latency/<device>.json``, written atomically.

The measurements behind each of these choices are in ``docs/latency.md``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..grouping import Groups, find_groups
from ..io import atomic_write_json, cache_dir
from .quadratic import LayerTerms, QuadraticCost, QuadraticForm, layer_terms
from .timing import device_key, example_input, measure_latency, time_calls

FORMAT = 7
GRID = (0.25, 0.5, 0.75, 1.0)
UNIFORM = (1.0, 0.75, 0.5, 0.25)  # whole-network keep ratios the calibration is fitted on
MIXED = 4  # and this many copies with a random keep ratio per group, drawn in MIXED_RANGE
MIXED_RANGE = (0.2, 1.0)
# a wide group may keep less than one block where its layers, timed at half a block, run at
# most this much slower than their fits predict there (see _sub_block_groups). On the 2-core
# machine the groups' probes read 0.58-1.27 of their fits at batch 1 (apart from one
# MobileNetV2 group at 1.56), and 1.03-4.59 at batch 64, mostly above 1.2; the same ResNet
# layer read 0.99 in one batch-1 fit and 1.13 in the next, so 10% refused it by chance
SUB_BLOCK_TOLERANCE = 0.15


def nnls(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least squares with non-negative coefficients, exact for the few columns used here: the
    best feasible solution over every subset of active columns."""
    n = X.shape[1]
    best, best_err = torch.zeros(n, dtype=X.dtype), float(y.square().sum())
    for r in range(1, n + 1):
        for cols in itertools.combinations(range(n), r):
            sol = torch.linalg.lstsq(X[:, cols], y.unsqueeze(1)).solution.squeeze(1)
            if bool((sol < 0).any()):
                continue
            err = float((X[:, cols] @ sol - y).square().sum())
            if err < best_err:
                best_err = err
                best = torch.zeros(n, dtype=X.dtype)
                best[list(cols)] = sol
    return best


def channel_block(device: torch.device | str) -> int:
    """The channel count a convolution's time steps by on ``device``: the float32 lanes of the
    CPU's widest vector unit that PyTorch uses; 1 (no step assumed) where it is not known,
    including CUDA, where it has not been measured."""
    device = torch.device(device)
    if device.type != "cpu":
        return 1
    return {"AVX512": 16, "AVX2": 8}.get(torch.backends.cpu.get_cpu_capability(), 1)


def _step(channels: int, unit: int, block: int) -> int:
    """The grid's step for a side of ``channels``: whole blocks where it is wider than one
    (a partial block there costs a full one), else the unit (the time still falls below it)."""
    return math.lcm(unit, block) if channels > block else unit


def _counts(channels: int, ratios: Sequence[float], multiple: int = 1) -> list[int]:
    out = []
    for r in ratios:
        # the full width is always a count (the unpruned layer), a multiple of the block or not
        n = channels if r >= 1.0 else max(multiple, round(r * channels / multiple) * multiple)
        if n not in out:
            out.append(min(n, channels))
    return out


def _layer(module: nn.Module, n_in: int, n_out: int, device, dtype) -> nn.Module:
    """A copy of ``module``'s layer type and geometry with other channel counts. The weights are
    a constant, not random, so that timing leaves the global random stream alone."""
    kw = dict(device=device, dtype=dtype)
    if isinstance(module, nn.Conv2d):
        groups = module.groups
        if groups > 1 and module.groups == module.in_channels == module.out_channels:
            groups = n_in  # depthwise stays depthwise
        layer = nn.utils.skip_init(
            nn.Conv2d,
            n_in,
            n_out,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            **kw,
        )
    else:
        layer = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=module.bias is not None, **kw)
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(0.01)
    return layer.eval()


def _layer_key(t: LayerTerms, module: nn.Module, batch: int, block: int) -> str:
    s = t.shape
    geo = ""
    if isinstance(module, nn.Conv2d):
        geo = (
            f"k{module.kernel_size}s{module.stride}p{module.padding}d{module.dilation}"
            f"g{module.groups}{module.padding_mode}"
        )
    return (
        f"{s.kind}|{s.in_channels}>{s.out_channels}|{geo}|in{tuple(s.in_spatial)}|"
        f"bias{s.bias}|b{batch}|vary{int(t.varies_in)}{int(t.out_k is not None)}|grid{GRID}"
        f"|block{block}"
    )


def _half_block(channels: int, unit: int, block: int) -> int | None:
    """The count below one block a wide side is probed at (half a block, in whole units), or
    None where the side is no wider than a block (its grid already reaches below it)."""
    if block <= 1 or channels <= block:
        return None
    n = max(unit, (block // 2) // unit * unit)
    return n if n < block else None


def _measure_layer(
    t: LayerTerms, module: nn.Module, batch: int, device, dtype, block: int = 1
) -> tuple[list[list], list[list]]:
    """``points``: [[x, y, seconds], …] over the grid of the ratios this layer's channels can
    take (whole blocks of ``block`` channels); ``probes``: [[x, y, seconds, side], …] with one
    wide side (``"in"``, ``"out"``, or ``"both"`` for a depthwise layer) at half a block and
    the other at full width, where the fit is checked below the first block
    (``_sub_block_groups``)."""
    s = t.shape
    depthwise = s.depthwise
    unit = 1 if depthwise or s.groups == 1 else s.groups
    outs = _counts(
        s.out_channels, GRID if t.out_k is not None else (1.0,), _step(s.out_channels, unit, block)
    )
    probes: list[tuple[int, int, str]] = []
    half_out = _half_block(s.out_channels, unit, block) if t.out_k is not None else None
    if depthwise:
        pairs = [(n, n) for n in outs]
        if half_out is not None:
            probes.append((half_out, half_out, "both"))
    else:
        ins = _counts(
            s.in_channels, GRID if t.varies_in else (1.0,), _step(s.in_channels, unit, block)
        )
        pairs = [(i, o) for i in ins for o in outs]
        if half_out is not None:
            probes.append((s.in_channels, half_out, "out"))
        # an input from one group only: a probe there speaks for that group
        single = len(t.in_terms) == 1 and t.in_terms[0][0] is not None
        half_in = _half_block(s.in_channels, unit, block) if single else None
        if half_in is not None:
            probes.append((half_in, s.out_channels, "in"))
    runs = pairs + [(i, o) for i, o, _ in probes]
    inputs = {}
    for n_in, _ in runs:
        if n_in not in inputs:  # channels first for a convolution, last for a linear layer
            shape = (n_in, *s.in_spatial) if s.kind == "conv" else (*s.in_spatial, n_in)
            inputs[n_in] = example_input(shape, batch, device, dtype)
    layers = [_layer(module, i, o, device, dtype) for i, o in runs]
    fns = [lambda m=m, x=inputs[i]: m(x) for m, (i, _) in zip(layers, runs, strict=True)]
    times = time_calls(fns, device, rounds=5)
    ratios = [
        [i / s.in_channels, o / s.out_channels, t_] for (i, o), t_ in zip(runs, times, strict=True)
    ]
    return ratios[: len(pairs)], [
        [*r, side] for r, (_, _, side) in zip(ratios[len(pairs) :], probes, strict=True)
    ]


def fit_layer(points: list[list], depthwise: bool = False) -> list[float]:
    """(a, b, c, d) of t = a·x·y + b·x + c·y + d, non-negative, from [[x, y, t], …]. A depthwise
    layer (x = y) is fitted as c·y + d."""
    P = torch.tensor(points, dtype=torch.float64)
    x, y, t = P[:, 0], P[:, 1], P[:, 2]
    if depthwise:
        cols = torch.stack([y, torch.ones_like(y)], 1)
        c, d = nnls(cols, t).tolist()
        return [0.0, 0.0, c, d]
    X = torch.stack([x * y, x, y, torch.ones_like(x)], 1)
    return nnls(X, t).tolist()


def layer_time(coef: Sequence[float], x: float, y: float) -> float:
    a, b, c, d = coef
    return a * x * y + b * x + c * y + d


class LatencyCache:
    """The fitted tables of one device: ``{"layers": {key: fit}, "networks": {key: fit}}``."""

    def __init__(self, key: str, root: Path | None = None) -> None:
        self.path = (root or cache_dir()) / "latency" / f"{key}.json"
        self.key = key
        self.layers: dict[str, dict] = {}
        self.networks: dict[str, dict] = {}
        self.dirty = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            d = json.loads(self.path.read_text())
            if isinstance(d, dict) and isinstance(d.get("format"), int) and d["format"] < FORMAT:
                self.dirty = True  # an older layout: measured again, silently
                return
            if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("device") != self.key:
                raise ValueError("not a latency table of this format and device")
            layers, networks = d["layers"], d["networks"]
            for entry in list(layers.values()) + list(networks.values()):
                coef = entry["coef"]
                if not all(isinstance(v, float | int) and math.isfinite(v) for v in coef):
                    raise ValueError("a fitted coefficient is not a finite number")
            for entry in layers.values():
                for x, y, sec, side in entry["probes"]:
                    if side not in ("in", "out", "both") or not all(
                        isinstance(v, float | int) and math.isfinite(v) for v in (x, y, sec)
                    ):
                        raise ValueError("a half-block probe is not [x, y, seconds, side]")
            self.layers, self.networks = dict(layers), dict(networks)
        except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            warnings.warn(
                f"latency cache {self.path} is damaged ({e}); measuring again and replacing it",
                stacklevel=3,
            )
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        d = {"format": FORMAT, "device": self.key, "layers": self.layers, "networks": self.networks}
        try:
            atomic_write_json(d, self.path)
            self.dirty = False
        except OSError as e:  # a read-only cache costs a re-measurement next time, nothing more
            warnings.warn(f"could not write the latency cache {self.path}: {e}", stacklevel=2)


@dataclass
class LatencyFit:
    """How a latency cost was fitted on its device (a ``QuadraticCost``'s ``fit``), and how a
    budget on it is met on that device: by timing the pruned network (``settle``)."""

    device: str
    batch: int
    block: int  # channels above one block count in whole blocks (``channel_block``)
    sub_block: list[int]  # prunable groups (indices into all groups) that may keep < one block
    sub_block_checks: list  # the half-block probes that decided it
    layers: dict  # each layer's fit: name -> {"coef": [a, b, c, d], ...}
    calibration: dict  # {"coef": [κ, c0, λ], "points": [[layers, element-wise, measured], ...]}
    calibration_fit_error: list[float]
    full_measured_s: float  # the unpruned network, timed when the table was made
    full_predicted_s: float
    cache: dict  # where the tables came from, so that a run which finds them wrong forgets them

    def settle(self, groups: Groups, counts_at, fraction: float) -> tuple[list[int], list[dict]]:
        return meet_by_measurement(groups, counts_at, fraction, self.batch, self.device)

    def time(self, groups: Groups, counts: list[int], fraction: float) -> list[dict]:
        ratio = measured_ratio(groups, counts, self.batch, self.device)
        if ratio > fraction:
            warnings.warn(
                f"the given keep_counts meet latency={fraction:g} on the fitted latency model "
                f"but the pruned network measured {ratio:.3f} of the unpruned one's latency on "
                f"{self.device}: it is kept as given; lower some counts to meet the budget on "
                "this device (the machine may also be busy: time it again with "
                "`dsaprune.measure_latency`)",
                stacklevel=2,
            )
        return [{"target": fraction, "measured_ratio": ratio}]


def measured_ratio(groups: Groups, counts: list[int], batch: int = 1, device="cpu") -> float:
    """Measured latency of the network pruned to ``counts`` over the network's, timed
    interleaved. Timing draws random inputs: the caller's random stream is left as it was, so
    that a run which measures gives the same weights as one which does not."""
    with torch.random.fork_rng(devices=[]):
        pruned = pruned_copy(groups, counts, device)
        full, cut = measure_latency([groups.model, pruned], groups.input_shape, batch, device)
    return cut / full


def meet_by_measurement(
    groups: Groups,
    counts_for,
    budget: float,
    batch: int = 1,
    device="cpu",
    tries: int = 3,
) -> tuple[list[int], list[dict]]:
    """Channel counts whose *measured* latency ratio meets ``budget``: ``counts_for(target)``
    gives whole channel counts that meet ``target`` on the fitted model; while the measured
    ratio exceeds the budget, the target is lowered by budget / measured and tried again (at
    most ``tries`` measurements). Returns the counts and one record per measurement."""
    target, log, best = budget, [], None
    for _ in range(tries):
        try:
            counts = counts_for(target)
        except ValueError:  # below what whole channels allow: keep the last counts
            break
        ratio = measured_ratio(groups, counts, batch, device)
        log.append({"target": target, "measured_ratio": ratio})
        best = counts
        if ratio <= budget:
            break
        target *= budget / ratio
    if log and log[-1]["measured_ratio"] > budget:
        warnings.warn(
            f"after {len(log)} measurements the pruned network still measured "
            f"{log[-1]['measured_ratio']:.3f} of the unpruned one's latency, over the budget "
            f"{budget:g}; keeping the last (tightest) counts. The machine may be busy: time it "
            "again with `dsaprune.measure_latency`, or give a lower budget",
            stacklevel=2,
        )
    return (best if best is not None else counts_for(budget)), log


def pruned_copy(groups: Groups, counts: list[int], device) -> nn.Module:
    """A physical copy of the network whose prunable groups keep ``counts`` channels (the first
    ones: which channels stay does not change the time; in a group that feeds a convolution of u
    groups, the first ones of each of its u blocks, as pruning keeps them)."""
    from ..surgery import prune_groups, top_channels  # surgery sits above the cost models

    model = copy.deepcopy(groups.model).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = torch.zeros(1, *groups.input_shape, device=device)
        G = find_groups(model, ex, groups.ignored)
    if [tuple(g.producers) for g in G.prunable] != [tuple(g.producers) for g in groups.prunable]:
        raise RuntimeError("the channel groups of a copy of the model differ from the model's")
    first = [-torch.arange(g.channels, dtype=torch.float32) for g in G.prunable]
    prune_groups(
        G, [top_channels(f, n, g.unit) for f, n, g in zip(first, counts, G.prunable, strict=True)]
    )
    return model.eval()


def _copy_at(
    groups: Groups, ratios: Sequence[float], device, block: int = 1
) -> tuple[nn.Module, list[float]]:
    """A physical copy of the network with prunable group k cut to about ``ratios[k]``, in whole
    units (a grouped convolution's) and blocks, and the keep ratios it has."""
    counts = [
        _counts(g.channels, [float(r)], _step(g.channels, g.unit, block))[0]
        for r, g in zip(ratios, groups.prunable, strict=True)
    ]
    alphas = [n / g.channels for n, g in zip(counts, groups.prunable, strict=True)]
    return pruned_copy(groups, counts, device), alphas


def _uniform_copy(
    groups: Groups, ratio: float, device, block: int = 1
) -> tuple[nn.Module, list[float]]:
    """``_copy_at`` one ratio for every group (the network itself at 1)."""
    if ratio >= 1.0:
        return groups.model, [1.0] * len(groups.prunable)
    return _copy_at(groups, [ratio] * len(groups.prunable), device, block)


def _mixed_copies(groups: Groups, device, block: int = 1) -> list[tuple[nn.Module, list[float]]]:
    """``MIXED`` copies (``_copy_at``) with a keep ratio per group drawn uniformly in
    ``MIXED_RANGE`` (a fixed private seed: the same copies on every run, the global random
    stream untouched)."""
    g = torch.Generator().manual_seed(0)
    lo, hi = MIXED_RANGE
    K = len(groups.prunable)
    return [
        _copy_at(
            groups,
            (lo + (hi - lo) * torch.rand(K, generator=g, dtype=torch.float64)).tolist(),
            device,
            block,
        )
        for _ in range(MIXED)
    ]


def _layer_fits(groups, terms, keys, batch, device, dtype, cache, fresh: bool, progress, block):
    """Each layer's fit (``keys``: its cache key by layer name), from the cache unless ``fresh``;
    identical layers are measured once."""
    todo = {k for k in keys.values() if fresh or k not in cache.layers}
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="latency: timing layers", leave=False)
    for t in terms:
        key = keys[t.name]
        if key in todo:
            pts, probes = _measure_layer(t, groups.module(t.name), batch, device, dtype, block)
            cache.layers[key] = {
                "coef": fit_layer(pts, t.shape.depthwise),
                "points": pts,
                "probes": probes,
            }
            cache.dirty = True
            todo.discard(key)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return {t.name: cache.layers[keys[t.name]] for t in terms}


def _sub_block_groups(
    groups: Groups, terms: list[LayerTerms], fits: dict, block: int
) -> tuple[list[bool], list[dict]]:
    """Which wide groups may keep less than one block: those whose layers, timed at half a
    block on the group's side (``_measure_layer``'s probes), took at most
    ``SUB_BLOCK_TOLERANCE`` longer in all than their fits predict there. Below one block a
    convolution's time still falls on a CPU at batch 1, and the fit's line through the whole
    blocks carries on to there; at batch 64 an output side below one block costs a whole one
    (a 3×3 convolution 32→8 at 16×16: 0.73 ms, 32→16: 0.74 ms). Also returns, per group,
    the probes' measured and predicted seconds (a group without probes keeps whole blocks)."""
    K = len(groups.prunable)
    measured, predicted = [0.0] * K, [0.0] * K
    for t in terms:
        entry = fits[t.name]
        for x, y, sec, side in entry.get("probes", []):
            k = t.in_terms[0][0] if side == "in" else t.out_k
            if k is None:
                continue
            measured[k] += sec
            predicted[k] += layer_time(entry["coef"], x, y)
    allowed, checks = [], []
    for k, g in enumerate(groups.prunable):
        ok = predicted[k] > 0 and measured[k] <= (1 + SUB_BLOCK_TOLERANCE) * predicted[k]
        allowed.append(bool(block > 1 and g.channels > block and ok))
        if predicted[k] > 0:
            checks.append(
                {"group": g.index, "measured_s": measured[k], "predicted_s": predicted[k]}
            )
    return allowed, checks


def _layers_form(groups: Groups, terms: list[LayerTerms], fits: dict) -> QuadraticForm:
    form = QuadraticForm(len(groups.prunable))
    for t in terms:
        a, b, c, d = fits[t.name]["coef"]
        # t = a·α_out·in + b·in + c·α_out + d, where in = Σ share_j α_j
        form.add(t.out_k, t.in_terms, a)
        form.add(None, t.in_terms, b)
        form.add(t.out_k, [(None, 1.0)], c)
        form.c += d
    return form


def _elementwise(groups: Groups, batch: int) -> torch.Tensor:
    """e_k: the activation elements of each prunable group at full width (its channels times its
    producers' output maps, times the batch); group k's element-wise work scales as e_k · α_k."""
    return torch.tensor(
        [
            float(batch * g.channels * sum(groups.shapes[p].out_spatial for p in g.producers))
            for g in groups.prunable
        ],
        dtype=torch.float64,
    )


def _calibrate(groups: Groups, layers: QuadraticCost, batch: int, device, block: int) -> dict:
    """Whole-network times of pruned copies (uniform ones first, the unpruned network first of
    all, then ``_mixed_copies``) against the layers' sum and the element-wise sum there:
    T ≈ κ · Σ layers + λ · Σ e_k α_k + c0 (κ, λ, c0 ≥ 0). ``coef``: [κ, c0, λ]; ``points``:
    [layers' sum, element-wise sum, measured] per copy."""
    copies = [_uniform_copy(groups, r, device, block) for r in UNIFORM]
    copies += _mixed_copies(groups, device, block)
    times = measure_latency([m for m, _ in copies], groups.input_shape, batch, device)
    e = _elementwise(groups, batch)
    rows = []
    for (_, alphas), t_net in zip(copies, times, strict=True):
        a = torch.tensor(alphas, dtype=torch.float64)
        rows.append([float(layers(a)), float(e @ a), t_net])
    R = torch.tensor(rows, dtype=torch.float64)
    scale = R[:, :2].amax(0).clamp_min(1e-30)  # comparable columns for the least squares
    X = torch.stack([R[:, 0] / scale[0], R[:, 1] / scale[1], torch.ones_like(R[:, 0])], 1)
    kappa, lam, c0 = (nnls(X, R[:, 2]) / torch.cat([scale, scale.new_ones(1)])).tolist()
    return {"coef": [kappa, c0, lam], "points": rows}


def latency_model(
    groups: Groups,
    batch: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_root: Path | None = None,
    progress: bool = False,
    block: int | None = None,
) -> QuadraticCost:
    """Latency in seconds at ``batch`` on ``device`` as a quadratic form in the prunable groups'
    keep ratios, counting channels in whole blocks of ``block`` (default ``channel_block``:
    16 on an AVX-512 CPU). ``cost.fit`` (a :class:`LatencyFit`) holds the fits and how well
    they reproduce the measurements."""
    device = torch.device(device)
    block = channel_block(device) if block is None else int(block)
    if block < 1:
        raise ValueError(f"the channel block must be a positive integer, got {block}")
    cache = LatencyCache(device_key(device, dtype), cache_root)
    terms = layer_terms(groups)
    keys = {t.name: _layer_key(t, groups.module(t.name), batch, block) for t in terms}
    net_key = hashlib.sha1(
        "|".join(
            [type(groups.model).__name__, str(batch)]
            + [keys[t.name] for t in terms]
            + [f"{g.index}:{g.channels}:{g.prunable}" for g in groups]
        ).encode()
    ).hexdigest()[:16]
    with torch.random.fork_rng(devices=[]):
        fits = _layer_fits(groups, terms, keys, batch, device, dtype, cache, False, progress, block)
        net = cache.networks.get(net_key)
        if net is None:
            layers = _layers_form(groups, terms, fits).cost(groups, "latency")
            net = _calibrate(groups, layers, batch, device, block)
            if not 2 / 3 < net["coef"][0] < 3 / 2:
                # the layers' sum is far from the network: a table measured on a busy machine,
                # or stale; measure this network's layers again, once
                fits = _layer_fits(
                    groups, terms, keys, batch, device, dtype, cache, True, progress, block
                )
                layers = _layers_form(groups, terms, fits).cost(groups, "latency")
                net = _calibrate(groups, layers, batch, device, block)
            cache.networks[net_key] = net
            cache.dirty = True
    cache.save()
    kappa, c0, lam = net["coef"]
    form = _layers_form(groups, terms, fits)
    form.Q *= kappa
    form.b = kappa * form.b + lam * _elementwise(groups, batch)
    form.c = kappa * form.c + c0
    cost = form.cost(groups, "latency")
    # above one block a partial block costs a full one: the rounding keeps whole blocks there,
    # and below the first one only where the layers were measured to get faster
    cost.block = block
    cost.sub_block, sub_block_checks = _sub_block_groups(groups, terms, fits, block)
    cost.fit = LatencyFit(
        device=str(device),
        batch=batch,
        block=block,
        sub_block=[g.index for g, f in zip(groups.prunable, cost.sub_block, strict=True) if f],
        sub_block_checks=sub_block_checks,
        layers=fits,
        calibration=net,
        calibration_fit_error=[
            (kappa * lay + lam * el + c0 - t) / t for lay, el, t in net["points"]
        ],
        full_measured_s=net["points"][0][2],
        full_predicted_s=cost.full,
        cache={
            "device": cache.key,
            "root": None if cache_root is None else str(cache_root),
            "network": net_key,
            "layers": sorted(set(keys.values())),
        },
    )
    return cost
