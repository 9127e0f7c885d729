"""Per-channel importance of each group (BN scales or filter norms), which decides which channels
a group keeps."""

from __future__ import annotations

import torch

from .groups import ChannelGroup, Groups


def channel_importance(groups: Groups, source: str = "bn_first") -> list[torch.Tensor]:
    """Per prunable group, the detached importance of each channel: ``bn_first`` |γ| of the BN
    after the group's first convolution, ``bn_sum`` Σ|γ| over the group's BNs, ``l1`` the
    L1 norm of the first producer's filters. Groups without BN always use ``l1``."""
    out = []
    for g in groups.prunable:
        with torch.no_grad():
            if source == "bn_sum" and g.norms:
                imp = sum(bn_scales(groups, g, n).abs() for n in g.norms)
            elif source in ("bn_first", "bn_sum") and g.norms:
                imp = bn_scales(groups, g, g.importance_from).abs()
            elif source in ("bn_first", "bn_sum", "l1"):
                w = groups.module(g.producers[0]).weight
                imp = w.abs().flatten(1).sum(1)
            else:
                raise ValueError(
                    f"importance source must be bn_first, bn_sum or l1, got {source!r}"
                )
        out.append(imp.detach().float())
    return out


def bn_scales(groups: Groups, g: ChannelGroup, norm: str) -> torch.Tensor:
    """The BN scales of group ``g``'s channels in BN ``norm``, in the group's channel order."""
    w = groups.module(norm).weight
    at = g.at(norm)
    return w if at is None else w[torch.tensor(at, device=w.device)]
