"""bench/latency.py: the summary judges each run by the median of its timings;
bench/latency_states.py: its twin networks and its summary."""

import pytest


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("latency_bench", "latency.py")


def _rec(budget, predicted, pair, together, last=None):
    return {
        "budget": budget, "round_to": 1, "predicted_ratio": predicted, "predicted_ms": 1.0,
        "measured_ratio": pair, "ratio_together": together, "flops_ratio": 0.4,
        "measured_ms": 1.0, "prediction_error": 0.0, "ratio_error": predicted / pair - 1,
        "measurements": None if last is None else [{"target": 0.5, "measured_ratio": last}],
        "where": None,
    }  # fmt: skip


def test_one_disturbed_timing_does_not_decide(bench):
    disturbed = _rec("latency=0.5", 0.49, 0.68, 0.50, 0.49)  # the pair timing strayed
    assert bench.timings(disturbed) == [0.68, 0.50, 0.49]
    assert bench.median_ratio(disturbed) == 0.50
    assert bench.median_ratio(_rec("flops=0.5", 0.6, 0.7, 0.6)) == pytest.approx(0.65)
    res = {
        "model": "m", "device": "cpu", "device_name": "CPU", "batch": 64, "fit_s": 0.0,
        "unpruned_measured_ms": 2.0, "unpruned_predicted_ms": 2.0, "unpruned_error": 0.0,
        "runs": [disturbed, _rec("latency=0.7", 0.70, 0.71, 0.72, 0.69)],
    }  # fmt: skip
    rows = {line.split(" | ")[2]: line for line in bench.summary([res])[2:]}
    assert rows["pair"].endswith("| 2 | 1 | 1 | 27.9% |")  # 0.49 / 0.68 - 1
    assert rows["median of the timings"].endswith("| 2 | 2 | 2 | 2.0% |")
    md = bench.markdown([res], "python bench/latency.py")
    assert "| 0.500 |" in md and "median of the timings" in md


@pytest.fixture(scope="module")
def states(bench_script):
    return bench_script("states_bench", "latency_states.py")


def test_latency_states_twins_differ_only_below_one_block(states):
    sub, whole = states.twins([16, 16, 32, 64, 24, 8], 16)
    assert sub == [8, 8, 16, 32, 16, 4]
    assert whole == [16, 16, 16, 32, 16, 8]


def test_latency_states_table_summarises_the_multi_thread_timings(states):
    rows = [
        {"t_s": 1.0, "threads": 2, "unpruned_ms": 100.0, "sub_ms": 40.0, "whole_ms": 60.0},
        {"t_s": 2.0, "threads": 2, "unpruned_ms": 104.0, "sub_ms": 57.0, "whole_ms": 64.0},
        {"t_s": 3.0, "threads": 1, "unpruned_ms": 180.0, "sub_ms": 75.0, "whole_ms": 110.0},
    ]
    d = {"command": "python bench/latency_states.py", "device": "CPU (2 threads)", "batch": 64,
         "model": "resnet56", "block": 16, "threads": 2, "rounds": 5, "channels": [16, 32],
         "sub": [8, 16], "whole": [16, 16], "timings": rows}  # fmt: skip
    text = states.markdown(d)
    # the one-thread row is listed but left out of the two-thread summary
    assert "min 0.667, median 0.779, max 0.891" in text
    assert "sub-block ms: min 40.0, max 57.0" in text
    assert text.count("\n| ") == 1 + len(rows)  # the header and one line per timing
