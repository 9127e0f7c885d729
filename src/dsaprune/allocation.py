"""Budgeted sparsity allocation: the ADMM-inspired Θ / z / u1 / u2 updates and the budget
guarantee (logit shift, whole-channel rounding with greedy fix-up, optional ``round_to``).

Units (the project's decision; the paper's constants are for units it does not state): costs are
fractions of the unpruned network's, Θ are logits of the keep ratios, and the validation-loss
gradient is rescaled so that its mean magnitude over groups is ``loss_scale`` (``auto`` mode). The
Θ step size is set from the number of updates the allocation window holds, so the allocator
itself reaches the budget inside the window whatever the schedule's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cost import QuadraticCost


@dataclass
class AllocatorConfig:
    rho1: float = 1.0  # budget penalty (z-step), in units of cost fraction
    rho2: float = 1.0  # Θ–z coupling, in logit units
    z_steps: int = 50
    z_lr: float = 0.05
    loss_scale: float = 1.0  # mean |s·∂L/∂Θ| after normalisation; 0 ignores the loss
    normalise_loss: bool = True  # False: s = loss_scale exactly, as in the paper (s = 1e5)
    travel: float = 6.0  # Θ step size · updates in the window, in logits per unit of gradient
    target_fraction: float = 0.6  # aim to meet the budget this far into the window
    dual_lr: float = 0.05  # u2 ← u2 + dual_lr · ρ2 (Θ − z)
    momentum: float = 0.9  # averaging of ∂L_val/∂Θ over allocation updates
    clip: float = 3.0  # bound on each group's normalised loss gradient
    centre: bool = True  # subtract the mean over groups (relative sensitivity only)
    u1_max: float = 1e3  # bound on the budget multiplier, so long windows stay finite
    precondition: bool = True  # z-step budget gradient in keep-ratio units (see Allocator)


class Allocator:
    """Holds Θ (the logits of A), z, u1, u2, and performs one outer iteration per ``step``."""

    def __init__(
        self,
        cost: QuadraticCost,
        budget: float,
        theta: torch.Tensor,
        updates_in_window: int,
        cfg: AllocatorConfig | None = None,
    ) -> None:
        self.cost, self.budget = cost, float(budget)
        self.cfg = cfg or AllocatorConfig()
        self.theta = theta.detach().double().clone()
        self.z = self.theta.clone()
        self.u1 = torch.zeros((), dtype=torch.float64)
        self.u2 = torch.zeros_like(self.theta)
        self.lr = self.cfg.travel / max(1.0, self.cfg.target_fraction * updates_in_window)
        self._grad_scale: float | None = None
        self._avg: torch.Tensor | None = None
        self.updates = 0

    def ratio(self, theta: torch.Tensor | None = None) -> float:
        return float(self.cost.ratio(torch.sigmoid(self.theta if theta is None else theta)))

    def met(self) -> bool:
        return self.ratio() <= self.budget

    def _scaled(self, grad: torch.Tensor) -> torch.Tensor:
        """s · ∂L/∂Θ. One validation batch gives a noisy gradient, and the projection (keep
        ratios only fall) turns noise into a ratchet: every positive sample cuts, no negative
        one restores. So the gradient is averaged with momentum first, centred on its mean over
        groups (early in training every group's gradient can share one sign; the budget, not
        the loss, decides how much is cut), normalised so its mean magnitude is
        ``loss_scale``, and clipped at ``clip`` times that."""
        c = self.cfg
        g = grad.detach().double().cpu()
        self._avg = g if self._avg is None else c.momentum * self._avg + (1 - c.momentum) * g
        g = self._avg
        if not c.normalise_loss:
            return c.loss_scale * g
        # relative sensitivity: the budget sets how much is cut, the loss where
        if c.centre:
            g = g - g.mean()
        mag = float(g.abs().mean())
        if mag > 0:
            self._grad_scale = mag
        g = g / (self._grad_scale or 1.0)
        return c.loss_scale * g.clamp(-c.clip, c.clip)

    def step(self, loss_grad_theta: torch.Tensor) -> None:
        """One outer iteration, given ∂L_val/∂Θ from one validation batch."""
        c = self.cfg
        # 1. Θ-step: projected gradient (≥ 0), so keep ratios only decrease
        g = self._scaled(loss_grad_theta) + self.u2 + c.rho2 * (self.theta - self.z)
        g = g.clamp(min=0)
        # paced: no group moves more than lr logits per update, so the window's updates, not
        # a few large early steps, shape the allocation
        self.theta = self.theta - self.lr * g / max(1.0, float(g.max()))
        # 2. z-step: inner gradient steps on the augmented budget term, u1 updated after each
        z = self.z.clone().requires_grad_(True)
        for _ in range(c.z_steps):
            over = torch.relu(self.cost.ratio(torch.sigmoid(z)) - self.budget)
            obj = (
                self.u1 * over
                + c.rho1 / 2 * over**2
                + self.u2 @ (self.theta - z)
                + c.rho2 / 2 * ((self.theta - z) ** 2).sum()
            )
            (gz,) = torch.autograd.grad(obj, z)
            with torch.no_grad():
                if c.precondition:
                    # the budget part of the step in keep-ratio units: without this the logit
                    # factor α(1 − α) makes the projection cut ever harder into whichever group
                    # has started to shrink
                    a = torch.sigmoid(z)
                    gz = gz + (self.u2 + c.rho2 * (z - self.theta))  # the budget part alone
                    gz = gz / (a * (1 - a)).clamp_min(1e-6) * (a * (1 - a)).mean()
                    gz = gz - (self.u2 + c.rho2 * (z - self.theta))
                z -= c.z_lr * gz
                z.clamp_(-12.0, 12.0)  # keep ratios in [6e-6, 1 − 6e-6]: finite logits
                over = torch.relu(self.cost.ratio(torch.sigmoid(z)) - self.budget)
                self.u1 = (self.u1 + c.rho1 * over).clamp(max=c.u1_max)
        self.z = z.detach()
        # 3. dual update of the Θ = z constraint
        self.u2 = self.u2 + c.dual_lr * c.rho2 * (self.theta - self.z)
        self.updates += 1

    def state_dict(self) -> dict:
        return {
            "theta": self.theta,
            "z": self.z,
            "u1": self.u1,
            "u2": self.u2,
            "grad_scale": self._grad_scale,
            "avg": self._avg,
            "updates": self.updates,
            "lr": self.lr,
        }

    def load_state_dict(self, d: dict) -> None:
        self.theta, self.z, self.u1, self.u2 = d["theta"], d["z"], d["u1"], d["u2"]
        self._grad_scale, self.updates, self.lr = d["grad_scale"], d["updates"], d["lr"]
        self._avg = d["avg"]


def shift_to_budget(
    theta: torch.Tensor, cost: QuadraticCost, budget: float, iters: int = 100
) -> tuple[torch.Tensor, float]:
    """Shift all logits by one amount δ (bisection) so that the cost fraction equals ``budget``."""
    theta = theta.detach().double()
    lo, hi = -60.0, 60.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if float(cost.ratio(torch.sigmoid(theta + mid))) > budget:
            hi = mid
        else:
            lo = mid
    return theta + lo, lo


def round_channels(
    alpha: torch.Tensor,
    channels: list[int],
    cost: QuadraticCost,
    budget: float,
    round_to: int = 1,
) -> list[int]:
    """Whole channel counts n_k near α_k C_k (multiples of ``round_to`` where the group is wider
    than that) with cost ≤ ``budget`` and as close to it as whole channels allow: round, then
    remove channels greedily while over budget, then add while the budget allows."""
    chans = torch.tensor(channels, dtype=torch.float64)
    step = torch.tensor([round_to if c > round_to else 1 for c in channels], dtype=torch.float64)
    lo = step.clone()  # every group keeps at least one step
    n = (alpha.double().cpu() * chans / step).round() * step
    n = torch.minimum(torch.maximum(n, lo), chans)
    target = alpha.double().cpu() * chans

    def frac(v):
        return float(cost.ratio(v / chans))

    # over budget: drop from the group whose removal saves most cost per unit of surplus lost
    while frac(n) > budget:
        best, best_score = -1, None
        for k in range(len(channels)):
            if n[k] - step[k] < lo[k]:
                continue
            trial = n.clone()
            trial[k] -= step[k]
            saved = frac(n) - frac(trial)
            # prefer groups already above their continuous target
            score = saved * (1.0 + float((n[k] - target[k]) / chans[k]))
            if best_score is None or score > best_score:
                best, best_score = k, score
        if best < 0:
            raise ValueError(
                f"budget {budget:.4f} is unreachable: with one channel per group the cost is "
                f"{frac(lo):.4f} of the full network"
            )
        n[best] -= step[best]
    # under budget: add back to the groups furthest below their target while it still fits
    while True:
        order = sorted(range(len(channels)), key=lambda k: float((n[k] - target[k]) / chans[k]))
        for k in order:
            if n[k] + step[k] > chans[k]:
                continue
            trial = n.clone()
            trial[k] += step[k]
            if frac(trial) <= budget:
                n = trial
                break
        else:
            break
    # still well under budget (single additions all overshoot): move one step between groups
    for _ in range(10 * len(channels)):
        cur = frac(n)
        if cur >= 0.99 * budget:
            break
        best, best_val = None, cur
        for j in range(len(channels)):
            if n[j] - step[j] < lo[j]:
                continue
            for k in range(len(channels)):
                if k == j or n[k] + step[k] > chans[k]:
                    continue
                trial = n.clone()
                trial[j] -= step[j]
                trial[k] += step[k]
                v = frac(trial)
                if best_val < v <= budget:
                    best, best_val = trial, v
        if best is None:
            break
        n = best
    return [int(v) for v in n]
