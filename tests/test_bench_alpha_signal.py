"""bench/alpha_signal.py: the agreement of two independent measurements of the truth."""

import pytest


@pytest.fixture(scope="module")
def signal_bench(bench_script):
    return bench_script("alpha_signal_bench", "alpha_signal.py")


def test_halves_agreement_is_the_spearman_rho_of_the_two_truths(signal_bench):
    same = signal_bench._agreement([0.1, 0.5, 0.3, 2.0], [0.2, 0.6, 0.4, 3.0])
    assert same["spearman_a_b"] == pytest.approx(1.0)
    assert same["truth_a"] == [0.1, 0.5, 0.3, 2.0]  # both truths are kept for the record
    swapped = signal_bench._agreement([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])
    assert swapped["spearman_a_b"] == pytest.approx(0.9)  # one swapped pair of five
    assert signal_bench._agreement([1, 2, 3], [3, 2, 1])["spearman_a_b"] == pytest.approx(-1.0)
