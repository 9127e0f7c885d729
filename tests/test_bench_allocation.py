"""bench/allocation_quality.py: its allocations meet the budget, its summary and tables are
computed from the rows, and a reference network round-trips through the weights-only file."""

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import dsaprune
from dsaprune import models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def aq():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(
        "allocation_quality", ROOT / "bench/allocation_quality.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.path.remove(str(ROOT / "bench"))


def test_rank_and_summary_come_from_the_rows(aq, tmp_path):
    assert aq.percentile_rank(0.5, [0.1, 0.2, 0.5, 0.9]) == pytest.approx(2.5 / 4)
    rows = [
        {
            "method": "random",
            "budget": 0.5,
            "seed": s,
            "acc_bn": 0.1 * s,
            "acc_ft": 0.1 * s,
            "keep_ratios": [0.5],
            "flops_ratio": 0.5,
        }  # fmt: skip
        for s in range(1, 6)
    ]
    rows += [
        {
            "method": "dsa",
            "budget": 0.5,
            "seed": s,
            "acc_bn": 0.35,
            "acc_ft": 0.4 + 0.1 * s,
            "keep_ratios": [0.6],
            "flops_ratio": 0.5,
        }  # fmt: skip
        for s in (0, 1)
    ]
    out = {"rows": rows, "name": "toy", "reference_acc": 0.9, "command": "x",
           "settings": {"finetune_steps": 1, "finetune_lr": 0.1, "alloc_epochs": 1,
                        "alloc_lr": 0.1, "random": 5}}  # fmt: skip
    aq.summarise(out)
    s = out["summary"]["0.5"]
    assert s["dsa"]["acc_ft_mean"] == pytest.approx(0.45)
    assert s["dsa"]["rank_ft"] == pytest.approx(4 / 5)  # 0.45: above 0.1 … 0.4, below 0.5
    assert s["random_ft"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    (tmp_path / "allocation_quality_toy.json").write_text(json.dumps(out))
    aq.write_tables(tmp_path)
    md = (tmp_path / "allocation_quality.md").read_text()
    assert "| 0.5 | dsa | 35.00 | 45.00 |" in md
    assert (tmp_path / "allocation_quality.png").stat().st_size > 0


def test_allocations_meet_the_budget_on_a_tiny_image_set(aq, tmp_path, monkeypatch):
    from dsaprune.data import ImageData, Splits

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 255, (200, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.arange(200) % 10
    data = ImageData(imgs, labels, [str(i) for i in range(10)])
    splits = Splits(data, data, 10, [0.5] * 3, [0.25] * 3)
    monkeypatch.setattr(aq, "load_splits", lambda *a, **k: splits)
    torch.manual_seed(0)
    model = models.create("resnet20")
    path = tmp_path / "ref.pt"
    dsaprune.save(model, path, model_name="resnet20", num_classes=10)
    ref, name = aq.load_model_file(str(path))
    assert name == "resnet20"
    a = Namespace(data=None, finetune_steps=2, finetune_lr=0.01, alloc_epochs=0.1, alloc_lr=0.01)
    bench = aq.Bench(ref, a)
    for method in ("uniform", "magnitude", "random"):
        counts = getattr(bench, method)(0.5, 0)
        alpha = torch.tensor(counts, dtype=torch.float64) / torch.tensor(bench.channels)
        assert 0.97 * 0.5 <= float(bench.cost.ratio(alpha)) <= 0.5, method
    r = bench.measure(bench.random(0.33, 1), 0, "bn_first")
    assert r["flops_ratio"] <= 0.33 and 0 <= r["acc_ft"] <= 1
    # run_<method>: the counts a finished table run ended with, found by method, budget and seed
    runs = tmp_path / "runs"
    counts = bench.uniform(0.333, 1)
    for folder, n in (("resnet20_dsa_f33p3_e8_s1", counts), ("resnet20_dsa_f33p3_e8", [1] * 12)):
        (runs / folder).mkdir(parents=True)
        report = {"groups": [{"channels_after": c} for c in n]}
        (runs / folder / "report.json").write_text(json.dumps(report))
    bench.a.name, bench.a.from_runs = "resnet20", str(runs)
    assert bench.from_run("dsa", 0.333, 1) == counts
    assert bench.from_run("dsa", 0.333, 0) == [1] * 12
    with pytest.raises(SystemExit, match="run_dsa: expected one finished run folder"):
        bench.from_run("dsa", 0.5, 0)
    (runs / "resnet20_dsa_f33p3_e8_s1" / "report.json").write_text(json.dumps({"groups": []}))
    with pytest.raises(SystemExit, match="not the same architecture"):
        bench.from_run("dsa", 0.333, 1)
