"""Cost models: what a network costs (FLOPs, parameters) and, later, as functions of keep ratios."""

from .count import count_flops, count_params

__all__ = ["count_flops", "count_params"]
