"""bench/cifar10_table.py: its plan is valid dsaprune commands, its tables read real runs."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dsaprune.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("cifar10_table", ROOT / "bench/cifar10_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cifar10_table"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["cifar10_table"]


def _args(table, tmp_path, *extra):
    import argparse

    a = argparse.Namespace(
        models=["resnet20"], budgets=[0.75, 0.333], methods=table.METHODS, epochs=8.0,
        lr=0.1, wd=5e-4, lr_given=True, wd_given=True, config=None, finetune_epochs=4.0,
        finetune_lr=0.01, data="DATA", device="cpu", parallel=1, runs=str(tmp_path), seeds=[0],
    )  # fmt: skip
    for k, v in extra:
        setattr(a, k, v)
    return a


def test_plan_is_valid_commands_with_magnitude_after_the_unpruned_run(table, tmp_path):
    jobs = table.plan(_args(table, tmp_path))
    assert [j.method for j in jobs].count("unpruned") == 1
    assert len(jobs) == 1 + 2 * 8
    parser = build_parser()
    for j in jobs:
        ns = parser.parse_args(j.argv)  # every row's command is one the CLI accepts
        assert ns.out == str(j.out) and ns.data == "DATA"
        if j.method == "unpruned":
            assert ns.command == "train" and ns.epochs == 8
        elif j.method in ("magnitude", "dsa_ckpt"):  # magnitude's pipeline, two allocations
            assert ns.checkpoint == str(jobs[0].out / "last.pt") and j.deps == [jobs[0]]
            assert ns.epochs == 4 and ns.lr == 0.01
            assert ns.method == {"magnitude": "magnitude", "dsa_ckpt": "dsa"}[j.method]
        else:
            assert ns.method == j.method and ns.model == "resnet20" and ns.epochs == 8
            assert ns.budget == f"flops={j.budget:g}" and not j.deps
    assert len({j.out for j in jobs}) == len(jobs)


def test_rows_and_markdown_from_finished_runs(table, tmp_path):
    a = _args(table, tmp_path, ("methods", ["dsa", "magnitude"]), ("budgets", [0.5]))
    jobs = table.plan(a)
    hist = [{"epoch": e, "epoch_time_s": 360.0, "test_acc": 0.8} for e in range(1, 9)]
    by = {j.method: j for j in jobs}
    base, dsa, mag = by["unpruned"], by["dsa"], by["magnitude"]
    # unpruned runs first, then the magnitude fine-tunes that need their checkpoints
    assert [j.method for j in jobs] == ["unpruned", "magnitude", "dsa"]
    base.out.mkdir(parents=True)
    (base.out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    for j, acc, n in ((dsa, 0.75, 8), (mag, 0.78, 4)):
        j.out.mkdir(parents=True)
        rep = {"history": hist[:n], "acc_after": acc, "flops_ratio": 0.4995, "met_by": j.method,
               "groups": [{"keep_ratio": 0.5}]}  # fmt: skip
        (j.out / "report.json").write_text(json.dumps(rep))
    for j in jobs:
        j.state = "done"
    rows = {r["method"]: r for r in table.rows(jobs, a)}
    assert rows["unpruned"]["acc"] == pytest.approx(80.0) and rows["unpruned"]["flops_ratio"] == 1
    assert rows["dsa"]["drop"] == pytest.approx(-5.0)
    assert rows["magnitude"]["gpu_hours"] == pytest.approx(12 * 0.1)  # pre-training included
    assert rows["magnitude"]["epochs"] == 12 and " && " in rows["magnitude"]["command"]
    md = table.markdown(list(rows.values()), a, ["--epochs", "8"])
    assert "| resnet20 | 50.0% | dsa | 0 | 0.4995 | 75.00 | -5.00 | 0.8 | 1.00 |" in md
    assert "49.7, 91.38, −0.79" in md  # the paper's DSA row beside ours


def test_seeds_pair_magnitude_with_its_own_unpruned_run_and_the_table_averages(table, tmp_path):
    a = _args(table, tmp_path, ("methods", ["dsa", "magnitude"]), ("budgets", [0.5, 0.333]),
              ("seeds", [0, 1]))  # fmt: skip
    jobs = table.plan(a)
    assert len(jobs) == 2 * 5 and len({j.out for j in jobs}) == 10
    # a stopped table leaves whole cells: both seeds of the first budget before the next budget
    assert [(j.method, j.budget, j.seed) for j in jobs if j.method == "dsa"] == [
        ("dsa", 0.5, 0), ("dsa", 0.5, 1), ("dsa", 0.333, 0), ("dsa", 0.333, 1)]  # fmt: skip
    parser = build_parser()
    for j in jobs:
        ns = parser.parse_args(j.argv)
        assert ns.seed == (j.seed or None)  # seed 0 keeps the commands made before seeds
        if j.method == "magnitude":
            assert j.deps[0].seed == j.seed and j.deps[0].method == "unpruned"
    hist = [{"epoch": e, "epoch_time_s": 360.0, "test_acc": 0.8} for e in range(1, 9)]
    for j in jobs:
        j.out.mkdir(parents=True)
        if j.method == "unpruned":
            (j.out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
        else:
            acc = {("dsa", 0): 0.75, ("dsa", 1): 0.77}.get((j.method, j.seed), 0.7)
            rep = {"history": hist, "acc_after": acc, "flops_ratio": 0.5, "met_by": j.method,
                   "groups": [{"keep_ratio": 0.5}]}  # fmt: skip
            (j.out / "report.json").write_text(json.dumps(rep))
        j.state = "done"
    rs = table.rows(jobs, a)
    assert sorted(r["seed"] for r in rs if r["method"] == "dsa" and r["budget"] == 0.5) == [0, 1]
    md = table.markdown(rs, a, ["--seeds", "0,1"])
    assert "| resnet20 | 50.0% | dsa | 2 | 76.00 | 75.00 – 77.00 |" in md
    # paired by seed: differences 5 and 7 points, mean 6, standard error 1
    assert "| resnet20 | 50.0% | magnitude | 2 | +6.00 | 1.00 | 2 of 2 |" in md
    table.plot(rs, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def _one_finished_dsa_run(table, tmp_path, *extra: str, device: str = "G") -> tuple[list, Path]:
    """The argv of a 50% table of DSA and uniform whose DSA run has finished (on ``device``)
    and whose uniform run has not, and its results folder."""
    runs, res = tmp_path / "runs", tmp_path / "res"
    argv = ["--models", "resnet20", "--budgets", "0.5", "--methods", "dsa,uniform", "--epochs", "8",
            "--runs", str(runs), "--results", str(res), "--data", "DATA", *extra]  # fmt: skip
    a = _args(table, runs, ("methods", ["dsa", "uniform"]), ("budgets", [0.5]))
    dsa = next(j for j in table.plan(a) if j.method == "dsa")
    hist = [{"epoch": e, "epoch_time_s": 360.0, "test_acc": 0.8} for e in range(1, 9)]
    dsa.out.mkdir(parents=True)
    rep = {"history": hist, "acc_after": 0.75, "flops_ratio": 0.5, "met_by": "dsa",
           "groups": [{"keep_ratio": 0.5}]}  # fmt: skip
    (dsa.out / "report.json").write_text(json.dumps(rep))
    (dsa.out / "table_done.json").write_text(json.dumps({"command": dsa.command, "device": device}))
    return argv, res


def test_no_run_writes_the_finished_runs_and_names_the_missing_ones(table, tmp_path):
    argv, res = _one_finished_dsa_run(table, tmp_path, "--no-run", device="GPU X (4 runs at once)")
    runs = tmp_path / "runs"
    assert table.main(argv) == 0
    assert not (runs / "resnet20_uniform_f50_e8").exists()  # nothing was started
    rows = json.loads((res / "cifar10.json").read_text())
    assert [r["method"] for r in rows] == ["dsa"] and rows[0]["acc"] == pytest.approx(75.0)
    assert rows[0]["device"] == "GPU X (4 runs at once)"  # where the run was made, not here
    md = (res / "cifar10.md").read_text()
    assert "**Not run yet** (1): resnet20_uniform_f50_e8" in md and "--no-run" not in md


def test_a_run_made_under_an_older_default_is_marked_not_mixed_in(table, tmp_path):
    from dsaprune.pruner import DSAConfig

    a = _args(table, tmp_path, ("methods", ["dsa", "ssl", "uniform", "group_fisher"]),
              ("budgets", [0.5]))  # fmt: skip
    jobs = [j for j in table.plan(a) if j.method != "unpruned"]
    hist = [{"epoch": e, "epoch_time_s": 360.0, "test_acc": 0.8} for e in range(1, 9)]
    steps = round(8 * table.CIFAR10_STEPS_PER_EPOCH)  # the table's own count for the run's window
    # an older warm-up, channel order and Θ-step signal
    old = {**DSAConfig().for_run(8, steps).to_dict(), "warmup_fraction": 20 / 300,
           "importance": "bn_first", "estimator": "ste"}  # fmt: skip
    for j in jobs:
        j.out.mkdir(parents=True)
        cfg = {**old, "method": j.method}
        rep = {"history": hist, "acc_after": 0.8, "flops_ratio": 0.5, "met_by": j.method,
               "groups": [{"keep_ratio": 0.5}], "dsa_config": cfg}  # fmt: skip
        (j.out / "report.json").write_text(json.dumps(rep))
        j.state = "done"
    rows = {r["method"]: r for r in table.rows(jobs, a)}
    assert rows["dsa"]["differs_from_defaults"] == {
        "estimator": ["ste", "fisher"],
        "importance": ["bn_first", "fisher"],
        "warmup_fraction": [20 / 300, 0.2],
    }
    # uniform prunes when the warm-up ends, in the flow's channel order, and reads no Θ-step
    assert rows["uniform"]["differs_from_defaults"] == {
        "importance": ["bn_first", "fisher"],
        "warmup_fraction": [20 / 300, 0.2],
    }
    assert rows["group_fisher"]["differs_from_defaults"] == {"warmup_fraction": [20 / 300, 0.2]}
    # its penalty starts at step 1 and its own weight norms choose its channels
    assert "differs_from_defaults" not in rows["ssl"]
    md = table.markdown(list(rows.values()), a, ["--epochs", "8"])
    assert "| resnet20 | 50.0% | dsa ‡ | 0 |" in md and "| ssl | 0 |" in md
    assert "warmup_fraction 0.06667 (now 0.2)" in md

    # a DSA run recorded before signal_every existed took a held-out pass at every update
    cfg = {k: v for k, v in DSAConfig().for_run(8, steps).to_dict().items() if k != "signal_every"}
    dsa = next(j for j in jobs if j.method == "dsa")
    rep = json.loads((dsa.out / "report.json").read_text())
    (dsa.out / "report.json").write_text(json.dumps({**rep, "dsa_config": cfg}))
    rows = {r["method"]: r for r in table.rows(jobs, a)}
    assert rows["dsa"]["differs_from_defaults"] == {"signal_every": [1, 4]}


def test_a_window_of_minutes_ends_the_runs_and_writes_the_table_from_the_finished_ones(
    table, tmp_path
):
    argv, res = _one_finished_dsa_run(table, tmp_path, "--minutes", "0")
    assert table.main(argv) == 0  # a window that ends is no failure
    assert not (tmp_path / "runs/resnet20_uniform_f50_e8").exists()  # the window ended first
    md = (res / "cifar10.md").read_text()
    assert "**Not run yet** (1): resnet20_uniform_f50_e8" in md
    assert "--minutes" not in md  # the command that makes the table, not one window of it
    assert [r["method"] for r in json.loads((res / "cifar10.json").read_text())] == ["dsa"]
