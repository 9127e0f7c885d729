"""``dsaprune compare``: one prune run per method and seed, the paired table, and a comparison
that continues where it stopped instead of running again."""

import json

import pytest

from dsaprune.cli.compare import parse_methods, summarise, table_lines
from dsaprune.cli.main import main
from dsaprune.models.pretrained import DEMO_WEIGHTS


def test_summary_pairs_the_differences_by_seed():
    def row(m, s, acc):
        return {"method": m, "seed": s, "acc_after": acc}

    rows = [row("dsa", 0, 0.80), row("dsa", 1, 0.90), row("uniform", 0, 0.70)]
    rows += [row("uniform", 1, 0.90), row("uniform", 2, 0.10)]  # seed 2: no DSA run to pair
    dsa, uni = summarise(rows, ["dsa", "uniform"])
    assert dsa["mean"] == pytest.approx(85.0) and dsa["se"] == pytest.approx(5.0)
    assert uni["seeds"] == [0, 1, 2] and "diff" not in dsa
    # paired on seeds 0 and 1 only: differences +10 and 0
    assert uni["diff"] == pytest.approx(5.0) and uni["diff_se"] == pytest.approx(5.0)
    assert not uni["beyond"]
    one = summarise(rows[:1] + rows[2:3], ["dsa", "uniform"])  # one seed: no error to give
    assert "+10.00 (one seed: no SE)" in table_lines(one)[2] and "± –" in table_lines(one)[1]
    # without dsa, the first method is the reference
    assert summarise(rows, ["uniform"])[0]["ref"] == "uniform"


def test_methods_are_checked_before_any_run():
    assert parse_methods("dsa, group_fisher") == ["dsa", "group_fisher"]
    with pytest.raises(ValueError, match="unknown method.*'nope'.*choose from dsa"):
        parse_methods("dsa,nope")
    with pytest.raises(ValueError, match="named twice"):
        parse_methods("dsa,dsa")
    with pytest.raises(ValueError, match="--method given --keep-counts"):
        parse_methods("dsa,given")


@pytest.mark.slow
def test_compare_runs_each_method_and_seed_and_continues_where_it_stopped(
    tmp_path, capsys, fast_args, small_shapes
):
    out = tmp_path / "cmp"
    argv = [
        "compare",
        *fast_args,
        "--weights",
        str(DEMO_WEIGHTS),
        "--methods",
        "uniform,magnitude",
    ]
    argv += ["--seeds", "2", "--epochs", "0.02", "--budget", "flops=0.4", "--out", str(out)]
    argv += ["--dataset", "shapes", "--device", "cpu", "--quiet"]
    # a first invocation stopped before any run finished (a typo in an option, say) left a record
    # of other settings and no rows: nothing to mix in, so this one starts afresh
    out.mkdir()
    (out / "compare.json").write_text(json.dumps({"settings": {"lr": 9.0}, "rows": []}))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "compare.json").read_text())
    assert [(r["method"], r["seed"]) for r in record["rows"]] == [
        ("uniform", 0),
        ("magnitude", 0),
        ("uniform", 1),
        ("magnitude", 1),
    ]
    for r in record["rows"]:
        rep = json.loads((out / f"{r['method']}_s{r['seed']}" / "report.json").read_text())
        assert rep["acc_after"] == r["acc_after"] and rep["flops_ratio"] <= 0.4
        assert rep["dsa_config"]["method"] == r["method"] and rep["acc_before"] > 0.95
    acc = {(r["method"], r["seed"]): r["acc_after"] for r in record["rows"]}
    diff = sum(100 * (acc["uniform", s] - acc["magnitude", s]) for s in (0, 1)) / 2
    line = next(ln for ln in printed.splitlines() if ln.startswith("magnitude "))
    shown = float(line.split("±")[-2].split()[-1])  # the paired difference's mean
    assert shown == pytest.approx(diff, abs=0.006) and "uniform − method (paired ± SE)" in printed
    assert "| magnitude | 2 |" in (out / "compare.md").read_text()

    # an interrupted comparison: one run lost its report (it stopped after its last epoch's
    # checkpoint); the same command finishes it from there and reads the others back
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*_s*/model.pt")}
    (out / "magnitude_s1" / "report.json").unlink()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished before") == 3
    again = json.loads((out / "compare.json").read_text())
    assert again["rows"][3]["acc_after"] == record["rows"][3]["acc_after"]  # exact resume
    for p, t in stamps.items():
        assert (p.stat().st_mtime_ns == t) == (p.parent.name != "magnitude_s1"), p

    # fewer seeds: read back, nothing run, and the record keeps every finished run
    fewer = [a if a != "2" else "1" for a in argv]
    assert main(fewer) == 0
    assert capsys.readouterr().out.count("finished before") == 2
    assert len(json.loads((out / "compare.json").read_text())["rows"]) == 4

    # other settings into the same folder are refused, not mixed in; --force starts afresh
    other = [a if a != "flops=0.4" else "flops=0.3" for a in argv]
    assert main(other) == 2
    assert "holds a comparison made with other settings (budget)" in capsys.readouterr().err
    assert main([*other, "--seeds", "1", "--methods", "uniform", "--force"]) == 0
    record = json.loads((out / "compare.json").read_text())
    assert [(r["method"], r["seed"]) for r in record["rows"]] == [("uniform", 0)]
    assert json.loads((out / "uniform_s0" / "report.json").read_text())["flops_ratio"] <= 0.3
