import pytest
import torch

from dsaprune import count_flops, count_params, models

# (parameters, multiply-adds = FlopCounterMode FLOPs / 2, counting convolutions and the classifier)
EXACT = {
    "resnet20_a": (269_722, 40_551_040),
    "resnet20": (272_474, 40_813_184),  # + two 1x1 shortcut convs of 131,072 MACs each
    "resnet56_a": (853_018, 125_485_696),
    "resnet56": (855_770, 125_747_840),
    "resnet18_imagenet": (11_689_512, 1_814_073_344),
    "resnet50_imagenet": (25_557_032, 4_089_184_256),
    "mobilenetv2_imagenet": (3_504_872, 300_774_272),
}


@pytest.mark.parametrize("name", list(EXACT))
def test_counts_are_pinned(name):
    m = models.create(name)
    params, macs = EXACT[name]
    assert count_params(m) == params
    assert count_flops(m, models.input_size(name)) == 2 * macs


def test_counts_match_published_figures():
    def macs(n):
        return count_flops(models.create(n), models.input_size(n)) / 2

    assert round(count_params(models.create("resnet20")) / 1e6, 2) == 0.27
    assert round(macs("resnet20_a") / 1e6, 2) == 40.55  # the papers' ResNet-20 figure
    assert round(count_params(models.create("resnet56")) / 1e6, 2) == 0.86
    assert round(macs("resnet56_a") / 1e6, 1) == 125.5  # the papers' ResNet-56 figure
    assert count_params(models.create("resnet18_imagenet")) == 11_689_512
    assert abs(macs("resnet18_imagenet") / 1.82e9 - 1) < 0.005
    assert abs(macs("resnet50_imagenet") / 4.09e9 - 1) < 0.005
    assert round(macs("mobilenetv2_imagenet") / 1e9, 2) == 0.30


@pytest.mark.parametrize("name", models.names())
def test_forward_shapes(name):
    torch.manual_seed(0)
    m = models.create(name, num_classes=7).eval()
    c, h, w = models.input_size(name)
    if h > 64:  # keep the test fast: the ImageNet models run at a smaller size
        h = w = 64
    out = m(torch.randn(2, c, h, w))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_option_a_shortcut_has_no_parameters():
    a, b = models.create("resnet20_a"), models.create("resnet20")
    assert not any("downsample" in k for k, _ in a.named_parameters())
    assert sum("downsample" in k for k, _ in b.named_parameters()) == 6  # 2 x (conv, BN w, BN b)


# Shapes of torchvision's parameters, by name: a torchvision state_dict must load unchanged.
TORCHVISION_KEYS = {
    "resnet18_imagenet": {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_var": (128,),
        "layer4.1.bn2.num_batches_tracked": (),
        "fc.weight": (1000, 512),
    },
    "resnet50_imagenet": {
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer4.2.bn3.bias": (2048,),
        "fc.weight": (1000, 2048),
    },
    "mobilenetv2_imagenet": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.weight": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.running_mean": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    },
}


@pytest.mark.parametrize("name", list(TORCHVISION_KEYS))
def test_torchvision_parameter_names(name):
    sd = models.create(name).state_dict()
    for key, shape in TORCHVISION_KEYS[name].items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    # a state dict from elsewhere with the same names loads strictly
    other = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in sd.items()}
    m = models.create(name)
    m.load_state_dict(other, strict=True)


def test_state_dict_sizes_torchvision():
    # torchvision's state_dict lengths (parameters + BN buffers incl. num_batches_tracked)
    assert len(models.create("resnet18_imagenet").state_dict()) == 122
    assert len(models.create("resnet50_imagenet").state_dict()) == 320
    assert len(models.create("mobilenetv2_imagenet").state_dict()) == 314


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="resnet20"):
        models.create("resnet21")
