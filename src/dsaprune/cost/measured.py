"""Checks on the device itself, after the fitted latency model has spoken: a copy of the network
cut to the chosen counts is timed against the unpruned one until the measurement meets the budget
(``meet_by_measurement``), a cached latency table is compared with how fast the machine runs
the unpruned network now (``check_table``), and the page faults of a forward pass tell whether
the C allocator's own cost is in the timings (``page_faults``)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .latency import LatencyCache, measured_ratio, meet_by_measurement  # noqa: F401  (re-exported)
from .quadratic import QuadraticCost
from .timing import example_input, malloc_name, measure_latency, page_faults_per_call

FAULTS = 256  # minor page faults per forward (1 MiB of fresh pages) worth a warning
BUSY = 1.3  # a network timed this much slower than before means a busy machine (check_table)
RETRIES = 2  # further timings of a network found busy, each after a pause of this many seconds
PAUSE_S = 2.0


def time_against_table(
    cost: QuadraticCost,
    nets: list[nn.Module],
    input_shape,
    batch: int = 1,
    device="cpu",
    retries: int = RETRIES,
    pause_s: float = PAUSE_S,
) -> tuple[list[float], int]:
    """Times ``nets`` interleaved, the first being the unpruned network that ``cost``'s table
    describes. While that one runs more than ``BUSY``× slower than its table, the machine is
    busy for the moment: it pauses and times them again (at most ``retries`` times), keeping each
    network's fastest time, as one timing keeps its fastest round. At the end of the 8-epoch CPU
    table runs the unpruned ResNet-20 at batch 1 measured 5.7–7.5 ms in 6 of 8 runs and 2.3–2.6
    ms in the others, while a fresh process measured 2.7 ms and 30 training steps in one process
    did not slow it. Returns the times and how many timings were made."""
    times = measure_latency(nets, input_shape, batch, device)
    table = float(cost.fit.full_measured_s)
    timings = 1
    while timings <= retries and times[0] > BUSY * table:
        time.sleep(pause_s)
        again = measure_latency(nets, input_shape, batch, device)
        times = [min(a, b) for a, b in zip(times, again, strict=True)]
        timings += 1
    return times, timings


def check_table(cost: QuadraticCost, measured_full_s: float, allocated: bool = True) -> dict:
    """Compare the unpruned network's time measured now with the time its cached table holds.

    Timing keeps the fastest round, so of two measurements the faster is the better estimate of
    the machine at rest. A table more than ``BUSY``× slower than now was measured while the
    machine was busy: its entries for this network are forgotten, so the next run measures them
    again (before this check, such a table stayed in the cache for good and every later report
    carried its error; one made beside a training run predicted 4× the quiet time). A
    measurement now more than ``BUSY``× slower than the table means the machine is busy now, and
    this run's measured ratios are less reliable than usual. ``allocated``: the run allocated
    under this table (a latency budget), not only reported with it; only then is either case
    warned about (a FLOPs or parameter run's report records the status, and the table is
    forgotten all the same). Returns what the report records.
    """
    table = float(cost.fit.full_measured_s)
    now_over_table = measured_full_s / table
    status = "ok"
    if now_over_table < 1 / BUSY:
        status = "table measured while busy; forgotten"
        where = cost.fit.cache
        root = None if where["root"] is None else Path(where["root"])
        cache = LatencyCache(where["device"], root)
        cache.networks.pop(where["network"], None)
        for key in where["layers"]:
            cache.layers.pop(key, None)
        cache.dirty = True
        cache.save()
        if allocated:  # a report-only table (FLOPs or parameter budget): its status says it
            warnings.warn(
                f"the unpruned network ran in {1e3 * measured_full_s:.3f} ms now, but its "
                f"latency table (fitted earlier) holds {1e3 * table:.3f} ms: the table was "
                f"measured while the machine was busy. Its entries in {cache.path} are "
                "forgotten, so the next run measures them again; this run's latency allocation "
                "rests on the busy table",
                stacklevel=2,
            )
    elif now_over_table > BUSY:
        status = "busy now"
        if allocated:
            warnings.warn(
                f"the unpruned network ran in {1e3 * measured_full_s:.3f} ms now, "
                f"{now_over_table:.2f}× the {1e3 * table:.3f} ms its latency table holds: the "
                "machine is busy, so the measured latencies in this report are less reliable "
                "than usual",
                stacklevel=2,
            )
    return {"table_ms": 1e3 * table, "now_over_table": now_over_table, "table_status": status}


def faults_per_forward(
    nets: list[nn.Module], input_shape, batch: int = 1, device="cpu"
) -> list[float | None]:
    """Each network's minor page faults per forward pass in eval mode (None off the CPU, or
    where the platform does not count them); the networks' modes are restored."""
    if torch.device(device).type != "cpu":
        return [None] * len(nets)
    x = example_input(input_shape, batch, device)
    modes = [m.training for m in nets]
    try:
        return [page_faults_per_call(lambda m=m: m.eval()(x)) for m in nets]
    finally:
        for m, was in zip(nets, modes, strict=True):
            m.train(was)


def faulting(allocator_name: str, faults: float | None) -> bool:
    """Whether a forward pass's page faults are worth a warning: the system allocator handing
    at least ``FAULTS`` pages back after every call."""
    return allocator_name == "system" and faults is not None and faults >= FAULTS


def page_faults(nets: list[nn.Module], input_shape, batch: int = 1, device="cpu") -> dict:
    """The allocator setting and each network's minor page faults per forward pass (the first
    network's before pruning, the second's after). On the CPU with the system allocator, a
    forward pass faulting in fresh memory pays for it in time that changes from run to run
    (``timing``'s docstring): that is warned about, with the remedy."""
    faults = faults_per_forward(nets, input_shape, batch, device)
    name = malloc_name()
    if faulting(name, faults[0]):
        warnings.warn(
            f"each forward pass of the unpruned network at batch {batch} faults in "
            f"{faults[0]:.0f} fresh memory pages: the C allocator hands large blocks back to the "
            "system after every call, which costs time that varies from run to run (up to half "
            "of a batch-64 forward here). For steadier and faster latency, prune with "
            "--steady-malloc (or `dsaprune.steady_malloc()`) and deploy the same way, "
            "e.g. MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824, or jemalloc/tcmalloc",
            stacklevel=2,
        )
    return {
        "malloc": name,
        "page_faults_before": faults[0],
        "page_faults_after": faults[1] if len(faults) > 1 else None,
    }


def latency_report(
    cost: QuadraticCost,
    before: nn.Module,
    after: nn.Module,
    alpha,
    in_shape,
    allocated: bool = True,
) -> dict:
    """Predicted and measured latency of the network before and after pruning, timed
    interleaved in this process (again, after a pause, when the machine is busy), on the device
    and at the batch ``cost`` (a latency cost) was fitted for. ``allocated``: the run allocated
    under this cost (a latency budget), not only reported with it."""
    fit = cost.fit
    batch, device = fit.batch, torch.device(fit.device)
    (t_before, t_after), timings = time_against_table(
        cost, [before, after], in_shape, batch, device
    )
    # at the channels the kernels compute: a FLOPs budget keeps partial blocks
    p_after = float(cost(cost.computed(torch.tensor(alpha, dtype=torch.float64))))
    return {
        "device": str(device),
        "batch": batch,
        "predicted_before_ms": 1e3 * cost.full,
        "predicted_after_ms": 1e3 * p_after,
        "predicted_ratio": p_after / cost.full,
        "measured_before_ms": 1e3 * t_before,
        "measured_after_ms": 1e3 * t_after,
        "measured_ratio": t_after / t_before,
        "measured_speedup": t_before / t_after,
        "prediction_error": p_after / t_after - 1.0,
        "channel_block": cost.block,  # a latency budget keeps whole blocks
        # except below the first block in these groups, measured to get faster there
        "sub_block_groups": fit.sub_block,
        "timings": timings,  # more than 1: the machine was busy at the first
        **page_faults([before, after], in_shape, batch, device),  # the allocator's share
        **check_table(cost, t_before, allocated),  # a table measured while busy is forgotten
    }


def warn_if_over(latency: dict, budget) -> None:
    """Warn when the measured latency ratio of a latency-budget run exceeds its budget by more
    than 0.05 (the fitted model met it)."""
    if latency["measured_ratio"] > budget.fraction + 0.05:
        warnings.warn(
            f"the pruned network meets {budget} on the fitted latency model (ratio "
            f"{latency['predicted_ratio']:.3f}) but measured {latency['measured_ratio']:.3f} "
            f"here; the model's error on this network is {100 * latency['prediction_error']:+.1f}%"
            " (a busy machine, or a device unlike the one the tables were measured on)",
            stacklevel=3,
        )


def report_latency(
    latency_cost: QuadraticCost,
    before: nn.Module,
    after: nn.Module,
    alpha,
    in_shape,
    budget_cost: QuadraticCost,
    budget,
) -> dict:
    """:func:`latency_report` of a finished pruning whose budget was on ``budget_cost``; where
    that cost is measured (a latency budget), a warning when the device disagrees with it."""
    report = latency_report(
        latency_cost, before, after, alpha, in_shape, allocated=budget_cost.measured
    )
    if budget_cost.measured:
        warn_if_over(report, budget)
    return report
