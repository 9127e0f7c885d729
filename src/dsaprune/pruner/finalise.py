"""The end of the allocation, as a part of :class:`~dsaprune.pruner.Pruner`: the keep ratios are
calibrated to the budget, rounded to whole channels as the cost settles them (a measured cost
times the pruned network on its device), each group keeps its most important channels, and the
network is cut (or hard-masked, ``physical=False``)."""

from __future__ import annotations

import torch

from ..allocation import round_channels, shift_to_budget
from ..surgery import HardMasks, prune_groups, top_channels
from ..train.distributed import broadcast_from_main


class Finalise:
    """Whole channels within the budget, and the cut, for :class:`~dsaprune.pruner.Pruner`."""

    def _finalise(self, imp: list[torch.Tensor] | None = None) -> None:
        """Meet the budget in whole channels, pick the channels (by ``imp`` if the method
        decided by them already), prune."""
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None
        if self.method.takes_counts:  # kept as given (checked against the budget at start)
            self.events["calibration_shift"] = 0.0
        else:
            frac = self.budget.fraction
            theta = self.allocator.theta
            self.events["calibration_shift"] = shift_to_budget(theta, self.cost, frac)[1]
        counts = self._settled_counts()
        if imp is None and self.measured_order is not None and not self.method.own_order:
            imp = self.measured_order
        if imp is None:
            imp = self.method.importance(self.groups, self._weight_source(), self.penalty)
        self.penalty = None
        keep = [
            top_channels(i.cpu(), n, g.unit)
            for i, n, g in zip(imp, counts, self.groups.prunable, strict=True)
        ]
        self.keep_counts = counts
        self.keep_index = [[int(v) for v in k] for k in keep]
        self.alpha_final = [n / c for n, c in zip(counts, self.channels, strict=True)]
        self.final_ratio = float(
            self.cost.ratio(torch.tensor(self.alpha_final, dtype=torch.float64))
        )
        self._enter("pruned" if self.cfg.physical else "masked")
        self._apply_pruning()

    def _counts_at(self, target: float) -> list[int]:
        """Whole channel counts of the current allocation, calibrated to ``target``."""
        theta, _ = shift_to_budget(self.allocator.theta, self.cost, target)
        alpha = torch.sigmoid(theta)
        return round_channels(alpha, self.channels, self.cost, target, self.cfg.round_to)

    def _settled_counts(self) -> list[int]:
        """Whole channel counts that meet the budget, as the cost settles them (a measured cost
        times the pruned network on its device and tightens; given counts are only timed). The
        main process settles; every process takes its counts."""
        counts, log = None, []
        frac = self.budget.fraction
        if self.dist.is_main and self.method.takes_counts:
            counts = list(self.cfg.keep_counts)
            log = self.cost.time_counts(self.groups, counts, frac)
        elif self.dist.is_main:
            counts, log = self.cost.settle_counts(self.groups, self._counts_at, frac)
        counts, log = broadcast_from_main((counts, log))
        self.events["measured_budget"] = log or None
        return counts

    def _apply_pruning(self) -> None:
        keep = [torch.tensor(k, dtype=torch.long) for k in self.keep_index]
        if self.cfg.physical:
            prune_groups(self.groups, keep)
        else:
            self.hard = HardMasks(self.groups, keep)
