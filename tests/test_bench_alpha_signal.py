"""bench/alpha_signal.py: the truth (loss rise per FLOP, its error, fixed or re-estimated BN),
the class-mixed validation order and the agreement of two independent truths."""

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


def _tiny_setup(tiny_net):
    import torch

    from dsaprune.cost import flops_model
    from dsaprune.gates import GateHooks, pad_groups
    from dsaprune.grouping import channel_importance, find_groups

    torch.manual_seed(0)
    model = tiny_net()
    for m in model.modules():  # distinct BN scales, so "least important" is well defined
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))) for _ in range(4)]
    G = find_groups(model, batches[0][0][:1])
    chans = torch.tensor([g.channels for g in G.prunable], dtype=torch.float64)
    imp, valid = pad_groups(channel_importance(G, "bn_first"))
    return model, G, flops_model(G), GateHooks(G), imp.double(), valid, chans, batches


def test_truth_is_the_loss_rise_per_flop_of_one_group_losing_its_next_channels(
    signal_bench, tiny_net
):
    from dsaprune.gates import topn_masks

    model, G, cost, hooks, imp, valid, chans, batches = _tiny_setup(tiny_net)
    val, bn = batches[:3], batches[3:]
    base, truth, se = signal_bench.measure_truth(
        model, G, cost, hooks, imp, valid, chans.clone(), chans, val, bn, 0.1
    )
    assert len(truth) == len(se) == len(G.prunable)
    assert all(v >= 0 for v in se)
    # recompute group 0's value by hand: 10% of 16 channels rounds to 2
    fewer = chans.clone()
    fewer[0] -= 2
    lo = signal_bench.loss_under(model, hooks, topn_masks(imp, valid, chans / chans), val, bn)
    hi = signal_bench.loss_under(model, hooks, topn_masks(imp, valid, fewer / chans), val, bn)
    saved = float(cost(chans / chans) - cost(fewer / chans)) / cost.full
    assert base == pytest.approx(float(lo.mean()))
    assert truth[0] == pytest.approx(float((hi - lo).mean()) / saved, rel=1e-6)


def test_fixed_bn_truth_keeps_the_uncut_statistics(signal_bench, tiny_net):
    import torch
    from torch import nn

    from dsaprune.gates import topn_masks

    model, G, cost, hooks, imp, valid, chans, batches = _tiny_setup(tiny_net)
    val, bn = batches[:3], batches[3:]

    def stats():
        return [m.running_var.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    signal_bench.measure_truth(
        model, G, cost, hooks, imp, valid, chans.clone(), chans, val, bn, 0.1, reestimate=False
    )
    left = stats()
    signal_bench.loss_under(model, hooks, topn_masks(imp, valid, chans / chans), val, bn)
    uncut = stats()
    fewer = chans.clone()
    fewer[0] -= 2
    signal_bench.loss_under(model, hooks, topn_masks(imp, valid, fewer / chans), val, bn)
    cut = stats()
    assert all(torch.equal(a, b) for a, b in zip(left, uncut, strict=True))
    # a cut would have changed them, so the equality above says they were never re-estimated
    assert any(not torch.allclose(a, b) for a, b in zip(uncut, cut, strict=True))
