"""dsaprune: budgeted channel pruning of convolutional networks with Differentiable Sparsity
Allocation (DSA, ECCV 2020).

Public API: ``prune`` (the whole pipeline in one call), ``Pruner`` (DSA inside your own
training loop), ``save`` / ``load`` (pruned-model files), ``export_onnx`` (ONNX for deployment),
``models`` (the zoo), ``data`` (data sets and loaders), ``train`` (the trainer), ``cost``
(counting and cost models), and the lower-level pieces: ``find_groups``, ``flops_model`` /
``params_model``, ``GateHooks`` / ``keep_probabilities`` / ``sample_masks``, ``Allocator``,
``round_channels``, ``prune_groups``.
"""

__version__ = "0.1.0"

from . import cost, data, models, train  # noqa: E402
from .allocation import Allocator, AllocatorConfig, round_channels, shift_to_budget  # noqa: E402
from .api import prune  # noqa: E402
from .budget import Budget, BudgetError, parse_budget  # noqa: E402
from .cost import (  # noqa: E402
    COSTS,
    count_flops,
    count_params,
    flops_model,
    latency_model,
    make_cost,
    measure_latency,
    params_model,
    steady_malloc,
)
from .data import load_splits, make_loader  # noqa: E402
from .export import export_onnx  # noqa: E402
from .gates import GateHooks, keep_probabilities, sample_masks  # noqa: E402
from .grouping import TraceError, channel_importance, find_groups  # noqa: E402
from .pruner import DSAConfig, Pruner, PruneResult  # noqa: E402
from .surgery import load, prune_groups, save  # noqa: E402
from .train import TrainConfig, Trainer, evaluate  # noqa: E402

__all__ = [
    "Allocator",
    "AllocatorConfig",
    "Budget",
    "BudgetError",
    "DSAConfig",
    "GateHooks",
    "PruneResult",
    "Pruner",
    "TraceError",
    "channel_importance",
    "find_groups",
    "flops_model",
    "latency_model",
    "make_cost",
    "measure_latency",
    "COSTS",
    "keep_probabilities",
    "load",
    "params_model",
    "parse_budget",
    "prune",
    "prune_groups",
    "round_channels",
    "sample_masks",
    "save",
    "shift_to_budget",
    "steady_malloc",
    "Trainer",
    "TrainConfig",
    "__version__",
    "cost",
    "count_flops",
    "count_params",
    "data",
    "evaluate",
    "export_onnx",
    "load_splits",
    "make_loader",
    "models",
    "train",
]
