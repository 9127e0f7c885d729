"""DSA's allocation beside each group's measured sensitivity (the paper's analysis figure).

Sensitivity of a group: the test-accuracy drop of the trained, unpruned network when that group
alone is pruned by magnitude (its filters with the smallest L1 norms removed) from keep ratio 1.0
to ``--keep`` (0.8), without fine-tuning. Plotted beside the keep ratios a DSA run chose
(its ``report.json``), with the Spearman rank correlation of the two per-FLOP: does DSA keep
more of the groups whose channels hurt most to remove?

    python bench/sensitivity.py --checkpoint runs/table/resnet20_unpruned_e8/last.pt \\
        --report runs/table/resnet20_dsa_f50_e8/report.json --name cifar10_resnet20_dsa_f50
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dsaprune.cli.commands import model_from_checkpoint  # noqa: E402
from dsaprune.cost import flops_model  # noqa: E402
from dsaprune.data import load_splits, make_loader  # noqa: E402
from dsaprune.grouping import channel_importance, find_groups  # noqa: E402
from dsaprune.io import atomic_write_json  # noqa: E402
from dsaprune.surgery import prune_groups, top_channels  # noqa: E402
from dsaprune.train import evaluate  # noqa: E402


def _ranks(v: list[float]) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float64)
    r = torch.empty_like(t)
    r[t.argsort()] = torch.arange(len(v), dtype=torch.float64)
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def sensitivities(model, test, keep: float, device) -> tuple[float, list[dict]]:
    example = next(iter(test))[0][:1].to(device)
    groups = find_groups(model, example)
    cost = flops_model(groups)
    base = evaluate(model, test, device=device)["acc"]
    rows = []
    for k, g in enumerate(groups.prunable):
        m = copy.deepcopy(model)
        G = find_groups(m, example)
        imp = channel_importance(G, "l1")
        idx = [torch.arange(c.channels) for c in G.prunable]
        n = max(1, round(keep * g.channels))
        idx[k] = top_channels(imp[k].cpu(), n)
        prune_groups(G, idx)
        acc = evaluate(m, test, device=device)["acc"]
        alpha = torch.ones(len(idx), dtype=torch.float64)
        alpha[k] = n / g.channels
        saved = 1 - float(cost.ratio(alpha))
        rows.append(
            {
                "group": k,
                "members": g.describe(),
                "channels": g.channels,
                "acc": acc,
                "drop": 100 * (base - acc),
                "flops_saved": saved,
                "drop_per_flop": 100 * (base - acc) / max(saved, 1e-12),
            }
        )
        print(f"group {k:2d} ({g.describe()[:50]}): drop {rows[-1]['drop']:+.2f} pts", flush=True)
    return base, rows


def plot(rows: list[dict], keep_ratios: list[float], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) + 2), 4))
    ax.bar(x, keep_ratios, color="tab:blue", alpha=0.7, label="DSA keep ratio")
    ax.set_ylabel("DSA keep ratio")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in x])
    ax.set_xlabel("channel group (execution order)")
    ax2 = ax.twinx()
    ax2.plot(x, [r["drop"] for r in rows], "o-", color="tab:red", label="sensitivity")
    ax2.set_ylabel("accuracy drop when pruned alone to 0.8 (pts)", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the trained, unpruned network")
    p.add_argument("--report", required=True, help="a DSA run's report.json (its keep ratios)")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--keep", type=float, default=0.8, help="keep ratio of the pruned group")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--results", default="bench/results")
    p.add_argument("--name", required=True, help="file stem of the outputs")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    model, _ = model_from_checkpoint(a.checkpoint)
    model = model.to(device).eval()
    splits = load_splits(a.dataset, a.data)
    test = make_loader(splits.test, splits, 500, train=False, device=device)
    report = json.loads(Path(a.report).read_text())
    keep_ratios = [g["keep_ratio"] for g in report["groups"]]
    base, rows = sensitivities(model, test, a.keep, device)
    if len(rows) != len(keep_ratios):
        raise SystemExit(f"{a.report} has {len(keep_ratios)} groups, the checkpoint {len(rows)}")
    rho = spearman(keep_ratios, [r["drop_per_flop"] for r in rows])
    rho_abs = spearman(keep_ratios, [r["drop"] for r in rows])
    out = {
        "checkpoint": a.checkpoint,
        "report": a.report,
        "budget": report.get("budget"),
        "base_acc": 100 * base,
        "keep": a.keep,
        "dsa_keep_ratios": keep_ratios,
        "groups": rows,
        "spearman_keep_vs_drop": rho_abs,
        "spearman_keep_vs_drop_per_flop": rho,
        "command": "python bench/sensitivity.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    res = Path(a.results)
    atomic_write_json(out, res / f"{a.name}_sensitivity.json")
    title = (
        f"{report.get('model', '')} {report.get('budget', '')}: DSA keep ratio vs sensitivity "
        f"(Spearman ρ: {rho_abs:+.2f} vs drop, {rho:+.2f} vs drop per FLOP)"
    )
    plot(rows, keep_ratios, title, res / f"{a.name}_sensitivity.png")
    print(f"base {100 * base:.2f}%; Spearman keep vs drop {rho_abs:+.2f}, per FLOP {rho:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
