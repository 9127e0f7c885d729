"""Budgets: ``"flops=0.5"``, ``"params=0.3"`` or ``"latency=0.5"``, a fraction of the unpruned
network's cost; the kinds are those registered in ``dsaprune.cost.COSTS``."""

from __future__ import annotations

from dataclasses import dataclass

from .cost import COSTS


class BudgetError(ValueError):
    """A budget that cannot be parsed or met; the message states the feasible range."""


@dataclass(frozen=True)
class Budget:
    kind: str
    fraction: float

    def __str__(self) -> str:
        return f"{self.kind}={self.fraction:g}"


def parse_budget(spec: str | Budget) -> Budget:
    if isinstance(spec, Budget):
        return spec
    kind, sep, value = str(spec).partition("=")
    kind = kind.strip().lower()
    if not sep:
        raise BudgetError(f"budget {spec!r} is not KIND=FRACTION, e.g. flops=0.5")
    if kind not in COSTS:
        raise BudgetError(f"unknown budget kind {kind!r}; known kinds: {', '.join(COSTS)}")
    try:
        frac = float(value.strip().rstrip("%")) / (100.0 if value.strip().endswith("%") else 1.0)
    except ValueError:
        raise BudgetError(f"budget value {value!r} is not a number") from None
    if not 0.0 < frac <= 1.0:
        raise BudgetError(
            f"budget {kind}={frac:g} is out of range: give a fraction of the full network's "
            f"{kind} in (0, 1], e.g. {kind}=0.5"
        )
    return Budget(kind, frac)
