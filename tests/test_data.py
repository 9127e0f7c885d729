import hashlib
import http.server
import pickle
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsaprune.data import (
    DataError,
    DeviceLoader,
    FolderDataset,
    ImageData,
    StreamLoader,
    channel_stats,
    download,
    load_splits,
    make_shapes,
    split_train_val,
)
from dsaprune.data.cifar import load_python

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


# -- official pickled CIFAR ----------------------------------------------------------------------
def _write_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> dict:
    """A small folder in the official python-version layout (same keys, dtypes and shapes)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [f"class{i}" for i in range(10)]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, f)
    batches = {}
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        batches[fname] = (x, y)
        with open(d / fname, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"labels": y, b"data": x, b"filenames": []}, f)
    return batches


def test_cifar_pickles_folder_and_archive(tmp_path):
    batches = _write_cifar10(tmp_path / "src")
    folder = load_splits("cifar10", tmp_path / "src")
    assert len(folder.train) == 100 and len(folder.test) == 20
    # pixel layout: row-major CHW planes in the file, HWC in memory
    x0, y0 = batches["data_batch_1"]
    expect = x0[0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(folder.train.images[0].numpy(), expect)
    assert folder.train.labels[:20].tolist() == y0
    assert folder.train.classes[3] == "class3"
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_splits("cifar10", archive)
    assert torch.equal(from_tar.train.images, folder.train.images)
    assert torch.equal(from_tar.test.labels, folder.test.labels)


def test_cifar_pickle_refuses_code(tmp_path):
    _write_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError, match="data_batch_2.*corrupt"):
        load_python(tmp_path, "cifar10", "train")


def test_cifar_truncated_and_bad_labels(tmp_path):
    _write_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    raw = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="test_batch.*truncated"):
        load_python(tmp_path, "cifar10", "test")
    with open(d / "test_batch", "wb") as f:
        x = np.zeros((2, 3072), np.uint8)
        pickle.dump({b"labels": [3, 12], b"data": x}, f)
    with pytest.raises(DataError, match="label 12 is out of range"):
        load_python(tmp_path, "cifar10", "test")


def test_truncated_archive(tmp_path):
    _write_cifar10(tmp_path / "src")
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_splits("cifar10", archive)


def test_missing_path_and_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_splits("cifar10", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cifar10 data"):
        load_splits("cifar10", tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        load_splits("imagefolder", tmp_path / "nowhere")


# -- image folders -------------------------------------------------------------------------------
def _write_folder(root: Path, classes=("b_cat", "a_dog", "c_emu"), n=3, size=(32, 32)):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


def test_image_folder_dir_tar_zip(tmp_path):
    _write_folder(tmp_path / "f")
    d = load_splits("imagefolder", tmp_path / "f")
    assert d.train.classes == ["a_dog", "b_cat", "c_emu"]  # sorted order = label
    assert len(d.train) == 9 and d.train.labels.bincount().tolist() == [3, 3, 3]
    first = np.asarray(Image.open(tmp_path / "f" / "train" / "a_dog" / "0.png"))
    assert np.array_equal(d.train.images[0].numpy(), first)
    with tarfile.open(tmp_path / "f.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "f", arcname="top")
    t = load_splits("imagefolder", tmp_path / "f.tar.gz")
    assert torch.equal(t.train.images, d.train.images)
    assert torch.equal(t.test.images, d.test.images) and t.test.classes == d.train.classes
    raw = (tmp_path / "f.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.tar.gz: cannot read the archive.*truncated"):
        load_splits("imagefolder", tmp_path / "cut.tar.gz")
    with zipfile.ZipFile(tmp_path / "f.zip", "w") as zf:
        for p in (tmp_path / "f").rglob("*.png"):
            zf.write(p, p.relative_to(tmp_path / "f"))
    z = load_splits("imagefolder", tmp_path / "f.zip")
    assert torch.equal(z.test.labels, d.test.labels)


def test_image_folder_as_cifar10(tmp_path):
    _write_folder(tmp_path / "f", classes=[f"k{i}" for i in range(10)], n=2)
    d = load_splits("cifar10", tmp_path / "f")
    assert d.num_classes == 10 and len(d.train) == 20
    _write_folder(tmp_path / "g", n=2)
    with pytest.raises(DataError, match="3 classes, cifar10 has 10"):
        load_splits("cifar10", tmp_path / "g")


def test_image_folder_mixed_sizes_and_corrupt(tmp_path):
    _write_folder(tmp_path / "f")
    Image.new("RGB", (40, 30)).save(tmp_path / "f" / "train" / "c_emu" / "9.png")
    with pytest.raises(DataError, match="mixed sizes.*9.png is 40x30"):
        load_splits("imagefolder", tmp_path / "f")
    (tmp_path / "f" / "train" / "c_emu" / "9.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="9.png is not a readable image"):
        load_splits("imagefolder", tmp_path / "f")


def test_decode_cache_is_used(tmp_path, monkeypatch):
    _write_folder(tmp_path / "f")
    a = load_splits("imagefolder", tmp_path / "f")
    import dsaprune.data.imagefolder as imf

    def boom(*_a, **_k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(imf, "load_small", boom)
    b = load_splits("imagefolder", tmp_path / "f")
    assert torch.equal(a.train.images, b.train.images)


def test_streaming_folder_of_any_size(tmp_path):
    root = tmp_path / "big"
    for split in ("train", "test"):
        for c in ("x", "y"):
            (root / split / c).mkdir(parents=True)
            for i, (w, h) in enumerate([(50, 40), (37, 80), (64, 64)]):
                Image.new("RGB", (w, h), (i * 80, 10, 200)).save(root / split / c / f"{i}.jpg")
    splits = load_splits("imagenet", root, image_size=24)
    assert isinstance(splits.train, FolderDataset) and splits.num_classes == 2
    x, y = splits.test[1]
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8 and y == 0
    loader = StreamLoader(splits.train, 4, train=True, mean=splits.mean, std=splits.std, workers=2)
    batches = list(loader)
    assert len(batches) == 1 and batches[0][0].shape == (4, 3, 24, 24)
    assert batches[0][0].dtype == torch.float32


# -- download ------------------------------------------------------------------------------------
@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_with_checksum(tmp_path, http_root):
    root, url = http_root
    _write_cifar10(tmp_path / "src")
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    got = download(f"{url}/cifar-10-python.tar.gz", tmp_path / "dl" / "c.tar.gz", md5, False)
    assert got.read_bytes() == archive.read_bytes()
    assert load_splits("cifar10", got).train.images.shape == (100, 32, 32, 3)
    with pytest.raises(DataError, match="checksum mismatch"):
        download(f"{url}/cifar-10-python.tar.gz", tmp_path / "dl2" / "c.tar.gz", "0" * 32, False)
    assert not (tmp_path / "dl2" / "c.tar.gz").exists()
    assert not list((tmp_path / "dl2").glob("*.part"))
    with pytest.raises(DataError, match="could not download"):
        download(f"{url}/missing.tar.gz", tmp_path / "dl3" / "m.tar.gz", None, False)


def test_cifar_download_when_nothing_local(tmp_path, http_root, monkeypatch):
    root, url = http_root
    _write_cifar10(tmp_path / "src")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5((root / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    from dsaprune.data import cifar

    monkeypatch.setitem(cifar.FILES["cifar10"], "url", f"{url}/cifar-10-python.tar.gz")
    monkeypatch.setitem(cifar.FILES["cifar10"], "md5", md5)
    d = load_splits("cifar10", tmp_path / "data", download=True)
    assert len(d.train) == 100 and (tmp_path / "data" / "cifar-10-python.tar.gz").exists()


# -- splits, built-in data, loaders --------------------------------------------------------------
def test_split_holds_out_the_last_tenth_of_each_class():
    d = make_shapes(200)
    tr, va = split_train_val(d)
    assert len(tr) == 180 and len(va) == 20
    assert va.labels.bincount(minlength=10).tolist() == [2] * 10
    # a class-sorted set (as image folders are) still gives every class to both parts
    order = d.labels.argsort(stable=True)
    s = d.subset(order)
    tr, va = split_train_val(s)
    assert tr.labels.bincount(minlength=10).tolist() == [18] * 10
    assert va.labels.bincount(minlength=10).tolist() == [2] * 10
    last = s.labels == 0
    assert torch.equal(va.images[va.labels == 0], s.images[last][-2:])  # each class's tail


def test_shapes_deterministic_and_balanced():
    a, b = make_shapes(300, seed=3), make_shapes(300, seed=3)
    assert torch.equal(a.images, b.images)
    assert a.labels.bincount().tolist() == [30] * 10
    assert not torch.equal(a.images, make_shapes(300, seed=4).images)


def test_imagedata_rejects_bad_labels():
    with pytest.raises(DataError, match="out of range"):
        ImageData(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.tensor([0, 5]), ["a", "b"])


def _loader(d, **kw):
    args = dict(train=True, mean=[0.0] * 3, std=[1 / 255] * 3, seed=7, pad=4)
    args.update(kw)
    return DeviceLoader(d, 8, **args)


def test_device_loader_crop_flip_matches_reference():
    d = make_shapes(32)
    ld = _loader(d)
    x, y = next(iter(ld))
    # rebuild the same randomness and crop image by image
    g = torch.Generator().manual_seed(7 * 1_000_003)
    order = torch.randperm(32, generator=g)
    dy = torch.randint(0, 9, (32,), generator=g)
    dx = torch.randint(0, 9, (32,), generator=g)
    fl = torch.rand(32, generator=g) < 0.5
    for i in range(8):
        img = d.images[order[i]].permute(2, 0, 1).float()
        pad = torch.nn.functional.pad(img, (4, 4, 4, 4))
        ref = pad[:, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        if fl[i]:
            ref = ref.flip(2)
        assert torch.equal(x[i], ref)
        assert y[i] == d.labels[order[i]]


def test_device_loader_epochs_and_eval():
    d = make_shapes(40)
    ld = _loader(d)
    e0 = [b[1] for b in ld]
    assert len(e0) == len(ld) == 5
    assert torch.equal(torch.cat(e0), torch.cat([b[1] for b in ld]))  # same epoch, same order
    ld.set_epoch(1)
    assert not torch.equal(torch.cat(e0), torch.cat([b[1] for b in ld]))
    ev = _loader(d, train=False)
    xs = torch.cat([b[0] for b in ev])
    assert torch.equal(xs, d.images.permute(0, 3, 1, 2).float())


def test_device_loader_ranks_split_the_global_batch():
    d = make_shapes(64)
    full = list(_loader(d))
    halves = [list(_loader(d, rank=r, world_size=2)) for r in range(2)]
    for s, (x, _) in enumerate(full):
        assert torch.equal(torch.cat([halves[0][s][0], halves[1][s][0]]), x)


@pytest.mark.skipif(
    not SHARED.exists(), reason="the shared CIFAR-10 archive is not beside the repo"
)
@pytest.mark.slow
def test_real_cifar10_archive():
    d = load_splits("cifar10", SHARED)
    assert d.train.images.shape == (50000, 32, 32, 3) and len(d.test) == 10000
    assert d.train.classes[0] == "airplane" and d.train.classes[9] == "truck"
    assert d.train.labels.bincount().tolist() == [5000] * 10
    assert d.test.labels.bincount().tolist() == [1000] * 10
    assert all(abs(m - r) < 0.01 for m, r in zip(d.mean, (0.491, 0.482, 0.447), strict=True))


def test_hold_out_splits_by_sample_where_the_loader_knows_its_samples():
    from torch.utils.data import DataLoader, TensorDataset

    from dsaprune.data import hold_out

    # the library's loader: 10% of each class, the loader's settings kept
    d = make_shapes(200, seed=1)
    mean, std = channel_stats(d.images)
    loader = DeviceLoader(d, 16, train=True, mean=mean, std=std, seed=3)
    tr, va = hold_out(loader)
    assert len(tr.data) == 180 and len(va.data) == 20 and tr.seed == 3
    assert sorted(va.data.labels.tolist()) == sorted(list(range(10)) * 2)
    # a PyTorch DataLoader over a class-sorted data set: a random 10%, every class kept in both
    y = torch.arange(10).repeat_interleave(20)
    ds = TensorDataset(torch.randn(200, 3), y)
    tr, va = hold_out(DataLoader(ds, batch_size=16, shuffle=True))
    held = torch.cat([b[1] for b in va])
    seen = torch.cat([b[1] for b in tr])
    assert len(held) == 20 and len(seen) == 180 and len(set(held.tolist())) > 5
    assert set(tr.dataset.indices).isdisjoint(va.dataset.indices)
    # any other re-iterable of batches: its last 10% of batches
    batches = [(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)) for _ in range(20)]
    tr, va = hold_out(batches)
    assert len(tr) == 18 and len(va) == 2 and next(iter(va))[0] is batches[18][0]
    with pytest.raises(ValueError, match="too few batches"):
        hold_out(batches[:1])
