"""The CLI reads back what it writes: ``eval``, ``export`` and ``prune --checkpoint`` take a prune
run's ``model.pt`` and ``last.pt``, so a pruned model can be scored, exported and pruned again."""

import json

import pytest
import torch

import dsaprune
from dsaprune.cli.files import open_model
from dsaprune.cli.main import main


@pytest.mark.slow
def test_a_prune_runs_outputs_evaluate_export_and_prune_again(
    tmp_path, capsys, fast_args, small_shapes
):
    run = tmp_path / "run"
    fast = [*fast_args, "--quiet"]
    base = ["--epochs", "0.1", "--warmup-fraction", "0.05", *fast]
    assert main(["prune", "--out", str(run), "--budget", "flops=0.5", *base]) == 0
    report = json.loads((run / "report.json").read_text())
    accuracy = f"{100 * report['acc_after']:.2f}%"
    capsys.readouterr()
    # the pruned model file and the run's checkpoint (pruned weights) are the same network
    m1, info1 = open_model(run / "model.pt")
    m2, info2 = open_model(run / "last.pt")
    assert info1["dataset"] == info2["dataset"] == "shapes" and info2["num_classes"] == 10
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m1(x), m2(x), atol=1e-5)
    for f in ("model.pt", "last.pt"):  # no --dataset: the one the file records
        assert main(["eval", "--checkpoint", str(run / f)]) == 0
        assert f"accuracy {accuracy}" in capsys.readouterr().out
    assert (
        main(["export", "--checkpoint", str(run / "last.pt"), "--onnx", str(tmp_path / "m.onnx")])
        == 0
    )
    # pruned again to half of what it has left
    again = tmp_path / "again"
    argv = ["prune", "--checkpoint", str(run / "model.pt"), "--out", str(again)]
    assert main([*argv, "--budget", "flops=0.5", "--epochs", "0.1", *fast]) == 0
    twice = dsaprune.load(again / "model.pt")
    assert dsaprune.count_flops(twice) <= 0.5 * dsaprune.count_flops(m1)
    assert dsaprune.count_flops(twice) >= 0.45 * dsaprune.count_flops(m1)
