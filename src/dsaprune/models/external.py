"""Model definitions from other libraries: ``torchvision:NAME`` and ``timm:NAME``.

Each library is one :class:`Source` in ``SOURCES``; a new one is a class and a registry line.

torchvision's model definitions are plain Python, but ``import torchvision`` also loads its
compiled operators, and a torchvision wheel built for another torch (the package registry's is a
CUDA build) fails there, while registering them, although the models need none of them. When
that import fails, :func:`import_torchvision` loads torchvision's sub-packages without running
its top-level ``__init__`` (an empty package module whose search path is the installed
torchvision's), so ``torchvision.models`` works and so does timm, which imports torchvision.
Nothing installed is edited; the stand-in exists only in this process, and a warning says so.
Install both without their dependencies so that pip leaves the CPU torch alone::

    pip install --no-deps torchvision timm
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..registry import create

ImageShape = tuple[int, int, int]


class ModelSourceError(ValueError):
    """The external model library is missing, or it has no such model."""


def import_torchvision() -> types.ModuleType:
    """``torchvision`` for its model definitions; see the module docstring."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "torchvision is not installed; install it with `pip install --no-deps torchvision` "
            "(or `pip install -e .[zoo]`, see the README)"
        )
    try:
        return importlib.import_module("torchvision")
    except Exception as e:  # its compiled operators do not match this torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        package = types.ModuleType("torchvision")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        package.__version__ = "definitions-only"
        # the one helper of its top-level module that the detection models call
        package._is_tracing = lambda: torch._C._get_tracing_state() is not None
        sys.modules["torchvision"] = package
        warnings.warn(
            f"`import torchvision` failed ({type(e).__name__}: {str(e)[:120]}); its model "
            "definitions are loaded without its compiled operators, which they do not need",
            stacklevel=2,
        )
        return package


class Source(ABC):
    """A library of model definitions."""

    @abstractmethod
    def create(self, name: str, num_classes: int | None) -> nn.Module: ...

    @abstractmethod
    def names(self) -> list[str]: ...

    input_size: ImageShape = (3, 224, 224)
    default_classes: int = 1000

    def unknown(self, kind: str, name: str) -> ModelSourceError:
        close = [n for n in self.names() if name.lower() in n.lower()][:8]
        hint = f"; close names: {', '.join(close)}" if close else ""
        return ModelSourceError(f"{kind} has no model {name!r}{hint}")


class Torchvision(Source):
    def _models(self):
        import_torchvision()
        return importlib.import_module("torchvision.models")

    def names(self) -> list[str]:
        tvm = self._models()
        return sorted(tvm.list_models(module=tvm))

    def create(self, name: str, num_classes: int | None) -> nn.Module:
        tvm = self._models()
        if name not in tvm.list_models(module=tvm):
            raise self.unknown("torchvision.models", name)
        kw = {"num_classes": num_classes} if num_classes else {}
        if name.startswith("inception") or name.startswith("googlenet"):
            kw.update(aux_logits=False, init_weights=True)
        return tvm.get_model(name, weights=None, **kw)


class Timm(Source):
    def _timm(self):
        import_torchvision()
        try:
            return importlib.import_module("timm")
        except ModuleNotFoundError as e:
            raise ModelSourceError(
                f"timm is not installed ({e}); install it with `pip install --no-deps timm "
                "huggingface_hub safetensors` (or `pip install -e .[zoo]`, see the README)"
            ) from None

    def names(self) -> list[str]:
        return list(self._timm().list_models())

    def create(self, name: str, num_classes: int | None) -> nn.Module:
        timm = self._timm()
        if not timm.is_model(name):
            raise self.unknown("timm", name)
        kw = {"num_classes": num_classes} if num_classes else {}
        return timm.create_model(name, pretrained=False, **kw)


SOURCES = {"torchvision": Torchvision, "timm": Timm}


def split(name: str) -> tuple[Source, str] | None:
    """(source, model name) for ``source:model``, or None for a zoo name."""
    if ":" not in name:
        return None
    prefix, model = name.split(":", 1)
    return create(SOURCES, prefix, "model source"), model
