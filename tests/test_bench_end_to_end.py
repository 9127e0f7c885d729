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
