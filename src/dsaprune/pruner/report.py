"""What a finished pruning hands back: the pruned network and a report of plain values (costs
before and after, the budget check, each group's channels, the allocation's history)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .. import surgery
from ..cost import COSTS, make_cost


@dataclass
class PruneResult:
    model: nn.Module  # the physically pruned network (hard-masked if physical=False)
    report: dict

    def save(self, path: str | Path, model_name: str = "") -> None:
        surgery.save(
            self.model,
            path,
            model_name=model_name or self.report.get("model", ""),
            num_classes=self.report.get("num_classes"),
        )


def count_costs(model: nn.Module, in_shape: tuple[int, ...]) -> dict[str, int]:
    """Every countable cost of a concrete network (FLOPs, parameters), by budget kind."""
    out = {}
    for kind in COSTS:
        c = make_cost(kind)
        if c.counted:
            out[kind] = int(c.count(model, in_shape))
    return out
