"""What a finished pruning hands back: the pruned network and a report of plain values (costs
before and after, the budget check, each group's channels, the allocation's history), and the
part of :class:`~dsaprune.pruner.Pruner` that writes that report and the per-epoch log record."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import surgery
from ..cost import COSTS, make_cost
from ..cost.measured import report_latency


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


class Reporting:
    """The report and the per-epoch record of :class:`~dsaprune.pruner.Pruner`."""

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
