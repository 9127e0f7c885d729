"""bench/latency.py: the summary judges each run by the median of its timings."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("latency_bench", ROOT / "bench/latency.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["latency_bench"] = mod
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["latency_bench"]


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
