"""bench/end_to_end.py: its table is built from the rows, DSA paired with each method by seed."""

import pytest


def test_table_pairs_dsa_with_each_method_by_seed(bench_script):
    e2e = bench_script("end_to_end_bench", "end_to_end.py")
    rows = [
        {"method": m, "budget": 0.5, "seed": s, "acc_final": acc}
        for m, accs in {"dsa": (0.80, 0.82, 0.81), "uniform": (0.79, 0.80, 0.81)}.items()
        for s, acc in enumerate(accs)
    ]
    md = e2e.markdown({"name": "resnet20", "reference": "ref.pt", "epochs": 2, "rows": rows})
    dsa = next(line for line in md.splitlines() if "| dsa |" in line)
    uni = next(line for line in md.splitlines() if "| uniform |" in line)
    assert "| 81.00 | 80.00 / 82.00 / 81.00 |" in dsa
    # differences 1, 2, 0 points: mean 1, standard error sqrt(1 / 3)
    assert f"+1.00 ± {(1 / 3) ** 0.5:.2f} (3 seeds)" in uni
    assert md.count("\n| 0.5 |") == 2
    with pytest.raises(StopIteration):
        next(line for line in md.splitlines() if "| magnitude |" in line)


def test_a_finished_run_scored_on_the_other_half_keeps_the_commit_that_made_it(
    bench_script, tmp_path, monkeypatch
):
    import argparse
    import json

    e2e = bench_script("end_to_end_bench", "end_to_end.py")
    monkeypatch.setattr(e2e, "RESULTS", tmp_path)
    monkeypatch.setattr(e2e, "commit", lambda: "scoring")
    monkeypatch.setattr(e2e, "half_accuracy", lambda model, data, split: 0.8)
    made = {"method": "dsa", "budget": 0.5, "seed": 0, "acc_final": 0.81, "commit": "maker"}
    (tmp_path / "end_to_end_r.json").write_text(json.dumps({"rows": [made]}))
    for seed in (0, 1):  # seed 1: finished, but no row records who made it
        run = tmp_path / "runs" / f"r_dsa_f50_e2_s{seed}"
        run.mkdir(parents=True)
        (run / "model.pt").write_bytes(b"")
        (run / "report.json").write_text(
            json.dumps({"flops_ratio": 0.5, "groups": [{"keep_ratio": 0.5}]})
        )
    a = argparse.Namespace(name="r", split="dev", checkpoint="ref.pt", epochs=2.0,
                           budgets=[0.5], seeds=[0, 1], methods=["dsa"], label=None,
                           runs=str(tmp_path / "runs"), data="data", dsa_config=None)  # fmt: skip
    rows = e2e.run(a)["rows"]
    assert [(r["seed"], r["commit"], r["acc_dev"]) for r in rows] == [
        (0, "maker", 0.8),
        (1, "unknown", 0.8),
    ]


def test_image_noise_separates_the_test_images_share_from_the_seeds(bench_script):
    """Every seed with the same per-image differences: no seed spread at all, yet resampling the
    images moves the mean by about sd / sqrt(n), the binomial standard error."""
    import torch

    noise = bench_script("image_noise_bench", "image_noise.py")
    g = torch.Generator().manual_seed(0)
    n = 4000
    one = torch.zeros(n)
    one[:300], one[300:500] = 100.0, -100.0  # 7.5% won, 5% lost: mean +2.5 points
    r = noise.half_noise(one.expand(3, n), 500, g)
    assert r["mean"] == pytest.approx(2.5) and r["seed_se"] == 0.0
    assert r["discordant"] == pytest.approx(0.125)
    assert r["image_se"] == pytest.approx(float(one.std()) / n**0.5, rel=0.15)
    # seeds that disagree: their spread is the seed SE, the images' share stays
    r = noise.half_noise(torch.stack([one, -one, one]), 500, g)
    assert r["per_seed"] == pytest.approx([2.5, -2.5, 2.5]) and r["seed_se"] > 1.0
