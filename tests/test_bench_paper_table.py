"""bench/paper_table.py: a window that ends mid-run leaves a half-finished table in its files,
and the same command continues it from them."""

import json
import signal
import sys
from pathlib import Path

import pytest
import torch


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_a_window_ends_mid_run_and_the_next_one_continues_the_table(
    tmp_path, bench_script, image_folder, monkeypatch
):
    table = bench_script("paper_table", "paper_table.py")
    # a one-step epoch can take a fraction of a second: look often enough that the window
    # ends within an epoch of the second, not after the run's last
    monkeypatch.setattr(sys.modules["cifar10_table"], "POLL_S", 0.2)
    image_folder(tmp_path / "imgs", 80)  # one step per epoch: the runs take seconds
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = [
        "--models", "resnet20", "--budgets", "0.5", "--epochs", "6", "--dataset",
        "imagefolder", "--data", str(tmp_path / "imgs"), "--device", "cpu", "--parallel", "2",
        "--no-fast", "--runs", str(runs), "--results", str(results),
    ]  # fmt: skip
    dsa = runs / "resnet20_dsa_f50"

    # window 1 ends once the DSA run has saved two epochs; it runs as `nohup ... &` from a
    # script would, with SIGINT ignored, which its runs must not inherit (they would not stop)
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert table.main(argv, stop=lambda: len(_lines(dsa / "metrics.jsonl")) >= 2) == 0
    finally:
        signal.signal(signal.SIGINT, ignored)
    first = json.loads((results / "paper_table.json").read_text())
    row = {r["method"]: r for r in first}["dsa"]
    assert row["state"] == "in progress" and 0 < row["epochs_done"] < 6
    assert (dsa / "last.pt").exists() and not (dsa / "table_done.json").exists()
    saved = torch.load(dsa / "last.pt", weights_only=True)
    assert "pruner" in saved["callbacks"]
    assert "in progress" in (results / "paper_table.md").read_text()
    epochs_before = len(_lines(dsa / "metrics.jsonl"))

    # window 2: the same command, to the end
    assert table.main(argv) == 0
    rows = {r["method"]: r for r in json.loads((results / "paper_table.json").read_text())}
    assert {r["state"] for r in rows.values()} == {"done"}
    assert rows["dsa"]["flops_ratio"] <= 0.5 and rows["dsa"]["epochs_done"] == pytest.approx(6)
    assert rows["dsa"]["drop"] == pytest.approx(rows["dsa"]["acc"] - rows["unpruned"]["acc"])
    assert rows["dsa"]["paper_drop"] == pytest.approx(-0.79)  # the paper's ResNet-20 at 50%
    assert "--resume" in (dsa / "table.log").read_text()  # continued, not started again
    hist = _lines(dsa / "metrics.jsonl")
    assert len(hist) > epochs_before
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))  # no epoch twice
    assert not (dsa / "last.pt").exists() and (dsa / "model.pt").exists()  # tidied
    md = (results / "paper_table.md").read_text()
    assert "**2 of 2 runs finished.**" in md and "-0.79" in md
