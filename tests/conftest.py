"""Shared fixtures: a private decode cache, tiny networks that train in seconds, and a loader
for the bench scripts."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

# Under pytest-xdist each worker gets its share of the cores (and so do the processes it starts):
# two torch processes with a thread per core each would fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def pytest_collection_modifyitems(config, items):
    # the slow tests first (a stable sort): under pytest-xdist the short ones then fill in
    # beside them, instead of one long test running alone at the end
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DSAPRUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10, bn: bool = True) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=not bn),
            norm(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=not bn),
            norm(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture
def tiny_net():
    return TinyNet


@pytest.fixture(scope="session")
def bench_script():
    """``bench_script(name, "latency.py")``: a bench script as a module, registered under
    ``name`` (its dataclasses look their module up) until the session ends."""
    loaded = []

    def load(name: str, script: str):
        path = Path(__file__).resolve().parents[1] / "bench" / script
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        loaded.append(name)
        spec.loader.exec_module(mod)
        return mod

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def write_image_folder(root: Path, n: int) -> None:
    """An image folder of ``n`` random 32x32 PNGs per class ("a", "b") in train/ and test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


@pytest.fixture
def image_folder():
    """``image_folder(root, n)``: see :func:`write_image_folder`."""
    return write_image_folder


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory) -> Path:
    """A ``--config`` file for CLI runs whose subject is not the allocation's quality: the
    channels' Fisher order on 2 training batches instead of 20 (seconds instead of ~10 s)."""
    path = tmp_path_factory.mktemp("config") / "fast.yaml"
    path.write_text("dsa:\n  fisher_batches: 2\n")
    return path


@pytest.fixture(scope="session")
def fast_args(fast_config) -> list[str]:
    """The options of an in-process CLI run whose subject is not the allocation's quality nor
    the latency report (both have tests of their own): :func:`fast_config` and no latency
    report."""
    return ["--config", str(fast_config), "--no-latency-report"]


@pytest.fixture
def small_shapes(monkeypatch) -> int:
    """The built-in ``shapes`` set with 500 test images instead of 2000 (returned), for
    in-process CLI tests whose subject is the plumbing: every run scores the test split two or
    three times (before, after its last epoch, the cut network), ~7 s each for 2000 images at
    one thread."""
    return use_small_shapes(monkeypatch)


def use_small_shapes(mp: pytest.MonkeyPatch, n_test: int = 500) -> int:
    """See :func:`small_shapes`; for module-scoped fixtures (``pytest.MonkeyPatch.context()``)."""
    import dsaprune.data as data

    full = data.load_shapes
    mp.setattr(data, "load_shapes", lambda split, **kw: full(split, **{"n_test": n_test, **kw}))
    return n_test
