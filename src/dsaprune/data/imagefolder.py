"""Image-folder data sets: ``train/<class>/*`` and ``test/<class>/*`` (``val/`` also accepted),
in a folder or in a tar / zip archive. Class index = position of the folder name in sorted order.

Small images of one size decode into an :class:`ImageData` (``load_small``). Large images of any
size stream through :class:`FolderDataset` with PIL-based crops for multi-worker loading.
"""

from __future__ import annotations

import copy

import io
import math
import random
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..progress import Progress
from .common import DataError, ImageData, stack_images

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
SPLIT_NAMES = {"train": ("train",), "test": ("test", "val")}


def _split_entries(names: list[str], split: str, source: str) -> list[tuple[str, str]]:
    """(name, class) for every image under ``<...>/<split>/<class>/<file>``."""
    out = []
    for n in names:
        parts = n.strip("/").split("/")
        if len(parts) < 3 or Path(parts[-1]).suffix.lower() not in IMAGE_EXT:
            continue
        if parts[-3] in SPLIT_NAMES[split]:
            out.append((n, parts[-2]))
    if not out:
        want = "|".join(SPLIT_NAMES[split])
        raise DataError(
            f"{source}: no images in the image-folder layout for split '{split}'; expected "
            f"files like {want}/<class>/<image>.jpg (found {len(names)} entries)"
        )
    return sorted(out)


def _classes(entries: list[tuple[str, str]]) -> list[str]:
    return sorted({c for _, c in entries})


def _decode(raw: bytes, name: str, source: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(
            f"{source}: {name} is not a readable image ({e}); remove or replace the file"
        ) from None


def _open_source(path: Path):
    """(list of names, read(name) -> bytes, close) for a folder, tar or zip archive."""
    if path.is_dir():
        names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
        return names, lambda n: (path / n).read_bytes(), lambda: None
    try:
        if zipfile.is_zipfile(path):
            zf = zipfile.ZipFile(path)
            return zf.namelist(), zf.read, zf.close
        tf = tarfile.open(path)
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(
            f"{path}: cannot read the archive ({e}); it is corrupt or truncated: fetch it again"
        ) from None

    def read(n: str) -> bytes:
        try:
            return tf.extractfile(members[n]).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{path}: {n} is truncated or corrupt ({e})") from None

    return list(members), read, tf.close


def is_image_folder(path: Path) -> bool:
    if path.is_dir():
        return (path / "train").is_dir() or (path / "test").is_dir()
    return path.is_file() and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path))


def load_small(
    path: Path, split: str, classes: list[str] | None = None, progress: bool = False
) -> ImageData:
    """Decode every image of ``split`` into one uint8 tensor (all images must share one size)."""
    names, read, close = _open_source(path)
    try:
        entries = _split_entries(names, split, str(path))
        found = _classes(entries)
        classes = classes or found
        index = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in found if c not in index]
        if unknown:
            raise DataError(f"{path}: split '{split}' has classes not in training: {unknown}")
        arrays = []
        with Progress(len(entries), f"decoding {path.name} ({split})", progress) as bar:
            for n, _ in entries:
                arrays.append(_decode(read(n), n, str(path)))
                bar.update(1)
    finally:
        close()
    images = stack_images(arrays, [n for n, _ in entries], str(path))
    labels = torch.tensor([index[c] for _, c in entries], dtype=torch.int64)
    return ImageData(images, labels, classes, f"{path}:{split}")


class FolderDataset(torch.utils.data.Dataset):
    """Streams an ImageNet-style folder: random-resized-crop + flip for training, resize +
    centre-crop for evaluation. Items are (uint8 tensor [3, S, S], label)."""

    def __init__(self, root: str | Path, split: str, train: bool, size: int = 224) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder; expected <root>/{split}/<class>/<image>")
        names = [str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()]
        entries = _split_entries(names, split, str(self.root))
        self.classes = _classes(_split_entries(names, "train", str(self.root)))
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(n, index[c]) for n, c in entries if c in index]
        self.train, self.size = train, size

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        """Every sample's class index, in file order (what a stratified split reads)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def subset(self, index: torch.Tensor, source_suffix: str = "") -> FolderDataset:
        """The samples at ``index``, streamed the same way (no image is read here)."""
        out = copy.copy(self)
        out.samples = [self.samples[int(i)] for i in index]
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        name, label = self.samples[i]
        try:
            with Image.open(self.root / name) as im:
                im = im.convert("RGB")
                im = self._train_crop(im) if self.train else self._eval_crop(im)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DataError(f"{self.root / name}: not a readable image ({e})") from None
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1), label

    def _train_crop(self, im: Image.Image) -> Image.Image:
        w, h = im.size
        area = w * h
        for _ in range(10):
            target = area * random.uniform(0.08, 1.0)
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = random.randint(0, w - cw), random.randint(0, h - ch)
                break
        else:  # fall back to the central crop of the whole image
            cw = ch = min(w, h)
            x, y = (w - cw) // 2, (h - ch) // 2
        im = im.resize((self.size, self.size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        return im.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < 0.5 else im

    def _eval_crop(self, im: Image.Image) -> Image.Image:
        short = round(self.size / 0.875)
        w, h = im.size
        s = short / min(w, h)
        im = im.resize((max(short, round(w * s)), max(short, round(h * s))), Image.BILINEAR)
        w, h = im.size
        x, y = (w - self.size) // 2, (h - self.size) // 2
        return im.crop((x, y, x + self.size, y + self.size))
