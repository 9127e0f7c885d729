"""Data sets and loaders: CIFAR-10/100 (official pickles or image folders, folder or archive, or
downloaded), ImageNet-style folders, and the built-in ``shapes`` set. ``load_splits`` returns
train / validation / test :class:`ImageData`; ``make_loader`` turns one into device batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import cifar, imagefolder
from .cache import cached
from .common import DataError, ImageData, cache_dir, channel_stats, split_train_val
from .download import download
from .holdout import hold_out
from .imagefolder import FolderDataset
from .loaders import DeviceLoader, StreamLoader
from .shapes import load_shapes, make_shapes

DATASETS = ("shapes", "cifar10", "cifar100", "imagefolder", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class Splits:
    """The splits of one data set plus the normalisation statistics of its training images."""

    train: ImageData | FolderDataset
    test: ImageData | FolderDataset
    num_classes: int
    mean: list[float]
    std: list[float]
    streaming: bool = False


def _find_local(name: str, root: Path) -> Path | None:
    if root.is_file():
        return root
    if not root.is_dir():
        return None
    for cand in (root / cifar.FILES[name]["dir"], root):
        if cifar.is_python_layout(cand, name) or imagefolder.is_image_folder(cand):
            return cand
    archive = root / Path(cifar.FILES[name]["url"]).name
    return archive if archive.exists() else None


def _load_cifar(
    name: str, path: str | Path | None, allow_download: bool, progress: bool = False
) -> Splits:
    root = Path(path) if path else cache_dir() / "data" / name
    src = _find_local(name, root)
    if src is None:
        if path is not None and not allow_download:
            raise DataError(
                f"{root}: no {name} data there (expected the official python-version folder or "
                f"archive, or an image folder train/<class>/*, test/<class>/*); pass --download "
                "to fetch it into that folder"
            )
        spec = cifar.FILES[name]
        src = download(spec["url"], root / Path(spec["url"]).name, spec["md5"])
    if cifar.is_python_layout(src, name):
        train = cached(src, "train", lambda: cifar.load_python(src, name, "train"))
        test = cached(src, "test", lambda: cifar.load_python(src, name, "test"))
    elif imagefolder.is_image_folder(src):
        train = cached(src, "train", lambda: imagefolder.load_small(src, "train", None, progress))
        test = cached(
            src, "test", lambda: imagefolder.load_small(src, "test", train.classes, progress)
        )
    else:
        raise DataError(f"{src}: neither the official {name} python-version files nor an image folder")
    expected = 10 if name == "cifar10" else 100
    if train.num_classes != expected:
        raise DataError(f"{src}: found {train.num_classes} classes, {name} has {expected}")
    mean, std = channel_stats(train.images)
    return Splits(train, test, expected, mean, std)


def load_splits(
    dataset: str,
    path: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = 224,
    progress: bool = False,
) -> Splits:
    """Load a data set by name: ``shapes`` (built in), ``cifar10``, ``cifar100``,
    ``imagefolder`` (small images of one size, decoded into memory) or ``imagenet``
    (an ImageNet-style folder of any image sizes, streamed with multi-worker loading)."""
    if dataset == "shapes":
        train, test = load_shapes("train"), load_shapes("test")
        mean, std = channel_stats(train.images)
        return Splits(train, test, train.num_classes, mean, std)
    if dataset in ("cifar10", "cifar100"):
        return _load_cifar(dataset, path, download, progress)
    if path is None:
        raise DataError(f"data set {dataset!r} needs --data PATH")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if dataset == "imagefolder":
        train = cached(p, "train", lambda: imagefolder.load_small(p, "train", None, progress))
        test = cached(
            p, "test", lambda: imagefolder.load_small(p, "test", train.classes, progress)
        )
        mean, std = channel_stats(train.images)
        return Splits(train, test, train.num_classes, mean, std)
    if dataset == "imagenet":
        train = FolderDataset(p, "train", train=True, size=image_size)
        test = FolderDataset(p, "test", train=False, size=image_size)
        return Splits(train, test, len(train.classes), IMAGENET_MEAN, IMAGENET_STD, True)
    raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")


def make_loader(
    data: ImageData | FolderDataset,
    splits: Splits,
    batch_size: int,
    *,
    train: bool,
    device: torch.device | str = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    workers: int = 4,
) -> DeviceLoader | StreamLoader:
    """A loader of normalised device batches for one split."""
    kw = dict(train=train, mean=splits.mean, std=splits.std, device=device, seed=seed, rank=rank,
              world_size=world_size, channels_last=channels_last)
    if isinstance(data, FolderDataset):
        return StreamLoader(data, batch_size, workers=workers, **kw)
    return DeviceLoader(data, batch_size, **kw)


__all__ = [
    "DATASETS",
    "DataError",
    "DeviceLoader",
    "FolderDataset",
    "ImageData",
    "Splits",
    "StreamLoader",
    "channel_stats",
    "download",
    "hold_out",
    "load_shapes",
    "load_splits",
    "make_loader",
    "make_shapes",
    "split_train_val",
]
