"""The in-memory image set that small data sets decode into, its checks, split and statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..io import cache_dir  # noqa: F401  (re-exported)


class DataError(ValueError):
    """A data set is missing, malformed or inconsistent; the message says what to do."""


@dataclass
class ImageData:
    """Decoded images as one uint8 tensor ``[N, H, W, 3]`` with int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[3] != 3:
            raise DataError(
                f"{self.source or 'data'}: images must be uint8 [N, H, W, 3], got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.source or 'data'}: {self.images.shape[0]} images but "
                f"{self.labels.numel()} labels"
            )
        self.labels = self.labels.long()
        if self.labels.numel():
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= len(self.classes):
                raise DataError(
                    f"{self.source or 'data'}: label {hi if hi >= len(self.classes) else lo} is "
                    f"out of range for {len(self.classes)} classes "
                    f"(valid: 0..{len(self.classes) - 1})"
                    "; the file is corrupt or belongs to another data set"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, index: torch.Tensor | slice, source_suffix: str = "") -> ImageData:
        return ImageData(
            self.images[index], self.labels[index], self.classes, self.source + source_suffix
        )


def split_train_val(data, val_fraction: float = 0.1) -> tuple:
    """Hold out the last ``val_fraction`` of *each class* (in file order) for validation.

    Stratified, because image folders list one class after another: a plain "last 10%" of a
    class-sorted set is a single class, which leaves that class out of training and gives the
    allocator a validation loss that says nothing about pruning (measured on the CIFAR-10 JPEG
    archive: the plain tail was 5,000 trucks). On a class-mixed order such as the official
    pickles it is a balanced 10% drawn from the end of the set. Works on in-memory
    :class:`ImageData` and on streamed folders (anything with ``labels`` and ``subset``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    is_val = torch.zeros(len(data), dtype=torch.bool)
    for c in data.labels.unique():
        idx = (data.labels == c).nonzero().flatten()
        n_val = round(len(idx) * val_fraction)
        if n_val:
            is_val[idx[len(idx) - n_val :]] = True
    if not is_val.any():  # fewer images than classes can spare: keep at least one
        is_val[-1] = True
    keep = (~is_val).nonzero().flatten()
    held = is_val.nonzero().flatten()
    return data.subset(keep, "[train]"), data.subset(held, "[val]")


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 NHWC images, in [0, 1] units."""
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].reshape(-1, 3).double() / 255.0
        s += x.sum(0)
        s2 += (x * x).sum(0)
    n = images.shape[0] * images.shape[1] * images.shape[2]
    mean = s / n
    std = (s2 / n - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def stack_images(arrays: list[np.ndarray], names: list[str], source: str) -> torch.Tensor:
    """Stack HxWx3 arrays into one tensor, refusing mixed sizes with the offending file named."""
    if not arrays:
        raise DataError(f"{source}: no images found")
    shape = arrays[0].shape
    for a, n in zip(arrays, names, strict=True):
        if a.shape != shape:
            raise DataError(
                f"{source}: images of mixed sizes ({names[0]} is {shape[1]}x{shape[0]}, {n} is "
                f"{a.shape[1]}x{a.shape[0]}); this loader needs one size. Resize the images, or "
                "use the 'imagefolder' data set, which crops every image to a fixed size"
            )
    return torch.from_numpy(np.stack(arrays))


