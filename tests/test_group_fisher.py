"""Group Fisher's one-shot allocation: the per-channel coupled Fisher and the greedy removal."""

import pytest
import torch
from torch import nn

from dsaprune.allocation import greedy_keep_counts
from dsaprune.cost import QuadraticCost, flops_model
from dsaprune.estimators import channel_fisher
from dsaprune.gates import GateHooks
from dsaprune.grouping import find_groups


def _linear_cost(weights: list[float], chans: list[int]) -> QuadraticCost:
    """Groups whose cost is independent and linear: weight_k per kept fraction."""
    K = len(weights)
    b = torch.tensor(weights, dtype=torch.float64)
    min_alpha = torch.tensor([1.0 / c for c in chans], dtype=torch.float64)
    return QuadraticCost(torch.zeros(K, K, dtype=torch.float64), b, 0.0, "flops", min_alpha)


def test_greedy_removes_least_importance_per_cost_first():
    # a channel of group 0 saves 0.05 of the cost for importance 1 (20 per unit saved), one of
    # group 1 saves 0.2 for 2 (10 per unit saved), its last channel 0.2 for 100 (500)
    cost = _linear_cost([1.0, 4.0], [4, 4])
    imp = [torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([2.0, 100.0, 2.0, 2.0])]
    assert greedy_keep_counts(imp, cost, budget=0.6) == [4, 2]  # stops as soon as it fits
    assert greedy_keep_counts(imp, cost, budget=0.4) == [4, 1]  # group 1's cheap ones first
    # then group 0 goes before group 1's important channel
    assert greedy_keep_counts(imp, cost, budget=0.3) == [2, 1]


def test_greedy_meets_budget_on_a_coupled_cost_and_keeps_one_channel(tiny_net):
    torch.manual_seed(0)
    model = tiny_net()
    G = find_groups(model, torch.randn(1, 3, 16, 16))
    F = flops_model(G)
    imp = [torch.rand(g.channels) for g in G.prunable]
    for budget in (0.9, 0.5, 0.2):
        counts = greedy_keep_counts(imp, F, budget)
        chans = torch.tensor([g.channels for g in G.prunable], dtype=torch.float64)
        assert float(F.ratio(torch.tensor(counts, dtype=torch.float64) / chans)) <= budget
        assert all(n >= 1 for n in counts)
    with pytest.raises(ValueError, match="unreachable"):
        greedy_keep_counts(imp, F, 1e-6)


def test_channel_fisher_is_half_the_mean_squared_per_sample_mask_gradient(tiny_net):
    torch.manual_seed(0)
    model = tiny_net().eval()
    G = find_groups(model, torch.randn(1, 3, 16, 16))
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    loss = nn.CrossEntropyLoss()
    got = channel_fisher(model, G, [(x[:4], y[:4]), (x[4:], y[4:])], loss)
    # one sample at a time, a [K, C_max] mask: its gradient is that sample's
    hooks = GateHooks(G)
    C = max(g.channels for g in G.prunable)
    want = [torch.zeros(g.channels, dtype=torch.float64) for g in G.prunable]
    for n in range(6):
        m = torch.ones(len(G.prunable), C, requires_grad=True)
        hooks.set(m)
        (g,) = torch.autograd.grad(loss(model(x[n : n + 1]), y[n : n + 1]), m)
        for k, grp in enumerate(G.prunable):
            want[k] += 0.5 * g[k, : grp.channels].double().pow(2) / 6
    hooks.remove()
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-12)
    assert not model.training  # the mode it was in
    assert not model.fc._forward_hooks and not any(m._forward_hooks for m in model.modules())


def test_greedy_from_a_cut_network_continues_the_greedy_from_the_full_one(tiny_net):
    """Group Fisher's rounds: stopping at 0.7 and going on from there to 0.4 with the kept
    channels' importances is the greedy from the full network to 0.4."""
    torch.manual_seed(1)
    G = find_groups(tiny_net(), torch.randn(1, 3, 16, 16))
    F = flops_model(G)
    chans = [g.channels for g in G.prunable]
    imp = [torch.rand(c) for c in chans]
    first = greedy_keep_counts(imp, F, 0.7)
    kept = [i.sort(descending=True)[0][:n] for i, n in zip(imp, first, strict=True)]
    assert greedy_keep_counts(kept, F, 0.4, channels=chans) == greedy_keep_counts(imp, F, 0.4)
    with pytest.raises(ValueError, match="channel levels"):
        greedy_keep_counts(kept, F, 0.4, round_to=4, channels=chans)  # 4-channel levels


def test_fisher_rounds_remove_the_least_fisher_per_cost_and_never_take_a_channel_back():
    from dsaprune.pruner.rounds import FisherRounds

    class _G:  # the two fields FisherRounds reads of a group
        def __init__(self, c):
            self.channels, self.unit = c, 1

    class _Groups:
        prunable = [_G(4), _G(4)]

    cost = _linear_cost([1.0, 1.0], [4, 4])
    rounds = FisherRounds(_Groups(), cost, budget=0.5, round_to=1, steps=10, rounds=4)
    assert [rounds.due(i) for i in (1, 2, 3, 5, 8, 10, 12)] == [0, 0, 1, 2, 3, 4, 4]
    g = torch.zeros(2, 2, 4)  # two samples' mask gradients; their Fisher is ½·mean (N·g)²
    g[:, 0] = torch.tensor([0.1, 0.4, 0.2, 0.3])
    g[:, 1] = torch.tensor([0.5, 0.6, 0.05, 0.7])
    assert rounds.round_fisher(lambda t: t, "cpu") is None  # nothing read yet
    assert rounds.step(g, window_step=2, window_over=False) is None  # no round due yet
    one_rank = rounds.round_fisher(lambda t: t, "cpu")
    torch.testing.assert_close(one_rank, 0.5 * (2 * g[0].double()).pow(2))
    # every process's sums add: two ranks that read the same step give the same mean
    torch.testing.assert_close(rounds.round_fisher(lambda t: 2 * t, "cpu"), one_rank)
    assert rounds.step(torch.zeros(0, 2, 4), window_step=5, window_over=False) == 2
    before = rounds.keep.clone()
    rounds.cut(rounds.round_fisher(lambda t: t, "cpu"), 2)  # to 0.75: the two cheapest go first
    assert rounds.keep.tolist() == [[False, True, True, True], [True, True, False, True]]
    assert rounds.samples == 0 and rounds.done == 2 and not rounds.met()
    # a new Fisher that ranks group 0's removed channel highest cannot bring it back
    g2 = torch.full((1, 2, 4), 0.3)
    g2[0, 0, 0] = 9.0
    assert rounds.step(g2, window_step=6, window_over=True) == 4  # the window's end: the last
    rounds.cut(rounds.round_fisher(lambda t: t, "cpu"), 4)
    assert rounds.met() and sum(rounds.counts) == 4
    assert not (rounds.keep & ~before).any() and not rounds.keep[0, 0] and not rounds.keep[1, 2]
    # the final order: kept channels above removed ones
    for k, order in enumerate(rounds.importance()):
        assert order[rounds.keep[k]].min() > order[~rounds.keep[k]].max()
