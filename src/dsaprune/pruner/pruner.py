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

Which keep ratios a baseline takes, and when, is its policy's (``dsaprune.methods``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..allocation import Allocator, round_channels, shift_to_budget
from ..budget import Budget, BudgetError, parse_budget
from ..cost import QuadraticCost, make_cost
from ..cost.measured import report_latency
from ..estimators import GateState, channel_fisher, make_estimator
from ..gates import (
    GateHooks,
    beta2_at,
    hardness,
    keep_probabilities,
    pad_groups,
    sample_masks,
    topn_masks,
)
from ..grouping import channel_importance, find_groups
from ..methods import Decision, make_method
from ..progress import say
from ..surgery import HardMasks, prune_groups, top_channels
from ..train.distributed import DistInfo, all_reduce_sum, broadcast_from_main
from ..train.outputs import same_batch, to_device
from ..train.trainer import TrainingDiverged
from .config import PAPER_EPOCHS, DSAConfig, alloc_interval, is_whole, window_bounds
from .report import PruneResult, count_costs
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


class Pruner:
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
        self.cfg = cfg = cfg.for_epochs(self.epochs)
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

    # -- gates ---------------------------------------------------------------------------------
    def _channel_order(self) -> list[torch.Tensor]:
        """Each group's channel importances: measured once (``fisher``) or read off the
        weights now."""
        if self.measured_order is not None:
            return self.measured_order
        return channel_importance(self.groups, self._weight_source())

    def _weight_source(self) -> str:
        """The weight-based importance where none is measured (``fisher`` without data)."""
        return "bn_first" if self.cfg.importance == "fisher" else self.cfg.importance

    def _measure_order(self) -> None:
        """``importance: fisher``: each channel's coupled Fisher removal cost on the training
        batches, at the weights the allocation starts from (floored, so that the sampled
        masks' log-importances stay finite)."""
        if self.cfg.importance != "fisher" or self.train_batches is None or self.method.own_order:
            return
        fisher = self._training_fisher()
        bad = [k for k, f in enumerate(fisher) if not bool(torch.isfinite(f).all())]
        order = [_order(f) for f in fisher]
        if bad:
            weights = channel_importance(self.groups, self._weight_source())
            for k in bad:
                order[k] = weights[k].float()
            warnings.warn(
                f"the Fisher costs of {len(bad)} channel group(s) are not finite (groups "
                f"{bad[:8]}); their channels keep the order of their weights "
                f"({self._weight_source()}) instead",
                stacklevel=4,
            )
        self.measured_order = order

    def _training_fisher(self) -> list[torch.Tensor]:
        """Each group's coupled Fisher removal cost per channel, of the network as it is, on
        ``fisher_batches`` training batches."""
        return channel_fisher(
            self.model, self.groups, self.train_batches, self.loss_fn, self.cfg.fisher_batches,
            self.device, self.amp, self.forward,
        )  # fmt: skip

    def _importance(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_groups([i.to(device) for i in self._channel_order()])

    def _gate_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Importances for the gates, refused when the weights they come from have diverged
        (the gates would otherwise fail deep inside with a sampling error)."""
        I, V = self._importance(self.device)
        for what, t in (
            ("channel importances (BN scales)", I),
            ("keep-ratio logits", self.allocator.theta),
        ):
            if not bool(torch.isfinite(t).all()):
                raise TrainingDiverged(
                    f"{what} became NaN or infinite at step {self.step_count}: the weights diverged"
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

    def _alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.allocator.theta).float().to(self.device)

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

    def epoch_record(self) -> dict:
        """The allocation's state, for a per-epoch log line."""
        rec = {"phase": self.phase}
        if self.rounds is not None and self.alpha_final is None:
            alpha = self.rounds.alpha()
            rec.update(alpha=alpha.tolist(), cost_ratio=float(self.cost.ratio(alpha)))
        elif self.allocator is not None:
            rec["alpha"] = torch.sigmoid(self.allocator.theta).tolist()
            rec["cost_ratio"] = self.allocator.ratio()
            rec["beta2"] = self._beta2()
        if self.alpha_final is not None:
            rec["alpha"] = self.alpha_final
            rec["cost_ratio"] = self.final_ratio
        return rec

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
                self.penalty,
                self.cfg.round_to,
                self.model,
                self.train_batches,
                self.loss_fn,
                self.device,
                self.amp,
                self.forward,
                self.cfg.keep_counts,
                self.cfg.fisher_batches,
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

    # -- the iterative Group Fisher's rounds -------------------------------------------------------
    def _make_rounds(self, window_steps: int, rounds: int | None = None) -> FisherRounds:
        steps = round(self.cfg.allocator.target_fraction * window_steps)
        return FisherRounds(
            self.groups,
            self.cost,
            self.budget.fraction,
            self.cfg.round_to,
            steps,
            rounds or self.method.rounds,
        )

    def _round_step(self, w0: int, w1: int) -> None:
        """Add the step's Fisher; take the round the schedule has reached (at the window's end,
        the last); finalise once the budget is met."""
        g = self.hooks.gathered()
        if g is None:
            raise RuntimeError(
                f"method {self.cfg.method!r} reads the mask gradients of every training step in "
                f"the allocation window, but step {self.step_count} left none: call "
                "pruner.step() after loss.backward() and optimizer.step(), with the model's "
                "forward under gradients (not inside torch.compile)"
            )
        r = self.rounds.step(g, self.step_count - w0, self.step_count >= w1)
        if r is not None:
            self._cut_round(r)
        if self.rounds.met():
            self.events["met_by"] = self.cfg.method
            self.events["met_at_epoch"] = self.step_count / self.steps_per_epoch
            self._finalise_rounds()

    def _cut_round(self, r: int) -> None:
        """Round ``r`` on the Fisher every process has read since the last one (measured once
        on training batches if no step was read: a run too short for its window)."""
        fisher = self.rounds.round_fisher(all_reduce_sum, self.device)
        if fisher is None and self.train_batches is not None:
            fisher = pad_groups(self._training_fisher(), fill=0.0)[0].double()
        self.rounds.cut(fisher, r)
        self.train_mask = None
        alpha = self.rounds.alpha()
        self.history.append(
            {"step": self.step_count, "round": r, "cost_ratio": float(self.cost.ratio(alpha))}
        )

    def _finalise_rounds(self) -> None:
        self.allocator.theta = torch.logit(self.rounds.alpha().clamp(1e-6, 1 - 1e-6))
        self._finalise(self.rounds.importance())

    def _next_val(self):
        if self.val_iter is None:
            self.val_iter = iter(self.val_batches)
            # a resumed run continues where the saved one was in the held-out pass
            for _ in range(self.val_consumed % max(1, len(self.val_batches))):
                next(self.val_iter)
        self.val_consumed += 1
        try:
            return next(self.val_iter)
        except StopIteration:
            self.val_iter = iter(self.val_batches)
            return next(self.val_iter)

    def _alpha_update(self) -> None:
        if self.estimator.from_training_step:
            return self._alpha_update_from_step()
        if self.allocator.updates % self.cfg.signal_every:  # between held-out passes
            return self._allocator_step(None, {"signal": "average"})
        x, y = _theta_samples(*self._next_val(), self.cfg.alloc_samples)
        x, y = to_device(x, self.device), to_device(y, self.device)
        theta = self.allocator.theta.float().to(self.device)
        I, V = self._gate_inputs()
        beta2 = self._beta2()

        def probabilities(alpha: torch.Tensor, iters: int) -> torch.Tensor:
            return self._probabilities(alpha, beta2, iters, (I, V))[0]

        gates = GateState(I, V, probabilities, self.cfg.prob_floor)
        # BN in eval mode (running statistics): with batch statistics BN re-normalises after the
        # masks and hides what pruning a channel costs, leaving only the classifier-side group
        # with a usable gradient (measured: ~1e-7 against ~1e-3 per group with running stats)
        was = self.model.training
        self.model.eval()
        try:
            with _signal_autocast(self.device, self.amp, self.cfg.signal_bf16):
                g, loss = self.estimator.loss_grad(
                    self._network(y), self.hooks, x, y, self.loss_fn, theta, gates
                )
        finally:
            self.model.train(was)
        self._allocator_step(g, {"val_loss": loss})

    def _alpha_update_from_step(self) -> None:
        """``fisher_step``: the signal is the per-sample mask gradients the step just taken
        left in the gathering hooks."""
        g = self.hooks.gathered()
        if g is None:
            raise RuntimeError(
                f"estimator {self.cfg.estimator!r} reads the mask gradients of the training "
                f"step before each Θ-step, but step {self.step_count} left none: call "
                "pruner.step() after loss.backward() and optimizer.step(), with the model's "
                "forward under gradients (not inside torch.compile)"
            )
        n = g.shape[0]  # the caller's loss is a batch mean: sample n's own gradient is N×
        theta = self.allocator.theta.float().to(self.device)
        I, V = self._gate_inputs()
        gates = GateState(I, V, None, self.cfg.prob_floor)
        g_theta = self.estimator.theta_grad(g.detach() * n, theta, gates)
        self._allocator_step(g_theta, {"train_samples": n})

    def _allocator_step(self, g: torch.Tensor | None, record: dict) -> None:
        if g is None:  # no new signal: every process steps on the same running average
            self.allocator.step(None)
        else:
            g = all_reduce_sum(g.detach().clone()) / self.dist.world_size
            if bool(torch.isfinite(g).all()):  # a diverging run is stopped by the loss check,
                self.allocator.step(g)  # with the allocation of its last good state kept
        self.train_mask = None
        self.history.append(
            {"step": self.step_count, **record, "cost_ratio": self.allocator.ratio()}
        )

    def _network(self, targets) -> Callable:
        """The network as the estimators call it, on inputs alone."""
        if self.forward is None:
            return self.model
        return lambda inputs: self.forward(self.model, inputs, targets)

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

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain values and tensors only (a checkpoint loads with ``weights_only=True``)."""
        return {
            "phase": self.phase,
            "step": self.step_count,
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
            "measured_order": self.measured_order,
            "rounds": self.rounds.state_dict() if self.rounds is not None else None,
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a saved run into this (unpruned) model: the allocator, the phase, and, if the
        saved run had pruned, the same pruning, so the saved weights fit (then rebuild the
        optimizer before loading its state)."""
        if list(d["channels"]) != self.channels:
            raise ValueError(
                f"the checkpoint's channel groups {d['channels']} are not this model's "
                f"{self.channels}: it is from another model"
            )
        if self.pruned or self.step_count:
            raise RuntimeError("load_state_dict restores into a fresh Pruner, before any step")
        self.phase, self.events, self.history = d["phase"], d["events"], d["history"]
        self.step_count = int(d["step"])
        self.keep_counts, self.keep_index = d["keep_counts"], d["keep_index"]
        self.alpha_final, self.final_ratio = d["alpha_final"], d["final_ratio"]
        self.val_consumed, self.val_iter = d["val_consumed"], None
        self.t_cache = d["t_cache"]
        self.train_mask = d.get("train_mask")
        self.measured_order = d.get("measured_order")
        if d.get("rounds") is not None:
            self.rounds = self._make_rounds(1, 1)
            self.rounds.load_state_dict(d["rounds"])
        self._phase_t0 = time.perf_counter()
        if d["allocator"] is not None:
            theta = d["allocator"]["theta"]
            self.allocator = Allocator(
                self.cost, self.budget.fraction, theta, 1, self.cfg.allocator
            )
            self.allocator.load_state_dict(d["allocator"])
        self.penalty = self._penalty() if self.phase == "penalty" else None
        if self.phase in ("allocate", "settle"):
            self.hooks = GateHooks(self.groups)
            # the next step's masks are read from the weights, which the caller loads after
            # this: they are set at the next forward
            self.hooks.on_demand = self._set_masks
        if self.keep_index is not None:
            self._apply_pruning()

    # -- report ----------------------------------------------------------------------------------
    def summary(self) -> dict:
        """What the flow decided, and when."""
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
            "allocation_updates": self._updates(),
        }

    def _updates(self) -> int:
        """Allocator steps taken, or the iterative Group Fisher's removal rounds."""
        if self.rounds is not None:
            return self.rounds.done
        return self.allocator.updates if self.allocator else 0

    def report(self) -> dict:
        """The pruned network's costs against the budget, each group's channels, the decision:
        plain values. Counted kinds are checked on the pruned network itself, measured ones
        on their fitted model."""
        b, before = self.budget, self.before
        # a masked network (physical=False, not cut) counts as the unpruned one: its costs are
        # the cost model's until cut() removes the channels
        after = count_costs(self.model, self.in_shape) if self.hard is None else {}
        counted = after.get(b.kind)  # None: measured, or masked; the fitted model's value
        ratio = counted / before[b.kind] if counted is not None else self.final_ratio
        if ratio > b.fraction + 1e-9:
            raise RuntimeError(f"internal error: pruned {b.kind} ratio {ratio:.4f} exceeds {b}")
        if counted is not None and abs(ratio - self.final_ratio) > 0.01:
            warnings.warn(
                f"the pruned network counts {ratio:.4f} of the {b.kind} where the cost model "
                f"predicted {self.final_ratio:.4f}: some layers' channels are coupled in a way "
                "the channel groups do not describe, so the network was cut more than the "
                "budget asks; please report the model",
                stacklevel=3,
            )
        latency = None
        if self.latency_cost is not None:
            latency = report_latency(
                self.latency_cost,
                self.reference,
                self.model,
                self.alpha_final,
                self.in_shape,
                self.cost,
                b,
            )
        return {
            "model": self.model_name,
            "budget": str(b),
            "budget_kind": b.kind,
            # channels per block the budget's rounding kept in groups wider than one (1: any)
            "rounding_block": self.cost.block,
            "budget_fraction": b.fraction,
            "budget_ratio": ratio,
            **{f"{k}_before": v for k, v in before.items()},
            **{f"{k}_after": v for k, v in after.items()},
            **{f"{k}_ratio": after[k] / before[k] for k in after},
            "masked": self.hard is not None,
            "latency": latency,
            "groups": [
                {
                    "index": g.index,
                    "members": g.describe(),
                    "channels_before": g.channels,
                    "channels_after": n,
                    "keep_ratio": n / g.channels,
                }
                for g, n in zip(self.groups.prunable, self.keep_counts, strict=True)
            ],
            "unprunable_groups": [g.describe() for g in self.groups if not g.prunable],
            **self.summary(),
            "dsa_config": self.cfg.to_dict(),
            "allocation_history": self.history,
        }


def _order(fisher: torch.Tensor) -> torch.Tensor:
    """A group's (finite) Fisher costs as gate importances: scaled to at most 1 (a float32 copy
    of costs near the float64 range would overflow), floored so that the sampled masks'
    log-importances stay finite."""
    f = fisher.double()
    top = f.max()
    f = f / top if top > 0 else torch.ones_like(f)
    return f.float().clamp_min(1e-30)


def _signal_autocast(device: torch.device, amp: bool, cpu_bf16: bool):
    """The Θ-step pass's precision: bfloat16 on CUDA under the run's ``amp``, on the CPU where
    ``signal_bf16`` asks for it, float32 otherwise."""
    if device.type == "cuda":
        return torch.autocast("cuda", torch.bfloat16, enabled=amp)
    return torch.autocast("cpu", torch.bfloat16, enabled=cpu_bf16 and device.type == "cpu")


def _theta_samples(x, y, n: int | None):
    """The held-out samples a Θ-step reads: the first ``n`` of the batch where inputs and
    targets are batch-first tensors; otherwise (``n`` None, or lists, tuples, dicts, whose
    layout is the user's) the whole batch."""
    if n is None or not same_batch(x, y):
        return x, y
    return x[:n], y[:n]
