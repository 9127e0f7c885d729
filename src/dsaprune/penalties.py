"""Sparsity penalties of the ``ssl`` and ``morphnet`` baselines, and the channel importances
their budget thresholds read.

Both penalties are applied as *proximal* steps right after each weight update: a shrinkage of
``lr × strength`` per step. That is the exact minimiser of the penalised step, so channels reach
exactly zero instead of oscillating around it, and it costs no extra backward pass.

- ``ssl`` (group lasso): every channel of every prunable group is one group of weights: the
  producers' filters and biases, the BN scales and shifts and the consumers' input slices, all
  that is removed with the channel. Penalty λ Σ √n ‖w‖ (n: the channel's weight count, so the
  strength is per weight, as weight decay's is); importance: the channel's RMS weight, which
  the threshold reads relative to its group's mean: deeper layers have smaller weights (larger
  fan-in), and an absolute threshold cut ResNet-20's last stage to 1–5 channels of 64.
- ``morphnet``: L1 on the BN scales γ, each group's weighted by the FLOPs one of its channels
  costs (∂F/∂α_k / C_k, divided by the mean over groups, so the strength is that of an average
  channel). Importance: the mean |γ| over the group's BNs (groups without BN: filter L1 norm).
"""

from __future__ import annotations

import torch

from .cost import QuadraticCost
from .grouping import Groups, bn_scales, channel_importance


def _slices(groups: Groups) -> list[list[tuple[torch.Tensor, int, torch.Tensor | None]]]:
    """Per prunable group: (parameter, channel dim, input indices or None) of every tensor a
    channel of the group owns a slice of."""
    out = []
    for g in groups.prunable:
        items: list[tuple[torch.Tensor, int, torch.Tensor | None]] = []
        for name in [*g.producers, *g.norms]:
            m = groups.module(name)
            at = g.at(name)
            for p in (m.weight, getattr(m, "bias", None)):
                if p is not None:
                    idx = None if at is None else torch.tensor(at, device=p.device)
                    items.append((p, 0, idx))
        for name, idxs in g.consumers.items():
            w = groups.module(name).weight
            items.append((w, 1, torch.tensor(idxs, dtype=torch.long, device=w.device)))
        out.append(items)
    return out


def _per_channel(t: torch.Tensor, dim: int, idx: torch.Tensor | None, C: int) -> torch.Tensor:
    """The slice of ``t`` that each of the group's C channels owns, as a [C, -1] view."""
    if idx is not None:
        t = t.index_select(dim, idx)
    return t.transpose(0, dim).reshape(C, -1)


class GroupLasso:
    """``ssl``: the proximal step of λ Σ √n ‖w_channel‖ over every prunable group's channels."""

    def __init__(self, groups: Groups, strength: float) -> None:
        self.groups, self.strength = groups, strength
        self.slices = _slices(groups)
        self.channels = [g.channels for g in groups.prunable]

    @torch.no_grad()
    def norms(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per group: (‖w‖ per channel, weight count per channel)."""
        out = []
        for items, C in zip(self.slices, self.channels, strict=True):
            sq = torch.zeros(C, dtype=torch.float32, device=items[0][0].device)
            n = 0
            for t, dim, idx in items:
                v = _per_channel(t.detach(), dim, idx, C)
                sq += v.float().pow(2).sum(1)
                n += v.shape[1]
            out.append((sq.sqrt(), torch.full_like(sq, float(n))))
        return out

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for items, C, (norm, n) in zip(self.slices, self.channels, self.norms(), strict=True):
            scale = (1 - lr * self.strength * n.sqrt() / norm.clamp_min(1e-12)).clamp_min(0)
            for t, dim, idx in items:
                shape = [1] * t.ndim
                if idx is None:
                    shape[dim] = C
                    t.mul_(scale.view(shape).to(t.dtype))
                else:
                    rep = idx.numel() // C  # a flattened consumer takes several inputs per channel
                    shape[dim] = idx.numel()
                    s = scale.repeat_interleave(rep).view(shape).to(t.dtype)
                    t.index_copy_(dim, idx, t.index_select(dim, idx) * s)

    def importance(self) -> list[torch.Tensor]:
        return [(norm / n.sqrt()).cpu() for norm, n in self.norms()]


def flops_weights(cost: QuadraticCost, channels: list[int]) -> torch.Tensor:
    """FLOPs (or parameters) one channel of each group costs at full width, over the mean."""
    alpha = torch.ones(len(channels), dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(cost(alpha), alpha)
    per_channel = g / torch.tensor(channels, dtype=torch.float64)
    return per_channel / per_channel.mean()


class WeightedBNL1:
    """``morphnet``: the proximal step of λ Σ_k w_k Σ |γ| (soft-thresholding of the BN scales)."""

    def __init__(self, groups: Groups, cost: QuadraticCost, strength: float) -> None:
        self.groups, self.strength = groups, strength
        self.weights = flops_weights(cost, [g.channels for g in groups.prunable]).tolist()
        # per group: (BN, the group's positions in it or None for all)
        self.norms = [
            [
                (groups.module(n), None if g.at(n) is None else torch.tensor(g.at(n)))
                for n in g.norms
            ]
            for g in groups.prunable
        ]

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for bns, w in zip(self.norms, self.weights, strict=True):
            for bn, at in bns:
                g = bn.weight if at is None else bn.weight[at.to(bn.weight.device)]
                shrunk = g.sign() * (g.abs() - lr * self.strength * w).clamp_min(0)
                if at is None:
                    bn.weight.copy_(shrunk)
                else:
                    bn.weight.index_copy_(0, at.to(bn.weight.device), shrunk)

    def importance(self) -> list[torch.Tensor]:
        l1 = channel_importance(self.groups, "l1")  # groups without BN
        out = []
        for g, bns, fallback in zip(self.groups.prunable, self.norms, l1, strict=True):
            if bns:
                own = [bn_scales(self.groups, g, n).detach().abs() for n in g.norms]
                out.append(torch.stack(own).mean(0).cpu())
            else:
                out.append(fallback.cpu())
        return out
