"""torchvision / timm model definitions behind ``torchvision:NAME`` / ``timm:NAME``. Skipped
where the packages are not installed (``make`` installs them without their dependencies)."""

import importlib.util

import pytest
import torch

import dsaprune
from dsaprune import models
from dsaprune.cost import count_flops

needs_tv = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed"
)
needs_timm = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None or importlib.util.find_spec("torchvision") is None,
    reason="timm is not installed",
)


def _prune(name, tmp_path, size=32):
    torch.manual_seed(0)
    net = models.create(name, num_classes=10).eval()
    x = torch.randn(2, 3, size, size)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, size, size, generator=g), torch.randint(0, 10, (4,)))] * 3
    res = dsaprune.prune(
        net,
        batches,
        batches[:1],
        budget="flops=0.5",
        epochs=1,
        warmup_fraction=0.0,
        window_end_fraction=1.0,
        progress=False,
        report_latency=False,
        example_inputs=x[:1],
    )
    full = count_flops(models.create(name, num_classes=10), (3, size, size))
    assert count_flops(res.model, (3, size, size)) <= 0.5 * full
    with torch.no_grad():
        y = res.model.eval()(x)
    assert y.shape == (2, 10)
    res.save(tmp_path / "m.pt", model_name=name)
    back = dsaprune.load(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.allclose(back(x), y, atol=1e-5)
    return res


@needs_tv
def test_torchvision_grouped_convolution_model_prunes_and_reloads(tmp_path):
    res = _prune("torchvision:regnet_x_400mf", tmp_path)
    assert res.report["groups"]


@needs_timm
def test_timm_model_prunes_and_reloads(tmp_path):
    _prune("timm:mobilenetv3_small_050", tmp_path)


@needs_tv
def test_unknown_external_model_names_close_ones():
    with pytest.raises(ValueError, match="close names: .*resnet18"):
        models.create("torchvision:resnet1")
    with pytest.raises(ValueError, match="unknown model source 'keras'"):
        models.create("keras:resnet50")


@needs_tv
def test_shufflenet_branches_are_pruned_exactly():
    """torchvision's ShuffleNetV2: the shuffled streams are kept, every branch's inner channels
    and the last convolution are pruned, and the cost models equal the counts."""
    from dsaprune.cost import count_flops, flops_model
    from dsaprune.grouping import find_groups
    from dsaprune.surgery import masked_then_pruned

    torch.manual_seed(0)
    net = models.create("torchvision:shufflenet_v2_x0_5", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="channel shuffle"):
        G = find_groups(net, x[:1])
    assert len(G.prunable) == 18  # stem, 16 branch interiors, conv5
    keep = [torch.randperm(g.channels)[: g.channels // 2] for g in G.prunable]
    alpha = torch.tensor([len(k) / g.channels for k, g in zip(keep, G.prunable, strict=True)])
    masked, pruned = masked_then_pruned(G, keep, x)
    assert torch.allclose(masked, pruned, atol=1e-5, rtol=1e-4)
    assert round(float(flops_model(G)(alpha.double()))) == count_flops(net, (3, 32, 32))
