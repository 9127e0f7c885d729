"""Differentiable pruning gates: keep probabilities, Bernoulli masks and the gradient to α.

For group k with channel importances b_i and keep ratio α_k, the keep probability of channel i is
the sigmoid-log function p_i = sigmoid(β2 (log b_i − log β1)), with β1 solved so that
mean_i p_i = α_k. All groups are solved at once on a padded [K, C_max] tensor by safeguarded
Newton steps in t = log β1 (no Python loop over groups, no host synchronisation).

The gradient to α comes from the implicit function theorem on the root condition:
∂p_i/∂α = C · p_i(1 − p_i) / Σ_j p_j(1 − p_j); the masks are straight-through Bernoulli samples,
so ∂L/∂p_i = ∂L/∂m_i and ∂L/∂α = C Σ_i (∂L/∂m_i) p_i(1 − p_i) / Σ_j p_j(1 − p_j).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the gates act on groups but need nothing of the grouping code to run
    from .grouping import Groups


def pad_groups(values: list[torch.Tensor], fill: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-group vectors into [K, C_max] plus a validity mask."""
    k, cmax = len(values), max(v.numel() for v in values)
    out = torch.full((k, cmax), fill, dtype=values[0].dtype, device=values[0].device)
    valid = torch.zeros(k, cmax, dtype=torch.bool, device=values[0].device)
    for i, v in enumerate(values):
        out[i, : v.numel()] = v
        valid[i, : v.numel()] = True
    return out, valid


def solve_log_beta1(
    log_b: torch.Tensor,
    valid: torch.Tensor,
    alpha: torch.Tensor,
    beta2: float,
    iters: int = 40,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """t_k = log β1_k such that the mean over valid channels of sigmoid(β2 (log b − t)) = α_k."""
    count = valid.sum(1).to(log_b.dtype)
    big = torch.finfo(log_b.dtype).max
    lo = torch.where(valid, log_b, big).amin(1) - 40.0 / beta2  # mean p ≈ 1 here
    hi = torch.where(valid, log_b, -big).amax(1) + 40.0 / beta2  # mean p ≈ 0 here
    t = (lo + hi) / 2 if init is None else init.clamp(lo, hi)
    alpha = alpha.to(log_b.dtype)
    for _ in range(iters):
        p = torch.sigmoid(beta2 * (log_b - t[:, None])) * valid
        f = p.sum(1) / count - alpha  # decreasing in t
        df = -beta2 * (p * (1 - p)).sum(1) / count
        lo = torch.where(f > 0, t, lo)
        hi = torch.where(f > 0, hi, t)
        newton = t - f / df.clamp(max=-1e-30)
        inside = (newton > lo) & (newton < hi)
        t = torch.where(inside, newton, (lo + hi) / 2)
    return t


def keep_probabilities(
    importance: torch.Tensor,
    valid: torch.Tensor,
    alpha: torch.Tensor,
    beta2: float,
    iters: int = 40,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """p [K, C_max] (zero at padding) whose gradient to ``alpha`` is the implicit one, and t."""
    log_b = importance.detach().clamp_min(1e-12).log()
    with torch.no_grad():
        t = solve_log_beta1(log_b, valid, alpha.detach(), beta2, iters, init)
        p0 = torch.sigmoid(beta2 * (log_b - t[:, None])) * valid
        w = p0 * (1 - p0)
        dp_dalpha = valid.sum(1, keepdim=True) * w / w.sum(1, keepdim=True).clamp_min(1e-30)
    # value p0, derivative dp/dα: exact first-order dependence on α through β1(α)
    p = p0 + (alpha - alpha.detach())[:, None].to(p0.dtype) * dp_dalpha
    return p, t


def sample_masks(p: torch.Tensor, floor: float = 0.0, generator=None) -> torch.Tensor:
    """Bernoulli masks with straight-through gradients (∂m/∂p = 1); ``floor`` bounds the sampling
    probability from below (the authors use 0.01) without changing the gradient."""
    probs = p.detach().clamp(min=floor) if floor > 0 else p.detach()
    m = torch.bernoulli(probs, generator=generator)
    return m + p - p.detach()


def _ranks(score: torch.Tensor, descending: bool) -> torch.Tensor:
    """Each entry's position in its row's sorted order (0: first)."""
    order = score.argsort(1, descending=descending)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank


def topn_masks(importance: torch.Tensor, valid: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The deterministic mask of keep ratios ``alpha``: group k's ⌊α_k C_k⌋ most important
    channels get 1, the next one the fractional part of α_k C_k, the rest 0 (so the mask moves
    continuously with α). [K, C_max], zero at padding."""
    C = valid.sum(1).to(importance.dtype)
    n = alpha.detach().to(importance.dtype).clamp(0, 1) * C
    rank = _ranks(torch.where(valid, importance, -torch.inf), descending=True)
    m = (n[:, None] - rank.to(importance.dtype)).clamp(0, 1)
    return m * valid


def marginal_channels(
    importance: torch.Tensor, valid: torch.Tensor, alpha: torch.Tensor, fraction: float
) -> torch.Tensor:
    """[K, C_max] weights that average over the channels each group would lose next: the
    ⌈``fraction`` C_k⌉ (at least one) least important of those the top-n mask of ``alpha``
    still keeps. Rows sum to 1."""
    C = valid.sum(1).to(importance.dtype)
    kept = topn_masks(importance, valid, alpha).ceil()
    q = (fraction * C).ceil().clamp_min(1)
    # rank 0: the least important channel still kept
    rank = _ranks(torch.where(kept > 0, importance, torch.inf), descending=False)
    w = ((rank.to(importance.dtype) < q[:, None]) & (kept > 0)).to(importance.dtype)
    return w / w.sum(1, keepdim=True).clamp_min(1)


def hardness(p: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Σ p(1 − p) / C per group: 0 for hard (0/1) masks, up to 0.25 for p = 1/2."""
    return (p * (1 - p) * valid).sum(1) / valid.sum(1)


def beta2_at(
    epochs_since_start: float, init: float = 0.05, growth: float = 1.1, time_scale: float = 1.0
) -> float:
    """The β2 schedule: ``init`` · ``growth`` per epoch of allocation (epochs × ``time_scale``,
    which stretches a shortened schedule onto the paper's 300-epoch one)."""
    return init * growth ** (max(0.0, epochs_since_start) * time_scale)


# the masked modules whose outputs the training masks may multiply in place (exact types): the
# grouping's LAYERS and NORMS, spelled out because the gates do not import the grouping code
IN_PLACE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
# the norms whose training mask goes into their affine parameters instead: y·m = (γ·m)·x̂ + β·m,
# so a masked training step does no activation-sized work for its masks at all
AFFINE = (nn.BatchNorm2d, nn.BatchNorm1d)


class GateHooks:
    """Multiplies each group's masked modules' outputs by that group's current mask.

    ``set(masks)`` installs a [K, C_max] mask tensor (the same tensor for every producer of a
    group, so their gradients add up on it), or an [N, K, C_max] one with a mask per sample of
    the batch; ``clear()`` makes the hooks pass outputs through. A [K, C_max] mask that needs no
    gradient of its own (the masks the weights train under) scales a plain affine BatchNorm's
    γ and β for the duration of its forward instead of its output: the same values and the same
    weight gradients, without a pass over the activations.

    ``gather(mask)``: the training step trains under ``mask`` as ``set`` would, but through a
    per-sample copy made at its forward (whose batch size is known only then), so that the
    step's own backward leaves the per-sample mask gradients in ``gathered()``: the
    ``fisher_step`` estimator's signal, read at no extra forward or backward pass.
    """

    def __init__(self, groups: Groups) -> None:
        self.masks: torch.Tensor | None = None
        self.centre = False
        # called once, at the next forward, to set masks that can only be computed then (after
        # a resume, once the weights they are read from are loaded)
        self.on_demand = None
        self.gather_from: torch.Tensor | None = None  # see ``gather``
        self.handles = []
        # a module's channels may be split among several groups: one pair of hooks per module,
        # with the product of its groups' masks
        parts: dict[str, list] = {}
        for k, g in enumerate(groups.prunable):
            for name in g.masked:
                at = g.at(name)
                where = None if at is None else torch.tensor(at)
                parts.setdefault(name, []).append(self._mask_fn(k, g.channels, where))
        for name, fns in parts.items():
            module = groups.module(name)
            mask = self._product(fns)
            # a linear layer's channels are its last dimension ([N, ..., C]: channels-last
            # blocks such as ConvNeXt's), everything else's the second ([N, C, H, W])
            last = isinstance(module, nn.Linear)
            # in place only on the plain layer kinds, which keep no output for their own
            # backward; a subclass may (timm's BatchNormAct2d ends in its activation)
            in_place = type(module) in IN_PLACE
            affine = type(module) in AFFINE and module.affine
            if affine:
                scale, restore = self._scale(mask)
                self.handles.append(module.register_forward_pre_hook(scale))
                # always_call: the module's own γ and β are put back even if the forward fails
                self.handles.append(module.register_forward_hook(restore, always_call=True))
            hook = self._hook(mask, last, in_place, affine)
            self.handles.append(module.register_forward_hook(hook))

    def _current(self, n: int) -> torch.Tensor | None:
        """The masks for a forward on a batch of ``n``."""
        if self.masks is None and self.on_demand is not None:
            fill, self.on_demand = self.on_demand, None
            fill()
        base = self.gather_from
        if base is None:
            return self.masks
        if not torch.is_grad_enabled():  # an evaluation between steps: nothing to gather
            return base
        m = self.masks
        if m is None or m.dim() != 3 or m.shape[0] != n:
            self.masks = base.expand(n, *base.shape).clone().requires_grad_(True)
        return self.masks

    def _by_affine(self, m: torch.Tensor | None) -> bool:
        """Whether masks ``m`` go into the norms' affine parameters: not while
        ``torch.compile`` traces the step, which fuses an output product into the kernels anyway
        and should not see parameters swapped under it."""
        if m is None or m.dim() != 2 or m.requires_grad or self.centre:
            return False
        return not torch.compiler.is_compiling()

    @staticmethod
    def _mask_fn(k: int, channels: int, where: torch.Tensor | None):
        """The [N or 1, width] mask of group k on a module output of ``width`` channels."""

        def mask(masks: torch.Tensor, width: int, like: torch.Tensor) -> torch.Tensor:
            if masks.dim() == 3:  # [N, K, C_max]: one mask per sample (per-sample gradients)
                m = masks[:, k, :channels].to(like.device, like.dtype)
            else:
                m = masks[k, :channels].to(like.device, like.dtype).unsqueeze(0)
            if where is not None:  # the group is a part of this module's channels
                full = torch.ones(m.shape[0], width, device=like.device, dtype=like.dtype)
                m = full.index_copy(1, where.to(like.device), m)
            return m

        return mask

    @staticmethod
    def _product(fns):
        if len(fns) == 1:
            return fns[0]

        def mask(masks: torch.Tensor, width: int, like: torch.Tensor) -> torch.Tensor:
            m = fns[0](masks, width, like)
            for f in fns[1:]:
                m = m * f(masks, width, like)
            return m

        return mask

    def _scale(self, mask):
        """A norm's (pre-hook, forward hook) pair that scales its γ and β by the mask for one
        forward and then puts its own parameters back."""
        saved: list[torch.Tensor] = []  # the module's own γ and β while scaled ones stand in

        def scale(module, inp):
            masks = self._current(inp[0].shape[0])
            if not self._by_affine(masks):
                return
            w, b = module._parameters["weight"], module._parameters["bias"]
            m = mask(masks, w.shape[0], w)[0]
            # plain tensors in the parameters' places for this one forward: BN reads them as
            # its γ and β, and their gradients flow back to the parameters through the product
            module._parameters["weight"] = w * m
            module._parameters["bias"] = b * m
            saved[:] = [w, b]

        def restore(module, _inp, _out):
            if saved:
                module._parameters["weight"], module._parameters["bias"] = saved
                saved.clear()

        return scale, restore

    def _hook(self, mask, last: bool, in_place: bool, affine: bool):
        def hook(_m, _inp, out):
            masks = self._current(out.shape[0])
            if masks is None:
                return None
            if affine and self._by_affine(masks):  # applied through γ and β already
                return None
            m = mask(masks, out.shape[-1] if last else out.shape[1], out)
            n, c = m.shape
            ones = (1,) * (out.dim() - 2)
            shape = (n, *ones, c) if last else (n, c, *ones)
            if self.centre:
                # a removed channel is replaced by its batch mean, not by 0: the constant part
                # is what re-estimated BN statistics downstream absorb after a real removal
                dims = [d for d in range(out.dim()) if d != (out.dim() - 1 if last else 1)]
                mu = out.detach().mean(dims, keepdim=True)
                return mu + (out - mu) * m.view(shape)
            if masks.requires_grad or not in_place:  # a mask's gradient reads the
                return out * m.view(shape)  # unmasked output
            # in place: no second activation-sized tensor per masked module (on the CPU that
            # allocation was most of a masked step's extra time)
            return out.mul_(m.view(shape))

        return hook

    def set(self, masks: torch.Tensor | None, centre: bool = False) -> None:
        """``centre``: a mask of 0 replaces a channel by its mean over the batch (and positions)
        instead of 0."""
        self.masks, self.centre, self.gather_from = masks, centre, None

    def gather(self, masks: torch.Tensor) -> None:
        """Train the next step under the [K, C_max] ``masks`` and keep its per-sample mask
        gradients (``gathered``)."""
        self.masks, self.centre, self.gather_from = None, False, masks

    def gathered(self) -> torch.Tensor | None:
        """The per-sample mask gradients [N, K, C_max] that the last backward through a
        ``gather`` step left (each sample's of the loss as the caller reduced it), or None."""
        m = self.masks
        if self.gather_from is None or m is None or m.dim() != 3:
            return None
        return m.grad

    def clear(self) -> None:
        self.masks, self.centre, self.gather_from = None, False, None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
