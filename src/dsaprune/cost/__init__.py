"""Cost models: what a network costs (FLOPs, parameters, latency), counted on a concrete network
(``count``), as quadratic forms in the groups' keep ratios (``quadratic``, ``latency``), checked
by timing the network on the device (``measured``), and the registry of budget kinds
(``kinds``)."""

from .count import count_flops, count_params
from .kinds import COSTS, Cost, FlopsCost, LatencyCost, ParamsCost, make_cost
from .latency import latency_model
from .quadratic import QuadraticCost, flops_model, params_model
from .timing import malloc_name, measure_latency, page_faults_per_call, steady_malloc

__all__ = [
    "COSTS",
    "Cost",
    "FlopsCost",
    "LatencyCost",
    "ParamsCost",
    "QuadraticCost",
    "malloc_name",
    "count_flops",
    "count_params",
    "flops_model",
    "latency_model",
    "make_cost",
    "measure_latency",
    "page_faults_per_call",
    "params_model",
    "steady_malloc",
]
