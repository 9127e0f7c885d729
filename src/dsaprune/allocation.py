"""Budgeted sparsity allocation: the ADMM-inspired Θ / z / u1 / u2 updates and the budget
guarantee (logit shift, whole-channel rounding with greedy fix-up, optional ``round_to``).

Units and pacing (the project's decisions; the paper's constants are for units it does not state):
costs are fractions of the unpruned network's and Θ are logits of the keep ratios. Each outer
iteration the z-step projects Θ toward the budget (u1, ρ1), and the Θ-step weighs two forces
(in keep-ratio units),
each normalised to mean magnitude 1 over groups so that neither's units matter: the budget's
pull u2 + ρ2 (Θ − z), largest on the groups whose channels cost most, against the validation
loss's resistance ∂L_val/∂Θ (averaged over updates), largest on the groups whose channels matter
most. The direction is pull over resistance (the second-order cheapest way down, see
``Allocator.direction``); the step
length along it is chosen so that the cost falls on a straight line from its start to the
budget, reached ``target_fraction`` of the way through the allocation window. So the allocator
itself always meets the budget inside the window, and the loss decides *where* channels go, not
whether the budget is met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cost import QuadraticCost
from .cost.quadratic import channel_levels


@dataclass
class AllocatorConfig:
    rho1: float = 1.0  # budget penalty (z-step), in units of cost fraction
    rho2: float = 1.0  # Θ–z coupling, in logit units
    z_steps: int = 50
    z_lr: float = 0.05
    target_fraction: float = 0.6  # the cost reaches the budget this far into the window
    dual_lr: float = 0.05  # u2 ← u2 + dual_lr · ρ2 (Θ − z)
    momentum: float = 0.9  # averaging of ∂L_val/∂Θ over allocation updates
    u1_max: float = 1e3  # bound on the budget multiplier, so long windows stay finite
    # the direction's pull / resistanceᵖ (Allocator.direction): p = 1 is the second-order step,
    # larger p concentrates the step on the groups that are cheapest to cut now (p → ∞:
    # greedy); 2 was chosen on the dev half of the allocation-quality bench (docs/decisions.md)
    power: float = 2.0
    # the z-step's Θ–z coupling (Allocator._z_step), one of Z_COUPLINGS: "constant" keeps the
    # augmented Lagrangian's own stiffness ρ2; "rescaled" (the default) lets the budget's
    # keep-ratio rescaling s reach it, stiffness (2s − 1) ρ2. Chosen on the dev half
    # (docs/decisions.md, "The z-step's coupling")
    z_coupling: str = "rescaled"

    def __post_init__(self) -> None:
        if not self.power > 0:
            raise ValueError(f"allocator power must be > 0, got {self.power}")
        if self.z_coupling not in Z_COUPLINGS:
            raise ValueError(
                f"unknown z_coupling {self.z_coupling!r}; choose one of {', '.join(Z_COUPLINGS)}"
            )


Z_COUPLINGS = ("rescaled", "constant")


class Allocator:
    """Holds Θ (the logits of A), z, u1, u2, and performs one outer iteration per ``step``.

    ``updates_in_window`` sets the pace: the cost falls linearly from its value at the start to
    the budget over ``target_fraction`` of that many updates.
    """

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
        self.theta = theta.detach().double().cpu().clone()  # the z-step runs in NumPy
        self.z = self.theta.clone()
        self.u1 = torch.zeros((), dtype=torch.float64)
        self.u2 = torch.zeros_like(self.theta)
        self.window = max(1, int(updates_in_window))
        self.start_ratio = self.ratio()
        self._avg: torch.Tensor | None = None
        self.updates = 0

    def ratio(self, theta: torch.Tensor | None = None) -> float:
        return float(self.cost.ratio(torch.sigmoid(self.theta if theta is None else theta)))

    def met(self) -> bool:
        return self.ratio() <= self.budget

    def target(self) -> float:
        """The cost the pace asks for after the updates made so far."""
        f = min(1.0, self.updates / max(1.0, self.cfg.target_fraction * self.window))
        return self.start_ratio + (self.budget - self.start_ratio) * f

    def _resistance(self, grad: torch.Tensor | None) -> torch.Tensor:
        """∂L_val/∂α (from ∂L_val/∂Θ), averaged over updates (one validation batch is noisy:
        its std across batches exceeds its mean), in units of its mean magnitude over groups;
        ``None`` (no new measurement) takes the average as it stands.
        Keep-ratio units, not logits: the logit factor α(1 − α) would silence the loss of every
        group still near full width, and those would be cut unopposed."""
        c = self.cfg
        if grad is not None:
            a = torch.sigmoid(self.theta)
            g = grad.detach().double().cpu() / (a * (1 - a)).clamp_min(1e-6)
            self._avg = g if self._avg is None else c.momentum * self._avg + (1 - c.momentum) * g
        if self._avg is None:
            raise ValueError("the first allocation update needs a loss signal, got None")
        g = self._avg
        mag = g.abs().mean()
        if not mag > 0:
            return torch.zeros_like(g)
        # no bound: a bound capped exactly the few costly residual streams of a deep network, so
        # they were cut first (docs/decisions.md)
        return g / mag

    def _z_step(self) -> None:
        """Inner gradient steps on the augmented budget term, u1 updated after each. In NumPy:
        on these [K]-vectors torch's cost per operation, not the arithmetic, made this loop most
        of an allocation step (62 -> 9 ms per step on ResNet-20, docs/decisions.md)."""
        c = self.cfg
        Q, b, c0 = self.cost.ratio_arrays()
        Q2 = Q + Q.T  # ∂ ratio / ∂a = (Q + Qᵀ) a + b
        theta, u2 = self.theta.numpy(), self.u2.numpy()
        z, u1 = self.z.numpy().copy(), float(self.u1)

        def over_budget(z: np.ndarray) -> tuple[np.ndarray, float]:
            a = 1.0 / (1.0 + np.exp(-z))
            return a, float(a @ Q @ a + b @ a + c0) - self.budget

        a, over = over_budget(z)
        for _ in range(c.z_steps):
            # ∂/∂z of u1·over⁺ + ρ1/2·(over⁺)² + u2·(Θ − z) + ρ2/2 ‖Θ − z‖²
            pen = u1 + c.rho1 * over if over > 0 else 0.0
            aa = a * (1 - a)
            gz = pen * (Q2 @ a + b) * aa + c.rho2 * (z - theta) - u2
            # the budget part of the step in keep-ratio units: without this the logit
            # factor α(1 − α) makes the projection cut ever harder into whichever group
            # has started to shrink
            w = np.maximum(aa, 1e-6)
            if c.z_coupling == "constant":
                # ∂/∂z of the coupling terms u2·(Θ − z) + ρ2/2 ‖Θ − z‖²
                coupling = c.rho2 * (z - theta) - u2
                gz = (gz - coupling) / w * aa.mean() + coupling
            else:
                # s·budget + (2s − 1) ρ2 (z − Θ) − u2: the coupling is stiff for groups at a
                # bound (s > 1) and repels z from Θ for groups nearer half width than most
                # (s < ½), so those are cut harder; it measured better than "constant"
                # (docs/decisions.md), with the power chosen under it
                k = u2 + c.rho2 * (z - theta)
                gz = (gz + k) / w * aa.mean() - k
            z -= c.z_lr * gz
            np.clip(z, -12.0, 12.0, out=z)  # keep ratios in [6e-6, 1 − 6e-6]: finite logits
            a, over = over_budget(z)  # the next inner step reads the same point
            u1 = min(u1 + c.rho1 * max(over, 0.0), c.u1_max)
        self.z = torch.from_numpy(z)
        self.u1 = torch.tensor(u1, dtype=torch.float64)

    def direction(self, loss_grad_theta: torch.Tensor | None) -> torch.Tensor:
        """The step direction in keep ratios (≥ 0: they only fall) from the budget's pull (the
        ADMM terms of the Θ-step) and the loss's resistance, each in units of its mean magnitude
        over groups: their quotient, the cheapest second-order way down. The measurements that
        chose it over their difference are in ``docs/decisions.md``."""
        c = self.cfg
        pull = self.u2 + c.rho2 * (self.theta - self.z)
        mag = pull.abs().mean()
        pull = pull / mag if mag > 0 else pull
        resist = self._resistance(loss_grad_theta)
        # with a removal cost h_k δ_k² / 2 per group and the cost falling by Σ pull_k δ_k, the
        # loss rises least for δ_k ∝ pull_k / h_k; the resistance (a secant slope of the
        # removal cost) stands in for h_k
        h = (-resist).clamp(min=0) + 0.05
        d = pull.clamp(min=0) / h**c.power
        return d / d.mean() if d.mean() > 0 else d

    def step(self, loss_grad_theta: torch.Tensor | None) -> None:
        """One outer iteration, given ∂L_val/∂Θ from one validation batch (None: no new batch,
        the running average stands)."""
        c = self.cfg
        # 1. z-step: where the budget would put Θ
        self._z_step()
        # 2. Θ-step: along the projected direction, in keep-ratio space, as far as the pace asks
        d = self.direction(loss_grad_theta)
        self.updates += 1
        target = self.target()
        if self.ratio() > target and float(d.max()) > 0:
            self.theta = self._along(d, self._step_length(d, target))
        # 3. dual update of the Θ = z constraint
        self.u2 = self.u2 + c.dual_lr * c.rho2 * (self.theta - self.z)

    def _along(self, d: torch.Tensor, eta: float) -> torch.Tensor:
        a = torch.sigmoid(self.theta)
        return torch.logit((a - eta * d).clamp(6e-6, 1 - 6e-6))

    def _step_length(self, d: torch.Tensor, target: float) -> float:
        """The smallest η ≤ 1 with cost(α − η d) ≤ target (1 if none: a full step)."""
        return _bisect(lambda eta: self.ratio(self._along(d, eta)) <= target, 1.0, 0.0, 40)

    def state_dict(self) -> dict:
        return {
            "theta": self.theta,
            "z": self.z,
            "u1": self.u1,
            "u2": self.u2,
            "avg": self._avg,
            "updates": self.updates,
            "window": self.window,
            "start_ratio": self.start_ratio,
        }

    def load_state_dict(self, d: dict) -> None:
        self.theta, self.z, self.u1, self.u2 = d["theta"], d["z"], d["u1"], d["u2"]
        self._avg, self.updates = d["avg"], d["updates"]
        self.window, self.start_ratio = d["window"], d["start_ratio"]


def _bisect(fits, good: float, bad: float, iters: int) -> float:
    """Bisection for the boundary of a monotone predicate: ``fits(good)`` is assumed true and
    ``fits(bad)`` false; returns the point nearest ``bad`` at which ``fits`` still held."""
    for _ in range(iters):
        mid = (good + bad) / 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def shift_to_budget(
    theta: torch.Tensor, cost: QuadraticCost, budget: float, iters: int = 100
) -> tuple[torch.Tensor, float]:
    """Shift all logits by one amount δ (bisection) so that the cost fraction equals ``budget``."""
    theta = theta.detach().double()
    shift = _bisect(
        lambda d: float(cost.ratio(torch.sigmoid(theta + d))) <= budget, -60.0, 60.0, iters
    )
    return theta + shift, shift


def magnitude_keep_ratios(
    importance: list[torch.Tensor],
    cost: QuadraticCost,
    budget: float,
    iters: int = 60,
    relative: bool = True,
) -> torch.Tensor:
    """Keep ratios of threshold pruning: one global threshold on each channel's importance, the
    lowest whose kept channels fit the budget. ``relative``: importances in units of their
    group's mean, so layers of different scale compare (magnitude pruning); otherwise as given
    (after a sparsity penalty, whose zeros are absolute). Every group keeps at least one channel."""
    rel = [i.detach().double().cpu() for i in importance]  # importances may live on the GPU
    if relative:
        rel = [r / r.mean().clamp_min(1e-12) for r in rel]
    chans = torch.tensor([r.numel() for r in rel], dtype=torch.float64)

    def alpha(tau: float) -> torch.Tensor:
        kept = torch.tensor([float((r >= tau).sum().clamp_min(1)) for r in rel])
        return kept.double() / chans

    top = max(float(r.max()) for r in rel) + 1.0  # one channel per group: assumed to fit
    return alpha(_bisect(lambda t: float(cost.ratio(alpha(t))) <= budget, top, 0.0, iters))


def _nearest(levels: list[int], t: float) -> int:
    """Index of the level nearest ``t``; a tie goes to the level ``round`` picks (half to even,
    in units of the step between the two), as the plain rounding always did."""
    i = min(range(len(levels)), key=lambda i: abs(levels[i] - t))
    for j in (i - 1, i + 1):  # an equally near neighbour
        if 0 <= j < len(levels) and abs(levels[j] - t) == abs(levels[i] - t):
            lo, hi = sorted((levels[i], levels[j]))
            step = hi - lo
            return levels.index(round(t / step) * step) if lo % step == 0 else i
    return i


def round_channels(
    alpha: torch.Tensor,
    channels: list[int],
    cost: QuadraticCost,
    budget: float,
    round_to: int = 1,
) -> list[int]:
    """Whole channel counts n_k near α_k C_k, each one of its group's levels (multiples of
    ``round_to`` where the group is wider than that, of the group's unit, and above one block of
    a latency cost's ``block``: see ``channel_levels``) with cost ≤ ``budget`` and as close to it
    as those levels allow: take the nearest level, then step groups down greedily while over
    budget, then up while the budget allows."""
    chans = torch.tensor(channels, dtype=torch.float64)
    levels = channel_levels(channels, round_to, cost.units, cost.block, cost.sub_block)
    target = alpha.double().cpu() * chans
    idx = [_nearest(lv, float(t)) for lv, t in zip(levels, target, strict=True)]

    def counts(ix: list[int]) -> torch.Tensor:
        return torch.tensor([lv[i] for lv, i in zip(levels, ix, strict=True)], dtype=torch.float64)

    def frac(ix: list[int]) -> float:
        return float(cost.ratio(counts(ix) / chans))

    def moved(ix: list[int], k: int, d: int) -> list[int]:
        out = list(ix)
        out[k] += d
        return out

    K = len(channels)
    # over budget: drop from the group whose removal saves most cost per unit of surplus lost
    while frac(idx) > budget:
        best, best_score = -1, None
        n = counts(idx)
        for k in range(K):
            if idx[k] == 0:
                continue
            saved = frac(idx) - frac(moved(idx, k, -1))
            # prefer groups already above their continuous target
            score = saved * (1.0 + float((n[k] - target[k]) / chans[k]))
            if best_score is None or score > best_score:
                best, best_score = k, score
        if best < 0:
            raise ValueError(
                f"budget {budget:.4f} is unreachable: with {round_to} channel(s) per group the "
                f"cost is {frac([0] * K):.4f} of the full network"
            )
        idx[best] -= 1
    # under budget: add back to the groups furthest below their target while it still fits
    while True:
        n = counts(idx)
        order = sorted(range(K), key=lambda k: float((n[k] - target[k]) / chans[k]))
        for k in order:
            if idx[k] + 1 < len(levels[k]) and frac(moved(idx, k, 1)) <= budget:
                idx[k] += 1
                break
        else:
            break
    # still well under budget (single additions all overshoot): add a level to one group and
    # take as few levels from another as that needs to fit
    for _ in range(10 * K):
        cur = frac(idx)
        if cur >= 0.99 * budget:
            break
        best, best_val = None, cur
        for k in range(K):
            if idx[k] + 1 >= len(levels[k]):
                continue
            for j in range(K):
                if j == k:
                    continue
                trial = moved(idx, k, 1)
                while frac(trial) > budget and trial[j] > 0:
                    trial[j] -= 1
                v = frac(trial)
                if best_val < v <= budget:
                    best, best_val = trial, v
        if best is None:
            break
        idx = best
    return [int(v) for v in counts(idx)]


def greedy_keep_counts(
    importance: list[torch.Tensor],
    cost: QuadraticCost,
    budget: float,
    round_to: int = 1,
    channels: list[int] | None = None,
) -> list[int]:
    """Whole channel counts by greedy removal: from the full network, repeatedly drop the one
    channel level (``channel_levels``: a channel, or ``round_to`` / a unit / a latency block)
    whose channels, the least important left in their group, cost the least importance per
    unit of the budget's cost saved, until the cost fits ``budget``. With per-channel Fisher
    removal costs as ``importance`` this is Group Fisher pruning's one-shot allocation; it
    works in the units of whatever cost the budget is (FLOPs, parameters, latency).

    ``channels``: the groups' full widths, when the greedy starts from a network already cut
    (Group Fisher's iterative rounds): ``importance[k]`` then holds the importances of the
    channels group k still keeps, and that count must be one of its channel levels."""
    kept = [int(i.numel()) for i in importance]
    chans = kept if channels is None else [int(c) for c in channels]
    C = torch.tensor(chans, dtype=torch.float64)
    levels = channel_levels(chans, round_to, cost.units, cost.block, cost.sub_block)
    for k, (lv, n0) in enumerate(zip(levels, kept, strict=True)):
        if n0 not in lv:
            raise ValueError(
                f"group {k} keeps {n0} channels, not one of its channel levels {lv[:6]}…: "
                "a greedy start must be a count the rounding allows"
            )
    # cum[k][r]: summed importance of group k's r least important channels
    cum = [
        torch.cat(
            [torch.zeros(1, dtype=torch.float64), i.detach().double().cpu().sort()[0].cumsum(0)]
        )
        for i in importance
    ]
    idx = [lv.index(n0) for lv, n0 in zip(levels, kept, strict=True)]
    n = torch.tensor([lv[i] for lv, i in zip(levels, idx, strict=True)], dtype=torch.float64)
    Q, b = cost.Q.double(), cost.b.double()

    def ratios(A: torch.Tensor) -> torch.Tensor:  # cost ratio of each row of A [R, K]
        return ((A @ Q) * A).sum(1) / cost.full + (A @ b + cost.c) / cost.full

    K = len(chans)
    while float(cost.ratio(n / C)) > budget:
        alpha = n / C
        trial = alpha.expand(K, K).clone()
        lower = torch.tensor(
            [lv[i - 1] if i > 0 else lv[0] for lv, i in zip(levels, idx, strict=True)],
            dtype=torch.float64,
        )
        trial[range(K), range(K)] = lower / C
        saved = float(cost.ratio(alpha)) - ratios(trial)
        lost = torch.tensor(
            [
                float(cum[k][kept[k] - int(lower[k])] - cum[k][kept[k] - int(n[k])])
                for k in range(K)
            ],
            dtype=torch.float64,
        )
        movable = torch.tensor([i > 0 for i in idx]) & (saved > 0)
        if not bool(movable.any()):
            raise ValueError(
                f"budget {budget:.4f} is unreachable: with every group at its least the cost is "
                f"{float(cost.ratio(n / C)):.4f} of the full network"
            )
        score = torch.where(movable, lost / saved.clamp_min(1e-300), torch.inf)
        k = int(score.argmin())
        idx[k] -= 1
        n[k] = lower[k]
    return [int(v) for v in n]
