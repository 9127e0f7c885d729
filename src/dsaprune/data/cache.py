"""On-disk cache of decoded data sets, keyed by the source file's path, size and mtime."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import atomic_torch_save
from .common import ImageData, cache_dir

FORMAT = 1  # bump when the decoded layout changes


def _key(source: Path, split: str) -> str:
    st = source.stat()
    ident = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{split}|{FORMAT}"
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def cached(source: Path, split: str, decode: Callable[[], ImageData]) -> ImageData:
    """Return the decoded ``split`` of ``source``, decoding and caching it on first use."""
    path = cache_dir() / f"{source.name}-{split}-{_key(source, split)}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return ImageData(d["images"], d["labels"], list(d["classes"]), str(source))
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    data = decode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(
            {"images": data.images, "labels": data.labels, "classes": data.classes}, path
        )
    except OSError:
        pass  # a read-only cache location only costs the decode next time
    return data
