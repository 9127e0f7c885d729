"""The model zoo: ``create(name, num_classes=...)`` builds a model, ``names()`` lists them,
``load_weights(model, path)`` starts it from a ``state_dict`` file. ``torchvision:NAME`` and
``timm:NAME`` build those libraries' models (``dsaprune.models.external``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .external import ModelSourceError, import_torchvision, split
from .mobilenetv2 import MobileNetV2, mobilenetv2_cifar, mobilenetv2_imagenet
from .resnet import ResNet, cifar_resnet, resnet18_cifar, resnet18_imagenet, resnet50_imagenet
from .vgg import VGG, vgg16_cifar
from .weights import load_weights

# name -> (builder, input size (C, H, W), default number of classes)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int], int]] = {}
for _d in (20, 32, 44, 56, 110):
    _REGISTRY[f"resnet{_d}"] = (partial(cifar_resnet, _d, shortcut="B"), (3, 32, 32), 10)
    _REGISTRY[f"resnet{_d}_a"] = (partial(cifar_resnet, _d, shortcut="A"), (3, 32, 32), 10)
_REGISTRY["resnet18_cifar"] = (resnet18_cifar, (3, 32, 32), 10)
_REGISTRY["vgg16_cifar"] = (vgg16_cifar, (3, 32, 32), 10)
_REGISTRY["mobilenetv2_cifar"] = (mobilenetv2_cifar, (3, 32, 32), 10)
_REGISTRY["resnet18_imagenet"] = (resnet18_imagenet, (3, 224, 224), 1000)
_REGISTRY["resnet50_imagenet"] = (resnet50_imagenet, (3, 224, 224), 1000)
_REGISTRY["mobilenetv2_imagenet"] = (mobilenetv2_imagenet, (3, 224, 224), 1000)


def names() -> list[str]:
    """All model names that ``create`` accepts."""
    return list(_REGISTRY)


def _entry(name: str):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def create(name: str, num_classes: int | None = None) -> nn.Module:
    """Build model ``name`` (a zoo name, ``torchvision:NAME`` or ``timm:NAME``) with freshly
    initialised weights."""
    external = split(name)
    if external is not None:
        source, model = external
        return source.create(model, num_classes)
    builder, _, default_classes = _entry(name)
    return builder(num_classes=num_classes or default_classes)


def input_size(name: str) -> tuple[int, int, int]:
    """The (C, H, W) input the model was designed for."""
    external = split(name)
    if external is not None:
        return external[0].input_size
    return _entry(name)[1]


def default_classes(name: str) -> int:
    external = split(name)
    return external[0].default_classes if external is not None else _entry(name)[2]


__all__ = [
    "ModelSourceError",
    "MobileNetV2",
    "ResNet",
    "VGG",
    "create",
    "default_classes",
    "import_torchvision",
    "input_size",
    "load_weights",
    "names",
    "mobilenetv2_cifar",
    "mobilenetv2_imagenet",
    "resnet18_cifar",
    "resnet18_imagenet",
    "resnet50_imagenet",
    "vgg16_cifar",
]
