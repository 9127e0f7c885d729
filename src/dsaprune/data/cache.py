"""On-disk cache of decoded data sets, keyed by the source's path, size and mtime: a file's
own, a folder's every file's (an image added to or deleted from a class folder changes no
parent folder's size, and the class folder's mtime only)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import atomic_torch_save
from .common import ImageData, cache_dir

FORMAT = 1  # bump when the decoded layout changes


def _key(source: Path, split: str) -> str:
    h = hashlib.sha1(f"{source.resolve()}|{split}|{FORMAT}".encode())
    if source.is_dir():
        for f in sorted(p for p in source.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"|{f.relative_to(source).as_posix()}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = source.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


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
