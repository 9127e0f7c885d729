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


def test_validation_batches_mix_the_classes_of_a_class_sorted_split(signal_bench):
    # an image folder lists one class after another; a prefix of it must not be one class
    import torch

    from dsaprune.data import ImageData

    n = 40
    data = ImageData(
        torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous(),
        torch.arange(4).repeat_interleave(n // 4),
        ["a", "b", "c", "d"],
    )
    mixed = signal_bench.class_mixed(data)
    assert sorted(mixed.images[:, 0, 0, 0].tolist()) == list(range(n))  # a permutation
    assert (mixed.labels == data.labels[mixed.images[:, 0, 0, 0].long()]).all()  # pairs kept
    assert mixed.labels[:10].unique().numel() >= 3  # the first "batch" spans the classes
    assert torch.equal(signal_bench.class_mixed(data).labels, mixed.labels)  # fixed order
