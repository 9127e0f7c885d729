"""FLOPs and parameters as quadratic forms in the keep ratios: C(A) = Aᵀ Q A + bᵀ A + c.

A layer whose output channels belong to group k and whose input channels belong to group j costs
``full · α_k · α_j``; a layer with one side fixed (the image input, the logits) or a depthwise
convolution (its cost scales with one group) is linear in one α; what no group touches is
constant. Input channels from several groups (a concatenation) are split by their source. With
α_k = n_k / C_k for whole channel counts, the value equals the count of the pruned network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..grouping import Groups, LayerShape

if TYPE_CHECKING:  # the latency fit builds on this module, not the other way round
    from .latency import LatencyFit


def channel_steps(
    channels: list[int], round_to: int, units: list[int] | None = None
) -> torch.Tensor:
    """Each group's rounding step, which is also the least it keeps: ``round_to`` channels
    where the group is wider than that, else one; for a group that must lose whole units of
    ``u`` channels (one channel from each group of a grouped convolution), a multiple of ``u``."""
    units = units or [1] * len(channels)
    steps = []
    for c, u in zip(channels, units, strict=True):
        base = math.lcm(round_to, u)
        steps.append(base if c > base else u)
    return torch.tensor(steps, dtype=torch.float64)


def channel_levels(
    channels: list[int],
    round_to: int,
    units: list[int] | None = None,
    block: int = 1,
    sub_block: list[bool] | None = None,
) -> list[list[int]]:
    """The channel counts each group may keep, ascending: multiples of its step
    (``channel_steps``), and always the full width. ``block`` > 1 is a latency cost's: on a CPU
    whose kernels work on blocks of channels, a group wider than one block keeps whole blocks
    (multiples of the block and of the step), since a partial block costs a whole one, the
    first included: a 1×1 convolution 4→112 at 32×32, batch 64, takes as long as 16→112
    (``cost.latency``). ``sub_block[k]`` marks a wide group whose layers were measured to still
    get faster below one block (at batch 1, mostly): it also keeps the multiples of its step
    below the first block. A group no wider than a block keeps any multiple of its step: there
    the time still falls with the channels."""
    steps = channel_steps(channels, round_to, units).int().tolist()
    fine = sub_block or [False] * len(channels)
    out = []
    for c, s, f in zip(channels, steps, fine, strict=True):
        step = math.lcm(block, s) if block > 1 and c > block else s
        lv = set(range(step, c + 1, step))
        if step != s and f:
            lv |= set(range(s, block, s))
        lv.add(c)
        out.append(sorted(lv))
    return out


class QuadraticCost:
    """One cost (FLOPs or parameters) over the prunable groups' keep ratios."""

    def __init__(
        self,
        Q: torch.Tensor,
        b: torch.Tensor,
        c: float,
        name: str,
        min_alpha: torch.Tensor,
        units: list[int] | None = None,
        block: int = 1,
        sub_block: list[bool] | None = None,
    ) -> None:
        self.Q, self.b, self.c, self.name = Q, b, float(c), name
        self.min_alpha = min_alpha.to(Q.dtype)  # one channel per group
        self.units = list(units) if units is not None else [1] * b.shape[0]  # see channel_steps
        self.block = int(block)  # see channel_levels
        # wide groups that may keep less than one block (see channel_levels)
        self.sub_block = list(sub_block) if sub_block is not None else [False] * b.shape[0]
        self.full = float(self(torch.ones(b.shape[0], dtype=Q.dtype)))
        # a measured cost's fit (``cost.latency.LatencyFit``): how it was obtained on its
        # device, and how a budget on it is met there; None for a counted cost
        self.fit: LatencyFit | None = None

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """Absolute cost at keep ratios ``alpha`` ([K], differentiable)."""
        Q, b = self.Q.to(alpha), self.b.to(alpha)
        return alpha @ Q @ alpha + b @ alpha + self.c

    def ratio(self, alpha: torch.Tensor) -> torch.Tensor:
        """Cost as a fraction of the unpruned network's."""
        return self(alpha) / self.full

    def ratio_arrays(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(Q, b, c) over the full cost as float64 arrays: ``ratio(a) = a·Q·a + b·a + c`` for
        loops over tiny vectors, where a torch operation costs more than its arithmetic."""
        f = self.full
        Q = self.Q.detach().double().cpu().numpy() / f
        return Q, self.b.detach().double().cpu().numpy() / f, self.c / f

    def computed(self, alpha: torch.Tensor) -> torch.Tensor:
        """The keep ratios the kernels compute at: whole channels, and in a group wider than one
        ``block`` whole blocks (a partial block costs a full one, the first too unless the
        group is ``sub_block``; at most the full width). Where to evaluate the cost of a network
        rounded by another cost (a FLOPs budget's counts, say)."""
        chans = (1.0 / self.min_alpha).round()
        n = (alpha.detach().to(chans) * chans).round()
        if self.block > 1:
            padded = torch.minimum(torch.ceil(n / self.block) * self.block, chans)
            fine = torch.tensor(self.sub_block, dtype=torch.bool) & (n < self.block)
            n = torch.where((chans > self.block) & ~fine, padded, n)
        return n / chans

    @property
    def measured(self) -> bool:
        """The cost of a concrete network is measured on a device, not counted."""
        return self.fit is not None

    def settle_counts(
        self, groups: Groups, counts_at, fraction: float
    ) -> tuple[list[int], list[dict]]:
        """Whole channel counts that meet ``fraction``: ``counts_at(fraction)`` on this form,
        and for a measured cost, tightened until the device's own timing of the pruned network
        meets it too. Returns the counts and one record per measurement (none when counted)."""
        if self.fit is None:
            return counts_at(fraction), []
        return self.fit.settle(groups, counts_at, fraction)

    def time_counts(self, groups: Groups, counts: list[int], fraction: float) -> list[dict]:
        """For a measured cost, the device's timing of the network pruned to ``counts`` that are
        kept whatever it says (given by the user), with a warning when it is over ``fraction``;
        one record, as ``settle_counts`` keeps them, or none when the cost is counted."""
        return [] if self.fit is None else self.fit.time(groups, counts, fraction)

    def floor(self, round_to: int = 1) -> float:
        """The fraction that stays when every prunable group keeps what it must: one channel, or
        ``round_to`` channels where it is wider than that (as ``round_channels`` rounds)."""
        chans = (1.0 / self.min_alpha).round()
        levels = channel_levels(
            chans.int().tolist(), round_to, self.units, self.block, self.sub_block
        )
        least = torch.tensor([lv[0] for lv in levels], dtype=torch.float64)
        return float(self.ratio(least / chans))


class QuadraticForm:
    """Accumulates Q, b, c term by term."""

    def __init__(self, K: int) -> None:
        self.Q = torch.zeros(K, K, dtype=torch.float64)
        self.b = torch.zeros(K, dtype=torch.float64)
        self.c = 0.0

    def add(self, out_k: int | None, in_terms: list[tuple[int | None, float]], amount: float):
        """amount · α_out · Σ share_j α_j, where a ``None`` index stands for a fixed 1."""
        for j, share in in_terms:
            coef = amount * share
            if out_k is None and j is None:
                self.c += coef
            elif out_k is None or j is None:
                self.b[out_k if j is None else j] += coef
            else:
                self.Q[out_k, j] += coef

    def cost(self, groups: Groups, name: str) -> QuadraticCost:
        min_alpha = torch.tensor([1.0 / g.channels for g in groups.prunable], dtype=torch.float64)
        units = [g.unit for g in groups.prunable]
        return QuadraticCost(self.Q, self.b, self.c, name, min_alpha, units)


@dataclass
class LayerTerms:
    """Where one layer's output and input channels come from, as indices into A."""

    name: str
    shape: LayerShape
    out_k: int | None  # the prunable group of its output channels (None: fixed)
    in_terms: list[tuple[int | None, float]]  # (group index or None, share of its inputs)

    @property
    def varies_in(self) -> bool:
        return any(j is not None for j, _ in self.in_terms)


def layer_terms(groups: Groups) -> list[LayerTerms]:
    """Every convolution / linear layer with the groups its channels scale with. A depthwise
    convolution's input and output are one group; its ``in_terms`` are then fixed."""
    index = {g.index: k for k, g in enumerate(groups.prunable)}
    out_group: dict[str, int] = {}
    for g in groups:
        for p in g.producers:
            out_group[p] = g.index
    in_groups: dict[str, dict[int, int]] = {}
    claimed: dict[str, set[int]] = {}
    for g in groups:
        for layer, idxs in g.consumers.items():
            width = groups.shapes[layer].in_channels if layer in groups.shapes else 1 << 62
            # each input channel counts once, for the first group that claims it: a group the
            # graph describes inconsistently (left unpruned) may claim more than there are
            seen = claimed.setdefault(layer, set())
            new = {i for i in idxs if i < width} - seen
            seen |= new
            if new:
                in_groups.setdefault(layer, {})[g.index] = len(new)
    out = []
    for name, s in groups.shapes.items():
        k = index.get(out_group.get(name, -1))
        terms, covered = [], 0
        if not s.depthwise:
            for gi, n in in_groups.get(name, {}).items():
                covered += n
                terms.append((index.get(gi), n / s.in_channels))
        if covered < s.in_channels:
            terms.append((None, (s.in_channels - covered) / s.in_channels))
        out.append(LayerTerms(name, s, k, terms))
    return out


def _build(groups: Groups, what: str) -> QuadraticCost:
    form = QuadraticForm(len(groups.prunable))
    for t in layer_terms(groups):
        s = t.shape
        if what == "flops":
            amount = s.flops
        else:
            amount = s.weight_params
            if s.bias:
                form.add(t.out_k, [(None, 1.0)], s.out_channels)
        form.add(t.out_k, t.in_terms, amount)
    if what == "params":  # BN weights and other per-channel parameters scale with their group
        covered: dict[str, float] = {}  # BN -> the share of its channels prunable groups own
        owned: set[str] = set()
        for k, g in enumerate(groups.prunable):
            for n in g.norms:
                bn = groups.module(n)
                share = len(g.at(n) or range(bn.num_features)) / bn.num_features
                covered[n] = covered.get(n, 0.0) + share
                form.add(k, [(None, 1.0)], sum(p.numel() for p in bn.parameters()) * share)
            for n in g.channel_params:
                owned.add(n)
                form.add(k, [(None, 1.0)], groups.model.get_parameter(n).numel())
        for n, p in groups.model.named_parameters():
            owner = n.rpartition(".")[0]
            if owner not in groups.shapes and n not in owned:
                form.c += p.numel() * (1.0 - covered.get(owner, 0.0))
    return form.cost(groups, what)


def flops_model(groups: Groups) -> QuadraticCost:
    """FLOPs (2 per multiply-add, convolutions and linear layers) as a function of A."""
    return _build(groups, "flops")


def params_model(groups: Groups) -> QuadraticCost:
    """Parameter count as a function of A."""
    return _build(groups, "params")
