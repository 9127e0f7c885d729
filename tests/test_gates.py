import pytest
import torch

from dsaprune import models
from dsaprune.gates import (
    GateHooks,
    beta2_at,
    hardness,
    keep_probabilities,
    pad_groups,
    sample_masks,
)
from dsaprune.grouping import find_groups

D = torch.float64


@pytest.mark.parametrize("C", [1, 2, 7, 64, 2048])
@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5, 0.9, 1.0])
def test_mean_keep_probability_equals_alpha(C, alpha):
    g = torch.Generator().manual_seed(C)
    imp = [torch.rand(C, generator=g, dtype=D) * 3 + 1e-3, torch.rand(5, generator=g, dtype=D)]
    I, V = pad_groups(imp)
    a = torch.tensor([alpha, 0.3], dtype=D)
    for beta2 in (0.05, 1.0, 5.0, 100.0):
        p, _ = keep_probabilities(I, V, a, beta2)
        mean = p.sum(1) / V.sum(1)
        assert torch.allclose(mean, a, atol=1e-3), (beta2, mean)
        assert (p[~V] == 0).all()


@pytest.mark.parametrize("beta2", [0.05, 1.0, 5.0])
@pytest.mark.parametrize("C", [2, 16, 300])
def test_alpha_gradient_matches_finite_differences(beta2, C):
    g = torch.Generator().manual_seed(C)
    I, V = pad_groups([torch.rand(C, generator=g, dtype=D) * 3 + 0.01])
    w = torch.randn(1, C, generator=g, dtype=D)

    def f(a: float) -> float:
        p, _ = keep_probabilities(I, V, torch.tensor([a], dtype=D), beta2, iters=100)
        return float((w * p).sum())

    a = torch.tensor([0.37], dtype=D, requires_grad=True)
    p, _ = keep_probabilities(I, V, a, beta2, iters=100)
    (w * p).sum().backward()
    h = 1e-6
    fd = (f(0.37 + h) - f(0.37 - h)) / (2 * h)
    assert abs(a.grad.item() - fd) <= 1e-3 * abs(fd)


def test_beta2_limits():
    imp = torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6], dtype=D)
    I, V = pad_groups([imp])
    a = torch.tensor([0.4], dtype=D)
    p_soft, _ = keep_probabilities(I, V, a, 0.05)
    assert torch.allclose(p_soft, torch.full_like(p_soft, 0.4), atol=0.05)  # ≈ random pruning
    p_hard, _ = keep_probabilities(I, V, a, 200.0)
    assert p_hard[0, :3].max() < 1e-3 and p_hard[0, 3:].min() > 1 - 1e-3  # top-2 of 5
    assert hardness(p_hard, V).item() < 1e-3 < hardness(p_soft, V).item()
    assert beta2_at(0) == 0.05 and beta2_at(10) == pytest.approx(0.05 * 1.1**10)
    assert beta2_at(1, time_scale=10) == pytest.approx(beta2_at(10))


def test_masks_straight_through():
    p = torch.full((2, 4), 0.5, requires_grad=True)
    m = sample_masks(p, generator=torch.Generator().manual_seed(0))
    assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
    (m * torch.arange(8.0).view(2, 4)).sum().backward()
    assert torch.equal(p.grad, torch.arange(8.0).view(2, 4))


def test_every_producer_of_a_group_gets_the_same_mask():
    torch.manual_seed(0)
    m = models.create("resnet20").eval()
    G = find_groups(m, torch.zeros(1, 3, 32, 32))
    hooks = GateHooks(G)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        G.module(n).register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out))
        for g in G.prunable
        for n in g.masked
    ]
    K = len(G.prunable)
    masks = (torch.rand(K, 64) > 0.5).float().requires_grad_(True)
    hooks.set(masks)
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    for k, g in enumerate(G.prunable):
        dead = (masks[k, : g.channels] == 0).nonzero().flatten()
        assert len(g.masked) >= 1
        for n in g.masked:  # zero exactly where the group's mask is zero
            assert (seen[n][:, dead] == 0).all(), n
    # the stream group's four producers all feed one mask tensor: its gradient sums them
    assert len(G.prunable[0].masked) == 4 and masks.grad[0].abs().sum() > 0
    for h in handles:
        h.remove()
    hooks.remove()
