"""Budget kinds: one :class:`Cost` per kind of resource, registered by the name a budget uses
(``flops=0.5``, ``params=0.3``, ``latency=0.5``). A new kind is one class plus one line in
``COSTS``; the budget parser, ``prune``, the reports and ``inspect`` read the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from ..grouping import Groups
from ..registry import create
from .count import count_flops, count_params
from .quadratic import QuadraticCost, flops_model, params_model


class Cost(ABC):
    """One resource a budget can limit."""

    kind: str = ""
    label: str = ""  # how reports name it
    counted: bool = True  # the value of a concrete network is an exact count, not a measurement

    def __init__(self, **options) -> None:
        """Options a kind does not use (the latency device and batch) are ignored."""
        self.options = options

    @abstractmethod
    def model(self, groups: Groups, progress: bool = False) -> QuadraticCost:
        """The cost as a quadratic form in the prunable groups' keep ratios."""

    def describe(self, form: QuadraticCost) -> str:
        """The unpruned network's cost in words, for ``dsaprune inspect``."""
        return f"{form.full:g} {self.label}"

    def count(self, model: nn.Module, input_shape: Sequence[int]) -> float | None:
        """The exact cost of a concrete network, where it can be counted (None: it is measured,
        and the budget is guaranteed on the fitted model)."""
        return None


class FlopsCost(Cost):
    kind, label = "flops", "FLOPs (2 per multiply-add)"

    def model(self, groups: Groups, progress: bool = False) -> QuadraticCost:
        return flops_model(groups)

    def describe(self, form: QuadraticCost) -> str:
        return f"{form.full / 1e6:.2f}M {self.label}"

    def count(self, model: nn.Module, input_shape: Sequence[int]) -> float:
        return float(count_flops(model, tuple(input_shape)))


class ParamsCost(Cost):
    kind, label = "params", "parameters"

    def model(self, groups: Groups, progress: bool = False) -> QuadraticCost:
        return params_model(groups)

    def describe(self, form: QuadraticCost) -> str:
        return f"{form.full / 1e6:.3f}M {self.label}"

    def count(self, model: nn.Module, input_shape: Sequence[int]) -> float:
        return float(count_params(model))


class LatencyCost(Cost):
    """Forward time on ``device`` at ``batch``, from per-layer fits (``cost.latency``)."""

    kind, label, counted = "latency", "latency", False

    def __init__(self, device: torch.device | str = "cpu", batch: int = 1, **options) -> None:
        super().__init__(**options)
        if int(batch) < 1:
            raise ValueError(f"latency batch must be a positive integer, got {batch}")
        self.device, self.batch = torch.device(device), int(batch)

    def model(self, groups: Groups, progress: bool = False) -> QuadraticCost:
        from .latency import latency_model

        return latency_model(groups, self.batch, self.device, progress=progress)

    def describe(self, form: QuadraticCost) -> str:
        from .timing import malloc_name

        text = (
            f"latency on {self.device} at batch {self.batch}: {1e3 * form.full:.3f} ms "
            f"predicted, {1e3 * form.fit.full_measured_s:.3f} ms measured ({malloc_name()} "
            "allocator)"
        )
        if form.block > 1:
            text += f"; groups wider than {form.block} channels keep whole blocks of {form.block}"
            if any(form.sub_block):
                n = sum(form.sub_block)
                text += f" ({n} of them measured faster below one block may keep less)"
        return text


COSTS: dict[str, type[Cost]] = {
    "flops": FlopsCost,
    "params": ParamsCost,
    "latency": LatencyCost,
}


def make_cost(kind: str, **options) -> Cost:
    """The registered cost of budget kind ``kind``; ``options`` go to kinds that take them
    (latency: ``device``, ``batch``)."""
    return create(COSTS, kind, "budget kind", **options)
