"""Pruning methods as policies inside one shared flow.

Every method decides *keep ratios* (and which channels' importances pick the kept channels);
everything else, the phases, the budget guarantee, rounding to whole channels, surgery,
checkpoints and resume, is the flow's (:class:`dsaprune.Pruner`). A new method is one
class here plus one line in ``METHODS``.

A policy answers, at the flow's fixed points:

- ``reads_validation``: whether it trains on the 90% split and reads the held-out 10% (only DSA's
  Θ-step does; baselines train on the whole training set);
- ``make_penalty``: a sparsity penalty applied from the first step to the end of the
  allocation window (ssl, morphnet), or None;
- ``keep_ratios``: at the start of allocation, keep ratios decided at once (a one-shot
  method), with the importances they were decided by if any, or None for DSA, which allocates
  by gradient steps over the window. It reads a :class:`Decision`: the groups, the budget's
  cost, and, for a method that measures (``group_fisher``), the model, training batches and
  loss;
- ``importance``: the per-channel importances the final channels are chosen by;
- ``iterative``: whether, instead, it removes channels in rounds over the window while the
  weights train (``group_fisher_iterative``; the flow runs its rounds, ``pruner.rounds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .allocation import greedy_keep_counts, magnitude_keep_ratios
from .cost import QuadraticCost
from .estimators import channel_fisher
from .grouping import Groups, channel_importance
from .penalties import GroupLasso, WeightedBNL1
from .registry import create

# training batches a method that measures the coupled Fisher reads by default (group_fisher, and
# DSA's channel order): one place for DSAConfig.fisher_batches and a Decision made by hand
FISHER_BATCHES = 20

# the DSAConfig settings only DSA's allocation over the window reads
THETA_STEP_SETTINGS = frozenset(
    {
        "allocator",
        "alloc_every",
        "alloc_samples",
        "beta2_growth",
        "beta2_init",
        "estimator",
        "hard_threshold",
        "init_alpha",
        "min_updates",
        "prob_floor",
        "sample_train_masks",
        "signal_bf16",
        "signal_every",
    }
)


@dataclass
class Decision:
    """What a one-shot method reads when the flow asks it for keep ratios."""

    groups: Groups
    cost: QuadraticCost  # the budget's cost (FLOPs, parameters or latency)
    budget: float  # the budget as a fraction of the unpruned cost
    importance: str  # the flow's channel-importance setting (``DSAConfig.importance``)
    penalty: Any = None  # the ssl / morphnet penalty that was applied, if any
    round_to: int = 1
    model: nn.Module | None = None
    batches: Iterable | None = None  # training batches, for a method that measures
    loss_fn: Callable | None = None
    device: torch.device | None = None
    amp: bool = False
    forward: Callable | None = None  # forward(model, inputs, targets); None: model(inputs)
    keep_counts: list[int] | None = None  # the ``given`` method's counts, one per prunable group
    fisher_batches: int = FISHER_BATCHES  # the training batches a Fisher measurement reads


class Method:
    description: ClassVar[str] = ""
    # the method chooses its channels by its own importances (l1, a penalty's), not by the
    # flow's channel order
    own_order: ClassVar[bool] = False
    reads_validation: ClassVar[bool] = False
    penalised: ClassVar[bool] = False  # make_penalty returns a penalty
    iterative: ClassVar[bool] = False  # removes channels in rounds over the window
    takes_counts: ClassVar[bool] = False  # applies the keep counts it is given (``given``)

    @classmethod
    def unread_settings(cls) -> frozenset[str]:
        """``DSAConfig`` settings (an allocator setting under ``allocator``) that cannot change
        this method's run, so a run made before one of them changed still stands for today's
        defaults: the flow's channel order for a method with its own, the warm-up for a penalty
        that starts at the first step, and the Θ-step's settings for every method but DSA."""
        out = set()
        if cls.own_order:
            out.add("importance")
        if cls.penalised:
            out.add("warmup_fraction")
        if not cls.reads_validation:
            out |= THETA_STEP_SETTINGS
        return frozenset(out)

    def make_penalty(self, groups: Groups, cost: QuadraticCost, strength: float | None):
        return None

    def keep_ratios(self, d: Decision) -> tuple[torch.Tensor, list[torch.Tensor] | None] | None:
        """Keep ratios [K] decided at once (not yet fitted to the budget: the flow shifts them
        and rounds) and the channel importances they were decided by (None: the flow asks
        ``importance``), or None to allocate over the window."""
        return None

    def importance(self, groups: Groups, source: str, penalty) -> list[torch.Tensor]:
        return channel_importance(groups, source)


class DSAMethod(Method):
    description = "differentiable sparsity allocation (the default)"
    reads_validation = True


class Uniform(Method):
    description = "one keep ratio for every group, solved for the budget"

    def keep_ratios(self, d):
        return torch.full((len(d.groups.prunable),), 0.5, dtype=torch.float64), None


class _Thresholded(Method):
    """One global threshold on the channels' importances, the lowest whose kept channels fit
    the budget; the channels above it are kept."""

    own_order = True

    relative: ClassVar[bool]  # threshold in units of each group's mean importance

    def keep_ratios(self, d):
        imp = self.importance(d.groups, d.importance, d.penalty)
        return magnitude_keep_ratios(imp, d.cost, d.budget, relative=self.relative), imp


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


class GroupFisherMethod(Method):
    """Group Fisher pruning's allocation, in one shot: each channel's coupled Fisher removal
    cost on a few training batches (``estimators.channel_fisher``), then greedy removal of the
    channel that costs least per unit of the budget's cost saved (``greedy_keep_counts``);
    the kept channels are those with the largest Fisher cost."""

    description = (
        "one-shot Group Fisher: per-channel Fisher removal cost on a few training batches "
        f"(fisher_batches, {FISHER_BATCHES}), then "
        "greedy removal of the channel with the least Fisher per unit of budget cost saved "
        "(use with --checkpoint)"
    )
    own_order = True  # its channels go by the Fisher costs it measures itself

    def keep_ratios(self, d):
        if d.model is None or d.batches is None or d.loss_fn is None:
            raise ValueError(
                "group_fisher measures on data: its Decision needs model, batches, loss_fn"
            )
        fisher = channel_fisher(
            d.model, d.groups, d.batches, d.loss_fn, d.fisher_batches, d.device, d.amp, d.forward
        )
        counts = greedy_keep_counts(fisher, d.cost, d.budget, d.round_to)
        chans = torch.tensor([g.channels for g in d.groups.prunable], dtype=torch.float64)
        return torch.tensor(counts, dtype=torch.float64) / chans, fisher


class IterativeGroupFisher(Method):
    """Group Fisher pruning as its paper runs it: over the allocation window the training steps'
    own backward accumulates each channel's coupled Fisher removal cost under the channels kept
    so far, and at ``rounds`` evenly spaced rounds the greedy removes the channels with the
    least Fisher per unit of the budget's cost saved, the network training on in between,
    until the budget is met at the allocator's ``target_fraction`` of the window
    (``pruner.rounds.FisherRounds``)."""

    description = (
        "iterative Group Fisher: each channel's Fisher read off the training steps' own "
        "backward over the allocation window; 20 rounds each remove the channels with the least "
        "Fisher per unit of budget cost saved while the network trains on, until the budget is met"
    )
    own_order = True
    iterative = True
    rounds: ClassVar[int] = 20

    @classmethod
    def unread_settings(cls) -> frozenset[str]:
        # its pace is the allocator's target_fraction
        return super().unread_settings() - {"allocator"}


class Given(Method):
    """An allocation decided elsewhere, applied at once as a one-shot method's: ``keep_counts``
    holds one channel count per prunable group, in the order of a run's report
    (``report.json``'s ``keep_counts``). Two allocations then meet one and the same fine-tune,
    or a run's allocation is reused on another checkpoint of the same network. The counts are
    kept exactly as given, also below the budget (no shift fills it); counts that cost more
    than the budget are refused before training. The channels go by the flow's order
    (``importance``)."""

    description = (
        "the keep counts given by --keep-counts (one per prunable group, as in a run's "
        "report.json), applied at once"
    )
    takes_counts = True

    def keep_ratios(self, d):
        chans = torch.tensor([g.channels for g in d.groups.prunable], dtype=torch.float64)
        return torch.tensor(d.keep_counts, dtype=torch.float64) / chans, None


METHODS: dict[str, type[Method]] = {
    "dsa": DSAMethod,
    "uniform": Uniform,
    "magnitude": Magnitude,
    "ssl": SSL,
    "morphnet": MorphNet,
    "group_fisher": GroupFisherMethod,
    "group_fisher_iterative": IterativeGroupFisher,
    "given": Given,
}


def make_method(name: str) -> Method:
    return create(METHODS, name, "method")


def describe_methods() -> str:
    return "; ".join(f"{n}: {cls.description}" for n, cls in METHODS.items())
