"""bench/alpha_signal.py: what two independent measurements of the truth allow a signal to show."""

import pytest


@pytest.fixture(scope="module")
def signal_bench(bench_script):
    return bench_script("alpha_signal_bench", "alpha_signal.py")


def test_truths_that_agree_allow_a_perfect_rho(signal_bench):
    r = signal_bench._reliability([0.1, 0.5, 0.3, 2.0], [0.2, 0.6, 0.4, 3.0])
    assert r["spearman_a_b"] == pytest.approx(1.0)
    assert r["reliability_pooled"] == pytest.approx(1.0)
    assert r["ceiling_half"] == pytest.approx(1.0) and r["ceiling_pooled"] == pytest.approx(1.0)


def test_noisy_truths_bound_rho_below_one(signal_bench):
    # one swapped pair of five: Spearman 0.9 between the halves
    r = signal_bench._reliability([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])
    assert r["spearman_a_b"] == pytest.approx(0.9)
    assert r["reliability_pooled"] == pytest.approx(1.8 / 1.9)  # Spearman-Brown
    assert r["ceiling_half"] == pytest.approx(0.9**0.5)
    assert r["ceiling_pooled"] == pytest.approx((1.8 / 1.9) ** 0.5)
    # halves that disagree leave nothing to measure against
    assert signal_bench._reliability([1, 2, 3], [3, 2, 1])["ceiling_pooled"] == 0.0
