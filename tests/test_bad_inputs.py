"""Bad input through the CLI and the API: each case gets a clear, specific error (exit code and
message) or the right behaviour, and nothing that was there before is overwritten."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import use_small_shapes, write_image_folder
from PIL import Image

import dsaprune
from dsaprune.cli.main import main
from dsaprune.data import DeviceLoader, channel_stats, make_shapes

FAST = ["--epochs", "0.05", "--no-latency-report", "--quiet"]  # a prune that trains seconds
EXPORT = ["export", "--checkpoint", "{t}/m.pt", "--onnx", "{t}/m.onnx"]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a hash of its bytes."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _finished_run(d: Path) -> None:
    """A folder that looks like another model's finished run."""
    d.mkdir(parents=True)
    for name in ("model.pt", "report.json", "report.md"):
        (d / name).write_text(f"another run's {name}\n")


@dataclass
class Case:
    name: str
    argv: list[str]  # {t} is the test's tmp folder, {fast} the fast_config file
    code: int
    message: str  # a substring of stderr
    setup: object = None  # callable(tmp) before the run
    kept: str = ""  # a folder (under tmp) whose files must be unchanged


def _live_lock(t: Path) -> None:
    _finished_run(t / "busy")
    for name in ("model.pt", "report.json", "report.md"):
        (t / "busy" / name).unlink()
    # a process that is alive while the test runs holds the lock (as a second prune would)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _live_lock.procs.append(proc)
    (t / "busy" / ".dsaprune.lock").write_text(f"{proc.pid}\n")


_live_lock.procs = []


def _yaml(text: str):
    def write(t: Path) -> None:
        (t / "c.yaml").write_text(text)

    return write


def _file(t: Path) -> None:
    (t / "afile").write_text("not a folder\n")


def _train_ckpt_without_dataset(t: Path) -> None:
    from dsaprune.train.checkpoint import save_checkpoint

    m = dsaprune.models.create("resnet20", num_classes=10)
    save_checkpoint(t / "old.pt", model=m.state_dict(), model_name="resnet20", num_classes=10)


def _comparison(t: Path, text: str | None = None) -> None:
    """A folder that holds another comparison's record (``text``: its raw bytes)."""
    (t / "cmp").mkdir()
    row = {"method": "dsa", "seed": 0, "acc_after": 0.5}
    record = text or json.dumps({"settings": {"budget": "flops=0.9"}, "rows": [row]})
    (t / "cmp" / "compare.json").write_text(record)


CASES = [
    Case(
        "compare an unknown method",
        ["compare", "--out", "{t}/cmp", "--methods", "dsa,l1"],
        2,
        "unknown method(s) ['l1']; choose from dsa",
    ),
    Case(
        "compare the counts-taking method",
        ["compare", "--out", "{t}/cmp", "--methods", "given"],
        2,
        "run it with `dsaprune prune --method given --keep-counts",
    ),
    Case(
        "compare into another comparison",
        ["compare", "--out", "{t}/cmp", *FAST],
        2,
        "holds a comparison made with other settings (",
        _comparison,
        kept="cmp",
    ),
    Case(
        "compare record corrupt",
        ["compare", "--out", "{t}/cmp", *FAST],
        2,
        "not a readable comparison record; pass --force",
        lambda t: _comparison(t, "{not json"),
        kept="cmp",
    ),
    Case(
        "out holds another run",
        ["prune", "--out", "{t}/other", *FAST],
        2,
        "already holds a run (model.pt, report.json); pass --resume",
        lambda t: _finished_run(t / "other"),
        kept="other",
    ),
    Case(
        "train into another run",
        ["train", "--out", "{t}/other", "--epochs", "0.05", "--quiet"],
        2,
        "already holds a run",
        lambda t: _finished_run(t / "other"),
        kept="other",
    ),
    Case(
        "two runs into one folder",
        ["prune", "--out", "{t}/busy", *FAST],
        2,
        "another dsaprune process (pid",
        _live_lock,
        kept="busy",
    ),
    Case("out empty", ["prune", "--out", "", *FAST], 2, "--out is empty"),
    Case(
        "out is a file",
        ["prune", "--out", "{t}/afile", *FAST],
        2,
        "is a file, not a folder",
        _file,
        kept=".",
    ),
    Case("round-to negative", ["prune", "--out", "{t}/r", "--round-to", "-3"], 2, "at least 1"),
    Case("round-to zero", ["prune", "--out", "{t}/r", "--round-to", "0"], 2, "at least 1"),
    Case(
        "round-to wider than every group",
        ["prune", "--out", "{t}/r", "--round-to", "1000", *FAST],
        2,
        "round_to 1000 is wider than every prunable group",
    ),
    Case(
        "diverging lr, no checkpoint yet",
        ["prune", "--out", "{t}/lr", "--lr", "1e6", "--config", "{fast}", *FAST],
        2,
        "there is no checkpoint to resume from",
    ),
    Case(
        "device cuda without GPU", ["prune", "--out", "{t}/d", "--device", "cuda"], 2, "no CUDA GPU"
    ),
    Case("device tpu", ["prune", "--out", "{t}/d", "--device", "tpu"], 2, "not supported"),
    Case("device mps", ["train", "--out", "{t}/d", "--device", "mps"], 2, "not supported"),
    Case(
        "resume without checkpoint",
        ["prune", "--out", "{t}/none", "--resume", *FAST],
        2,
        "nothing to continue",
    ),
    Case(
        "malformed YAML",
        ["prune", "--out", "{t}/y", "--config", "{t}/c.yaml", *FAST],
        2,
        "not valid YAML at line 2, column 5: mapping values are not allowed here",
        _yaml("lr: 0.1\nlr: : 2\n"),
    ),
    Case(
        "YAML with a python tag",
        ["train", "--out", "{t}/y", "--config", "{t}/c.yaml"],
        2,
        "no !!python or other tags",
        _yaml("lr: !!python/object/apply:os.system ['echo pwned']\n"),
    ),
    Case(
        "YAML not a mapping",
        ["prune", "--out", "{t}/y", "--config", "{t}/c.yaml", *FAST],
        2,
        "expected a mapping",
        _yaml("- 1\n- 2\n"),
    ),
    Case(
        "missing config",
        ["prune", "--out", "{t}/y", "--config", "{t}/nope.yaml", *FAST],
        2,
        "no such file",
    ),
    Case(
        "export opset 5",
        [*EXPORT, "--opset", "5"],
        2,
        "support opsets 7 to",
    ),
    Case(
        "export wrong input size",
        [*EXPORT, "--input-size", "1", "8", "8"],
        2,
        "does not run on an input of shape [1, 8, 8]",
    ),
    Case(
        "export zero input size",
        [*EXPORT, "--input-size", "0", "8", "8"],
        2,
        "at least 1",
    ),
    Case(
        "export onto a folder",
        ["export", "--checkpoint", "{t}/m.pt", "--onnx", "{t}"],
        2,
        "is a folder",
    ),
    Case(
        "eval batch size 0",
        ["eval", "--checkpoint", "{t}/m.pt", "--batch-size", "0"],
        2,
        "at least 1",
    ),
    Case(
        "eval of a checkpoint that records no data set",
        ["eval", "--checkpoint", "{t}/old.pt"],
        2,
        "does not record its data set: pass --dataset",
        _train_ckpt_without_dataset,
    ),
    Case(
        "validation split shorter than one batch",
        ["prune", "--out", "{t}/small", "--dataset", "imagefolder", "--data", "{t}/imgs", *FAST],
        2,
        "holds no batch",
        lambda t: write_image_folder(t / "imgs", 20),
    ),
]


@pytest.fixture(scope="module")
def pruned_model_file(tmp_path_factory, fast_config) -> Path:
    """A real ``model.pt`` (pruned resnet20 on the shapes set) for the export / eval cases."""
    d = tmp_path_factory.mktemp("pruned")
    argv = ["prune", "--out", str(d / "run"), "--budget", "flops=0.5", *FAST]
    with pytest.MonkeyPatch.context() as mp:
        use_small_shapes(mp)
        rc = main([*argv, "--config", str(fast_config)])
    assert rc == 0
    return d / "run" / "model.pt"


@pytest.mark.slow  # its module-scoped model file takes a prune: made first
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_bad_input(
    case: Case, tmp_path, capsys, pruned_model_file, monkeypatch, fast_config, small_shapes
):
    monkeypatch.chdir(tmp_path)  # a run that wrongly wrote into "." would show up in the tree
    (tmp_path / "m.pt").write_bytes(pruned_model_file.read_bytes())
    if case.setup:
        case.setup(tmp_path)
    if "cuda" in case.argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = _tree(tmp_path / case.kept) if case.kept else None
    argv = [a.replace("{t}", str(tmp_path)).replace("{fast}", str(fast_config)) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    finally:
        for p in _live_lock.procs:
            p.kill()
        _live_lock.procs.clear()
    err = capsys.readouterr().err
    assert code == case.code, err
    assert case.message in err, err
    assert "Traceback" not in err
    if case.kept:
        assert _tree(tmp_path / case.kept) == before


def test_force_overwrites_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    _finished_run(tmp_path / "other")
    (tmp_path / "other" / ".dsaprune.lock").write_text("999999999\n")  # no such process
    write_image_folder(tmp_path / "imgs", 40)  # a small data set: the run takes seconds
    data = ["--dataset", "imagefolder", "--data", str(tmp_path / "imgs"), "--batch-size", "32"]
    assert main(["prune", "--out", str(tmp_path / "other"), "--force", *data, *FAST]) == 0
    assert (tmp_path / "other" / "model.pt").read_bytes() != b"another run's model.pt\n"
    assert not (tmp_path / "other" / ".dsaprune.lock").exists()  # released at the end


def test_ctrl_c_ends_with_one_line_and_an_intact_checkpoint(tmp_path, capsys, monkeypatch):
    from dsaprune.train import Trainer

    real = Trainer.train_epoch

    def interrupted(self):
        if self.epoch >= 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    out = tmp_path / "run"
    write_image_folder(tmp_path / "imgs", 80)  # epochs of 2 steps: the test takes seconds
    data = ["--dataset", "imagefolder", "--data", str(tmp_path / "imgs"), "--batch-size", "64"]
    argv = ["prune", "--out", str(out), *data, "--epochs", "2", "--no-latency-report", "--quiet"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"dsaprune prune: interrupted; {out / 'last.pt'} holds the last finished epoch: run the "
        "same command with --resume"
    ]
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["epoch"] == 1
    assert not (out / ".dsaprune.lock").exists()
    monkeypatch.setattr(Trainer, "train_epoch", real)
    assert main([*argv, "--resume"]) == 0


def _loaders():
    tr = make_shapes(640, seed=2)
    mean, std = channel_stats(tr.images)
    return DeviceLoader(tr, 64, train=True, mean=mean, std=std)


@pytest.mark.parametrize(
    "data, message",
    [
        ((b for b in [1, 2]), "can be read only once"),
        ([{"image": torch.zeros(2, 3, 32, 32), "label": torch.zeros(2, dtype=torch.long)}],
         "yields dicts (keys ['image', 'label'])"),
        ([torch.zeros(2, 3, 32, 32)], "yields Tensors"),
        ([], "holds no batch"),
    ],
    ids=["generator", "dict batches", "bare tensors", "empty"],
)  # fmt: skip
def test_api_refuses_data_it_cannot_read(tiny_net, data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dsaprune.prune(tiny_net(), data, epochs=0.1, progress=False, device="cpu")


def test_api_labels_beyond_the_models_classes(tiny_net):
    with pytest.raises(ValueError, match="a target label is [3-9], but the model has 3 outputs"):
        dsaprune.prune(
            tiny_net(num_classes=3), _loaders(), epochs=0.1, progress=False, device="cpu",
            report_latency=False,
        )  # fmt: skip


def test_data_dependent_branch_is_refused_before_training():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            y = self.a(x) if x.mean() > 0 else self.b(x)
            return self.fc(y.mean((2, 3)))

    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(dsaprune.TraceError, match=r"different layers for different inputs \(a, b"):
        dsaprune.find_groups(Branchy(), x)


def test_image_folder_cache_sees_added_and_deleted_files(tmp_path):
    from dsaprune.data import load_splits

    write_image_folder(tmp_path / "f", 3)
    assert len(load_splits("imagefolder", tmp_path / "f").train) == 6
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "f/train/a/new.png")
    assert len(load_splits("imagefolder", tmp_path / "f").train) == 7
    os.remove(tmp_path / "f/train/b/0.png")
    os.remove(tmp_path / "f/train/b/1.png")
    assert len(load_splits("imagefolder", tmp_path / "f").train) == 5
