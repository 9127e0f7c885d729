"""``shapes``: a built-in 10-class, 32x32 RGB data set drawn procedurally, so demos and tests
need no files. Each class is a shape or texture (disk, square, triangle, plus, ring, horizontal /
vertical / diagonal stripes, checkerboard, dots) at a random place and scale, in random colours
over a random background with noise: colour carries no class information, shape does."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .common import ImageData

CLASSES = [
    "disk",
    "square",
    "triangle",
    "plus",
    "ring",
    "hstripes",
    "vstripes",
    "dstripes",
    "checker",
    "dots",
]


def _masks(label: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    n = label.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = rng.uniform(0.3, 0.7, (n, 1, 1)).astype(np.float32) * size
    cy = rng.uniform(0.3, 0.7, (n, 1, 1)).astype(np.float32) * size
    r = rng.uniform(0.22, 0.4, (n, 1, 1)).astype(np.float32) * size
    u, v = xx[None] - cx, yy[None] - cy
    period = rng.uniform(4.0, 8.0, (n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    w = 2 * np.pi / period
    dist = np.sqrt(u * u + v * v)
    within = dist < r * 1.15  # textures fill a blob, so position and size vary for them too
    pu, pv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
    shapes = [
        dist < r,
        np.maximum(np.abs(u), np.abs(v)) < 0.8 * r,
        (v > -0.7 * r) & (v < 0.7 * r) & (np.abs(u) < 0.6 * (v + 0.7 * r)),
        ((np.abs(u) < 0.25 * r) & (np.abs(v) < r)) | ((np.abs(v) < 0.25 * r) & (np.abs(u) < r)),
        (dist > 0.55 * r) & (dist < r),
        within & (np.sin(v * w + phase) > 0),
        within & (np.sin(u * w + phase) > 0),
        within & (np.sin((u + v) * w * 0.7071 + phase) > 0),
        within & (np.sin(u * w + phase) * np.sin(v * w + phase) > 0),
        within & (pu * pu + pv * pv < (period / 3.5) ** 2),
    ]
    out = np.zeros((n, size, size), dtype=bool)
    for k, m in enumerate(shapes):
        sel = label == k
        out[sel] = m[sel]
    return out


@functools.lru_cache(maxsize=4)
def _draw(n: int, seed: int, size: int, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N, H, W, 3] uint8, labels [N], shape masks [N, H, W] bool), fixed by ``seed``.
    Kept for the process (the arrays read-only, callers copy): the built-in splits take seconds
    to draw, and a comparison or a test session prunes on them many times."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % len(CLASSES))
    fg = rng.uniform(0, 255, (n, 1, 1, 3))
    bg = rng.uniform(0, 255, (n, 1, 1, 3))
    # keep foreground and background apart so every shape is visible
    close = np.abs(fg - bg).sum(-1, keepdims=True) < 120
    fg = np.where(close, 255 - bg, fg)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    for i in range(0, n, 2048):  # chunked to bound memory
        sl = slice(i, i + 2048)
        m = _masks(label[sl], rng, size)[..., None]
        img = np.where(m, fg[sl], bg[sl]) + rng.normal(0, noise, m.shape[:3] + (3,))
        out[sl] = np.clip(img, 0, 255).astype(np.uint8)
        masks[sl] = m[..., 0]
    for a in (out, label, masks):
        a.flags.writeable = False
    return out, label, masks


def make_shapes(n: int, seed: int = 0, size: int = 32, noise: float = 24.0) -> ImageData:
    """``n`` images with balanced labels, fully determined by ``seed``."""
    out, label, _ = _draw(n, seed, size, noise)
    return ImageData(
        torch.from_numpy(out.copy()),
        torch.from_numpy(label.astype(np.int64)),
        list(CLASSES),
        "shapes",
    )


def make_shape_scenes(
    n: int, seed: int = 0, size: int = 32, noise: float = 24.0
) -> tuple[ImageData, torch.Tensor, torch.Tensor]:
    """The same images as :func:`make_shapes` with dense and box targets, for segmentation and
    detection: (images, per-pixel classes [N, H, W] int64 with 0 the background and 1 + label
    the shape, each shape's box [N, 4] as float x0, y0, x1, y1 in pixels)."""
    _, label, masks = _draw(n, seed, size, noise)
    m = torch.from_numpy(masks.copy())
    seg = torch.where(m, torch.from_numpy(label + 1)[:, None, None], 0).long()
    rows, cols = m.any(2), m.any(1)
    idx = torch.arange(size)
    lo = lambda a: torch.where(a, idx, size).min(1).values  # noqa: E731
    hi = lambda a: torch.where(a, idx, -1).max(1).values + 1  # noqa: E731
    boxes = torch.stack([lo(cols), lo(rows), hi(cols), hi(rows)], 1).float()
    return make_shapes(n, seed, size, noise), seg, boxes


def load_shapes(split: str, n_train: int = 10000, n_test: int = 2000, seed: int = 0) -> ImageData:
    """The built-in splits; train and test come from different seeds."""
    if split == "train":
        return make_shapes(n_train, seed=seed)
    return make_shapes(n_test, seed=seed + 1_000_003)
