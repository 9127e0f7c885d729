"""The DSA training flow, as a callback of :class:`~dsaprune.train.Trainer`.

Phases, as fractions of the whole schedule (the paper's 300-epoch CIFAR-10 run: warm-up to epoch
20, allocation window to epoch 100), so any length, even a fraction of an epoch, works. The
warm-up left unset is the paper's 20 epochs, or a fifth of the run when that is shorter
(:func:`default_warmup_fraction`): on an 8-epoch schedule the paper's share would allocate after
half an epoch, on a network near 50% accuracy (see README, Decisions).

1. warm-up (or, for ssl / morphnet, the penalty phase): plain training on the training split;
2. allocation: the weights train under the top-n mask of the current A (with
   ``sample_train_masks``, the paper's masks sampled from the keep probabilities); every
   ``alloc_every`` weight steps one fresh validation batch gives the estimator's ∂L_val/∂Θ
   (``dsaprune.estimators``) and the allocator takes one step; stops as soon as the cost of A is
   within the budget (then A is frozen and the whole training set trains);
3. settling (sampled masks only; top-n masks are hard already): masks keep being sampled with
   A frozen while β2 grows, until they are hard (Σ p(1 − p)/C < ``hard_threshold`` for every
   group) or the window ends;
4. finalising: if the allocator did not meet the budget by the end of the window, all logits are
   shifted by one amount until it does (the fallback, reported); A is calibrated to the budget,
   rounded to whole channels with a greedy fix-up, and each group keeps its top channels by
   importance; the network is physically pruned (or, with ``physical=False``, hard-masked);
5. training continues on the smaller network until the schedule ends.

Which keep ratios a baseline takes, and when, is its policy's (``dsaprune.methods``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from ..allocation import Allocator, AllocatorConfig, round_channels, shift_to_budget
from ..budget import Budget, BudgetError
from ..cost import QuadraticCost
from ..estimators import GateState, make_estimator
from ..gates import (
    GateHooks,
    beta2_at,
    hardness,
    keep_probabilities,
    pad_groups,
    sample_masks,
    topn_masks,
)
from ..grouping import Groups, channel_importance
from ..methods import Decision, make_method
from ..surgery import HardMasks, prune_groups, top_channels
from .distributed import all_reduce_sum, broadcast_from_main

PAPER_EPOCHS = 300
PAPER_WARMUP_EPOCHS = 20
SHORT_RUN_WARMUP = 0.2  # the warm-up's share of a run shorter than 100 epochs


def default_warmup_fraction(epochs: float) -> float:
    """The warm-up when none is given: the paper's 20 epochs, or a fifth of a shorter run.

    At 300 epochs this is the paper's 20/300; at 100 epochs or fewer it is 0.2. On the 8-epoch
    CIFAR-10 schedule 0.2 raised DSA from 80.14% to 80.81% at 50% FLOPs and from 79.19% to
    79.65% at 33% (2 seeds each, every seed higher; ``bench/results/cifar10_notes.md``).
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    return min(PAPER_WARMUP_EPOCHS / epochs, SHORT_RUN_WARMUP)


@dataclass
class DSAConfig:
    warmup_fraction: float | None = None  # None: default_warmup_fraction(epochs)
    window_end_fraction: float = 100 / 300
    alloc_every: int = 20  # weight steps per α update (fewer when the window is short)
    min_updates: int = 100  # the window holds at least this many α updates where it can
    beta2_init: float = 0.05
    beta2_growth: float = 1.1  # per epoch of the paper's 300-epoch schedule
    prob_floor: float = 0.01
    importance: str = "bn_first"
    init_alpha: float = 0.99
    hard_threshold: float = 0.01
    round_to: int = 1
    physical: bool = True  # physically prune once masks are hard; False keeps masked training
    method: str = "dsa"  # or a baseline in the same flow (see dsaprune.methods.METHODS)
    penalty: float | None = None  # ssl / morphnet strength (None: ssl 5e-4, morphnet 2e-3)
    val_bn_eval: bool = True  # validation forward of the Θ-step with BN running statistics
    estimator: str = "fisher"  # the Θ-step's loss signal (see dsaprune.estimators)
    # the weights train under masks sampled from the keep probabilities (the paper's), or under
    # the deterministic top-n mask of the current α (the default: see README, Decisions)
    sample_train_masks: bool = False
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)

    def __post_init__(self) -> None:
        for name in ("warmup_fraction", "window_end_fraction"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"{name} is a share of the schedule in [0, 1], got {v}")
        if self.warmup_fraction is not None and self.warmup_fraction > self.window_end_fraction:
            raise ValueError(
                f"warmup_fraction {self.warmup_fraction} ends after the allocation window "
                f"(window_end_fraction {self.window_end_fraction:.4g}); lower the first or "
                "raise the second"
            )
        if (
            isinstance(self.round_to, bool)
            or not isinstance(self.round_to, int)
            or self.round_to < 1
        ):
            raise ValueError(f"round_to is a whole number of channels >= 1, got {self.round_to!r}")
        make_method(self.method)  # an unknown name fails here, not mid-run
        if self.penalty is not None and self.penalty < 0:
            raise ValueError(f"penalty strength must be >= 0, got {self.penalty}")
        make_estimator(self.estimator)  # an unknown name fails here, not mid-run

    @classmethod
    def from_dict(cls, d: dict) -> DSAConfig:
        d = dict(d)
        alloc = AllocatorConfig(**d.pop("allocator", {}))
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DSA settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(allocator=alloc, **d)

    def to_dict(self) -> dict:
        return asdict(self)

    def warmup_for(self, epochs: float) -> float:
        """The warm-up's share of a run of ``epochs``: the one given, else the default (never
        past the allocation window's end)."""
        if self.warmup_fraction is not None:
            return self.warmup_fraction
        return min(default_warmup_fraction(epochs), self.window_end_fraction)

    def for_epochs(self, epochs: float) -> DSAConfig:
        """This config with the warm-up fixed for a run of ``epochs`` (reports show the value
        used, and a resumed run recomputes the same one)."""
        if self.warmup_fraction is not None:
            return self
        return replace(self, warmup_fraction=self.warmup_for(epochs))


def window_bounds(cfg: DSAConfig, epochs: float, total_steps: int) -> tuple[int, int]:
    """The allocation window's first and last weight step in a run of ``epochs``."""
    warmup = cfg.warmup_for(epochs)  # called every step: no config copy
    return round(warmup * total_steps), round(cfg.window_end_fraction * total_steps)


def alloc_interval(cfg: DSAConfig, epochs: float, total_steps: int) -> int:
    """Weight steps per allocation update: ``alloc_every``, or fewer where the window would
    otherwise hold less than ``min_updates`` updates."""
    w0, w1 = window_bounds(cfg, epochs, total_steps)
    return max(1, min(cfg.alloc_every, (w1 - w0) // max(1, cfg.min_updates)))


class DSA:
    """Drives allocation inside a Trainer; ``summary()`` describes what it decided."""

    def __init__(
        self,
        groups: Groups,
        cost: QuadraticCost,
        budget: Budget,
        val_batches,
        full_train_loader,
        cfg: DSAConfig,
        steps_per_epoch: int,
    ) -> None:
        self.groups, self.cost, self.budget, self.cfg = groups, cost, budget, cfg
        widest = max((g.channels for g in groups.prunable), default=0)
        if groups.prunable and cfg.round_to > widest:
            raise ValueError(
                f"round_to {cfg.round_to} is wider than every prunable group (the widest has "
                f"{widest} channels), so it would round nothing: use at most {widest}"
            )
        floor = cost.floor(cfg.round_to)
        if budget.fraction < floor:
            least = "one channel" if cfg.round_to <= 1 else f"{cfg.round_to} channels (round_to)"
            raise BudgetError(
                f"budget {budget} is below what the network costs with {least} per prunable "
                f"group and the unprunable layers whole: the smallest feasible budget is "
                f"{budget.kind}={floor:.4f}"
            )
        self.val_batches, self.val_iter = val_batches, None
        self.full_train_loader = full_train_loader
        self.steps_per_epoch = steps_per_epoch
        self.channels = [g.channels for g in groups.prunable]
        self.K = len(self.channels)
        self.phase = "warmup"
        self.allocator: Allocator | None = None
        self.hooks: GateHooks | None = None
        self.hard: HardMasks | None = None
        self.penalty = None  # the ssl / morphnet penalty while it is applied
        self.t_cache: torch.Tensor | None = None
        self._step_p: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's (p, valid)
        self.events: dict = {"phase_time_s": {}}
        self._phase_t0 = time.perf_counter()
        self.history: list[dict] = []
        self.keep_counts: list[int] | None = None
        self.keep_index: list[list[int]] | None = None
        self.alpha_final: list[float] | None = None
        self.final_ratio = math.nan
        self.val_consumed = 0  # validation batches drawn so far, so a resumed run draws the next
        self.estimator = make_estimator(cfg.estimator)
        self.train_mask: torch.Tensor | None = None  # the top-n mask the weights train under
        self.method = make_method(cfg.method)

    # -- schedule ------------------------------------------------------------------------------
    def _bounds(self, trainer) -> tuple[int, int]:
        return window_bounds(self.cfg, trainer.cfg.epochs, trainer.total_steps)

    def _alloc_every(self, trainer) -> int:
        return alloc_interval(self.cfg, trainer.cfg.epochs, trainer.total_steps)

    def _beta2(self, trainer) -> float:
        w0, _ = self._bounds(trainer)
        epochs = (trainer.step - w0) / self.steps_per_epoch
        scale = PAPER_EPOCHS / max(trainer.cfg.epochs, 1e-9)
        return beta2_at(epochs, self.cfg.beta2_init, self.cfg.beta2_growth, scale)

    def _enter(self, trainer, phase: str) -> None:
        now = time.perf_counter()
        self.events["phase_time_s"][self.phase] = (
            self.events["phase_time_s"].get(self.phase, 0.0) + now - self._phase_t0
        )
        self._phase_t0 = now
        self.phase = phase
        self.events.setdefault("phase_epoch", {})[phase] = trainer.step / self.steps_per_epoch

    # -- gates ---------------------------------------------------------------------------------
    def _importance(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        imp = channel_importance(self.groups, self.cfg.importance)
        return pad_groups([i.to(device) for i in imp])

    def _gate_inputs(self, trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """Importances for the gates, refused when the weights they come from have diverged
        (the gates would otherwise fail deep inside with a sampling error)."""
        I, V = self._importance(trainer.device)
        for what, t in (
            ("channel importances (BN scales)", I),
            ("keep-ratio logits", self.allocator.theta),
        ):
            if not bool(torch.isfinite(t).all()):
                raise trainer.diverged(
                    f"{what} became NaN or infinite at step {trainer.step}: the weights diverged"
                )
        return I, V

    def _probabilities(self, alpha: torch.Tensor, beta2: float, iters: int, padded=None):
        """Keep probabilities of ``alpha``; ``padded``: the (importance, valid) pair when the
        caller has it already."""
        I, V = padded if padded is not None else self._importance(alpha.device)
        p, t = keep_probabilities(
            I, V, alpha, beta2, iters, None if self.t_cache is None else self.t_cache
        )
        self.t_cache = t.detach()
        return p, V

    def _penalty(self):
        return self.method.make_penalty(self.groups, self.cost, self.cfg.penalty)

    def _alpha(self, device) -> torch.Tensor:
        return torch.sigmoid(self.allocator.theta).float().to(device)

    # -- callbacks -----------------------------------------------------------------------------
    def before_step(self, trainer, x, y) -> None:
        w0, w1 = self._bounds(trainer)
        if self.phase == "warmup" and self.method.penalised:
            self._enter(trainer, "penalty")  # from the first step to the end of the window
            self.penalty = self._penalty()
        elif self.phase == "warmup" and trainer.step >= w0:
            self._start_allocation(trainer, w1 - w0)
        if self.phase in ("allocate", "settle"):
            with torch.no_grad():
                if self.cfg.sample_train_masks:
                    self._step_p = self._probabilities(
                        self._alpha(trainer.device),
                        self._beta2(trainer),
                        8,
                        self._gate_inputs(trainer),
                    )
                    self.hooks.set(sample_masks(self._step_p[0], self.cfg.prob_floor))
                else:  # refreshed after each α update, not every step (its cost is per group)
                    if self.train_mask is None:
                        I, V = self._gate_inputs(trainer)
                        self.train_mask = topn_masks(I, V, self._alpha(trainer.device))
                    self.hooks.set(self.train_mask)

    def after_step(self, trainer) -> None:
        w0, w1 = self._bounds(trainer)
        if self.phase == "penalty":
            self.penalty.step(trainer.optimizer.param_groups[0]["lr"])
            if trainer.step >= w1:
                self._start_allocation(trainer, 1)
        if self.phase == "allocate":
            if (trainer.step - w0) % self._alloc_every(trainer) == 0:
                self._alpha_update(trainer)
            if self.allocator.met():
                self.events["met_by"] = "allocator"
                self.events["met_at_epoch"] = trainer.step / self.steps_per_epoch
                if not self.cfg.sample_train_masks:  # top-n masks are hard already
                    self._finalise(trainer)
                    return
                self._enter(trainer, "settle")
                self._step_p = None  # drawn before this update moved A
                trainer.train_loader = self.full_train_loader  # from the next epoch on
            elif trainer.step >= w1:
                self.events["met_by"] = "shift"
                self._finalise(trainer)
        if self.phase == "settle":
            # A is frozen while settling: reuse the probabilities this step's masks were drawn
            # from rather than solving for β1 a second time in the same step
            if self._step_p is None:
                with torch.no_grad():
                    self._step_p = self._probabilities(
                        self._alpha(trainer.device), self._beta2(trainer), 8
                    )
            p, V = self._step_p
            if trainer.step >= w1 or bool((hardness(p, V) < self.cfg.hard_threshold).all()):
                self._finalise(trainer)

    def after_epoch(self, trainer, rec: dict) -> None:
        rec["phase"] = self.phase
        if self.allocator is not None:
            rec["alpha"] = torch.sigmoid(self.allocator.theta).tolist()
            rec["cost_ratio"] = self.allocator.ratio()
            rec["beta2"] = self._beta2(trainer)
        if self.alpha_final is not None:
            rec["alpha"] = self.alpha_final
            rec["cost_ratio"] = self.final_ratio

    # -- phases --------------------------------------------------------------------------------
    def _start_allocation(self, trainer, window_steps: int) -> None:
        self._enter(trainer, "allocate")
        theta0 = torch.full((self.K,), float(torch.logit(torch.tensor(self.cfg.init_alpha))))
        n_updates = max(1, window_steps // self._alloc_every(trainer))
        self.allocator = Allocator(
            self.cost, self.budget.fraction, theta0, n_updates, self.cfg.allocator
        )
        decided = self.method.keep_ratios(
            Decision(
                self.groups,
                self.cost,
                self.budget.fraction,
                self.cfg.importance,
                self.penalty,
                self.cfg.round_to,
                trainer.model,
                self.full_train_loader,
                trainer.loss_fn,
                trainer.device,
                trainer.amp,
            )
        )
        if decided is None:  # DSA: allocate by gradient steps over the window
            self.hooks = GateHooks(self.groups)
            return
        # a baseline: its keep ratios are decided at once and the network is pruned now
        alpha, imp = decided
        self.allocator.theta = torch.logit(alpha.double().clamp(1e-6, 1 - 1e-6))
        self.events["met_by"] = self.cfg.method
        self._finalise(trainer, imp)

    def _next_val(self):
        if self.val_iter is None:
            self.val_iter = iter(self.val_batches)
            # a resumed run continues where the saved one was in the validation pass
            for _ in range(self.val_consumed % max(1, len(self.val_batches))):
                next(self.val_iter)
        self.val_consumed += 1
        try:
            return next(self.val_iter)
        except StopIteration:
            self.val_iter = iter(self.val_batches)
            return next(self.val_iter)

    def _alpha_update(self, trainer) -> None:
        x, y = self._next_val()
        x, y = x.to(trainer.device), y.to(trainer.device)
        theta = self.allocator.theta.float().to(trainer.device)
        I, V = self._gate_inputs(trainer)
        beta2 = self._beta2(trainer)

        def probabilities(alpha: torch.Tensor, iters: int) -> torch.Tensor:
            return self._probabilities(alpha, beta2, iters, (I, V))[0]

        gates = GateState(I, V, probabilities, self.cfg.prob_floor)
        model = trainer.model  # not the DDP wrapper: only Θ needs a gradient here
        # BN in eval mode (running statistics): with batch statistics BN re-normalises after the
        # masks and hides what pruning a channel costs, leaving only the classifier-side group
        # with a usable gradient (measured: ~1e-7 against ~1e-3 per group with running stats)
        was = model.training
        model.train(not self.cfg.val_bn_eval)
        try:
            with torch.autocast("cuda", torch.bfloat16, enabled=trainer.amp):
                g, loss = self.estimator.loss_grad(
                    model, self.hooks, x, y, trainer.loss_fn, theta, gates
                )
        finally:
            model.train(was)
        g = all_reduce_sum(g.detach().clone()) / trainer.dist.world_size
        if bool(torch.isfinite(g).all()):  # a diverging run is stopped by the trainer, with
            self.allocator.step(g)  # the allocation of its last good state kept
        self.train_mask = None
        self.history.append(
            {"step": trainer.step, "val_loss": loss, "cost_ratio": self.allocator.ratio()}
        )

    def _finalise(self, trainer, imp: list[torch.Tensor] | None = None) -> None:
        """Meet the budget in whole channels, pick the channels (by ``imp`` if the method
        decided by them already), prune."""
        self._enter(trainer, "pruned" if self.cfg.physical else "masked")
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None
        frac = self.budget.fraction
        self.events["calibration_shift"] = shift_to_budget(self.allocator.theta, self.cost, frac)[1]
        counts = self._settled_counts(trainer)
        imp = imp if imp is not None else self._final_importance()
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
        trainer.train_loader = self.full_train_loader
        self._apply_pruning(trainer)

    def _counts_at(self, target: float) -> list[int]:
        """Whole channel counts of the current allocation, calibrated to ``target``."""
        theta, _ = shift_to_budget(self.allocator.theta, self.cost, target)
        alpha = torch.sigmoid(theta)
        return round_channels(alpha, self.channels, self.cost, target, self.cfg.round_to)

    def _settled_counts(self, trainer) -> list[int]:
        """Whole channel counts that meet the budget, as the cost settles them (a measured cost
        times the pruned network on its device and tightens). The main process settles; every
        process takes its counts."""
        counts, log = None, []
        if trainer.dist.is_main:
            counts, log = self.cost.settle_counts(
                self.groups, self._counts_at, self.budget.fraction
            )
        counts, log = broadcast_from_main((counts, log))
        self.events["measured_budget"] = log or None
        return counts

    def _final_importance(self) -> list[torch.Tensor]:
        """The channel importances the final channels are chosen by."""
        return self.method.importance(self.groups, self.cfg.importance, self.penalty)

    def _apply_pruning(self, trainer) -> None:
        keep = [torch.tensor(k, dtype=torch.long) for k in self.keep_index]
        if self.cfg.physical:
            prune_groups(self.groups, keep)
            trainer.rebuild()
        else:
            self.hard = HardMasks(self.groups, keep)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain values and tensors only (the checkpoint loads with ``weights_only=True``)."""
        return {
            "phase": self.phase,
            "allocator": self.allocator.state_dict() if self.allocator else None,
            "events": self.events,
            "history": self.history,
            "keep_counts": self.keep_counts,
            "keep_index": self.keep_index,
            "alpha_final": self.alpha_final,
            "final_ratio": self.final_ratio,
            "val_consumed": self.val_consumed,
            "channels": self.channels,
            "t_cache": self.t_cache,  # the β1 solve's warm start: exact resume
            "train_mask": self.train_mask,
        }

    def load_state_dict(self, trainer, d: dict) -> None:
        """Restore a saved run into this (unpruned) model: the allocator, the phase, and, if the
        saved run had pruned, the same pruning, so the saved weights fit."""
        if list(d["channels"]) != self.channels:
            raise ValueError(
                f"the checkpoint's channel groups {d['channels']} are not this model's "
                f"{self.channels}: it is from another model"
            )
        self.phase, self.events, self.history = d["phase"], d["events"], d["history"]
        self.keep_counts, self.keep_index = d["keep_counts"], d["keep_index"]
        self.alpha_final, self.final_ratio = d["alpha_final"], d["final_ratio"]
        self.val_consumed, self.val_iter = d["val_consumed"], None
        self.t_cache = d["t_cache"]
        self.train_mask = d.get("train_mask")
        self._phase_t0 = time.perf_counter()
        if d["allocator"] is not None:
            theta = d["allocator"]["theta"]
            self.allocator = Allocator(
                self.cost, self.budget.fraction, theta, 1, self.cfg.allocator
            )
            self.allocator.load_state_dict(d["allocator"])
        if self.phase in ("allocate", "settle"):
            self.hooks = GateHooks(self.groups)
        if self.phase == "penalty":
            self.penalty = self._penalty()
        if self.phase != "warmup" and self.phase != "allocate":
            trainer.train_loader = self.full_train_loader
        if self.keep_index is not None:
            self._apply_pruning(trainer)

    def finish(self, trainer) -> None:
        """Called when training has ended. A schedule too short to reach the end of the window
        is finalised here (by the fallback), so every run ends within the budget; then the last
        phase's time is accounted."""
        if self.keep_counts is None:
            self.events["met_by"] = self.events.get("met_by") or "shift"
            if self.allocator is None:
                self._start_allocation(trainer, 1)
            if self.keep_counts is None:  # a baseline finalises as it starts
                self._finalise(trainer)
        self._enter(trainer, "done")

    def summary(self) -> dict:
        return {
            "budget": str(self.budget),
            "met_by": self.events.get("met_by"),
            "met_at_epoch": self.events.get("met_at_epoch"),
            "calibration_shift": self.events.get("calibration_shift"),
            "phase_start_epoch": self.events.get("phase_epoch", {}),
            "phase_time_s": self.events["phase_time_s"],
            "keep_counts": self.keep_counts,
            "alpha": self.alpha_final,
            "cost_ratio_model": self.final_ratio,
            "measured_budget": self.events.get("measured_budget"),
            "allocation_updates": self.allocator.updates if self.allocator else 0,
        }
