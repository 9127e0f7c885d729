"""The Θ-step's loss signal: estimators of ∂E[L_val]/∂α_k, how the expected validation loss
changes when group k keeps a larger fraction of its channels.

One class per estimator, registered in ``ESTIMATORS`` under the name ``DSAConfig.estimator``
takes; each returns ∂L/∂Θ (Θ the logits of the keep ratios) for one validation batch, which
the allocator turns into the loss's resistance against the budget's pull.

- ``ste`` (the paper's): masks sampled from the sigmoid-log keep probabilities, straight-through
  derivative ∂L/∂p_i = ∂L/∂m_i, chained to α through the implicit function of β1(α). It is a
  first-order estimate of E[L | m_i = 1] − E[L | m_i = 0], and the first-order term of a trained
  network is ≈ 0 in expectation.
- ``fisher`` (the default): the second-order removal cost of each channel, ½·mean_n (∂L_n/∂m_i)²
  over the samples n of the batch (per-sample mask gradients from one backward pass through an
  [N, K, C] mask; every producer of a group shares the mask, so its gradient is already summed
  over the group's producers before squaring), evaluated at the deterministic top-n mask of the
  current α with BN running statistics (which track that mask, because the weights train under
  it). A group's ∂L/∂α_k is −C_k times the mean removal cost of the channels it would lose next
  (the least important 10% of those it keeps).

- ``fisher_centred``: ``fisher`` with a removed channel replaced by its batch mean, not 0 (the
  constant part is what BN statistics re-estimated after pruning absorb).
- ``fisher_joint``: the second-order cost of removing a group's next channels together,
  ½·mean_n (Σ_S g_ni)² per channel of S, cross terms kept (``fisher`` sums the channels alone).
- ``fisher_step``: ``fisher``'s cost read off the training step before each Θ-step (its
  backward through a per-sample mask), not off a held-out pass of its own: training images,
  BN batch statistics, no extra forward or backward. It expects one backward per weight step
  (under gradient accumulation the micro-batches' per-sample gradients mix); cheaper than
  ``fisher`` but behind it at 50% FLOPs after longer fine-tunes on the dev half, so an option.

``fisher`` is the default. How each signal ranks the groups' measured removal cost on the
trained references (Spearman ρ), and why ``fisher`` was chosen, is in ``docs/decisions.md``
("The Θ-step's loss signal") with ``bench/results/alpha_signal.md``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .gates import GateHooks, marginal_channels, pad_groups, sample_masks, topn_masks
from .grouping import Groups
from .registry import create
from .train.outputs import as_float, same_batch, to_device

# samples per per-sample pass on the CPU (GroupFisher._chunk)
CPU_CHUNK = 64


@dataclass
class GateState:
    """What an estimator may read about the gates at this Θ-step."""

    importance: torch.Tensor  # [K, C_max] channel importances (padding: any value)
    valid: torch.Tensor  # [K, C_max] bool
    # alpha [K] (may carry a gradient), Newton iterations -> keep probabilities p [K, C_max]
    probabilities: Callable[[torch.Tensor, int], torch.Tensor]
    prob_floor: float = 0.01


class Estimator(ABC):
    """∂L_val/∂Θ from one validation batch; ``hooks`` are the model's gate hooks; ``model`` is
    the network or any callable that runs it on the inputs (a detector with its targets)."""

    # whether the signal comes from the weight step's own backward (``StepFisher``) rather
    # than from a pass over a held-out batch
    from_training_step = False

    @abstractmethod
    def loss_grad(
        self,
        model: nn.Module,
        hooks: GateHooks,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable,
        theta: torch.Tensor,
        gates: GateState,
    ) -> tuple[torch.Tensor, float]:
        """Returns (∂L/∂Θ [K], the batch's loss). Leaves ``hooks`` cleared."""


class StraightThrough(Estimator):
    """The paper's estimator: sampled Bernoulli masks, straight-through gradient."""

    def loss_grad(self, model, hooks, x, y, loss_fn, theta, gates):
        theta = theta.detach().float().requires_grad_(True)
        p = gates.probabilities(torch.sigmoid(theta), 40)
        hooks.set(sample_masks(p, gates.prob_floor))
        try:
            loss = loss_fn(as_float(model(x)), y)
            (g,) = torch.autograd.grad(loss, theta)
        finally:
            hooks.clear()
        return g.detach(), float(loss.detach())


class GroupFisher(Estimator):
    """Second-order removal cost of the channels each group would lose next (see the module
    docstring). ``fraction``: how many of a group's channels count as "next"."""

    centre = False  # a removed channel reads 0 (``CentredFisher``: its batch mean)

    def __init__(self, fraction: float = 0.1) -> None:
        self.fraction = fraction

    def mask_grads(self, model, hooks, x, y, loss_fn, alpha, gates):
        """(per-sample mask gradients ∂L_n/∂m_ni [N, K, C_max], the batch's loss) at the
        top-n mask. Samples are independent here (BN reads running statistics), so the pass may
        run in chunks (``_chunk``) with the same result."""
        m0 = topn_masks(gates.importance, gates.valid, alpha.detach())
        n = x.shape[0]
        size = max(1, self._chunk(model, x, y))
        grads, total = [], 0.0
        for s in range(0, n, size):
            xs, ys = (x, y) if size >= n else (x[s : s + size], y[s : s + size])
            k = xs.shape[0]
            masks = m0.to(x.device).expand(k, *m0.shape).clone().requires_grad_(True)
            hooks.set(masks, centre=self.centre)
            try:
                loss = loss_fn(as_float(model(xs)), ys)
                # the sum of per-sample losses: its gradient on sample n's mask is ∂L_n/∂m_n
                (g,) = torch.autograd.grad(loss * k, masks)
            finally:
                hooks.clear()
            grads.append(g.detach().double())
            total += float(loss.detach()) * k
        return torch.cat(grads), total / n

    def _chunk(self, model, x, y) -> int:
        """Samples per pass: ``CPU_CHUNK`` on the CPU, where a 128-sample pass costs more than
        two of 64 (docs/decisions.md, "The Θ-step's cost"), the whole batch elsewhere. Only a
        plain module on batch-first tensors is split (a wrapper may bind the whole batch's
        targets), and never ``fisher_centred``, whose removed channel reads the batch mean."""
        splittable = isinstance(model, nn.Module) and same_batch(x, y) and not self.centre
        return CPU_CHUNK if splittable and x.device.type == "cpu" else x.shape[0]

    def channel_costs(self, model, hooks, x, y, loss_fn, alpha, gates):
        """(½·mean_n g_ni² per channel [K, C_max], the batch's loss) at the top-n mask."""
        g, loss = self.mask_grads(model, hooks, x, y, loss_fn, alpha, gates)
        return 0.5 * g.pow(2).mean(0), loss

    def next_cost(self, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[K] removal cost per channel of the channels each group loses next, from the mask
        gradients ``g`` [N, K, C_max] and ``w`` (1/|S| on each group's next set S, else 0):
        the mean of their costs alone."""
        return (0.5 * g.pow(2).mean(0) * w).sum(1)

    def loss_grad(self, model, hooks, x, y, loss_fn, theta, gates):
        alpha = torch.sigmoid(theta.detach().double()).to(gates.importance.device)
        g, loss = self.mask_grads(model, hooks, x, y, loss_fn, alpha, gates)
        return self.theta_grad(g, theta, gates), loss

    def theta_grad(self, g: torch.Tensor, theta: torch.Tensor, gates: GateState) -> torch.Tensor:
        """∂L/∂Θ [K] from per-sample mask gradients ``g`` [N, K, C_max] at the top-n mask."""
        alpha = torch.sigmoid(theta.detach().double()).to(gates.importance.device)
        w = marginal_channels(gates.importance.double(), gates.valid, alpha, self.fraction)
        C = gates.valid.sum(1).double()
        # keeping more of group k lowers the loss by what its next channels cost
        g_alpha = -C * self.next_cost(g.to(w.device).double(), w)
        return (g_alpha * alpha * (1 - alpha)).to(theta.device, theta.dtype)


class StepFisher(GroupFisher):
    """``fisher`` read off the weight step's own backward instead of a pass of its own: the
    step before each Θ-step trains under a per-sample copy of its top-n mask
    (``GateHooks.gather``), so its backward leaves ∂L_n/∂m_ni for the training batch. The
    signal then costs a product and a sum per masked activation on that step, not a forward
    and a backward; it reads training images with BN's batch statistics, as Group Fisher
    pruning accumulates its Fisher during fine-tuning, where ``fisher`` reads held-out images
    with running statistics."""

    from_training_step = True

    def loss_grad(self, model, hooks, x, y, loss_fn, theta, gates):
        raise RuntimeError(
            "the fisher_step estimator reads the training step's backward (Pruner gathers it); "
            "it runs no pass of its own"
        )


class CentredFisher(GroupFisher):
    """``fisher`` with a removed channel replaced by its batch mean: the per-sample mask gradient
    is Σ (a − ā)·∂L/∂a, the cost of losing the channel's variation only, since BN statistics
    re-estimated after pruning absorb its constant part."""

    centre = True


class JointFisher(GroupFisher):
    """The second-order cost of removing a group's next channels *together*:
    ½·mean_n (Σ_{i∈S} g_ni)² for the set S, per channel of S, so that channels whose removals
    compensate (or compound) one another count as such; ``fisher`` sums the channels' costs
    alone, Σ_i ½·mean_n g_ni², dropping the cross terms."""

    def next_cost(self, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        size = (w > 0).sum(1).double()  # |S|; w is 1/|S| on S
        return 0.5 * (g * w).sum(2).pow(2).mean(0) * size  # ½ E[(Σ_S g)²] / |S|


def channel_fisher(
    model: nn.Module,
    groups: Groups,
    batches: Iterable,
    loss_fn: Callable,
    max_batches: int = 20,
    device: torch.device | None = None,
    amp: bool = False,
    forward: Callable | None = None,
) -> list[torch.Tensor]:
    """Per prunable group, each channel's second-order removal cost ½·mean_n (∂L_n/∂m_i)² on
    the unpruned network, over the samples of up to ``max_batches`` batches: ``fisher``'s
    per-channel cost at mask 1, with BN running statistics (as the Θ-step reads it). The mask
    is shared by every producer of a group, so coupled layers add up before squaring (Group
    Fisher pruning's coupled Fisher). Summed over DDP ranks, so every process gets the same."""
    dev = device or next(model.parameters()).device
    ones = [torch.ones(g.channels, device=dev) for g in groups.prunable]
    imp, valid = pad_groups(ones)  # at keep ratio 1 the top-n mask keeps every channel
    gates = GateState(imp, valid, probabilities=None)
    alpha = torch.ones(len(ones), dtype=torch.float64, device=dev)
    est, hooks = GroupFisher(), GateHooks(groups)
    total = torch.zeros(valid.shape, dtype=torch.float64, device=dev)
    count = torch.zeros((), dtype=torch.float64, device=dev)
    was = model.training
    model.eval()
    try:
        # islice, not a break: a loader is not asked for one batch past the last one read
        for x, y in itertools.islice(batches, max_batches):
            x, y = to_device(x, dev), to_device(y, dev)
            with torch.autocast("cuda", torch.bfloat16, enabled=amp and dev.type == "cuda"):
                net = model if forward is None else (lambda inp, y=y: forward(model, inp, y))
                cost, _ = est.channel_costs(net, hooks, x, y, loss_fn, alpha, gates)
            total += cost * x.shape[0]
            count += x.shape[0]
    finally:
        hooks.remove()
        model.train(was)
    if not float(count):
        raise ValueError("channel_fisher got no batches to measure on")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
        torch.distributed.all_reduce(count)
    fisher = total / count
    return [fisher[k, : g.channels].cpu() for k, g in enumerate(groups.prunable)]


ESTIMATORS: dict[str, Callable[[], Estimator]] = {
    "fisher": GroupFisher,
    "fisher_centred": CentredFisher,
    "fisher_joint": JointFisher,
    "fisher_step": StepFisher,
    "ste": StraightThrough,
}


def make_estimator(name: str) -> Estimator:
    return create(ESTIMATORS, name, "estimator")
