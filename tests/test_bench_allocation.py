"""bench/allocation_quality.py: its allocations meet the budget, its summary and tables are
computed from the rows, and a reference network round-trips through the weights-only file."""

import importlib.util
import json
import multiprocessing
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import dsaprune
from dsaprune import models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def aq():
    spec = importlib.util.spec_from_file_location(
        "allocation_quality", ROOT / "bench/allocation_quality.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
            "acc_ft2": 0.6,
            "keep_ratios": [0.6],
            "flops_ratio": 0.5,
        }  # fmt: skip
        for s in (0, 1, 2)
    ]
    rows += [
        {"method": "group_fisher", "budget": 0.5, "seed": s, "acc_bn": 0.3, "acc_ft": 0.5,
         "acc_ft2": 0.6 - 0.01 * s, "keep_ratios": [0.7], "flops_ratio": 0.5, "commit": "abc"}
        for s in (0, 1, 2)
    ]  # fmt: skip
    out = {"rows": rows, "name": "toy", "split": "dev", "reference_acc": 0.9, "command": "x",
           "settings": {"finetune_steps": 1, "finetune_lr": 0.1, "alloc_epochs": 1,
                        "alloc_lr": 0.1, "random": 5, "long_finetune_epochs": 2}}  # fmt: skip
    aq.summarise(out)
    s = out["summary"]["0.5"]
    assert s["dsa"]["acc_ft_mean"] == pytest.approx(0.5)
    assert s["dsa"]["rank_ft"] == pytest.approx(4.5 / 5)  # 0.5: above 0.1 … 0.4, ties 0.5
    assert s["random_ft"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    d = s["dsa_minus"]["group_fisher"]
    assert d["acc_bn"]["mean"] == pytest.approx(0.05) and d["acc_bn"]["higher"] == 3
    assert d["acc_ft"]["mean"] == pytest.approx(0.0)  # -0.1, 0, +0.1
    assert d["acc_ft"]["se"] == pytest.approx((0.02 / 2 / 3) ** 0.5)
    assert d["acc_ft2"]["mean"] == pytest.approx(0.01) and d["acc_ft2"]["higher"] == 2
    (tmp_path / "allocation_quality_toy_dev.json").write_text(json.dumps(out))
    aq.write_tables(tmp_path)
    md = (tmp_path / "allocation_quality.md").read_text()
    assert "## toy, dev half" in md
    assert "| 0.5 | dsa | 35.00 | 50.00 | 60.00 |" in md
    assert "| 0.5 | group_fisher | 30.00 | 50.00 | 59.00 | 0.40 | 0.90 | +5.00 ± 0.00 (3/3) |" in md
    assert (tmp_path / "allocation_quality.png").stat().st_size > 0


def test_dev_and_final_halves_are_disjoint_class_balanced_and_fixed():
    from common import paired, test_halves

    labels = torch.arange(1001) % 10
    dev, final = test_halves(labels)
    assert len(set(dev.tolist()) & set(final.tolist())) == 0
    assert len(dev) + len(final) == 1001
    assert torch.bincount(labels[dev]).tolist() == [50] * 10
    again, _ = test_halves(labels)
    assert torch.equal(dev, again)
    assert paired({0: 1.0}, {1: 0.0}) is None
    assert paired({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.0, 2: 9.0})["n"] == 2


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
    a = Namespace(
        data=None, finetune_steps=2, finetune_lr=0.01, alloc_epochs=0.1, alloc_lr=0.01,
        split="final", long_finetune_epochs=0.02, device="cpu",
    )  # fmt: skip
    bench = aq.Bench(ref, a)
    assert len(bench.test) == 1 and next(iter(bench.test))[0].shape[0] == 100  # the final half
    for method in ("uniform", "magnitude", "random", "group_fisher"):
        counts = getattr(bench, method)(0.5, 0)
        alpha = torch.tensor(counts, dtype=torch.float64) / torch.tensor(bench.channels)
        assert 0.97 * 0.5 <= float(bench.cost.ratio(alpha)) <= 0.5, method
    r = bench.measure(bench.random(0.33, 1), 0, "bn_first", long_ft=True)
    assert r["flops_ratio"] <= 0.33 and 0 <= r["acc_ft"] <= 1 and 0 <= r["acc_ft2"] <= 1
    from common import accuracy, unpack_correct

    for col in ("bn", "ft", "ft2"):  # per-image results behind every accuracy, 100 images
        right = unpack_correct(r[f"correct_{col}"])
        assert len(right) == 100 and accuracy(right) == r[f"acc_{col}"]
    counts = bench.group_fisher(0.33, 0)
    r = bench.measure(counts, 0, bench.fisher_imp[(0.33, 0)], long_ft=False)
    assert r["flops_ratio"] <= 0.33 and "acc_ft2" not in r
    # --per-image: an older row measured again gets its per-image results only where every
    # column scores exactly what the row says
    old = {k: v for k, v in r.items() if not k.startswith("correct_")}
    kr = [n / c for n, c in zip(counts, bench.channels, strict=True)]
    old.update(method="group_fisher", budget=0.33, seed=0, finetune_seed=0, commit="old",
               keep_ratios=kr)  # fmt: skip
    again = aq.with_per_image(bench, old, "group_fisher", "new")
    assert again["correct_bn"] == r["correct_bn"] and again["correct_ft"] == r["correct_ft"]
    assert again["per_image_at"] == "new" and again["acc_ft"] == r["acc_ft"]
    moved = old | {"acc_ft": r["acc_ft"] + 0.01}
    assert aq.with_per_image(bench, moved, "group_fisher", "new") is None
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


def test_dsa_minus_adds_the_test_images_share_where_the_rows_have_per_image_results(aq):
    from common import accuracy

    g = torch.Generator().manual_seed(0)
    n, rows = 1000, []
    for seed in range(3):
        base = torch.rand(n, generator=g) < 0.7
        flip = torch.rand(n, generator=g) < 0.1
        for m, right in {"dsa": base, "uniform": base ^ flip, "magnitude": base}.items():
            row = {"method": m, "budget": 0.5, "seed": seed, "keep_ratios": [0.5]}
            for col in ("acc_bn", "acc_ft"):
                row[col] = accuracy(right)
                if not (m == "magnitude" and col == "acc_ft"):  # one cell without them
                    row[col.replace("acc_", "correct_")] = aq.pack_correct(right)
            rows.append(row)
    out = {"rows": rows}
    aq.summarise(out)
    minus = out["summary"]["0.5"]["dsa_minus"]
    u = minus["uniform"]["acc_bn"]
    # 10% of images flipped per seed, independently: the images' SE ≈ sqrt(0.1 / 3 / n)
    assert u["image_se"] == pytest.approx((0.1 / 3 / n) ** 0.5, rel=0.2)
    assert u["se_both"] == pytest.approx((u["se"] ** 2 + u["image_se"] ** 2) ** 0.5)
    assert minus["magnitude"]["acc_bn"]["image_se"] == 0.0  # the same images right
    assert "image_se" not in minus["magnitude"]["acc_ft"]
    assert aq._diff(u).count(" / ") == 1 and " / " not in aq._diff(minus["magnitude"]["acc_ft"])


def _add_rows(aq, path, method):
    out = {"name": "x", "rows": []}  # this process's header; the file holds everyone's rows
    for seed in range(15):
        aq.add_row(out, path, {"method": method, "budget": 0.5, "seed": seed})


def test_processes_sharing_one_file_keep_each_others_rows(aq, tmp_path, monkeypatch):
    # rows side by side on a GPU: one process per method, each adding rows to the same file
    monkeypatch.setattr(aq, "RESULTS", tmp_path)
    path = tmp_path / "allocation_quality_x_dev.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_rows, args=(aq, path, m)) for m in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    rows = json.loads(path.read_text())["rows"]
    assert sorted(aq.row_key(r) for r in rows) == [
        (m, 0.5, s) for m in ("a", "b", "c") for s in range(15)
    ]
    aq.add_row({"name": "x"}, path, {"method": "a", "budget": 0.5, "seed": 3, "acc_ft": 0.1})
    rows = json.loads(path.read_text())["rows"]  # a row made again replaces its old one
    again = [r.get("acc_ft") for r in rows if aq.row_key(r) == ("a", 0.5, 3)]
    assert len(rows) == 45 and again == [0.1]


def test_a_variant_may_set_the_allocation_runs_length_and_device(aq, monkeypatch):
    seen = {}

    def fake_prune(model, *loaders, **kw):
        seen.update(kw)
        return Namespace(report={"groups": [{"channels_after": 4}, {"channels_after": 8}]})

    monkeypatch.setattr(aq.dsaprune, "prune", fake_prune)
    bench = object.__new__(aq.Bench)
    bench.a = Namespace(alloc_epochs=1.0, alloc_lr=0.01, device="cpu",
                        dsa_settings={"epochs": 3, "power": 3})  # fmt: skip
    bench.ref, bench.train90, bench.val10 = torch.nn.Linear(1, 1), None, None
    bench.splits = Namespace(train=None)
    monkeypatch.setattr(aq, "make_loader", lambda *a, **k: k["device"])
    assert bench.dsa(0.5, 1) == [4, 8]
    assert seen["epochs"] == 3 and seen["power"] == 3 and seen["estimator"] == "fisher"
    assert seen["device"] == "cpu" and seen["lr"] == 0.01 and seen["seed"] == 1
