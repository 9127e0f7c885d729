"""The allocation window's steps, as a part of :class:`~dsaprune.pruner.Pruner`: each group's
channel order and the gates' keep probabilities; DSA's Θ-step (a held-out pass, or the training
step's own mask gradients, averaged over the processes into one allocator step); the iterative
Group Fisher's rounds of removals. A mixin because these steps read and move the run's state,
which :class:`Pruner` owns and schedules; kept apart so that each part reads in one sitting."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..estimators import GateState, channel_fisher
from ..gates import keep_probabilities, pad_groups
from ..grouping import channel_importance
from ..train.distributed import all_reduce_sum
from ..train.outputs import same_batch, to_device
from ..train.trainer import TrainingDiverged
from .rounds import FisherRounds


class AllocationSteps:
    """The Θ-steps and removal rounds of :class:`~dsaprune.pruner.Pruner`'s allocation window."""

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

    def _alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.allocator.theta).float().to(self.device)

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

    def _step_mask_gradients(self, reader: str) -> torch.Tensor:
        """The per-sample mask gradients the training step just taken left in the gathering
        hooks, for ``reader`` (a method or estimator that reads them); a step that left none
        was taken the wrong way round."""
        g = self.hooks.gathered()
        if g is None:
            raise RuntimeError(
                f"{reader} reads the mask gradients of the training steps in the allocation "
                f"window, but step {self.step_count} left none: call pruner.step() after "
                "loss.backward() and optimizer.step(), with the model's forward under "
                "gradients (not inside torch.compile)"
            )
        return g

    def _round_step(self, w0: int, w1: int) -> None:
        """Add the step's Fisher; take the round the schedule has reached (at the window's end,
        the last); finalise once the budget is met."""
        g = self._step_mask_gradients(f"method {self.cfg.method!r}")
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

    # -- the Θ-step --------------------------------------------------------------------------
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
        g = self._step_mask_gradients(f"estimator {self.cfg.estimator!r}")
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
