"""The latency cost model: fits, the quadratic form, the cache, and latency budgets end to end.

Most tests replace the clock with a synthetic one: every convolution / linear call "takes" a time
bilinear in its channel counts (what the per-layer model assumes), and a whole network takes the
sum over its layers. The machinery must then reproduce that time exactly, which a real, noisy
clock could never show."""

from __future__ import annotations

import copy
import json
import sys
import warnings

import pytest
import torch
from torch import nn

import dsaprune
from dsaprune import models
from dsaprune.allocation import round_channels, shift_to_budget
from dsaprune.budget import BudgetError
from dsaprune.cost import flops_model, measured
from dsaprune.cost import latency as lat
from dsaprune.cost.latency import (
    UNIFORM,
    LatencyCache,
    fit_layer,
    latency_model,
    layer_time,
    measured_ratio,
    nnls,
)
from dsaprune.cost.measured import check_table
from dsaprune.cost.timing import device_key, measure_latency
from dsaprune.grouping import find_groups
from dsaprune.reports import _table_note as markdown_note
from dsaprune.reports import write_report
from dsaprune.surgery import prune_groups

CONST = 1e-5  # synthetic per-call overhead of each layer (seconds)


def _synthetic_seconds(
    m: nn.Module, x: torch.Tensor, out: torch.Tensor, block: int = 1, out_floor: bool = False
) -> float:
    def pad(c: int) -> int:  # above one block, a partial block of channels costs a whole one
        return c if c <= block else -(-c // block) * block

    def pad_out(c: int) -> int:  # with out_floor, below one block too (as at batch 64)
        return -(-c // block) * block if out_floor else pad(c)

    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        c_in, c_out = pad(m.in_channels), pad_out(m.out_channels)
        flops = c_in * (c_out // m.groups) * k * out[0, 0].numel()
        io = c_in * x[0, 0].numel() + c_out * out[0, 0].numel()
    else:
        rows = out.numel() // out.shape[-1]
        c_in, c_out = pad(m.in_features), pad_out(m.out_features)
        flops, io = c_in * c_out * rows, c_in + c_out
    return 1e-9 * flops * x.shape[0] + 1e-8 * io * x.shape[0] + CONST


class SyntheticClock:
    """Stands in for ``time_calls``: runs each function once and sums its layers' times
    (stepped at multiples of ``block`` channels, as a CPU's vector kernels are; with
    ``out_floor`` an output side below one block costs a whole one too)."""

    def __init__(self, block: int = 1, per_element: float = 0.0, out_floor: bool = False) -> None:
        self.calls = 0
        self.block = block
        self.out_floor = out_floor
        self.per_element = per_element  # seconds per BN output element (element-wise work)

    def __call__(self, fns, device="cpu", **_kw) -> list[float]:
        out = []
        for fn in fns:
            self.calls += 1
            total = [0.0]

            def hook(m, inp, o, total=total):
                if isinstance(m, nn.Conv2d | nn.Linear):
                    total[0] += _synthetic_seconds(m, inp[0], o, self.block, self.out_floor)
                elif isinstance(m, nn.BatchNorm2d):
                    total[0] += self.per_element * o.numel()

            h = nn.modules.module.register_module_forward_hook(hook)
            try:
                with torch.no_grad():
                    fn()
            finally:
                h.remove()
            out.append(total[0])
        return out


@pytest.fixture
def clock(monkeypatch, tmp_path):
    monkeypatch.setenv("DSAPRUNE_CACHE", str(tmp_path / "cache"))  # tables of this clock only
    c = SyntheticClock()
    monkeypatch.setattr(lat, "time_calls", c)
    monkeypatch.setattr("dsaprune.cost.timing.time_calls", c)
    # this clock's time is smooth in the channel count; the stepped one is tested on its own
    monkeypatch.setattr(lat, "channel_block", lambda device: 1)
    return c


def _synthetic_network_seconds(
    model: nn.Module, shape, batch: int, block: int = 1, out_floor: bool = False
) -> float:
    clock = SyntheticClock(block, out_floor=out_floor)
    return clock([lambda: model(torch.zeros(batch, *shape))])[0]


def test_nnls_recovers_nonnegative_coefficients_and_clips_negative_ones():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(20, 4, generator=g, dtype=torch.float64)
    true = torch.tensor([2.0, 0.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(nnls(X, X @ true), true, atol=1e-9)
    sol = nnls(X, X @ torch.tensor([1.0, -3.0, 0.0, 0.0], dtype=torch.float64))
    assert bool((sol >= 0).all())


def test_fit_layer_reproduces_bilinear_measurements():
    pts = [[x, y, 3 * x * y + 0.5 * x + 0.25 * y + 0.1] for x in (0.25, 0.5, 1) for y in (0.5, 1)]
    coef = fit_layer(pts)
    for x, y, t in pts:
        assert layer_time(coef, x, y) == pytest.approx(t, rel=1e-9)
    dw = fit_layer([[y, y, 2 * y + 0.3] for y in (0.25, 0.5, 1.0)], depthwise=True)
    assert dw[:2] == [0.0, 0.0] and layer_time(dw, 0.5, 0.5) == pytest.approx(1.3)


@pytest.mark.parametrize(("name", "batch"), [("resnet20", 1), ("mobilenetv2_cifar", 4)])
def test_quadratic_form_equals_the_pruned_network_at_whole_channels(clock, name, batch):
    torch.manual_seed(0)
    net = models.create(name).eval()
    G = find_groups(net, torch.zeros(1, 3, 32, 32))
    cost = latency_model(G, batch=batch)
    assert cost.full == pytest.approx(_synthetic_network_seconds(net, (3, 32, 32), batch))
    assert max(abs(e) for e in cost.fit.calibration_fit_error) < 1e-9
    for fit in cost.fit.layers.values():  # each layer's fit reproduces its measurements
        for x, y, t in fit["points"]:
            assert layer_time(fit["coef"], x, y) == pytest.approx(t, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        pruned, alpha = _random_prune(net, g)
        true = _synthetic_network_seconds(pruned, (3, 32, 32), batch)
        assert float(cost(alpha)) == pytest.approx(true, rel=1e-9)


def _random_prune(net: nn.Module, g: torch.Generator) -> tuple[nn.Module, torch.Tensor]:
    """A physical copy of a CIFAR network with a random channel count per group, and its keep
    ratios."""
    pruned = copy.deepcopy(net)
    P = find_groups(pruned, torch.zeros(1, 3, 32, 32))
    counts = [int(torch.randint(1, grp.channels + 1, (1,), generator=g)) for grp in P.prunable]
    prune_groups(P, [torch.arange(n) for n in counts])
    alpha = [n / grp.channels for n, grp in zip(counts, P.prunable, strict=True)]
    return pruned, torch.tensor(alpha, dtype=torch.float64)


def test_elementwise_work_is_calibrated_apart_from_the_layers(clock):
    """A network that also spends time on every BN output element: the layers alone do not
    describe it, and uniform copies alone cannot tell that time from the layers'; with the
    element-wise term, fitted on uniform and mixed copies, the form is exact again."""
    clock.per_element = 3e-9
    torch.manual_seed(0)
    net = models.create("resnet20").eval()
    G = find_groups(net, torch.zeros(1, 3, 32, 32))
    cost = latency_model(G, batch=2)
    kappa, c0, lam = cost.fit.calibration["coef"]
    assert kappa == pytest.approx(1.0, rel=1e-6) and lam == pytest.approx(3e-9, rel=1e-6)
    assert max(abs(e) for e in cost.fit.calibration_fit_error) < 1e-6
    assert len(cost.fit.calibration["points"]) == len(UNIFORM) + lat.MIXED
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        pruned, alpha = _random_prune(net, g)
        true = clock([lambda m=pruned: m(torch.zeros(2, 3, 32, 32))])[0]
        assert float(cost(alpha)) == pytest.approx(true, rel=1e-6)


def test_computed_keep_ratios_pad_partial_blocks():
    """A network rounded by another cost keeps partial blocks; its latency is predicted at the
    whole blocks the kernels compute, in a group wider than one block the first too."""
    from dsaprune.cost.quadratic import QuadraticCost

    chans = torch.tensor([64.0, 10.0, 40.0], dtype=torch.float64)
    cost = QuadraticCost(torch.zeros(3, 3), torch.ones(3), 0.0, "latency", 1 / chans, block=16)
    alpha = torch.tensor([33 / 64, 5 / 10, 39 / 40], dtype=torch.float64)
    assert cost.computed(alpha).tolist() == pytest.approx([48 / 64, 5 / 10, 1.0])
    assert cost.computed(torch.tensor([16 / 64, 1.0, 32 / 40])).tolist() == pytest.approx(
        [16 / 64, 1.0, 32 / 40]
    )
    assert cost.computed(torch.tensor([4 / 64, 3 / 10, 8 / 40])).tolist() == pytest.approx(
        [16 / 64, 3 / 10, 16 / 40]
    )
    flat = QuadraticCost(torch.zeros(3, 3), torch.ones(3), 0.0, "flops", 1 / chans)
    assert flat.computed(alpha).tolist() == pytest.approx(alpha.tolist())


def test_cache_round_trips_and_a_second_run_measures_nothing(clock, tiny_net):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    first = latency_model(G, batch=2)
    assert clock.calls > 0
    clock.calls = 0
    second = latency_model(G, batch=2)
    assert clock.calls == 0
    assert torch.equal(first.Q, second.Q) and torch.equal(first.b, second.b)
    assert first.c == second.c
    other_batch = latency_model(G, batch=3)  # another key: measured again
    assert clock.calls > 0 and other_batch.full > first.full


def test_corrupt_cache_is_refused_and_measured_again(clock, tiny_net):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    good = latency_model(G)
    path = LatencyCache(device_key("cpu")).path
    for damage in ("{not json", json.dumps({"format": lat.FORMAT, "device": "x"}), "[]"):
        path.write_text(damage)
        clock.calls = 0
        with pytest.warns(UserWarning, match="damaged"):
            again = latency_model(G)
        assert clock.calls > 0 and again.full == pytest.approx(good.full)
        assert json.loads(path.read_text())["layers"]  # replaced by a valid table
    d = json.loads(path.read_text())
    d["layers"][next(iter(d["layers"]))]["coef"][0] = float("nan")
    path.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="damaged"):
        latency_model(G)
    d = json.loads(path.read_text())
    d["layers"][next(iter(d["layers"]))]["probes"] = [[0.5, 1.0, "fast", "in"]]
    path.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="damaged"):
        latency_model(G)


def test_a_layer_table_far_from_the_network_is_measured_again(clock, tiny_net):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    good = latency_model(G, batch=2)
    path = LatencyCache(device_key("cpu")).path
    d = json.loads(path.read_text())
    for fit in d["layers"].values():  # as if measured while the machine was busy
        fit["coef"] = [3 * v for v in fit["coef"]]
    d["networks"] = {}
    path.write_text(json.dumps(d))
    clock.calls = 0
    again = latency_model(G, batch=2)
    assert clock.calls > len(UNIFORM)  # the layers, not only the whole network, were timed
    assert again.fit.calibration["coef"][0] == pytest.approx(1.0)
    assert again.full == pytest.approx(good.full)


def test_a_table_slower_than_the_machine_now_is_forgotten_and_measured_again(clock, tiny_net):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    cost = latency_model(G, batch=2)
    table = cost.fit.full_measured_s
    path = LatencyCache(device_key("cpu")).path
    kept = json.loads(path.read_text())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same time as the table: nothing to say
        assert check_table(cost, table * 1.1)["table_status"] == "ok"
    with pytest.warns(UserWarning, match="machine is busy"):
        busy = check_table(cost, table * 2)  # busy now: the table is the better estimate
    assert busy["table_status"] == "busy now" and busy["now_over_table"] == pytest.approx(2)
    assert json.loads(path.read_text()) == kept

    with pytest.warns(UserWarning, match="measured while the machine was busy") as w:
        slow = check_table(cost, table / 3)  # as if the table was measured beside a training run
    assert "latency allocation rests on the busy table" in str(w[0].message)
    assert slow["table_status"].startswith("table measured while busy")
    d = json.loads(path.read_text())
    assert cost.fit.cache["network"] not in d["networks"]
    assert not set(cost.fit.cache["layers"]) & set(d["layers"])
    clock.calls = 0
    again = latency_model(G, batch=2)
    assert clock.calls > len(UNIFORM)  # the layers and the whole network were timed again
    assert again.full == pytest.approx(cost.full)
    # a run under another budget kind only reported with the table: no warning, its report
    # records the status (and the table is forgotten all the same)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = check_table(again, again.fit.full_measured_s / 3, allocated=False)
        assert quiet["table_status"].startswith("table measured while busy")
        assert (
            check_table(again, again.fit.full_measured_s * 2, allocated=False)["table_status"]
            == "busy now"
        )
    write_md = markdown_note(slow)
    assert "measured again next run" in write_md


def test_a_busy_moment_is_timed_again_keeping_each_networks_fastest(clock, tiny_net, monkeypatch):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    cost = latency_model(G, batch=2)
    table = cost.fit.full_measured_s
    seen = [[3 * table, 2.0], [1.1 * table, 3.0], [0.5 * table, 0.1]]  # busy, then quiet
    calls = []

    def fake(nets, *a, **k):
        calls.append(len(nets))
        return seen[len(calls) - 1]

    monkeypatch.setattr(measured, "measure_latency", fake)
    times, n = measured.time_against_table(cost, [net, net], (3, 16, 16), 2, pause_s=0)
    assert len(calls) == n == 2  # quiet on the second timing: no third
    assert times == [1.1 * table, 2.0]
    calls.clear()
    seen[:] = [[3 * table, 1.0]] * 3
    times, n = measured.time_against_table(cost, [net, net], (3, 16, 16), 2, pause_s=0)
    assert len(calls) == n == 1 + measured.RETRIES and times == [3 * table, 1.0]


def test_measuring_leaves_the_global_random_stream_alone(tiny_net):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 8, 8))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    latency_model(G)
    measure_latency(net, (3, 8, 8))
    measured_ratio(G, [max(1, g.channels // 2) for g in G.prunable])  # a pruned copy, timed
    assert torch.equal(torch.rand(3), expected)


def test_latency_budget_below_the_fixed_overhead_is_refused(clock, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CONST", 0.1)  # a large per-layer overhead
    net = models.create("resnet20")
    data = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(10)]
    floor = latency_model(find_groups(net, torch.zeros(1, 3, 32, 32))).floor()
    assert floor > 0.95
    with pytest.raises(BudgetError, match=r"smallest feasible budget is latency=0\.9[5-9]"):
        dsaprune.prune(net, data, budget="latency=0.5", progress=False, report_latency=False)


@pytest.mark.slow
def test_prune_to_a_latency_budget_reports_predicted_and_measured(tiny_net, tmp_path):
    torch.manual_seed(0)
    net = tiny_net()
    data = [(torch.randn(16, 3, 48, 48), torch.randint(0, 10, (16,))) for _ in range(10)]
    # what a tiny network can shed depends on this machine's fixed per-layer overhead: the
    # budget lies halfway between the smallest feasible one and the full network
    floor = latency_model(find_groups(net, data[0][0][:1]), batch=32).floor()
    frac = round((1 + floor) / 2, 3)
    kw = dict(epochs=1, progress=False, test_data=data[:2], latency_batch=32)
    res = dsaprune.prune(net, data, budget=f"latency={frac}", **kw)
    r = res.report
    assert r["budget_kind"] == "latency" and r["budget_ratio"] <= frac + 1e-9
    L = r["latency"]
    assert L["batch"] == 32 and L["predicted_ratio"] == pytest.approx(r["budget_ratio"])
    assert L["measured_before_ms"] > 0 and L["measured_after_ms"] > 0
    assert L["measured_speedup"] == pytest.approx(L["measured_before_ms"] / L["measured_after_ms"])
    assert L["now_over_table"] == pytest.approx(L["measured_before_ms"] / L["table_ms"])
    assert 1 <= L["timings"] <= 1 + measured.RETRIES
    assert L["malloc"] == "system" and L["page_faults_before"] >= 0
    assert res.model(torch.randn(2, 3, 48, 48)).shape == (2, 10)
    assert r["measured_budget"] and r["measured_budget"][0]["target"] == frac
    write_report(r, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "latency (cpu, batch 32), measured" in md and "Measured speed-up" in md
    assert "Timed with the system allocator" in md


def test_given_counts_under_a_latency_budget_are_timed_once_and_kept(clock, tiny_net, monkeypatch):
    torch.manual_seed(0)
    data = [(torch.randn(16, 3, 48, 48), torch.randint(0, 10, (16,))) for _ in range(4)]
    x = data[0][0][:1]
    floor = latency_model(find_groups(tiny_net(), x), batch=32).floor()
    budget = f"latency={round((1 + floor) / 2, 3)}"
    kw = dict(total_steps=10, latency_batch=32, train_data=data)
    counts = dsaprune.Pruner(tiny_net(), x, budget, method="uniform", **kw).finish()
    counts = counts.report["keep_counts"]
    frac = float(budget.split("=")[1])
    r = dsaprune.Pruner(tiny_net(), x, budget, method="given", keep_counts=counts, **kw)
    r = r.finish().report
    assert r["keep_counts"] == counts  # the timing does not tighten them
    [timed] = r["measured_budget"]
    assert timed["target"] == frac and 0 < timed["measured_ratio"] <= frac
    # over the budget on the device: a warning naming the measurement; the counts stay
    monkeypatch.setattr(lat, "measured_ratio", lambda *a, **k: frac + 0.1)
    with pytest.warns(UserWarning, match=rf"measured {frac + 0.1:.3f} .*kept as given"):
        r = dsaprune.Pruner(tiny_net(), x, budget, method="given", keep_counts=counts, **kw)
        r = r.finish().report
    assert r["keep_counts"] == counts
    assert r["measured_budget"] == [{"target": frac, "measured_ratio": frac + 0.1}]


STEADY_PROBE = """
import sys, torch
from dsaprune.cost.timing import malloc_name, page_faults_per_call, steady_malloc
big = lambda: torch.ones(16 << 20)  # 64 MiB: above glibc's largest mmap threshold
before = page_faults_per_call(big)
ok = steady_malloc()
# the least of three counts: now and then one call still faults (the heap settling)
print(before, min(page_faults_per_call(big) for _ in range(3)), ok, malloc_name())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_steady_malloc_stops_a_call_from_faulting_in_fresh_memory():
    import subprocess

    # in its own process: the setting is process-wide and would change the other tests' keys
    out = subprocess.run(
        [sys.executable, "-c", STEADY_PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    before, after = float(out[0]), float(out[1])
    assert before >= 8000  # 64 MiB is 16384 pages of 4 KiB, faulted in on every call
    assert after < 100 and out[2:] == ["True", "steady"]


def test_the_malloc_setting_is_part_of_the_cpu_device_key(monkeypatch):
    from dsaprune.cost import timing

    system = device_key("cpu")
    monkeypatch.setattr(timing, "_STEADY", True)
    assert timing.malloc_name() == "steady" and device_key("cpu") != system
    monkeypatch.setattr(timing, "_STEADY", False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert timing.malloc_name() == "jemalloc" and device_key("cpu") != system


def test_a_faulting_forward_pass_is_warned_about_with_the_remedy(monkeypatch, tiny_net):
    monkeypatch.setattr(measured, "page_faults_per_call", lambda fn: 5000.0)
    monkeypatch.setattr(measured, "malloc_name", lambda: "system")
    net = tiny_net()
    with pytest.warns(UserWarning, match="--steady-malloc"):
        rec = measured.page_faults([net, net], (3, 48, 48), batch=2)
    assert rec == {"malloc": "system", "page_faults_before": 5000.0, "page_faults_after": 5000.0}
    assert net.training  # the mode it was in is restored
    monkeypatch.setattr(measured, "malloc_name", lambda: "steady")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measured.page_faults([net], (3, 48, 48), batch=2)


def test_meet_by_measurement_tightens_until_the_measurement_meets_the_budget(monkeypatch, tiny_net):
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    F = flops_model(G)
    chans = torch.tensor([g.channels for g in G.prunable], dtype=torch.float64)

    def counts_for(target):
        theta, _ = shift_to_budget(torch.zeros(len(chans)), F, target)
        return round_channels(torch.sigmoid(theta), chans.int().tolist(), F, target)

    def slower_than_predicted(groups, counts, batch=1, device="cpu"):
        return 1.25 * float(F.ratio(torch.tensor(counts, dtype=torch.float64) / chans))

    monkeypatch.setattr(lat, "measured_ratio", slower_than_predicted)
    counts, log = lat.meet_by_measurement(G, counts_for, 0.6)
    assert len(log) >= 2 and log[0]["target"] == 0.6 and log[0]["measured_ratio"] > 0.6
    assert log[-1]["measured_ratio"] <= 0.6 and log[-1]["target"] < 0.6
    assert slower_than_predicted(G, counts) == log[-1]["measured_ratio"]

    def never_fast_enough(groups, counts, batch=1, device="cpu"):
        return 0.9  # a busy machine: no cut measures within the budget

    monkeypatch.setattr(lat, "measured_ratio", never_fast_enough)
    with pytest.warns(UserWarning, match=r"still measured 0\.900 .* over the budget 0\.6"):
        counts, log = lat.meet_by_measurement(G, counts_for, 0.6, tries=3)
    assert len(log) == 3 and log[-1]["target"] < log[0]["target"]


def test_channel_block_follows_the_cpus_vector_width(monkeypatch):
    for capability, block in (("AVX512", 16), ("AVX2", 8), ("DEFAULT", 1)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert lat.channel_block("cpu") == block
    assert lat.channel_block("cuda") == 1  # not measured there: no step assumed


def test_a_stepped_clock_is_modelled_exactly_in_whole_blocks(monkeypatch, tmp_path, tiny_net):
    """A CPU kernel's time steps at multiples of its channel block (at batch 64 an output side
    below one block costs a whole one too): with the block, the quadratic form is exact at
    every count the rounding can produce, and the rounding keeps whole blocks in a group wider
    than one; without it, a partial block is predicted cheaper than it runs."""
    monkeypatch.setenv("DSAPRUNE_CACHE", str(tmp_path / "cache"))
    clock = SyntheticClock(block=8, out_floor=True)
    monkeypatch.setattr(lat, "time_calls", clock)
    monkeypatch.setattr("dsaprune.cost.timing.time_calls", clock)
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    chans = [g.channels for g in G.prunable]
    assert chans == [16, 32]
    cost = latency_model(G, batch=2, block=8)
    smooth = latency_model(G, batch=2, block=1)
    assert cost.block == 8 and cost.fit.block == 8
    # the half-block probes run as slowly as a whole block: no group keeps less than one
    assert cost.sub_block == [False, False] and cost.fit.sub_block == []
    checks = cost.fit.sub_block_checks
    assert len(checks) == 2
    assert all(c["measured_s"] > (1 + lat.SUB_BLOCK_TOLERANCE) * c["predicted_s"] for c in checks)

    def truth(counts):
        pruned = copy.deepcopy(net)
        P = find_groups(pruned, torch.zeros(1, 3, 16, 16))
        prune_groups(P, [torch.arange(n) for n in counts])
        return _synthetic_network_seconds(pruned, (3, 16, 16), 2, block=8, out_floor=True)

    def alpha(counts):
        return torch.tensor(
            [n / c for n, c in zip(counts, chans, strict=True)], dtype=torch.float64
        )

    for counts in ([8, 8], [8, 24], [16, 16], [16, 32]):  # reachable: exact
        assert float(cost(alpha(counts))) == pytest.approx(truth(counts), rel=1e-9)
    partial = [9, 17]  # runs as [16, 24]; the smooth model thinks it cheaper
    assert truth(partial) == pytest.approx(truth([16, 24]), rel=1e-12)
    assert float(smooth(alpha(partial))) < 0.97 * truth(partial)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # whatever the allocation, the rounding keeps whole blocks
        a = torch.rand(2, generator=g, dtype=torch.float64) * 0.5 + 0.5
        target = float(cost.ratio(a))
        counts = round_channels(a, chans, cost, target, round_to=1)
        assert all(n % 8 == 0 for n in counts)  # both groups are wider than one block
        assert float(cost.ratio(alpha(counts))) <= target


def test_channel_levels_keep_whole_blocks_in_a_group_wider_than_one():
    from dsaprune.cost.quadratic import channel_levels

    # wider than a block: no partial block, not even the first (it costs a whole one and is
    # never measured: the layer grids and calibration copies step by blocks there)
    assert channel_levels([64], 1, block=16) == [[16, 32, 48, 64]]
    assert channel_levels([64], 8, block=16) == [[16, 32, 48, 64]]
    assert channel_levels([24], 8, block=16) == [[16, 24]]  # and the full width
    assert channel_levels([12], 1, block=16) == [list(range(1, 13))]  # within a block: any
    assert channel_levels([16], 8, block=16) == [[8, 16]]
    assert channel_levels([24], 8) == [[8, 16, 24]]  # no block: the plain round_to steps
    assert channel_levels([20], 8) == [[8, 16, 20]]  # and the full width
    assert channel_levels([40], 1, [4], block=16) == [[16, 32, 40]]  # grouped conv
    assert channel_levels([40], 1, [4]) == [list(range(4, 41, 4))]
    # a group measured to get faster below one block also keeps the steps below the first
    assert channel_levels([64], 8, block=16, sub_block=[True]) == [[8, 16, 32, 48, 64]]
    assert channel_levels([64, 64], 4, block=16, sub_block=[True, False]) == [
        [4, 8, 12, 16, 32, 48, 64],
        [16, 32, 48, 64],
    ]
    assert channel_levels([12], 1, block=16, sub_block=[True]) == [list(range(1, 13))]


def test_a_group_whose_layers_get_faster_below_one_block_may_keep_less(
    monkeypatch, tmp_path, tiny_net
):
    """Where a half-block probe runs as the fit predicts (the time still falls below one block,
    as at batch 1), the wide group may keep less than a block: the form is exact there and the
    rounding uses those counts."""
    from dsaprune.cost.quadratic import QuadraticCost

    monkeypatch.setenv("DSAPRUNE_CACHE", str(tmp_path / "cache"))
    clock = SyntheticClock(block=8)  # linear in the channels below one block
    monkeypatch.setattr(lat, "time_calls", clock)
    monkeypatch.setattr("dsaprune.cost.timing.time_calls", clock)
    net = tiny_net().eval()
    G = find_groups(net, torch.zeros(1, 3, 16, 16))
    chans = [g.channels for g in G.prunable]
    cost = latency_model(G, batch=2, block=8)
    assert cost.sub_block == [True, True]
    assert cost.fit.sub_block == [g.index for g in G.prunable]
    for c in cost.fit.sub_block_checks:
        assert c["measured_s"] == pytest.approx(c["predicted_s"], rel=1e-6)

    for counts in ([4, 4], [4, 24], [8, 4], [2, 16]):
        pruned = copy.deepcopy(net)
        prune_groups(
            find_groups(pruned, torch.zeros(1, 3, 16, 16)), [torch.arange(n) for n in counts]
        )
        a = torch.tensor([n / c for n, c in zip(counts, chans, strict=True)], dtype=torch.float64)
        truth = _synthetic_network_seconds(pruned, (3, 16, 16), 2, block=8)
        assert float(cost(a)) == pytest.approx(truth, rel=1e-9)

    assert cost.floor(4) < cost.floor(8)  # 4 channels are a level now: the floor is lower
    counts = round_channels(torch.tensor([0.2, 0.2]), chans, cost, float(cost.floor(4)) + 1e-9, 4)
    assert counts == [4, 4]
    # computed: a partial first block stays as it is, a partial second one is padded
    q = QuadraticCost(
        torch.zeros(2, 2),
        torch.ones(2),
        0.0,
        "latency",
        1 / torch.tensor([32.0, 32.0]),
        block=8,
        sub_block=[True, False],
    )
    got = q.computed(torch.tensor([4 / 32, 4 / 32], dtype=torch.float64)).tolist()
    assert got == pytest.approx([4 / 32, 8 / 32])
    got = q.computed(torch.tensor([12 / 32, 12 / 32], dtype=torch.float64)).tolist()
    assert got == pytest.approx([16 / 32, 16 / 32])


def test_default_path_prunes_a_grouped_convolution_with_the_latency_report(clock):
    """The latency model's calibration copies keep the same positions in each block of a
    grouped convolution (they kept channels 0 … n−1, which a grouped consumer refuses)."""
    import dsaprune
    from dsaprune.data import DeviceLoader, channel_stats, make_shapes

    class Grouped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            c = torch.nn
            self.body = c.Sequential(
                c.Conv2d(3, 16, 3, padding=1, bias=False), c.BatchNorm2d(16), c.ReLU(),
                c.Conv2d(16, 16, 3, padding=1, groups=4, bias=False), c.BatchNorm2d(16), c.ReLU(),
                c.Conv2d(16, 24, 1, bias=False), c.BatchNorm2d(24), c.ReLU(),
                c.AdaptiveAvgPool2d(1), c.Flatten(),
            )  # fmt: skip
            self.fc = c.Linear(24, 10)

        def forward(self, x):
            return self.fc(self.body(x))

    tr = make_shapes(640, seed=2, size=16)
    mean, std = channel_stats(tr.images)
    data = DeviceLoader(tr, 64, train=True, mean=mean, std=std)
    torch.manual_seed(0)
    for budget in ("flops=0.5",):
        res = dsaprune.prune(
            Grouped(), data, budget=budget, epochs=0.5, progress=False, device="cpu"
        )
        assert res.report["latency"]["measured_after_ms"] > 0
        g = res.model.body[3]
        assert g.groups == 4 and g.in_channels % 4 == 0
