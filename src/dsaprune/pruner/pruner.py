"""``Pruner``: DSA, or a baseline, inside any training loop; ``dsaprune.prune`` drives the same
object from its own trainer, so there is one flow.

The loop calls :meth:`Pruner.step` after every optimizer step. Phases, as shares of the run
(the paper's 300-epoch CIFAR-10 run: warm-up to epoch 20, allocation window to epoch 100), so
any length works:

1. warm-up (for ssl / morphnet: the penalty phase, from the first step): plain training;
2. allocation: the weights train under the top-n mask of the current A (with
   ``sample_train_masks``, the paper's sampled masks); every few steps one held-out batch gives
   the estimator's ∂L_val/∂Θ (``dsaprune.estimators``) and the allocator takes one step, until
   the cost of A is within the budget (a one-shot method decides at once instead; the iterative
   Group Fisher removes channels in rounds, ``pruner.rounds``);
3. settling (sampled masks only): masks are sampled with A frozen until they are hard;
4. finalising: A is calibrated to the budget (by a shift of all logits if the window ended
   first), rounded to whole channels, each group keeps its top channels, and the network is
   physically pruned (``step`` returns True: the caller rebuilds its optimizer);
5. training continues on the smaller network; :meth:`Pruner.finish` returns it with a report.

Which keep ratios a baseline takes, and when, is its policy's (``dsaprune.methods``). This
module owns the schedule and the phases; the class's other parts live beside it: the window's
Θ-steps and rounds (``allocate``), the end of the allocation (``finalise``), the checkpoint state
(``checkpoint``) and the report (``report``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..allocation import Allocator
from ..budget import Budget, BudgetError, parse_budget
from ..cost import QuadraticCost, make_cost
from ..estimators import make_estimator
from ..gates import GateHooks, beta2_at, hardness, sample_masks, topn_masks
from ..grouping import find_groups
from ..methods import Decision, make_method
from ..progress import say
from ..surgery import HardMasks, prune_groups
from ..train.distributed import DistInfo, broadcast_from_main
from .allocate import AllocationSteps
from .checkpoint import Checkpointing
from .config import PAPER_EPOCHS, DSAConfig, alloc_interval, is_whole, window_bounds
from .finalise import Finalise
from .report import PruneResult, Reporting, count_costs
from .rounds import FisherRounds

# one line when a phase starts (the progress output of a run whose log is not a terminal)
PHASE_LINES = {
    "penalty": "{self.cfg.method}: sparsity penalty from epoch {epoch:.2f}",
    "allocate": "allocation ({self.cfg.method}) to {self.budget} from epoch {epoch:.2f}",
    "settle": "allocation met {self.budget} at epoch {epoch:.2f}; settling the sampled masks",
    "pruned": "pruned at epoch {epoch:.2f}: {self.final_ratio:.4f} of the full cost, channels "
    "{self.keep_counts}",
    "masked": "masked at epoch {epoch:.2f}: {self.final_ratio:.4f} of the full cost, channels "
    "{self.keep_counts}",
}


class Pruner(AllocationSteps, Finalise, Checkpointing, Reporting):
    """Prunes ``model`` to ``budget`` while the caller's loop trains it for ``total_steps``
    optimizer steps.

    ``example_inputs``: one input batch (the network is traced on it). ``val_data``: held-out
    (inputs, targets) batches that DSA's allocation reads with ``loss_fn(outputs, targets)``
    (default cross-entropy) on ``forward(model, inputs, targets)`` (default ``model(inputs)``;
    a detector that returns its losses in training mode is run through its own call here);
    ``train_data``: training batches, for a method that measures on
    them (``group_fisher``; default ``val_data``). ``steps_per_epoch`` only scales the default
    warm-up and the epochs in the report (default: the whole run is one epoch). Settings are
    :class:`DSAConfig` or :class:`~dsaprune.AllocatorConfig` fields (``method``, ``round_to``,
    ``warmup_fraction``, …), or a whole ``config``. ``report_latency`` measures the network's
    speed before and after pruning (about 20 s on a CPU). The model is pruned in place.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        budget: str | Budget = "flops=0.5",
        *,
        total_steps: int,
        val_data: Iterable | None = None,
        loss_fn: Callable | None = None,
        forward: Callable | None = None,
        train_data: Iterable | None = None,
        steps_per_epoch: int | None = None,
        config: DSAConfig | None = None,
        ignored_layers: list[str] | None = None,
        amp: bool = False,
        dist: DistInfo | None = None,
        latency_batch: int = 1,
        report_latency: bool = False,
        progress: bool = False,
        model_name: str = "",
        **settings,
    ) -> None:
        if not is_whole(total_steps):
            raise ValueError(
                f"total_steps is the number of optimizer steps (>= 1), got {total_steps!r}"
            )
        if config is not None and settings:
            raise ValueError("give either a config or settings, not both")
        self.steps_per_epoch = steps_per_epoch or total_steps
        self.total_steps = total_steps
        self.epochs = total_steps / self.steps_per_epoch
        cfg = config or DSAConfig.from_dict(DSAConfig.nest(settings))
        self.cfg = cfg = cfg.for_run(self.epochs, total_steps)
        self.budget = b = parse_budget(budget) if isinstance(budget, str) else budget
        self.dist = dist or DistInfo(device=next(model.parameters()).device)
        self.device, self.amp = self.dist.device, amp
        self.model = model.to(self.device)
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.forward = forward
        self.method = make_method(cfg.method)
        if cfg.reads_held_out and val_data is None:
            raise ValueError(
                f"method {cfg.method!r} with estimator {cfg.estimator!r} reads held-out batches "
                "during allocation: pass val_data "
                "(a list or DataLoader of (inputs, targets) batches the weights do not train on)"
            )
        self.val_batches, self.val_iter = val_data, None
        self.train_batches = train_data if train_data is not None else val_data
        self.model_name = model_name
        example_inputs = example_inputs.to(self.device)
        self.in_shape = tuple(example_inputs.shape[1:])
        self.progress = progress and self.dist.is_main
        t0 = time.perf_counter()
        if self.progress:
            say("grouping: tracing the network into channel groups")
        self.groups = groups = find_groups(model, example_inputs, ignored_layers)
        if self.progress:
            say(
                f"grouping: {len(groups)} channel groups, {len(groups.prunable)} prunable "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        budget_cost = make_cost(b.kind, device=self.device, batch=latency_batch)
        # built on the main process and handed to the others, so every process allocates under
        # the same cost even when it is measured (each process would measure differently)
        built = budget_cost.model(groups, progress) if self.dist.is_main else None
        self.cost: QuadraticCost = broadcast_from_main(built)
        self.channels = [g.channels for g in groups.prunable]
        self.K = len(self.channels)
        self._check_feasible()
        self.before = count_costs(model, self.in_shape)
        self.latency_cost = self.reference = None
        if report_latency and self.dist.is_main:  # fitted now: surgery changes the model in place
            lat = make_cost("latency", device=self.device, batch=latency_batch)
            self.latency_cost = lat.model(groups, progress)
            self.reference = copy.deepcopy(model).eval()
        self.step_count = 0
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
        self.val_consumed = 0  # held-out batches drawn so far, so a resumed run draws the next
        self.estimator = make_estimator(cfg.estimator)
        self.train_mask: torch.Tensor | None = None  # the top-n mask the weights train under
        self.measured_order: list[torch.Tensor] | None = None  # importance "fisher", measured
        self.rounds: FisherRounds | None = None  # group_fisher_iterative's state
        if self.method.penalised:  # from the first step to the end of the window
            self._enter("penalty")
            self.penalty = self._penalty()

    def _check_feasible(self) -> None:
        widest = max(self.channels, default=0)
        round_to = self.cfg.round_to
        if self.groups.prunable and round_to > widest:
            raise ValueError(
                f"round_to {round_to} is wider than every prunable group (the widest has "
                f"{widest} channels), so it would round nothing: use at most {widest}"
            )
        floor = self.cost.floor(round_to)
        if self.budget.fraction < floor:
            least = "one channel" if round_to <= 1 else f"{round_to} channels (round_to)"
            raise BudgetError(
                f"budget {self.budget} is below what the network costs with {least} per "
                f"prunable group and the unprunable layers whole: the smallest feasible budget "
                f"is {self.budget.kind}={floor:.4f}"
            )
        given = self.cfg.keep_counts
        if given is None:
            return
        units = [g.unit for g in self.groups.prunable]
        if len(given) != self.K or any(
            n > c or n % u for n, c, u in zip(given, self.channels, units, strict=False)
        ):
            whole = "" if set(units) <= {1} else f", a multiple of its unit {units}"
            raise ValueError(
                f"keep_counts {list(given)} do not fit this network: it has {self.K} prunable "
                f"groups of {self.channels} channels (give one count per group, at most its "
                f"channels{whole}, in this order: a report.json's keep_counts from the same "
                "network)"
            )
        alpha = torch.tensor(given, dtype=torch.float64) / torch.tensor(self.channels)
        ratio = float(self.cost.ratio(alpha))
        if ratio > self.budget.fraction + 1e-9:
            raise BudgetError(
                f"keep_counts {list(given)} cost {self.budget.kind}={ratio:.4f}, over the budget "
                f"{self.budget}: lower some counts or raise the budget"
            )

    # -- the caller's side ---------------------------------------------------------------------
    @property
    def holds_out(self) -> bool:
        """Whether the weights should still train without the held-out batches: until DSA's
        allocation is decided (a baseline reads none, so its caller may train on everything)."""
        return self.cfg.reads_held_out and self.phase in ("warmup", "allocate")

    @property
    def pruned(self) -> bool:
        """Whether the network has been cut to its final channels."""
        return self.keep_index is not None

    def step(self, lr: float | None = None) -> bool:
        """Call once after every optimizer step (``lr``: the step's learning rate, needed by the
        ssl / morphnet penalties). Returns True when this call removed channels: the model's
        parameters changed, so rebuild the optimizer before the next step."""
        was = self.pruned
        self.step_count += 1
        self._after_step(lr)
        self._before_next_step()
        return self.pruned and not was and self.cfg.physical

    def finish(self) -> PruneResult:
        """End the run: a schedule too short to reach the end of the window is finalised here
        (by the fallback), so every run ends within the budget; returns the pruned model and
        the report."""
        if self.keep_counts is None:
            self.events["met_by"] = self.events.get("met_by") or "shift"
            if self.allocator is None:
                self._start_allocation(1)
            if self.keep_counts is None and self.rounds is not None:
                self._cut_round(self.rounds.rounds)  # the last round, at once
                self._finalise_rounds()
            if self.keep_counts is None:  # a baseline finalises as it starts
                self._finalise()
        self._enter("done")
        return PruneResult(self.model.eval(), self.report())

    def cut(self) -> nn.Module:
        """Physically remove the channels a ``physical=False`` run has masked: the same outputs
        from a smaller network (then rebuild the optimizer, if training goes on)."""
        if self.hard is None:
            raise RuntimeError(
                "nothing is masked to cut: the allocation is not final yet, or the run pruned "
                "physically already (physical=True, the default)"
            )
        self.hard.remove()
        self.hard = None
        prune_groups(self.groups, [torch.tensor(k, dtype=torch.long) for k in self.keep_index])
        return self.model

    # -- schedule ------------------------------------------------------------------------------
    def _bounds(self) -> tuple[int, int]:
        return window_bounds(self.cfg, self.epochs, self.total_steps)

    def _alloc_every(self) -> int:
        return alloc_interval(self.cfg, self.epochs, self.total_steps)

    def _beta2(self) -> float:
        w0, _ = self._bounds()
        epochs = (self.step_count - w0) / self.steps_per_epoch
        scale = PAPER_EPOCHS / max(self.epochs, 1e-9)
        return beta2_at(epochs, self.cfg.beta2_init, self.cfg.beta2_growth, scale)

    def _penalty(self):
        """The ssl / morphnet penalty, applied from the first step to the window's end."""
        return self.method.make_penalty(self.groups, self.cost, self.cfg.penalty)

    def _enter(self, phase: str) -> None:
        now = time.perf_counter()
        times = self.events["phase_time_s"]
        times[self.phase] = times.get(self.phase, 0.0) + now - self._phase_t0
        self._phase_t0 = now
        self.phase = phase
        epoch = self.step_count / self.steps_per_epoch
        self.events.setdefault("phase_epoch", {})[phase] = epoch
        if self.progress and phase in PHASE_LINES:
            say(PHASE_LINES[phase].format(self=self, epoch=epoch))

    # -- one step ------------------------------------------------------------------------------
    def _before_next_step(self) -> None:
        """Open the window when its first step comes, and set the masks the next step trains
        under."""
        w0, w1 = self._bounds()
        if self.phase == "warmup" and self.step_count >= w0:
            self._start_allocation(w1 - w0)
        if self.phase in ("allocate", "settle"):
            self._set_masks()

    def _set_masks(self) -> None:
        with torch.no_grad():
            if self.cfg.sample_train_masks:
                padded = self._gate_inputs()
                self._step_p = self._probabilities(self._alpha(), self._beta2(), 8, padded)
                self.hooks.set(sample_masks(self._step_p[0], self.cfg.prob_floor))
            else:  # refreshed after each α update, not every step (its cost is per group)
                if self.train_mask is None and self.rounds is not None:
                    self.train_mask = self.rounds.masks(self.device)
                elif self.train_mask is None:
                    I, V = self._gate_inputs()
                    self.train_mask = topn_masks(I, V, self._alpha())
                if self._gathers_next():
                    self.hooks.gather(self.train_mask)
                else:
                    self.hooks.set(self.train_mask)

    def _gathers_next(self) -> bool:
        """Whether the next step's own backward is the Θ-step's signal (``fisher_step``): it
        is decided with the next step's masks, so that a resumed run gathers too. The iterative
        Group Fisher reads every step of the window."""
        if self.phase != "allocate":
            return False
        if self.rounds is not None:
            return True
        if not self.estimator.from_training_step:
            return False
        w0, _ = self._bounds()
        return (self.step_count + 1 - w0) % self._alloc_every() == 0

    def _after_step(self, lr: float | None) -> None:
        w0, w1 = self._bounds()
        if self.phase == "penalty":
            if lr is None:
                raise ValueError(
                    f"method {self.cfg.method!r} applies a penalty after each optimizer step "
                    "and needs its learning rate: call step(lr=optimizer.param_groups[0]['lr'])"
                )
            self.penalty.step(lr)
            if self.step_count >= w1:
                self._start_allocation(1)
        if self.phase == "allocate" and self.rounds is not None:
            return self._round_step(w0, w1)
        if self.phase == "allocate":
            if (self.step_count - w0) % self._alloc_every() == 0:
                self._alpha_update()
            if self.allocator.met():
                self.events["met_by"] = "allocator"
                self.events["met_at_epoch"] = self.step_count / self.steps_per_epoch
                if not self.cfg.sample_train_masks:  # top-n masks are hard already
                    self._finalise()
                    return
                self._enter("settle")
                self._step_p = None  # drawn before this update moved A
            elif self.step_count >= w1:
                self.events["met_by"] = "shift"
                self._finalise()
        if self.phase == "settle":
            # A is frozen while settling: reuse the probabilities this step's masks were drawn
            # from rather than solving for β1 a second time in the same step
            if self._step_p is None:
                with torch.no_grad():
                    self._step_p = self._probabilities(self._alpha(), self._beta2(), 8)
            p, V = self._step_p
            if self.step_count >= w1 or bool((hardness(p, V) < self.cfg.hard_threshold).all()):
                self._finalise()

    # -- phases --------------------------------------------------------------------------------
    def _start_allocation(self, window_steps: int) -> None:
        self._enter("allocate")
        self._measure_order()
        theta0 = torch.full((self.K,), float(torch.logit(torch.tensor(self.cfg.init_alpha))))
        n_updates = max(1, window_steps // self._alloc_every())
        self.allocator = Allocator(
            self.cost, self.budget.fraction, theta0, n_updates, self.cfg.allocator
        )
        decided = self.method.keep_ratios(
            Decision(
                self.groups,
                self.cost,
                self.budget.fraction,
                self._weight_source(),
                penalty=self.penalty,
                round_to=self.cfg.round_to,
                model=self.model,
                batches=self.train_batches,
                loss_fn=self.loss_fn,
                device=self.device,
                amp=self.amp,
                forward=self.forward,
                keep_counts=self.cfg.keep_counts,
                fisher_batches=self.cfg.fisher_batches,
            )
        )
        if decided is None:  # DSA (gradient steps) or rounds of removals over the window
            self.hooks = GateHooks(self.groups)
            if self.method.iterative:
                self.rounds = self._make_rounds(window_steps)
            return
        # a baseline: its keep ratios are decided at once and the network is pruned now
        alpha, imp = decided
        self.allocator.theta = torch.logit(alpha.double().clamp(1e-6, 1 - 1e-6))
        self.events["met_by"] = self.cfg.method
        self._finalise(imp)
