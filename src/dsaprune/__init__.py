"""dsaprune: budgeted channel pruning of convolutional networks with Differentiable Sparsity
Allocation (DSA, ECCV 2020).

Public API: ``dsaprune.models`` (the zoo), ``dsaprune.data`` (data sets and loaders),
``dsaprune.train`` (the trainer) and ``dsaprune.cost`` (FLOPs / parameter counting).
"""

__version__ = "0.1.0"

from . import cost, data, models, train  # noqa: E402
from .cost import count_flops, count_params  # noqa: E402
from .data import load_splits, make_loader  # noqa: E402
from .train import TrainConfig, Trainer, evaluate  # noqa: E402

__all__ = [
    "Trainer",
    "TrainConfig",
    "__version__",
    "cost",
    "count_flops",
    "count_params",
    "data",
    "evaluate",
    "load_splits",
    "make_loader",
    "models",
    "train",
]
