"""Learning-rate factor as a pure function of the step, so resuming needs no scheduler state."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, kind: str, milestones, gamma: float) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total`` (linear warm-up first)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "cosine":
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    frac = step / max(1, total)
    return gamma ** sum(frac >= m for m in milestones)
