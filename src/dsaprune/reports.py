"""Run reports: ``report.json``, ``report.md``, ``allocation.png`` (keep ratio per group) and
``training.png`` (loss, accuracy and cost ratio over the schedule)."""

from __future__ import annotations

from pathlib import Path

from .cost import COSTS, make_cost
from .cost.measured import faulting
from .io import atomic_write_json, atomic_write_text


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _cost_rows(r: dict) -> list[str]:
    """One row per counted budget kind, then the latency, predicted and measured."""
    rows = []
    for kind in COSTS:
        if f"{kind}_before" in r:
            label = make_cost(kind).label
            rows.append(
                f"| {label} | {r[f'{kind}_before']:,} | {r[f'{kind}_after']:,} | "
                f"{r[f'{kind}_ratio']:.4f} |"
            )
    lat = r.get("latency")
    if lat:
        where = f"{lat['device']}, batch {lat['batch']}"
        rows += [
            f"| latency ({where}), predicted | {lat['predicted_before_ms']:.3f} ms | "
            f"{lat['predicted_after_ms']:.3f} ms | {lat['predicted_ratio']:.4f} |",
            f"| latency ({where}), measured | {lat['measured_before_ms']:.3f} ms | "
            f"{lat['measured_after_ms']:.3f} ms | {lat['measured_ratio']:.4f} |",
        ]
    return rows


def _table_note(lat: dict) -> str:
    status = lat.get("table_status", "ok")
    if status == "ok":
        return ""
    what = (
        "the latency table was measured while the machine was busy and is measured again next run"
        if status.startswith("table")
        else "the machine was busy while this report measured"
    )
    return (
        f" The unpruned network ran {lat['now_over_table']:.2f}× the {lat['table_ms']:.3f} ms "
        f"its latency table holds: {what}."
    )


def _malloc_note(lat: dict) -> str:
    faults = lat.get("page_faults_before")
    if faults is None:
        return ""
    return (
        f" Timed with the {lat['malloc']} allocator; a forward pass faulted in "
        f"{faults:.0f} fresh memory pages before pruning and {lat['page_faults_after']:.0f} after"
        + (
            " (their cost varies between runs: see `--steady-malloc`)."
            if faulting(lat["malloc"], faults)
            else "."
        )
    )


def markdown(r: dict) -> str:
    lat = r.get("latency")
    lines = [
        f"# DSA pruning report: {r.get('model') or 'model'} at {r['budget']}",
        "",
        "| | before | after | ratio |",
        "|---|---|---|---|",
        *_cost_rows(r),
        f"| test accuracy | {_pct(r.get('acc_before'))} | {_pct(r.get('acc_after'))} | |",
        "",
    ]
    if lat:
        lines += [
            f"Measured speed-up **{lat['measured_speedup']:.2f}×** (FLOPs ratio "
            f"{r['flops_ratio']:.4f}); the latency model's error on the pruned network is "
            f"{100 * lat['prediction_error']:+.1f}%."
            + (
                f" The budget's rounding kept whole blocks of {r['rounding_block']} channels in "
                "every group wider than one block "
                "(a partial block runs as slowly as a full one on this device)"
                + (
                    f", but below the first block in {len(lat['sub_block_groups'])} group(s) "
                    "whose layers were measured to get faster there."
                    if lat.get("sub_block_groups")
                    else "."
                )
                if r.get("rounding_block", 1) > 1
                else ""
            )
            + _table_note(lat)
            + _malloc_note(lat),
            "",
        ]
    lines += [
        f"Budget met by: **{r.get('met_by')}**"
        + (f" at epoch {r['met_at_epoch']:.2f}" if r.get("met_at_epoch") is not None else "")
        + f"; {r.get('allocation_updates', 0)} allocation updates; "
        f"{r['epochs']:g} epochs in {r['wall_time_s']:.0f} s.",
        "",
        "Time per phase (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.get("phase_time_s", {}).items()),
        "",
        "| group | members | channels | kept | keep ratio |",
        "|---|---|---|---|---|",
    ]
    for g in r["groups"]:
        lines.append(
            f"| {g['index']} | {g['members']} | {g['channels_before']} | "
            f"{g['channels_after']} | {g['keep_ratio']:.3f} |"
        )
    if r.get("unprunable_groups"):
        lines += ["", "Not pruned: " + "; ".join(r["unprunable_groups"])]
    return "\n".join(lines) + "\n"


def _pyplot():
    """pyplot on the file-only backend (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_allocation(r: dict, path: Path) -> None:
    plt = _pyplot()
    gs = r["groups"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(gs)), 3.5))
    ax.bar(range(len(gs)), [g["keep_ratio"] for g in gs], color="tab:blue")
    ax.axhline(r["budget_fraction"], color="tab:red", ls="--", lw=1, label=f"budget {r['budget']}")
    ax.set_xticks(range(len(gs)))
    ax.set_xticklabels([str(g["index"]) for g in gs], fontsize=7)
    ax.set_xlabel("channel group (execution order)")
    ax.set_ylabel("keep ratio")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{r.get('model') or 'model'}: keep ratio per group at {r['budget']}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(r: dict, path: Path) -> None:
    plt = _pyplot()
    h = r.get("history", [])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    ep = [x["epoch"] for x in h]
    axes[0].plot(ep, [x["train_loss"] for x in h], label="train loss")
    if h and "test_loss" in h[0]:
        axes[0].plot(ep, [x["test_loss"] for x in h], label="test loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    if h and "test_acc" in h[0]:
        axes[1].plot(ep, [100 * x["test_acc"] for x in h], color="tab:green")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("test accuracy (%)")
    ah = r.get("allocation_history", [])
    if ah:
        axes[2].plot([a["step"] for a in ah], [a["cost_ratio"] for a in ah], label="cost of A")
        axes[2].axhline(r["budget_fraction"], color="tab:red", ls="--", lw=1, label="budget")
        axes[2].set_xlabel("step")
        axes[2].set_ylabel(f"{r['budget_kind']} ratio")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(r: dict, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(r, out / "report.json")
    atomic_write_text(markdown(r), out / "report.md")
    plot_allocation(r, out / "allocation.png")
    plot_training(r, out / "training.png")
