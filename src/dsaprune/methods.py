"""Pruning methods as policies inside one shared flow.

Every method decides *keep ratios* (and which channels' importances pick the kept channels);
everything else, the phases, the budget guarantee, rounding to whole channels, surgery,
checkpoints and resume, is the flow's (:class:`dsaprune.train.dsa.DSA`). A new method is one
class here plus one line in ``METHODS``.

A policy answers, at the flow's fixed points:

- ``reads_validation``: whether it trains on the 90% split and reads the held-out 10% (only DSA's
  Θ-step does; baselines train on the whole training set);
- ``make_penalty``: a sparsity penalty applied from the first step to the end of the
  allocation window (ssl, morphnet), or None;
- ``keep_ratios``: at the start of allocation, keep ratios decided at once (a baseline), with
  the importances they were decided by if any, or None for DSA, which allocates by gradient
  steps over the window;
- ``importance``: the per-channel importances the final channels are chosen by.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .allocation import magnitude_keep_ratios
from .cost import QuadraticCost
from .grouping import Groups, channel_importance
from .penalties import GroupLasso, WeightedBNL1
from .registry import create


class Method:
    description: ClassVar[str] = ""
    reads_validation: ClassVar[bool] = False
    penalised: ClassVar[bool] = False  # make_penalty returns a penalty

    def make_penalty(self, groups: Groups, cost: QuadraticCost, strength: float | None):
        return None

    def keep_ratios(
        self, groups: Groups, cost: QuadraticCost, budget: float, source: str, penalty
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None] | None:
        """Keep ratios [K] decided at once (not yet fitted to the budget: the flow shifts them
        and rounds) and the channel importances they were decided by (None: the flow asks
        ``importance``), or None to allocate over the window. ``source``: the flow's
        importance setting (``DSAConfig.importance``)."""
        return None

    def importance(self, groups: Groups, source: str, penalty) -> list[torch.Tensor]:
        return channel_importance(groups, source)


class DSAMethod(Method):
    description = "differentiable sparsity allocation (the default)"
    reads_validation = True


class Uniform(Method):
    description = "one keep ratio for every group, solved for the budget"

    def keep_ratios(self, groups, cost, budget, source, penalty):
        return torch.full((len(groups.prunable),), 0.5, dtype=torch.float64), None


class _Thresholded(Method):
    """One global threshold on the channels' importances, the lowest whose kept channels fit
    the budget; the channels above it are kept."""

    relative: ClassVar[bool]  # threshold in units of each group's mean importance

    def keep_ratios(self, groups, cost, budget, source, penalty):
        imp = self.importance(groups, source, penalty)
        return magnitude_keep_ratios(imp, cost, budget, relative=self.relative), imp


class Magnitude(_Thresholded):
    description = (
        "one global threshold on filter L1 norms (relative to each group's mean), solved for "
        "the budget; channels with the largest L1 norms are kept (use with --checkpoint)"
    )
    relative = True

    def importance(self, groups, source, penalty):
        return channel_importance(groups, "l1")


class _Penalised(_Thresholded):
    """A sparsity penalty during the first third of training, then a threshold on the
    importances it leaves."""

    penalised = True
    default_strength: ClassVar[float]

    def make_penalty(self, groups, cost, strength):
        return self._penalty(groups, cost, self.default_strength if strength is None else strength)

    def _penalty(self, groups, cost, strength: float):
        raise NotImplementedError

    def importance(self, groups, source, penalty):
        return penalty.importance()


class SSL(_Penalised):
    description = (
        "group-lasso penalty on each channel's weights in the first third of training, then "
        "one global threshold on the channels' weight norms (relative to each group's mean), "
        "solved for the budget"
    )
    default_strength = 5e-4
    relative = True  # deeper layers have smaller weights

    def _penalty(self, groups, cost, strength):
        return GroupLasso(groups, float(strength))


class MorphNet(_Penalised):
    description = (
        "FLOPs-weighted L1 penalty on BN scales in the first third of training, then one "
        "global threshold on |γ|, solved for the budget"
    )
    default_strength = 2e-3
    relative = False  # BN scales compare across layers as they are

    def _penalty(self, groups, cost, strength):
        return WeightedBNL1(groups, cost, float(strength))


METHODS: dict[str, type[Method]] = {
    "dsa": DSAMethod,
    "uniform": Uniform,
    "magnitude": Magnitude,
    "ssl": SSL,
    "morphnet": MorphNet,
}


def make_method(name: str) -> Method:
    return create(METHODS, name, "method")


def describe_methods() -> str:
    return "; ".join(f"{n}: {cls.description}" for n, cls in METHODS.items())
