"""Group Fisher pruning's iterative variant (``group_fisher_iterative``) inside the flow.

The weights train under the channels kept so far. Every training step in the allocation window
trains under a per-sample copy of that mask (``GateHooks.gather``), so its own backward leaves
each sample's mask gradients; they add up into each channel's Fisher removal cost
½·mean_n (∂L_n/∂m_i)². At evenly spaced rounds the greedy (``greedy_keep_counts``) removes,
from the channels still kept, those that cost the least Fisher per unit of the budget's cost
saved, until the cost is that round's share of the way to the budget; the Fisher then starts
again from zero, on the network that is left. The cost falls in a straight line and reaches the
budget ``target_fraction`` of the way through the window, the pace DSA's allocator keeps, so
both methods meet the budget at the same step and train the rest of the run alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..allocation import greedy_keep_counts
from ..cost import QuadraticCost
from ..grouping import Groups
from ..surgery import top_channels


class FisherRounds:
    """The kept channels and the Fisher summed since the last round, over ``steps`` window
    steps split into ``rounds`` removal rounds (fewer when the window is shorter)."""

    def __init__(
        self,
        groups: Groups,
        cost: QuadraticCost,
        budget: float,
        round_to: int,
        steps: int,
        rounds: int,
    ) -> None:
        self.cost, self.budget, self.round_to = cost, budget, round_to
        self.channels = [g.channels for g in groups.prunable]
        self.units = [g.unit for g in groups.prunable]
        K, cmax = len(self.channels), max(self.channels)
        self.keep = torch.zeros(K, cmax, dtype=torch.bool)
        for k, c in enumerate(self.channels):
            self.keep[k, :c] = True
        self.steps = max(1, steps)
        self.rounds = max(1, min(rounds, self.steps))
        self.done = 0  # rounds taken
        self.fisher_sum = torch.zeros(K, cmax, dtype=torch.float64)
        self.samples = 0.0
        self.last: torch.Tensor | None = None  # the last round's Fisher, the final order

    @property
    def counts(self) -> list[int]:
        return [int(v) for v in self.keep.sum(1)]

    def met(self) -> bool:
        return self.done >= self.rounds

    def masks(self, device) -> torch.Tensor:
        """[K, C_max] training masks: 1 on every channel still kept."""
        return self.keep.to(device=device, dtype=torch.float32)

    def add(self, grads: torch.Tensor) -> None:
        """Add one step's per-sample mask gradients [N, K, C_max] (of the loss as the caller
        reduced it: a batch mean, so sample n's own gradient is N times it)."""
        n = grads.shape[0]
        # summed where the gradients are: no copy to the host (and no GPU sync) per step
        if self.fisher_sum.device != grads.device:
            self.fisher_sum = self.fisher_sum.to(grads.device)
        self.fisher_sum += 0.5 * (grads.detach().double() * n).pow(2).sum(0)
        self.samples += n

    def step(self, grads: torch.Tensor, window_step: int, window_over: bool) -> int | None:
        """Add a window step's gradients (``add``); the round to take now, if one is due (all
        that are left once the window is over)."""
        self.add(grads)
        r = self.rounds if window_over else self.due(window_step)
        return r if r > self.done else None

    def round_fisher(
        self, reduce: Callable[[torch.Tensor], torch.Tensor], device
    ) -> torch.Tensor | None:
        """The mean Fisher since the last round over every process (``reduce`` sums a tensor
        across them; one tensor so that there is one collective per round), on the host; None
        where no process read a step."""
        part = self.fisher_sum.to(device).flatten()
        total = reduce(torch.cat([part, part.new_tensor([self.samples])])).cpu()
        samples = float(total[-1])
        if samples <= 0:
            return None
        return total[:-1].view(self.keep.shape) / samples

    def due(self, window_step: int) -> int:
        """The round the schedule has reached after ``window_step`` steps of the window."""
        return min(self.rounds, window_step * self.rounds // self.steps)

    def target(self, r: int) -> float:
        """The cost ratio after round ``r`` of ``rounds``."""
        return 1.0 - (1.0 - self.budget) * r / self.rounds

    def cut(self, fisher: torch.Tensor | None, r: int) -> None:
        """Round ``r``: remove the kept channels that cost least Fisher per unit of cost saved
        until the cost is within ``target(r)`` (by cost alone where no Fisher was read: None);
        start the next round's Fisher from zero."""
        if fisher is None:
            fisher = torch.zeros(self.keep.shape, dtype=torch.float64)
        kept = [fisher[k, :c][self.keep[k, :c]] for k, c in enumerate(self.channels)]
        counts = greedy_keep_counts(kept, self.cost, self.target(r), self.round_to, self.channels)
        order = self._order(fisher)
        for k, (n, u) in enumerate(zip(counts, self.units, strict=True)):
            row = torch.zeros(self.keep.shape[1], dtype=torch.bool)
            row[top_channels(order[k], n, u)] = True
            self.keep[k] = row
        self.done, self.last = r, fisher.detach().double().cpu().clone()
        self.fisher_sum.zero_()
        self.samples = 0.0

    def _order(self, fisher: torch.Tensor) -> list[torch.Tensor]:
        """Each group's channel order: every kept channel above every removed one, each side by
        its Fisher."""
        out = []
        for k, c in enumerate(self.channels):
            f = fisher[k, :c].double()
            top = float(f.max()) if c else 0.0
            scaled = f / top if top > 0 and math.isfinite(top) else torch.zeros_like(f)
            # removed channels keep their own order below the kept ones: a budget that
            # settles a little higher (a measured cost's) takes back the least costly loss
            out.append(torch.where(self.keep[k, :c], 2.0 + scaled.clamp(0, 1), scaled.clamp(0, 1)))
        return out

    def importance(self) -> list[torch.Tensor]:
        """The order the final channels are chosen in (the kept channels first)."""
        last = self.last if self.last is not None else torch.zeros(self.keep.shape).double()
        return self._order(last)

    def alpha(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.float64) / torch.tensor(
            self.channels, dtype=torch.float64
        )

    def state_dict(self) -> dict:
        return {
            "keep": self.keep.clone(),
            "done": self.done,
            "fisher_sum": self.fisher_sum.cpu().clone(),
            "samples": self.samples,
            "last": self.last,
            "steps": self.steps,
            "rounds": self.rounds,
        }

    def load_state_dict(self, d: dict) -> None:
        self.keep, self.done = d["keep"].clone(), int(d["done"])
        self.fisher_sum, self.samples = d["fisher_sum"].clone(), float(d["samples"])
        self.last, self.steps, self.rounds = d["last"], int(d["steps"]), int(d["rounds"])
