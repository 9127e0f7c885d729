"""FLOPs and parameters as quadratic forms in the keep ratios: C(A) = Aᵀ Q A + bᵀ A + c.

A layer whose output channels belong to group k and whose input channels belong to group j costs
``full · α_k · α_j``; a layer with one side fixed (the image input, the logits) or a depthwise
convolution (its cost scales with one group) is linear in one α; what no group touches is
constant. Input channels from several groups (a concatenation) are split by their source. With
α_k = n_k / C_k for whole channel counts, the value equals the count of the pruned network.
"""

from __future__ import annotations

import torch

from ..grouping import Groups


class QuadraticCost:
    """One cost (FLOPs or parameters) over the prunable groups' keep ratios."""

    def __init__(
        self, Q: torch.Tensor, b: torch.Tensor, c: float, name: str, min_alpha: torch.Tensor
    ) -> None:
        self.Q, self.b, self.c, self.name = Q, b, float(c), name
        self.min_alpha = min_alpha.to(Q.dtype)  # one channel per group
        self.full = float(self(torch.ones(b.shape[0], dtype=Q.dtype)))

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """Absolute cost at keep ratios ``alpha`` ([K], differentiable)."""
        Q, b = self.Q.to(alpha), self.b.to(alpha)
        return alpha @ Q @ alpha + b @ alpha + self.c

    def ratio(self, alpha: torch.Tensor) -> torch.Tensor:
        """Cost as a fraction of the unpruned network's."""
        return self(alpha) / self.full

    def floor(self) -> float:
        """The fraction that stays when every prunable group keeps one channel."""
        return float(self.ratio(self.min_alpha))


def _build(groups: Groups, what: str) -> QuadraticCost:
    prunable = groups.prunable
    index = {g.index: k for k, g in enumerate(prunable)}
    K = len(prunable)
    Q = torch.zeros(K, K, dtype=torch.float64)
    b = torch.zeros(K, dtype=torch.float64)
    c = 0.0
    out_group: dict[str, int] = {}
    for g in groups:
        for p in g.producers:
            out_group[p] = g.index
    in_groups: dict[str, dict[int, int]] = {}
    for g in groups:
        for layer, idxs in g.consumers.items():
            in_groups.setdefault(layer, {})[g.index] = len(idxs)

    def add(out_k, in_terms, amount):
        """amount · α_out · Σ (share_j α_j or share_fixed)."""
        nonlocal c
        for j, share in in_terms:
            coef = amount * share
            if out_k is None and j is None:
                c += coef
            elif out_k is None or j is None:
                b[out_k if j is None else j] += coef
            else:
                Q[out_k, j] += coef

    for name, s in groups.shapes.items():
        k = index.get(out_group.get(name, -1))
        if what == "flops":
            amount = s.flops
        else:
            amount = s.weight_params
            if s.bias:
                add(k, [(None, 1.0)], s.out_channels)
        if s.depthwise:  # output and input channels are the same group: linear in it
            add(k, [(None, 1.0)], amount)
            continue
        terms, covered = [], 0
        for gi, n in in_groups.get(name, {}).items():
            per_input = n / s.in_channels
            covered += n
            terms.append((index.get(gi), per_input))
        if covered < s.in_channels:
            terms.append((None, (s.in_channels - covered) / s.in_channels))
        add(k, terms, amount)
    if what == "params":  # BN weight and bias scale with their group
        for g in groups:
            for n in g.norms:
                bn = groups.module(n)
                size = sum(p.numel() for p in bn.parameters())
                add(index.get(g.index), [(None, 1.0)], size)
        counted = set(groups.shapes) | {n for g in groups for n in g.norms}
        for n, m in groups.model.named_modules():
            if n not in counted and not list(m.children()):
                c += sum(p.numel() for p in m.parameters(recurse=False))
    min_alpha = torch.tensor([1.0 / g.channels for g in prunable], dtype=torch.float64)
    return QuadraticCost(Q, b, c, what, min_alpha)


def flops_model(groups: Groups) -> QuadraticCost:
    """FLOPs (2 per multiply-add, convolutions and linear layers) as a function of A."""
    return _build(groups, "flops")


def params_model(groups: Groups) -> QuadraticCost:
    """Parameter count as a function of A."""
    return _build(groups, "params")
