"""The pruning flow: :class:`Pruner` (DSA or a baseline inside any training loop), its settings
and schedule (:class:`DSAConfig`), and what it returns (:class:`PruneResult`)."""

from .callback import PrunerCallback
from .config import (
    DSAConfig,
    alloc_interval,
    default_warmup_fraction,
    signal_interval,
    split_settings,
    window_bounds,
)
from .pruner import Pruner
from .report import PruneResult, count_costs

__all__ = [
    "DSAConfig",
    "PruneResult",
    "Pruner",
    "PrunerCallback",
    "alloc_interval",
    "count_costs",
    "default_warmup_fraction",
    "signal_interval",
    "split_settings",
    "window_bounds",
]
