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

    import torch

    e2e = bench_script("end_to_end_bench", "end_to_end.py")
    monkeypatch.setattr(e2e, "RESULTS", tmp_path)
    monkeypatch.setattr(e2e, "commit", lambda: "scoring")
    correct = torch.tensor([True] * 4 + [False])
    monkeypatch.setattr(e2e, "half_correct", lambda model, data, split: correct)
    made = {"method": "dsa", "budget": 0.5, "seed": 0, "acc_final": 0.81, "commit": "maker"}
    (tmp_path / "end_to_end_r.json").write_text(json.dumps({"rows": [made]}))
    for seed in (0, 1):  # seed 1: finished, but no row records who made it
        run = tmp_path / "runs" / f"r_dsa_f50_e2_s{seed}"
        run.mkdir(parents=True)
        (run / "model.pt").write_bytes(b"")
        (run / "report.json").write_text(
            json.dumps({"flops_ratio": 0.5, "params_ratio": 0.6, "groups": [{"keep_ratio": 0.5}]})
        )
    a = argparse.Namespace(name="r", split="dev", checkpoint="ref.pt", epochs=2.0,
                           budgets=[0.5], seeds=[0, 1], methods=["dsa"], label=None,
                           runs=str(tmp_path / "runs"), data="data", dsa_config=None,
                           counts_of=None, per_image=False, kind="flops")  # fmt: skip
    rows = e2e.run(a)["rows"]
    assert [(r["seed"], r["commit"], r["acc_dev"]) for r in rows] == [
        (0, "maker", 0.8),
        (1, "unknown", 0.8),
    ]
    from common import unpack_correct

    assert all(unpack_correct(r["correct_dev"]).equal(correct) for r in rows)

    # a --counts-of variant: each seed's run applies the same seed's dsa run's keep counts
    for seed, counts in ((0, [3, 4]), (1, [5, 6])):
        report = tmp_path / "runs" / f"r_dsa_f50_e2_s{seed}" / "report.json"
        report.write_text(json.dumps({**json.loads(report.read_text()), "keep_counts": counts}))
    made = []

    def prune_once(argv, run_dir):
        made.append(argv)
        run_dir.mkdir(parents=True)
        (run_dir / "model.pt").write_bytes(b"")
        (run_dir / "report.json").write_text(
            json.dumps({"flops_ratio": 0.5, "params_ratio": 0.6, "groups": [{"keep_ratio": 0.5}]})
        )
        return True

    monkeypatch.setattr(e2e, "prune_once", prune_once)
    rows = e2e.run(argparse.Namespace(**{**vars(a), "label": "dsa_counts", "counts_of": "dsa"}))[
        "rows"
    ]
    assert [r["method"] for r in rows] == ["dsa", "dsa", "dsa_counts", "dsa_counts"]
    assert [argv[argv.index("--method") + 1] for argv in made] == ["given", "given"]
    assert [argv[argv.index("--keep-counts") + 1] for argv in made] == ["3,4", "5,6"]
    assert all(r["commit"] == "scoring" for r in rows[2:])

    # under a parameter budget: rows of their own kind, in their own run folders
    made.clear()
    rows = e2e.run(argparse.Namespace(**{**vars(a), "kind": "params"}))["rows"]
    assert [(r.get("kind"), r["method"], r["seed"]) for r in rows[-2:]] == [
        ("params", "dsa", 0),
        ("params", "dsa", 1),
    ]
    assert [argv[argv.index("--budget") + 1] for argv in made] == ["params=0.5", "params=0.5"]
    outs = [argv[argv.index("--out") + 1] for argv in made]
    assert [o.endswith(f"/r_dsa_p50_e2_s{i}") for i, o in enumerate(outs)] == [True, True]
    assert "| params 0.5 | dsa | 2 |" in e2e.markdown(e2e.run(argparse.Namespace(**vars(a))))


def test_half_noise_separates_the_test_images_share_from_the_seeds(bench_script):
    """Every seed with the same per-image differences: no seed spread at all, yet resampling the
    images moves the mean by about sd / sqrt(n), the binomial standard error."""
    import torch

    common = bench_script("bench_common", "common.py")
    n = 4000
    one = torch.zeros(n)
    one[:300], one[300:500] = 100.0, -100.0  # 7.5% won, 5% lost: mean +2.5 points
    r = common.half_noise(one.expand(3, n), 500)
    assert r["mean"] == pytest.approx(2.5) and r["seed_se"] == 0.0
    assert r["discordant"] == pytest.approx(0.125)
    assert r["image_se"] == pytest.approx(float(one.std()) / n**0.5, rel=0.15)
    assert r["se"] == pytest.approx(r["image_se"])
    # seeds that disagree: their spread is the seed SE, the images' share stays
    r = common.half_noise(torch.stack([one, -one, one]), 500)
    assert r["per_seed"] == pytest.approx([2.5, -2.5, 2.5]) and r["seed_se"] > 1.0
    assert r["se"] == pytest.approx((r["seed_se"] ** 2 + r["image_se"] ** 2) ** 0.5)


@pytest.mark.parametrize("n", [1, 8, 13, 5000])
def test_per_image_results_pack_and_unpack_exactly(bench_script, n):
    import torch

    common = bench_script("bench_common", "common.py")
    correct = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.8
    packed = common.pack_correct(correct)
    assert len(packed["hex"]) == 2 * -(-n // 8)
    assert common.unpack_correct(packed).equal(correct)


def test_table_gives_the_images_share_where_every_paired_row_has_per_image_results(
    bench_script,
):
    import torch

    e2e = bench_script("end_to_end_bench", "end_to_end.py")
    g = torch.Generator().manual_seed(0)
    n = 2000
    rows = []
    for s in range(3):
        base = torch.rand(n, generator=g) < 0.8
        flip = torch.rand(n, generator=g) < 0.05  # the other method differs on ~5% of images
        for m, c in {"dsa": base, "uniform": base ^ flip, "magnitude": base}.items():
            row = {"method": m, "budget": 0.5, "seed": s, "acc_final": e2e.accuracy(c)}
            if m != "magnitude":  # an older row without per-image results
                row["correct_final"] = e2e.pack_correct(c)
            rows.append(row)
    md = e2e.markdown({"name": "r", "reference": "ref.pt", "epochs": 2, "rows": rows})
    uni = next(line for line in md.splitlines() if "| uniform |" in line).rstrip(" |").split(" | ")
    mag = next(line for line in md.splitlines() if "| magnitude |" in line)
    img = e2e.image_share(rows, "dsa", "uniform", "final")
    assert img["discordant"] == pytest.approx(0.05, abs=0.01)
    # ~5% of each seed's images differ by ±100 points, other images per seed: an image's mean
    # over the 3 seeds has variance 0.05 · 100² / 3, its mean over 2,000 images an SE of ≈ 0.29
    assert img["image_se"] == pytest.approx((0.05 * 100**2 / 3 / n) ** 0.5, rel=0.2)
    assert uni[6:9] == [
        f"± {img['image_se']:.2f}",
        f"± {img['se']:.2f}",
        f"{100 * img['discordant']:.1f}%",
    ]
    assert mag.endswith("(3 seeds) | – | – | – |")
    assert e2e.image_share(rows, "dsa", "magnitude", "final") is None


def test_an_older_row_made_again_must_score_what_it_says(bench_script, tmp_path, monkeypatch):
    import argparse

    import torch

    e2e = bench_script("end_to_end_bench", "end_to_end.py")
    monkeypatch.setattr(e2e, "ROOT", tmp_path)
    run = tmp_path / "runs" / "r_dsa_f50_e2_s0"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"")
    (run / "report.json").write_text("{}")
    correct = torch.tensor([True, True, False, True])
    monkeypatch.setattr(e2e, "half_correct", lambda model, data, split: correct)
    a = argparse.Namespace(data="data", split="final")
    row = {
        "acc_final": 0.75,
        "commit": "maker",
        "command": "dsaprune prune --out runs/r_dsa_f50_e2_s0",
    }
    e2e.add_per_image(row, a, "now")
    from common import unpack_correct

    assert unpack_correct(row["correct_final"]).equal(correct)
    assert "remade_at" not in row  # the folder was there: scored, not made again
    other = {**row, "acc_final": 0.5}
    del other["correct_final"]
    with pytest.raises(SystemExit, match="scores 75.00 on the final half where its row"):
        e2e.add_per_image(other, a, "now")
    assert "correct_final" not in other


def test_comma_lists_parse_and_name_a_bad_item(bench_script, capsys):
    import argparse

    common = bench_script("bench_common", "common.py")
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=common.comma_list(int))
    p.add_argument("--methods", type=common.comma_list())
    a = p.parse_args(["--seeds", "0,1,2", "--methods", "dsa,,uniform"])
    assert a.seeds == [0, 1, 2] and a.methods == ["dsa", "uniform"]
    with pytest.raises(SystemExit):
        p.parse_args(["--seeds", "0,x"])
    assert "invalid comma-separated int value: '0,x'" in capsys.readouterr().err
