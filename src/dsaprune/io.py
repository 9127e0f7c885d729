"""Atomic file writes: a crash mid-write never leaves a half-written file under the real name."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(text: str, path: str | Path) -> None:
    atomic_write_bytes(text.encode(), path)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)


def cache_dir() -> Path:
    """Where decoded data sets and latency tables are cached: ``$DSAPRUNE_CACHE`` or
    ``~/.cache/dsaprune``."""
    root = os.environ.get("DSAPRUNE_CACHE") or Path.home() / ".cache" / "dsaprune"
    return Path(root)


def load_safely(
    path: str | Path, what: str, hint: str = "", error: type[Exception] = ValueError
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear ``error`` naming the
    file for a missing or unreadable one (``what``: "checkpoint", …; ``hint``: the fix)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such file (expected a {what})")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        fix = f"; {hint}" if hint else ""
        raise error(f"{p}: not a readable {what} ({type(e).__name__}){fix}") from None
