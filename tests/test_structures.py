"""Invariants on small instances of each structural feature real networks have: grouped and
depthwise convolutions, per-channel parameters outside BN (a layer scale, LayerNorm over
channels), a convolutional classifier, split then concatenation, squeeze-excitation, a
per-channel gain owned by a convolution, a channel shuffle (the groups crossing it kept whole,
the rest pruned), and a channel permutation the graph cannot see (found, its group left whole).
For each: the output layer is never pruned, the cost models equal the counts of the physically
pruned network, the masked network computes what the pruned one does, and a saved pruned network
reloads to the same outputs."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dsaprune
from dsaprune.cost import count_flops, count_params, flops_model, params_model
from dsaprune.grouping import find_groups
from dsaprune.surgery import load, masked_then_pruned, prune_groups, save, top_channels

SIZE = (3, 12, 12)


def _bn(c):
    bn = nn.BatchNorm2d(c)
    bn.weight.data.uniform_(0.2, 1.2)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.running_mean.uniform_(-0.3, 0.3)
    return bn


class Grouped(nn.Module):
    """A ResNeXt / RegNet block body: a grouped convolution between 1x1s, then a depthwise."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        self.g = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, groups=4), _bn(32), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), _bn(32), nn.ReLU())
        self.g2 = nn.Sequential(nn.Conv2d(32, 24, 1, groups=2, bias=False), _bn(24), nn.ReLU())
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.g2(self.dw(self.g(self.a(x)))).mean((2, 3)))


class LayerScale(nn.Module):
    """A ConvNeXt block: depthwise conv, channels-last LayerNorm and MLP, a layer scale."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _bn(16))
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.ln = nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 48), nn.Linear(48, 16)
        self.gamma = nn.Parameter(torch.rand(16) + 0.5)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.ln(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(F.gelu(self.fc1(y))) * self.gamma
        return self.head((x + y.permute(0, 3, 1, 2)).mean((2, 3)))


class ConvClassifier(nn.Module):
    """SqueezeNet's ending: the logits are a 1x1 convolution's channels, then global pooling."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1, bias=False), _bn(24), nn.ReLU())
        self.classifier = nn.Conv2d(24, 10, 1)

    def forward(self, x):
        return self.classifier(self.b(self.a(x))).mean((2, 3))


class SplitConcat(nn.Module):
    """Split a tensor, transform one half, concatenate (ShuffleNetV2 without the shuffle), and
    an Inception-style concatenation of two branches."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), _bn(32), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), _bn(16))
        self.b1 = nn.Sequential(nn.Conv2d(32, 8, 1, bias=False), _bn(8), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(32, 12, 3, padding=1, bias=False), _bn(12), nn.ReLU())
        self.fc = nn.Linear(20, 10)

    def forward(self, x):
        x = self.a(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.right(right)], dim=1)
        return self.fc(torch.cat([self.b1(x), self.b2(x)], dim=1).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), _bn(32), nn.ReLU())
        self.se1, self.se2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.b = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.a(x)
        s = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        return self.fc(self.b(x * s).mean((2, 3)))


def _shuffle(x, groups=2):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Two ShuffleNetV2 units: a stride-2 unit of two branches, then a unit that passes half its
    channels through; each concatenates and shuffles. The branches' inner channels are pruned,
    the shuffled stream is kept."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), _bn(8), nn.ReLU())
        self.b1 = nn.Sequential(
            nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False), _bn(8),
            nn.Conv2d(8, 8, 1, bias=False), _bn(8), nn.ReLU(),
        )  # fmt: skip
        self.b2 = self._branch(8, 12, 8, stride=2)
        self.u2 = self._branch(8, 10, 8, stride=1)
        self.head = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), _bn(24), nn.ReLU())
        self.fc = nn.Linear(24, 10)

    @staticmethod
    def _branch(cin, mid, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), _bn(mid),
            nn.Conv2d(mid, cout, 1, bias=False), _bn(cout), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x):
        x = self.stem(x)
        x = _shuffle(torch.cat([self.b1(x), self.b2(x)], 1))
        x1, x2 = x.chunk(2, dim=1)
        x = _shuffle(torch.cat([x1, self.u2(x2)], 1))
        return self.fc(self.head(x).mean((2, 3)))


class GainConv(nn.Conv2d):
    """A convolution with a per-output-channel gain, as NF-ResNet's weight-standardised ones
    (without the standardisation, whose statistics change when input channels go)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.gain, self.bias, self.stride, self.padding)


class ConvGain(nn.Module):
    """Convolutions that own a per-channel parameter besides weight and bias."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(GainConv(3, 16, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(GainConv(16, 12, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


class Flip(nn.Module):
    """A channel permutation that the dependency graph passes as an identity (reversal)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), _bn(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.b(self.a(x).flip(1)).mean((2, 3)))


class Dense(nn.Module):
    """A DenseNet block: pre-activation layers whose outputs are concatenated, so a group's
    channels are a part of every later BN's."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.l1 = nn.Sequential(_bn(8), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1, bias=False))
        self.l2 = nn.Sequential(_bn(14), nn.ReLU(), nn.Conv2d(14, 6, 3, padding=1, bias=False))
        self.out = nn.Sequential(_bn(20), nn.ReLU())
        self.fc = nn.Linear(20, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        return self.fc(self.out(x).mean((2, 3)))


NETS = {
    "grouped": Grouped,
    "layer_scale": LayerScale,
    "conv_classifier": ConvClassifier,
    "split_concat": SplitConcat,
    "squeeze_excite": SqueezeExcite,
    "dense": Dense,
    "channel_shuffle": ChannelShuffle,
    "conv_gain": ConvGain,
}


def _keep(G, seed, exact_groups=None):
    """Random whole-unit counts per group and the channels each keeps; groups not in
    ``exact_groups`` (when given) keep everything."""
    g = torch.Generator().manual_seed(seed)
    keep, alpha = [], []
    for k, grp in enumerate(G.prunable):
        units = grp.channels // grp.unit
        n = int(torch.randint(1, units + 1, (), generator=g)) * grp.unit
        if exact_groups is not None and k not in exact_groups:
            n = grp.channels
        imp = torch.rand(grp.channels, generator=g)
        keep.append(top_channels(imp, n, grp.unit))
        alpha.append(n / grp.channels)
    return keep, torch.tensor(alpha, dtype=torch.float64)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_structure_invariants(name, seed, tmp_path):
    torch.manual_seed(seed)
    net = NETS[name]().eval()
    x = torch.randn(3, *SIZE)
    with torch.no_grad():
        full_out = net(x)
    G = find_groups(net, x[:1])
    assert G.prunable, "every structure has something to prune"
    Fm, Pm = flops_model(G), params_model(G)
    assert round(Fm.full) == count_flops(net, SIZE) and round(Pm.full) == count_params(net)
    # LayerNorm over channels normalises over the zeros a mask leaves, so masking its group is
    # an approximation of pruning it: the masked-equals-pruned check leaves that group whole
    exact = [k for k, g in enumerate(G.prunable) if "ln.weight" not in g.channel_params]
    keep, alpha = _keep(G, seed, exact if name == "layer_scale" else None)
    masked, pruned = masked_then_pruned(G, keep, x)
    assert pruned.shape == full_out.shape  # the output layer keeps its channels
    assert torch.allclose(masked, pruned, atol=1e-5, rtol=1e-4)
    assert round(float(Fm(alpha))) == count_flops(net, SIZE)
    assert round(float(Pm(alpha))) == count_params(net)
    save(net, tmp_path / "m.pt")
    back = load(tmp_path / "m.pt", NETS[name]())
    with torch.no_grad():
        assert torch.equal(back(x), pruned)


def test_layer_scale_and_layernorm_lose_the_stream_channels(tmp_path):
    torch.manual_seed(0)
    net = LayerScale().eval()
    x = torch.randn(2, *SIZE)
    G = find_groups(net, x[:1])
    stream = next(g for g in G.prunable if "gamma" in g.channel_params)
    assert {"ln.weight", "ln.bias"} <= set(stream.channel_params)
    keep = [torch.arange(g.channels) for g in G.prunable]
    keep[G.prunable.index(stream)] = torch.arange(0, 16, 2)
    prune_groups(G, keep)
    assert net.gamma.shape == (8,) and net.ln.normalized_shape == (8,)
    assert net(x).shape == (2, 10)
    save(net, tmp_path / "m.pt")
    back = load(tmp_path / "m.pt", LayerScale())
    assert torch.equal(back(x), net(x))


def test_grouped_convolutions_lose_the_same_positions_in_every_group():
    net = Grouped().eval()
    G = find_groups(net, torch.zeros(1, *SIZE))
    units = {g.describe(): g.unit for g in G.prunable}
    assert units[G.prunable[0].describe()] == 4  # feeds the 4-group convolution
    assert max(units.values()) == 4 and min(units.values()) == 2  # the 2-group one
    g0 = G.prunable[0]
    keep = [torch.arange(g.channels) for g in G.prunable]
    keep[0] = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])  # two of the four blocks: not whole units
    with pytest.raises(ValueError, match="same positions"):
        prune_groups(G, keep)
    assert top_channels(torch.arange(16.0), 8, g0.unit).tolist() == [2, 3, 6, 7, 10, 11, 14, 15]


def test_given_counts_must_be_whole_units_of_a_grouped_convolution():
    def given(counts):
        net = Grouped()
        return dsaprune.Pruner(
            net, torch.zeros(1, *SIZE), "flops=0.9", total_steps=4, method="given",
            keep_counts=counts,
        )  # fmt: skip

    with pytest.raises(ValueError, match=r"a multiple of its unit \[4, 4, 2\]"):
        given([10, 32, 24])  # 10 channels of a group dropped in units of 4
    assert given([12, 28, 24]).finish().report["keep_counts"] == [12, 28, 24]


def test_channel_shuffle_streams_are_kept_and_the_branches_pruned():
    """A shuffle's channel order depends on the width, so the groups that cross it keep their
    channels; the branches' inner channels, the stem and the head are pruned."""
    net = ChannelShuffle().eval()
    with pytest.warns(UserWarning, match="2 channel group.*pass through a channel shuffle"):
        G = find_groups(net, torch.zeros(1, *SIZE))
    assert len(G.prunable) == 4
    for layer in ("stem.0", "b2.0", "u2.0", "head.0"):
        assert any(layer in g.producers for g in G.prunable)
    inner = next(g for g in G.prunable if "u2.0" in g.producers)
    assert inner.channels == 10 and sorted(inner.consumers) == ["u2.5"]


def test_a_channel_permutation_is_found_and_its_group_left_whole(tmp_path):
    """A permutation the dependency graph passes as an identity would make pruning compute
    something else; the channel-map check finds it and leaves the group before it unpruned."""
    torch.manual_seed(0)
    net = Flip().eval()
    x = torch.randn(3, *SIZE)
    with pytest.warns(UserWarning, match="does not arrive at input channel"):
        G = find_groups(net, x[:1])
    assert [g.producers for g in G.prunable] == [["b.0"]]
    keep, alpha = _keep(G, 0)
    masked, pruned = masked_then_pruned(G, keep, x)
    assert torch.allclose(masked, pruned, atol=1e-5, rtol=1e-4)
    assert round(float(flops_model(G)(alpha))) == count_flops(net, SIZE)
