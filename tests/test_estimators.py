"""The Θ-step's estimators, the top-n training masks, BN re-estimation and the method registry."""

import importlib
from dataclasses import replace

import pytest
import torch
from torch import nn

import dsaprune
from dsaprune import models
from dsaprune.estimators import ESTIMATORS, GateState, GroupFisher, JointFisher, make_estimator
from dsaprune.gates import GateHooks, keep_probabilities, marginal_channels, pad_groups, topn_masks
from dsaprune.grouping import channel_importance, find_groups
from dsaprune.methods import METHODS, make_method
from dsaprune.train import recalibrate_bn


def test_topn_masks_keep_the_most_important_and_move_continuously():
    imp = torch.tensor([[0.5, 3.0, 1.0, 2.0], [1.0, 2.0, 0.0, 0.0]])
    valid = torch.tensor([[True] * 4, [True, True, False, False]])
    m = topn_masks(imp, valid, torch.tensor([0.5, 0.75]))
    # group 0: the two largest (3.0, 2.0); group 1: 1.5 channels = the larger + half the other
    assert m.tolist() == [[0.0, 1.0, 0.0, 1.0], [0.5, 1.0, 0.0, 0.0]]
    m2 = topn_masks(imp, valid, torch.tensor([0.5 + 1e-4, 0.75]))
    assert (m2 - m).abs().max() < 1e-3  # continuous in α
    w = marginal_channels(imp, valid, torch.tensor([0.5, 1.0]), 0.25)
    # the least important kept channel of each group: 2.0 in group 0, 1.0 in group 1
    assert w.tolist() == [[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]


def _resnet20_gates():
    torch.manual_seed(0)
    m = models.create("resnet20").eval()
    G = find_groups(m, torch.zeros(1, 3, 32, 32))
    imp, valid = pad_groups(channel_importance(G))
    return m, G, imp, valid, GateHooks(G)


def test_fisher_costs_are_per_sample_gradients_summed_over_a_groups_producers():
    m, G, imp, valid, hooks = _resnet20_gates()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    alpha = torch.full((len(G.prunable),), 0.75)
    gates = GateState(imp, valid, lambda a, i: None)
    costs, _ = GroupFisher().channel_costs(
        m, hooks, x, y, nn.functional.cross_entropy, alpha, gates
    )
    # the same, one sample at a time, with one [K, C] mask shared by every producer
    base = topn_masks(imp, valid, alpha)
    sq = torch.zeros_like(costs)
    for n in range(4):
        mk = base.clone().requires_grad_(True)
        hooks.set(mk)
        nn.functional.cross_entropy(m(x[n : n + 1]), y[n : n + 1]).backward()
        hooks.clear()
        sq += mk.grad.double() ** 2
    assert torch.allclose(costs, 0.5 * sq / 4, rtol=1e-4, atol=1e-12)
    assert costs[0].sum() > 0  # the stream group (4 producers) has a signal
    hooks.remove()


def test_fisher_mask_gradients_are_the_same_when_the_cpu_pass_is_chunked():
    """On the CPU a batch wider than ``CPU_CHUNK`` runs in chunks: each sample's mask gradient
    and the batch loss must not change (BN reads running statistics: samples are independent)."""
    from dsaprune.estimators import CPU_CHUNK

    m, G, imp, valid, hooks = _resnet20_gates()
    n = CPU_CHUNK + 6  # one full chunk and a partial one
    x, y = torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
    alpha = torch.full((len(G.prunable),), 0.75, dtype=torch.float64)
    gates = GateState(imp, valid, lambda a, i: None)
    est = GroupFisher()
    assert est._chunk(m, x, y) == CPU_CHUNK
    chunked, loss_c = est.mask_grads(m, hooks, x, y, nn.functional.cross_entropy, alpha, gates)

    def wrapped(inputs):  # not a module: never split (a wrapper may bind the batch's targets)
        return m(inputs)

    assert est._chunk(wrapped, x, y) == n
    whole, loss_w = est.mask_grads(wrapped, hooks, x, y, nn.functional.cross_entropy, alpha, gates)
    assert chunked.shape == whole.shape == (n, len(G.prunable), imp.shape[1])
    assert torch.allclose(chunked, whole, rtol=1e-4, atol=1e-5 * float(whole.abs().max()))
    assert loss_c == pytest.approx(loss_w, rel=1e-5)
    hooks.remove()


def test_training_masks_in_the_norms_affine_give_the_same_loss_gradients_and_statistics():
    """A training mask (no gradient of its own) scales the masked norms' γ and β (and multiplies
    other masked outputs in place); a mask that needs its gradient multiplies the outputs out
    of place. Both must train the network alike, running statistics included, and leave the
    norms' parameters as they were."""
    m, G, imp, valid, hooks = _resnet20_gates()
    m.train()
    for bn in m.modules():  # β ≠ 0: at init a near-constant channel sits on ReLU's kink, where
        if isinstance(bn, nn.BatchNorm2d):  # rounding alone flips which side it falls
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    mask = topn_masks(imp, valid, torch.full((len(G.prunable),), 0.6))
    start = {k: v.clone() for k, v in m.state_dict().items()}
    params = list(m.parameters())
    grads = []
    for needs_grad in (False, True):
        m.load_state_dict(start)
        m.zero_grad()
        hooks.set(mask.clone().requires_grad_(needs_grad))
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        hooks.clear()
        stats = [b.clone() for b in m.buffers()]
        grads.append((float(loss), [p.grad.clone() for p in m.parameters()], stats))
    (l0, g0, s0), (l1, g1, s1) = grads
    assert l0 == pytest.approx(l1, rel=1e-6)
    # (γ·m)·x̂ and (γ·x̂)·m round differently: agreement to rounding, relative to each tensor
    pairs = zip(g0, g1, strict=True)
    assert all(torch.allclose(a, b, atol=1e-5 * float(b.abs().max())) for a, b in pairs)
    assert all(torch.allclose(a.float(), b.float()) for a, b in zip(s0, s1, strict=True))
    after = list(m.parameters())
    assert len(after) == len(params) and all(a is b for a, b in zip(after, params, strict=True))
    conv = G.prunable[1].masked[0]  # a masked channel's producer gets no gradient
    w = dict(m.named_parameters())[f"{conv}.weight"].grad
    dropped = (mask[1, : G.prunable[1].channels] == 0).nonzero().flatten()
    assert dropped.numel() > 0 and float(w[dropped].abs().max()) == 0.0
    hooks.remove()


def test_a_gathering_step_trains_alike_and_leaves_each_samples_mask_gradients():
    """``gather``: the step trains as under ``set`` (same loss, weight gradients and running
    statistics) and its backward leaves ∂(loss)/∂m_n per sample: summed over the batch, the
    gradient of one shared mask; an evaluation between steps gathers nothing."""
    m, G, imp, valid, hooks = _resnet20_gates()
    m.train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    mask = topn_masks(imp, valid, torch.full((len(G.prunable),), 0.6))
    start = {k: v.clone() for k, v in m.state_dict().items()}
    out = []
    for gather in (False, True):
        m.load_state_dict(start)
        m.zero_grad()
        shared = mask.clone().requires_grad_(True)
        if gather:
            hooks.gather(mask)
            with torch.no_grad():  # an evaluation forward first: no per-sample copy
                m.eval()(x[:2])
                m.train()
            assert hooks.gathered() is None
        else:
            hooks.set(shared)
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        g = hooks.gathered() if gather else shared.grad
        stats = [b.clone() for b in m.buffers()]
        out.append((float(loss), [p.grad.clone() for p in m.parameters()], g, stats))
    (l0, w0, g_shared, s0), (l1, w1, g_per_sample, s1) = out
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w0, w1, strict=True))
    assert all(torch.allclose(a.float(), b.float()) for a, b in zip(s0, s1, strict=True))
    assert g_per_sample.shape == (6, *mask.shape)
    assert torch.allclose(g_per_sample.sum(0), g_shared, atol=1e-6)
    assert float(g_per_sample.std(0).max()) > 0  # the samples differ
    hooks.set(mask)  # the next step trains under the plain mask again
    assert hooks.gathered() is None
    hooks.remove()


def test_a_failing_forward_leaves_the_norms_parameters_in_place():
    m, G, imp, valid, hooks = _resnet20_gates()
    params = dict(m.named_parameters())
    hooks.set(topn_masks(imp, valid, torch.full((len(G.prunable),), 0.5)))
    with pytest.raises(RuntimeError):
        m(torch.randn(2, 5, 32, 32))  # wrong channel count: fails inside the first conv
    with pytest.raises(RuntimeError):
        m.layer1[0].bn1(torch.randn(2, 3, 4, 4))  # fails inside a masked norm's own forward
    now = dict(m.named_parameters())
    assert now.keys() == params.keys() and all(now[k] is params[k] for k in params)
    hooks.remove()


def test_a_norm_subclass_with_a_fused_activation_is_masked_out_of_place():
    """A BN subclass may end in its activation (timm's BatchNormAct2d), whose backward reads
    the output: multiplying that in place would break autograd, so only exact types are."""

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), BNAct(8), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip
    G = find_groups(m, torch.zeros(1, 3, 8, 8))
    imp, valid = pad_groups(channel_importance(G))
    hooks = GateHooks(G)
    hooks.set(topn_masks(imp, valid, torch.full((len(G.prunable),), 0.5)))
    loss = nn.functional.cross_entropy(m(torch.randn(4, 3, 8, 8)), torch.arange(4))
    loss.backward()  # raised "modified by an inplace operation" with in-place masking
    assert m[0].weight.grad is not None
    hooks.remove()


def test_joint_fisher_keeps_the_cross_terms_of_removing_channels_together():
    m, G, imp, valid, hooks = _resnet20_gates()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    K = len(G.prunable)
    theta = torch.full((K,), 1.0)
    gates = GateState(imp, valid, lambda a, i: None)
    loss_fn = nn.functional.cross_entropy
    alpha = torch.sigmoid(theta.double())
    g, _ = GroupFisher().mask_grads(m, hooks, x, y, loss_fn, alpha, gates)
    w = marginal_channels(imp.double(), valid, alpha, 0.1)
    joint, _ = JointFisher().loss_grad(m, hooks, x, y, loss_fn, theta, gates)
    alone, _ = GroupFisher().loss_grad(m, hooks, x, y, loss_fn, theta, gates)
    s = alpha * (1 - alpha)
    for k in range(K):
        S = w[k] > 0
        # ½·mean_n (Σ_S g_n)² per channel of S, against Σ_S ½·mean_n g_n² per channel of S
        want_joint = 0.5 * g[:, k, S].sum(1).pow(2).mean() / S.sum()
        want_alone = 0.5 * g[:, k, S].pow(2).mean(0).sum() / S.sum()
        C = valid[k].sum()
        assert float(joint[k]) == pytest.approx(float(-C * want_joint * s[k]), rel=1e-4)
        assert float(alone[k]) == pytest.approx(float(-C * want_alone * s[k]), rel=1e-4)
        if S.sum() == 1:  # one channel next: nothing to cross
            assert float(joint[k]) == pytest.approx(float(alone[k]), rel=1e-4)
    assert hooks.masks is None
    hooks.remove()


def test_centred_masks_replace_a_removed_channel_by_its_batch_mean():
    m, G, imp, valid, hooks = _resnet20_gates()
    x = torch.randn(3, 3, 32, 32)
    seen = {}
    name = G.prunable[1].masked[0]
    h = G.module(name).register_forward_hook(lambda _m, _i, out: seen.update(out=out.clone()))
    try:
        with torch.no_grad():
            m(x)
            plain = seen["out"].clone()
            mask = torch.ones(len(G.prunable), imp.shape[1])
            mask[1, 0] = 0.0
            hooks.set(mask, centre=True)
            m(x)
    finally:
        hooks.clear()
        h.remove()
    # this hook runs after GateHooks' on the same module (registration order), and copies the
    # output before the in-place activation after it
    out = seen["out"]
    assert torch.allclose(out[:, 0], plain[:, 0].mean().expand_as(out[:, 0]), atol=1e-6)
    assert torch.allclose(out[:, 1:], plain[:, 1:], atol=1e-6)
    assert not hooks.centre  # clear() returns to plain masks
    hooks.remove()


def test_fisher_signal_protects_the_group_the_loss_depends_on():
    """Two parallel branches, one read by the classifier with a large weight, one with a tiny
    one: the loss gradient per unit of keep ratio must be far larger for the first."""
    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
            self.bna, self.bnb = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
            self.fa, self.fb = nn.Linear(8, 4), nn.Linear(8, 4)

        def forward(self, x):
            ha = self.bna(self.a(x)).relu().mean((2, 3))
            hb = self.bnb(self.b(x)).relu().mean((2, 3))
            return 10 * self.fa(ha) + 0.01 * self.fb(hb)

    m = Two().eval()
    G = find_groups(m, torch.zeros(1, 3, 8, 8))
    order = [g.producers[0] for g in G.prunable]
    imp, valid = pad_groups(channel_importance(G))
    hooks = GateHooks(G)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))
    theta = torch.zeros(len(G.prunable))
    g, _ = GroupFisher().loss_grad(
        m, hooks, x, y, nn.functional.cross_entropy, theta, GateState(imp, valid, None)
    )
    ga, gb = g[order.index("a")], g[order.index("b")]
    assert ga < 0 and gb <= 0 and ga.abs() > 100 * gb.abs()


def test_straight_through_estimator_returns_the_gate_gradient():
    m, G, imp, valid, hooks = _resnet20_gates()

    def probabilities(a, iters):
        return keep_probabilities(imp, valid, a, 1.0, iters)[0]

    theta = torch.full((len(G.prunable),), 2.0)
    g, loss = make_estimator("ste").loss_grad(
        m,
        hooks,
        torch.randn(8, 3, 32, 32),
        torch.randint(0, 10, (8,)),
        nn.functional.cross_entropy,
        theta,
        GateState(imp, valid, probabilities),
    )
    assert g.shape == theta.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    assert hooks.masks is None and loss > 0


def test_registries_name_what_they_know():
    assert set(ESTIMATORS) == {"fisher", "fisher_centred", "fisher_joint", "fisher_step", "ste"}
    with pytest.raises(ValueError, match="fisher_step' reads its signal at the top-n mask"):
        dsaprune.DSAConfig(estimator="fisher_step", sample_train_masks=True)
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'; known: fisher, fisher_"):
        make_estimator("reinforce")
    with pytest.raises(ValueError, match="unknown estimator"):
        dsaprune.DSAConfig(estimator="reinforce")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="alloc_samples is a whole number of samples"):
            dsaprune.DSAConfig(alloc_samples=bad)
    assert list(METHODS) == [
        "dsa", "uniform", "magnitude", "ssl", "morphnet", "group_fisher", "group_fisher_iterative",
        "given",
    ]  # fmt: skip
    assert [n for n, c in METHODS.items() if c.takes_counts] == ["given"]
    assert [n for n, c in METHODS.items() if c.iterative] == ["group_fisher_iterative"]
    with pytest.raises(ValueError, match="sample_train_masks=True .* is DSA's alone"):
        dsaprune.DSAConfig(method="group_fisher_iterative", sample_train_masks=True)
    assert [n for n, c in METHODS.items() if c.reads_validation] == ["dsa"]
    assert [n for n, c in METHODS.items() if c.penalised] == ["ssl", "morphnet"]
    # the settings a method cannot read are real settings, and DSA reads every one
    known = set(dsaprune.DSAConfig().to_dict())
    for cls in METHODS.values():
        assert cls.unread_settings() <= known
    assert METHODS["dsa"].unread_settings() == frozenset()
    assert "importance" in METHODS["magnitude"].unread_settings()
    assert {"importance", "warmup_fraction"}.isdisjoint(METHODS["uniform"].unread_settings())
    assert "estimator" in METHODS["group_fisher"].unread_settings()
    # the iterative rounds keep the allocator's pace (target_fraction)
    assert "allocator" not in METHODS["group_fisher_iterative"].unread_settings()
    with pytest.raises(ValueError, match="unknown method 'l1'"):
        make_method("l1")


def test_a_theta_step_reads_the_first_alloc_samples_of_tensor_batches_only():
    from dsaprune.pruner.allocate import _theta_samples

    x, y = torch.randn(10, 3), torch.arange(10)
    xs, ys = _theta_samples(x, y, 4)
    assert torch.equal(xs, x[:4]) and torch.equal(ys, y[:4])
    assert _theta_samples(x, y, None) == (x, y)
    assert _theta_samples(x, y, 64)[0].shape[0] == 10  # a smaller batch is read whole
    targets = [{"boxes": torch.zeros(2, 4)} for _ in range(10)]  # the user's layout: kept
    assert _theta_samples(x, targets, 4) == (x, targets)
    short = y[:5]
    assert _theta_samples(x, short, 4) == (x, short)  # not batch-first alike: kept


def test_recalibrate_bn_sets_running_stats_to_the_average_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    batches = [(torch.randn(8, 3, 6, 6) * 3 + 1, None) for _ in range(3)]
    net.train()
    net(torch.randn(8, 3, 6, 6))  # running stats now something else
    net.eval()
    recalibrate_bn(net, batches, max_batches=3)
    assert not net.training
    with torch.no_grad():
        z = [net[0](x) for x, _ in batches]
    mean = torch.stack([v.mean((0, 2, 3)) for v in z]).mean(0)
    assert torch.allclose(net[1].running_mean, mean, atol=1e-5)
    assert net[1].momentum == 0.1  # restored


@pytest.mark.parametrize(
    "settings",
    [
        {"estimator": "fisher"},
        {"estimator": "fisher_joint"},
        {"estimator": "fisher_step"},  # read off the training steps' own backward
        {"estimator": "fisher", "alloc_samples": 8},  # a Θ-step reads 8 held-out samples
        {"estimator": "fisher", "signal_bf16": True},  # the Θ-step's pass in bfloat16
        {"estimator": "ste", "sample_train_masks": True},  # the paper's mechanics
    ],
)
def test_dsa_allocates_to_budget_with_each_estimator(tiny_net, settings):
    from test_prune import _loaders

    torch.manual_seed(0)
    tr, _ = _loaders()
    res = dsaprune.prune(
        tiny_net(), tr, budget="flops=0.5", epochs=1.5, progress=False, device="cpu", **settings
    )
    r = res.report
    assert 0.97 * 0.5 <= r["flops_ratio"] <= 0.5
    assert r["allocation_updates"] > 0 and r["met_by"] in ("allocator", "shift")
    assert r["dsa_config"]["estimator"] == settings["estimator"]
    assert r["dsa_config"]["alloc_samples"] == settings.get("alloc_samples")


def test_signal_bf16_runs_the_theta_steps_alone_in_bfloat16_on_the_cpu(tiny_net):
    """With ``signal_bf16`` the Θ-step's held-out pass (eval mode) runs under bfloat16
    autocast on the CPU, and nothing else does: the weight steps and the channel order's Fisher
    stay float32; without it every pass is float32."""
    from test_prune import _loaders

    with pytest.raises(ValueError, match="signal_bf16 is true or false"):
        dsaprune.DSAConfig(signal_bf16="yes")
    tr, _ = _loaders()
    for bf16 in (False, True):
        torch.manual_seed(0)
        net = tiny_net()
        seen = {True: set(), False: set()}  # training mode -> output dtypes of the first conv
        conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o, seen=seen: seen[m.training].add(o.dtype))
        res = dsaprune.prune(
            net, tr, budget="flops=0.5", epochs=1, progress=False, device="cpu",
            warmup_fraction=0.0, window_end_fraction=1.0, signal_bf16=bf16,
        )  # fmt: skip
        assert res.report["allocation_updates"] > 0 and res.report["flops_ratio"] <= 0.5
        assert seen[True] == {torch.float32}
        assert seen[False] == ({torch.float32, torch.bfloat16} if bf16 else {torch.float32})


def test_signal_every_takes_a_held_out_pass_at_every_nth_update_only(tiny_net):
    from test_prune import _loaders

    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="signal_every is a whole number of α updates"):
            dsaprune.DSAConfig(signal_every=bad)
    with pytest.raises(ValueError, match="signal_every applies to a held-out pass"):
        dsaprune.DSAConfig(estimator="fisher_step", signal_every=2)
    # the default: set by the run's window (below); every update's own for fisher_step
    assert dsaprune.DSAConfig().signal_every is None
    assert dsaprune.DSAConfig(estimator="fisher_step").signal_every == 1
    assert dsaprune.DSAConfig(signal_every=1).to_dict()["signal_every"] == 1
    tr, _ = _loaders()
    torch.manual_seed(0)
    res = dsaprune.prune(
        tiny_net(), tr, budget="flops=0.5", epochs=1, progress=False, device="cpu",
        warmup_fraction=0.0, window_end_fraction=1.0, signal_every=3,
    )  # fmt: skip
    r = res.report
    passes = ["val_loss" in h for h in r["allocation_history"]]
    assert len(passes) == r["allocation_updates"] > 3
    assert passes == [i % 3 == 0 for i in range(len(passes))]
    assert 0.97 * 0.5 <= r["flops_ratio"] <= 0.5


def test_the_default_signal_every_leaves_a_short_window_enough_held_out_passes(tiny_net):
    """A pass every HELD_OUT_SIGNAL_EVERY updates where the window holds enough updates for
    MIN_HELD_OUT_PASSES passes; fewer updates per pass on a shorter window, down to one per
    update; a value given is kept, and a run records the value it used."""
    from dsaprune.pruner.config import HELD_OUT_SIGNAL_EVERY, MIN_HELD_OUT_PASSES

    cfg = dsaprune.DSAConfig(warmup_fraction=0.0, window_end_fraction=1.0, alloc_every=1)
    enough = HELD_OUT_SIGNAL_EVERY * MIN_HELD_OUT_PASSES  # updates (one per step here)
    assert cfg.for_run(8, enough).signal_every == HELD_OUT_SIGNAL_EVERY
    assert cfg.for_run(8, 100 * enough).signal_every == HELD_OUT_SIGNAL_EVERY
    assert cfg.for_run(8, enough - 1).signal_every == HELD_OUT_SIGNAL_EVERY - 1
    assert cfg.for_run(8, 2 * MIN_HELD_OUT_PASSES).signal_every == 2
    assert cfg.for_run(8, 2 * MIN_HELD_OUT_PASSES - 1).signal_every == 1
    assert cfg.for_run(8, 9).signal_every == 1  # the demo's window: a pass at every update
    assert replace(cfg, signal_every=3).for_run(8, 9).signal_every == 3  # given: kept
    # the library's CIFAR-10 schedules (390 steps an epoch): 8 epochs from scratch and a
    # 2-epoch fine-tune from a checkpoint (no warm-up) take a pass every fourth update
    assert dsaprune.DSAConfig().for_run(8, 8 * 390).signal_every == 4
    assert dsaprune.DSAConfig(warmup_fraction=0.0).for_run(2, 2 * 390).signal_every == 4
    x = torch.randn(4, 3, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    for steps, every in ((30, 1), (60, 2)):  # one update per step here
        p = dsaprune.Pruner(tiny_net(), x[:1], "flops=0.5", total_steps=steps,
                            val_data=[(x, y)], warmup_fraction=0.0, window_end_fraction=1.0,
                            alloc_every=1, min_updates=1)  # fmt: skip
        assert p.cfg.signal_every == every  # what the report's dsa_config and a checkpoint hold


@pytest.mark.parametrize(
    "settings, reader",
    [({"estimator": "fisher_step"}, "estimator 'fisher_step'"),
     ({"method": "group_fisher_iterative"}, "method 'group_fisher_iterative'")],
)  # fmt: skip
def test_a_step_that_left_no_mask_gradients_names_the_call_order(tiny_net, settings, reader):
    """The readers of the training step's own mask gradients fail at once, naming the order
    of calls, when pruner.step() comes without a backward through the gated model."""
    net = tiny_net()
    x = torch.randn(4, 3, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    p = dsaprune.Pruner(
        net, x[:1], "flops=0.5", total_steps=10, train_data=[(x, y)],
        warmup_fraction=0.0, window_end_fraction=1.0, alloc_every=1, min_updates=1, **settings,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=f"{reader} reads the mask gradients.*after loss"):
        for _ in range(3):
            p.step()
    assert p.phase == "allocate"


def test_fisher_step_holds_out_no_batches_so_the_weights_train_on_all(tiny_net, monkeypatch):
    """``fisher_step`` reads the weight step's own backward: no batch is held out of training,
    and the Pruner needs no val_data; a held-out estimator still requires it."""
    assert dsaprune.DSAConfig().reads_held_out
    assert not dsaprune.DSAConfig(estimator="fisher_step").reads_held_out
    assert not dsaprune.DSAConfig(method="uniform").reads_held_out
    net = tiny_net()
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(ValueError, match="'fisher' reads held-out batches.*pass val_data"):
        dsaprune.Pruner(net, x[:1], "flops=0.5", total_steps=10, train_data=[(x, None)])
    p = dsaprune.Pruner(
        net, x[:1], "flops=0.5", total_steps=10, train_data=[(x, None)], estimator="fisher_step"
    )
    assert p.phase in ("warmup", "allocate") and not p.holds_out

    from test_prune import _loaders

    api = importlib.import_module("dsaprune.api")  # the module, not the prune() re-export
    split = []
    real = api.hold_out
    monkeypatch.setattr(api, "hold_out", lambda d: split.append(d) or real(d))
    tr, _ = _loaders()
    for estimator, holds in (("fisher_step", False), ("fisher", True)):
        torch.manual_seed(0)
        split.clear()
        res = dsaprune.prune(
            tiny_net(), tr, budget="flops=0.5", epochs=1, progress=False, device="cpu",
            warmup_fraction=0.0, window_end_fraction=1.0, estimator=estimator,
        )  # fmt: skip
        assert res.report["allocation_updates"] > 0 and res.report["flops_ratio"] <= 0.5
        assert bool(split) == holds
