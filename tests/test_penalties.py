"""The ssl and morphnet baselines: their proximal penalty steps, FLOPs weights and thresholds."""

import pytest
import torch

import dsaprune
from dsaprune import models
from dsaprune.allocation import magnitude_keep_ratios
from dsaprune.cost import flops_model
from dsaprune.grouping import find_groups
from dsaprune.penalties import GroupLasso, WeightedBNL1, flops_weights


def _resnet20():
    torch.manual_seed(0)
    m = models.create("resnet20")
    return m, find_groups(m, torch.zeros(1, 3, 32, 32))


def test_group_lasso_step_shrinks_each_channel_by_its_proximal_factor():
    m, G = _resnet20()
    lasso = GroupLasso(G, strength=0.0)
    lr = 0.02
    rms = torch.cat([nb / n.sqrt() for nb, n in lasso.norms()])
    lasso.strength = float(rms.median()) / lr  # about half the channels are zeroed at once
    scale = [(1 - lr * lasso.strength * n.sqrt() / nb).clamp_min(0) for nb, n in lasso.norms()]
    assert any(bool((s == 0).any()) for s in scale)  # whole channels reach exactly zero
    assert any(bool((s > 0).any()) for s in scale)
    params = {k: v.detach().clone() for k, v in m.state_dict().items()}
    lasso.step(lr)
    # a BN belongs to one group only: scaled by that group's factor per channel
    for g, s in zip(G.prunable, scale, strict=True):
        for bn in g.norms:
            got = G.module(bn).weight.detach()
            assert torch.allclose(got, params[f"{bn}.weight"] * s, atol=1e-6)
    # a convolution's filters are one group's channels and its inputs another's: both factors
    checked = 0
    for a, sa in zip(G.prunable, scale, strict=True):
        for b, sb in zip(G.prunable, scale, strict=True):
            for name in set(a.producers) & set(b.consumers):
                w0 = params[f"{name}.weight"]
                s_in = torch.ones(w0.shape[1])
                s_in[b.consumers[name]] = sb
                expect = w0 * sa.view(-1, 1, 1, 1) * s_in.view(1, -1, 1, 1)
                assert torch.allclose(G.module(name).weight.detach(), expect, atol=1e-6)
                checked += 1
    assert checked >= 9  # every block's convolutions


def test_morphnet_weights_follow_per_channel_flops_and_soft_threshold_gamma():
    m, G = _resnet20()
    F = flops_model(G)
    chans = [g.channels for g in G.prunable]
    w = flops_weights(F, chans)
    assert float(w.mean()) == pytest.approx(1.0)
    # the weight is what one channel costs: compare with the counted saving of removing one
    full = torch.ones(len(chans), dtype=torch.float64)
    saved = []
    for k, c in enumerate(chans):
        a = full.clone()
        a[k] -= 1 / c
        saved.append(float(F(full) - F(a)))
    saved = torch.tensor(saved, dtype=torch.float64)
    assert torch.allclose(w / w[0], saved / saved[0], rtol=0.05)
    assert float(w[0]) > float(w[-1])  # a 32×32 stage channel costs more than an 8×8 one
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data = torch.linspace(-0.3, 0.3, mod.num_features)
    pen = WeightedBNL1(G, F, strength=1.0)
    pen.step(0.1)
    g0 = G.module(G.prunable[0].norms[0]).weight.detach()
    ref = torch.linspace(-0.3, 0.3, g0.numel())
    expect = ref.sign() * (ref.abs() - 0.1 * float(w[0])).clamp_min(0)
    assert torch.allclose(g0, expect, atol=1e-6)


def test_absolute_threshold_compares_groups_in_their_own_units():
    _, G = _resnet20()
    F = flops_model(G)
    g = torch.Generator().manual_seed(0)
    # one group's channels all live (large), the others half dead (near zero)
    imp = [torch.rand(c.channels, generator=g) for c in G.prunable]
    for i in imp[1:]:
        i[: len(i) // 2] *= 1e-3
    imp[0] += 10
    a = magnitude_keep_ratios(imp, F, 0.5, relative=False)
    assert 0.95 * 0.5 <= float(F.ratio(a)) <= 0.5
    assert float(a[0]) == 1.0  # absolute: the large group keeps everything
    # the others' dead halves go first: every live channel is kept, some dead ones are not
    assert all(0.5 <= float(x) < 1.0 for x in a[1:])


@pytest.mark.parametrize("method", ["ssl", "morphnet"])
def test_penalty_methods_prune_to_budget_after_the_penalty_phase(tiny_net, method):
    from test_prune import _loaders

    torch.manual_seed(0)
    tr, te = _loaders()
    res = dsaprune.prune(
        tiny_net(), tr, budget="flops=0.5", epochs=1.5, test_data=te, progress=False,
        device="cpu", method=method, penalty=0.05,
    )  # fmt: skip
    r = res.report
    assert 0.97 * 0.5 <= r["flops_ratio"] <= 0.5 and r["met_by"] == method
    assert "penalty" in r["phase_start_epoch"] and r["phase_start_epoch"]["pruned"] > 0.4
    with pytest.raises(ValueError, match="penalty strength must be >= 0"):
        dsaprune.prune(tiny_net(), tr, epochs=0.1, method=method, penalty=-1, progress=False)
