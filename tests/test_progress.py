"""Progress where the output is not a terminal (a log file): lines, not bars."""

import torch

import dsaprune
from dsaprune.data import DeviceLoader, channel_stats, make_shapes
from dsaprune.progress import Progress


def test_a_log_gets_a_line_per_quarter(capsys):
    with Progress(8, "decoding x", enabled=True) as p:
        for _ in range(8):
            p.update(1)
    err = capsys.readouterr().err
    assert [ln.split(" (")[0] for ln in err.splitlines()] == [
        f"decoding x: {q}%" for q in (25, 50, 75, 100)
    ]
    with Progress(8, "quiet", enabled=False) as p:
        p.update(8)
    assert capsys.readouterr().err == ""


def test_a_pruning_run_logs_its_phases_and_epochs(tiny_net, capsys):
    tr = make_shapes(320, seed=2)
    mean, std = channel_stats(tr.images)
    loader = DeviceLoader(tr, 32, train=True, mean=mean, std=std)
    torch.manual_seed(0)
    dsaprune.prune(
        tiny_net(), loader, epochs=2, device="cpu", report_latency=False, window_end_fraction=0.6
    )
    err = capsys.readouterr().err
    assert "grouping: 2 channel groups, 2 prunable" in err
    assert "allocation (dsa) to flops=0.5 from epoch 0.40" in err
    assert "pruned at epoch" in err and "of the full cost, channels [" in err
    assert "epoch 1/3: 25% (3/9," in err and "epoch 1/3: 100% (9/9," in err  # the quarters
    assert "epoch 3/3: 100% (1/1," in err and "epoch 3/3: 50%" not in err  # one line, not 3
    assert "epoch 2: loss" in err
