"""CIFAR-10 / CIFAR-100 in the official "python version" format: a folder of pickled batches, or
the ``.tar.gz`` archive that holds it. The pickles are read with an unpickler that admits only
numpy arrays, so a hostile file cannot run code."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .common import DataError, ImageData

FILES = {
    "cifar10": {
        "dir": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": b"labels",
        "names_key": b"label_names",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "dir": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": b"fine_labels",
        "names_key": b"fine_label_names",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _unpickle(raw: bytes, what: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:
        raise DataError(
            f"{what}: not a readable CIFAR pickle ({type(e).__name__}: {e}); the file is corrupt "
            "or truncated: delete it and download the data set again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a dict in a CIFAR pickle, found {type(obj).__name__}")
    return obj


def is_python_layout(path: Path, name: str) -> bool:
    """True if ``path`` is (or holds) the official pickled folder, or is a tar archive of it."""
    d = FILES[name]["dir"]
    if path.is_dir():
        return (path / d).is_dir() or (path / FILES[name]["meta"]).exists()
    if path.is_file() and tarfile.is_tarfile(path):
        try:
            with tarfile.open(path) as tf:
                return any(m.name.rstrip("/").endswith(d) for m in tf.getmembers()[:50])
        except (tarfile.TarError, EOFError, OSError):
            return False
    return False


def _reader(path: Path, name: str):
    """A function that returns the raw bytes of one file of the data set, and a closer."""
    spec = FILES[name]
    if path.is_dir():
        base = path / spec["dir"] if (path / spec["dir"]).is_dir() else path

        def read(fname: str) -> bytes:
            f = base / fname
            if not f.exists():
                raise DataError(
                    f"{base}: missing {fname}; the official CIFAR folder holds "
                    f"{', '.join(spec['train'] + spec['test'] + [spec['meta']])}"
                )
            return f.read_bytes()

        return read, lambda: None
    try:
        tf = tarfile.open(path)
        members = {m.name.rstrip("/").split("/")[-1]: m for m in tf.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"{path}: cannot read the archive ({e}); it is corrupt or truncated: delete it and "
            "download it again"
        ) from None

    def read_tar(fname: str) -> bytes:
        if fname not in members:
            raise DataError(f"{path}: the archive has no {fname}; is it the {name} archive?")
        try:
            return tf.extractfile(members[fname]).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{path}: {fname} is truncated or corrupt ({e})") from None

    return read_tar, tf.close


def load_python(path: Path, name: str, split: str) -> ImageData:
    """Decode the ``train`` or ``test`` split of the official pickled release."""
    spec = FILES[name]
    read, close = _reader(path, name)
    try:
        meta = _unpickle(read(spec["meta"]), f"{path}:{spec['meta']}")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["names_key"]]]
        xs, ys = [], []
        for fname in spec[split]:
            batch = _unpickle(read(fname), f"{path}:{fname}")
            try:
                x = np.asarray(batch[b"data"], dtype=np.uint8)
                y = np.asarray(batch[spec["label_key"]], dtype=np.int64)
            except KeyError as e:
                raise DataError(f"{path}:{fname}: no {e} entry; not a {name} batch") from None
            if x.ndim != 2 or x.shape[1] != 3072 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"{path}:{fname}: expected data of shape [N, 3072] with N labels, got "
                    f"{x.shape} and {y.shape[0]} labels; the file is corrupt"
                )
            xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(y)
    finally:
        close()
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
    return ImageData(images, torch.from_numpy(np.concatenate(ys)), classes, f"{path}:{split}")
