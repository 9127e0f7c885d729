"""Download with a progress bar, an MD5 check and an atomic rename."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .common import DataError


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, md5: str | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest``; a file already there with the right checksum is kept."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"download {dest.name}",
                disable=not progress or None,
            )
            with bar:
                while block := r.read(1 << 16):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({e}); without network access, download it elsewhere "
            f"and pass its path with --data"
        ) from None
    if md5 is not None and (got := md5sum(part)) != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); try again")
    os.replace(part, dest)
    return dest
