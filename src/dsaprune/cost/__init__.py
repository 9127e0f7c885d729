"""Cost models: what a network costs (FLOPs, parameters), counted on a concrete network
(``count``) or as quadratic forms in the groups' keep ratios (``quadratic``)."""

from .count import count_flops, count_params
from .quadratic import QuadraticCost, flops_model, params_model

__all__ = ["QuadraticCost", "count_flops", "count_params", "flops_model", "params_model"]
