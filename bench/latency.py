"""Latency budgets and the real speed-up of pruned networks, measured.

For each model, device and batch size the latency model is fitted (``dsaprune.cost.latency``:
per-layer bilinear fits calibrated on the whole network; the time this takes, or that it came
from the cache, is recorded). Then for every budget (``latency=0.7``, ``latency=0.5``,
``flops=0.5``) and ``--round-to`` (1, 8) one allocation is made: random keep-ratio logits (the
same seed for every budget), all shifted together to the budget, rounded to whole channels by the
library's own rounding (cost ≤ budget); for latency budgets the pruned network is then
measured and the target tightened until the measurement meets the budget, as ``prune`` does
(``meet_by_measurement``). Each allocation is pruned physically, and the unpruned
network is timed interleaved against each pruned one in turn, as a prune run's report times
its pair (machines are noisy; the unpruned time recorded is its fastest over the pairs).

Recorded per run: the predicted latency ratio, the measured one, the prediction error
(predicted / measured latency of the pruned network − 1) and the FLOPs ratio. Targets:

- latency budgets at CPU batch 64: measured ratio ≤ budget + 0.05;
- prediction error within ±10%;
- FLOPs budgets: measured latency ratio ≤ FLOPs ratio + 0.1; where it is not, the table below it
  says where the time goes, per layer, from the fitted model.

Each network's minor page faults per forward pass are recorded beside its time: with the system
allocator they are the C allocator handing large blocks back after every call, a cost that
varies from run to run (``dsaprune.cost.timing``). ``--steady-malloc`` measures with freed
memory kept in the process, as ``dsaprune prune --steady-malloc`` does.

Writes ``bench/results/latency_<device>.{json,md}``.

    python bench/latency.py [--models resnet20,resnet56,mobilenetv2_cifar,vgg16_cifar] \\
        [--batches 1,64] [--devices cpu[,cuda]] [--steady-malloc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dsaprune import models  # noqa: E402
from dsaprune.allocation import round_channels, shift_to_budget  # noqa: E402
from dsaprune.cost import count_flops, flops_model, latency_model, measure_latency  # noqa: E402
from dsaprune.cost import latency as latency_module  # noqa: E402
from dsaprune.cost.latency import layer_time, pruned_copy  # noqa: E402
from dsaprune.cost.measured import faults_per_forward  # noqa: E402
from dsaprune.cost.quadratic import layer_terms  # noqa: E402
from dsaprune.cost.timing import describe_device, malloc_name, steady_malloc  # noqa: E402
from dsaprune.grouping import find_groups  # noqa: E402
from dsaprune.io import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BUDGETS = (("latency", 0.7), ("latency", 0.5), ("flops", 0.5))
ROUND_TO = (1, 8)


def where_time_goes(G, L, alpha: torch.Tensor, top: int = 5) -> dict:
    """From the fitted model: the fixed share of the pruned network's time (the layers' per-call
    constants and the calibration constant), and the layers whose time falls least against
    their FLOPs."""
    kappa, fixed, _ = L.fit.calibration["coef"]  # the element-wise term scales: not fixed
    rows = []
    for t in layer_terms(G):
        coef = [kappa * v for v in L.fit.layers[t.name]["coef"]]
        x = sum(share * (1.0 if j is None else float(alpha[j])) for j, share in t.in_terms)
        y = 1.0 if t.out_k is None else float(alpha[t.out_k])
        if t.shape.depthwise:
            x = y
        before, after = layer_time(coef, 1.0, 1.0), layer_time(coef, x, y)
        fixed += coef[3]
        flops_ratio = y if t.shape.depthwise else x * y
        if before > 0:  # a layer fitted at no time at all has none to account for
            rows.append((t.name, 1e3 * before, 1e3 * after, after / before, flops_ratio))
    total = float(L(alpha))
    rows.sort(key=lambda r: r[2] - r[1] * r[4], reverse=True)  # ms above FLOPs-proportional
    return {
        "fixed_share_after": fixed / total,
        "layers": [
            {"layer": n, "ms_before": b, "ms_after": a, "time_ratio": tr, "flops_ratio": fr}
            for n, b, a, tr, fr in rows[:top]
        ],
    }


def run(name: str, device: str, batch: int, seed: int = 0) -> dict:
    torch.manual_seed(0)
    model = models.create(name).to(device).eval()
    shape = models.input_size(name)
    G = find_groups(model, torch.zeros(1, *shape, device=device))
    t0 = time.perf_counter()
    L = latency_model(G, batch=batch, device=device, progress=True)
    fit_s = time.perf_counter() - t0
    F = flops_model(G)
    channels = [g.channels for g in G.prunable]
    chans = torch.tensor(channels, dtype=torch.float64)
    theta = torch.randn(len(channels), generator=torch.Generator().manual_seed(seed))
    runs, nets = [], [model]
    for kind, frac in BUDGETS:
        cost = L if kind == "latency" else F  # the bench compares the two kinds side by side
        for r in ROUND_TO:
            floor = cost.floor(r)
            if floor > frac:  # refused by prune() too, with this smallest feasible value
                runs.append({"budget": f"{kind}={frac:g}", "round_to": r, "floor": floor})
                continue

            def counts_for(target, cost=cost, r=r):
                shifted, _ = shift_to_budget(theta, cost, target)
                return round_channels(torch.sigmoid(shifted), channels, cost, target, r)

            counts, log = cost.settle_counts(G, counts_for, frac)  # as prune() does
            log = log or None
            alpha = torch.tensor(counts, dtype=torch.float64) / chans
            at = L.computed(alpha)  # the whole blocks the kernels compute
            pruned = pruned_copy(G, counts, device)
            nets.append(pruned)
            runs.append(
                {
                    "budget": f"{kind}={frac:g}",
                    "round_to": r,
                    "predicted_ratio": float(L(at)) / L.full,
                    "predicted_ms": 1e3 * float(L(at)),
                    "flops_ratio": count_flops(pruned, shape) / count_flops(model, shape),
                    "where": where_time_goes(G, L, at) if kind == "flops" else None,
                    "measurements": log,
                    "counts": counts,
                }
            )
    rounds = 15 if batch <= 8 else 9
    # each pruned network against the unpruned one, as a prune run's report times them; all of
    # them in one interleaved timing as well, for comparison (``ratio_together``)
    together = measure_latency(nets, shape, batch, device, rounds=rounds)
    pairs = [measure_latency([model, n], shape, batch, device, rounds=rounds) for n in nets[1:]]
    times = [min(p[0] for p in pairs)] + [p[1] for p in pairs]
    ratios = [p[1] / p[0] for p in pairs]
    faults = faults_per_forward(nets, shape, batch, device)
    done = [r for r in runs if "floor" not in r]
    for rec, t, q, f, tt in zip(done, times[1:], ratios, faults[1:], together[1:], strict=True):
        rec["ratio_together"] = tt / together[0]
        rec["page_faults"] = f
        rec["measured_ms"] = 1e3 * t
        rec["measured_ratio"] = q
        rec["prediction_error"] = rec["predicted_ms"] / rec["measured_ms"] - 1.0
        rec["ratio_error"] = rec["predicted_ratio"] / rec["measured_ratio"] - 1.0
    return {
        "model": name,
        "device": device,
        "device_name": describe_device(device),
        "batch": batch,
        "fit_s": fit_s,
        "block": L.block,
        # prunable groups (indices into all groups) allowed less than one block
        "sub_block_groups": L.fit.sub_block,
        "unpruned_measured_ms": 1e3 * times[0],
        "unpruned_predicted_ms": 1e3 * L.full,
        "unpruned_error": L.full / times[0] - 1.0,
        "unpruned_page_faults": faults[0],
        "malloc": malloc_name(),
        "runs": runs,
    }


def channel_sweep(device: str, batch: int = 64) -> list[list[float]]:
    """[[channels, ms], …] of one 3×3 convolution (in = out channels, 16×16 input): how a
    layer's time follows its channel count on this device."""
    import torch.nn as nn

    from dsaprune.cost.timing import time_calls

    counts = [16, 20, 24, 28, 31, 32, 33, 36, 40, 44, 47, 48, 49, 52, 56, 60, 63, 64]
    fns = []
    for n in counts:
        conv = nn.Conv2d(n, n, 3, padding=1, bias=False).to(device).eval()
        x = torch.randn(batch, n, 16, 16, device=device)
        fns.append(lambda c=conv, x=x: c(x))
    return [[n, 1e3 * t] for n, t in zip(counts, time_calls(fns, device, rounds=7), strict=True)]


def timings(rec: dict) -> list[float]:
    """Every measured latency ratio of a run's final network: against the unpruned one as a
    pair, among all networks, and the last try of a latency budget (made on the same counts)."""
    out = [rec["measured_ratio"]]
    if rec.get("ratio_together") is not None:
        out.append(rec["ratio_together"])
    if rec.get("measurements"):
        out.append(rec["measurements"][-1]["measured_ratio"])
    return out


def median_ratio(rec: dict) -> float:
    """The median of ``timings``: one timing disturbed by the machine moves it not at all."""
    return statistics.median(timings(rec))


def summary(results: list[dict]) -> list[str]:
    """Latency-budget runs per device and batch against the targets, by each kind of timing."""
    cells: dict[tuple, list] = {}
    for res in results:
        for rec in res["runs"]:
            if "measured_ratio" in rec and rec["budget"].startswith("latency"):
                cells.setdefault((res["device_name"], res["batch"]), []).append(rec)
    lines = [
        "| device | batch | timing | runs | measured ≤ budget + 0.05 | ratio error within ±10% "
        "| largest ratio error |",
        "|---|---|---|---|---|---|---|",
    ]
    kinds = (
        ("pair", lambda r: r["measured_ratio"]),
        ("with all", lambda r: r.get("ratio_together")),
        ("median of the timings", median_ratio),
    )
    for (dev, batch), recs in cells.items():
        for label, get in kinds:
            got = [(r, get(r)) for r in recs if get(r) is not None]
            if not got:
                continue
            errs = [abs(r["predicted_ratio"] / m - 1) for r, m in got]
            met = sum(m <= float(r["budget"].split("=")[1]) + 0.05 for r, m in got)
            lines.append(
                f"| {dev} | {batch} | {label} | {len(got)} | {met} | "
                f"{sum(e <= 0.10 for e in errs)} | {100 * max(errs):.1f}% |"
            )
    return lines


def _opt(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _target(rec: dict, batch: int, device: str) -> str:
    kind, frac = rec["budget"].split("=")
    marks = []
    if abs(rec["prediction_error"]) > 0.10:
        marks.append("error > 10%")
    at_target = kind == "latency" and device == "cpu" and batch == 64
    if at_target and rec["measured_ratio"] > float(frac) + 0.05:
        marks.append("over budget + 0.05")
    if kind == "flops" and rec["measured_ratio"] > rec["flops_ratio"] + 0.1:
        marks.append("latency > FLOPs ratio + 0.1")
    return "; ".join(marks) or "met"


def markdown(results: list[dict], command: str, sweep: list | None = None) -> str:
    lines = [
        "# Latency budgets: predicted and measured",
        "",
        f"`{command}` (written by `bench/latency.py`; all timings of one model, device and "
        "batch are interleaved in one process).",
        "",
        "*prediction error*: predicted / measured latency of the pruned network − 1, in ms (the "
        "tables were fitted minutes before, so drift of the machine between then and now is "
        "in it); *ratio error*: predicted / measured latency ratio − 1 (what a budget rests on; "
        "both networks timed together, so drift cancels).",
        "",
        "*measured ratio*: the pruned network timed interleaved against the unpruned one, as a "
        "prune run's report times them; *measured with all*: every network of the model and "
        "batch in one interleaved timing (older results: that alone). *tries*: measurements of "
        "the pruned network before it met a latency budget. *median*: the median of the pair, "
        "the timing with all, and a latency budget's last try (the same network), so that one "
        "timing disturbed by the machine does not decide; its ratio error is the model's "
        "against it.",
        "",
        "Latency-budget runs against the targets, by timing:",
        "",
        *summary(results),
        "",
        "| model | device | batch | budget | round to | predicted ratio | measured ratio | "
        "measured with all | median | FLOPs ratio | measured ms (unpruned) | prediction error | "
        "ratio error | ratio error (median) | tries | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for rec in res["runs"]:
            if "floor" in rec:
                lines.append(
                    f"| {res['model']} | {res['device_name']} | {res['batch']} | "
                    f"{rec['budget']} | {rec['round_to']} | infeasible: smallest feasible "
                    f"{rec['floor']:.3f} (refused) | | | | | | | | | | |"
                )
                continue
            lines.append(
                f"| {res['model']} | {res['device_name']} | {res['batch']} | {rec['budget']} | "
                f"{rec['round_to']} | {rec['predicted_ratio']:.3f} | {rec['measured_ratio']:.3f}"
                f" | {_opt(rec.get('ratio_together'))} | {median_ratio(rec):.3f} | "
                f"{rec['flops_ratio']:.3f} | {rec['measured_ms']:.3f} "
                f"({res['unpruned_measured_ms']:.3f}) | {100 * rec['prediction_error']:+.1f}% | "
                f"{100 * rec['ratio_error']:+.1f}% | "
                f"{100 * (rec['predicted_ratio'] / median_ratio(rec) - 1):+.1f}% | "
                f"{len(rec.get('measurements') or []) or ''} | "
                f"{_target(rec, res['batch'], res['device'])} |"
            )
    lines += [
        "",
        "Fitting (per-layer grids and the whole-network calibration; ~0 s when cached), and the "
        "model's error on the unpruned network:",
        "",
        "| model | device | batch | channel block | fit s | unpruned predicted ms | measured ms "
        "| error | allocator | page faults per forward |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        faults = res.get("unpruned_page_faults")
        lines.append(
            f"| {res['model']} | {res['device_name']} | {res['batch']} | {res.get('block', 1)} | "
            f"{res['fit_s']:.1f} | "
            f"{res['unpruned_predicted_ms']:.3f} | {res['unpruned_measured_ms']:.3f} | "
            f"{100 * res['unpruned_error']:+.1f}% | {res.get('allocator', 'system')} | "
            f"{'' if faults is None else f'{faults:.0f}'} |"
        )
    if sweep:
        lines += [
            "",
            "## One layer's time against its channel count",
            "",
            "A 3×3 convolution, in = out channels, 16×16 input, batch 64 (the shape of "
            "ResNet-56's second stage), timed interleaved. The bilinear model assumes the time "
            "grows smoothly with the channels; above one block of 16 channels (the AVX-512 "
            "float32 width) the CPU's convolution kernels instead step at multiples of 16, which "
            "is why a latency cost keeps whole blocks there (the *channel block* column above):",
            "",
            "| channels | " + " | ".join(str(int(n)) for n, _ in sweep) + " |",
            "|---|" + "---|" * len(sweep),
            "| ms | " + " | ".join(f"{t:.2f}" for _, t in sweep) + " |",
        ]
    slow = [
        (res, rec)
        for res in results
        for rec in res["runs"]
        if rec.get("where") and rec["measured_ratio"] > rec["flops_ratio"] + 0.1
    ]
    if slow:
        lines += [
            "",
            "## Where the time goes when latency falls less than FLOPs",
            "",
            "Fixed share: per-call constants of every layer plus the calibration constant "
            "(time that does not scale with channels), as a share of the pruned network's "
            "predicted time. Layers: the five whose time falls least against their FLOPs.",
        ]
        for res, rec in slow:
            w = rec["where"]
            lines += [
                "",
                f"**{res['model']}, {res['device_name']}, batch {res['batch']}, {rec['budget']}, "
                f"round to {rec['round_to']}**: measured latency ratio "
                f"{rec['measured_ratio']:.3f} at FLOPs ratio {rec['flops_ratio']:.3f}; fixed "
                f"share {100 * w['fixed_share_after']:.0f}%.",
                "",
                "| layer | ms before | ms after | time ratio | FLOPs ratio |",
                "|---|---|---|---|---|",
            ]
            for row in w["layers"]:
                lines.append(
                    f"| {row['layer']} | {row['ms_before']:.3f} | {row['ms_after']:.3f} | "
                    f"{row['time_ratio']:.3f} | {row['flops_ratio']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet20,resnet56,mobilenetv2_cifar,vgg16_cifar")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tables-only", action="store_true", help="rewrite the .md from the .json")
    ap.add_argument(
        "--steady-malloc",
        action="store_true",
        help="keep freed memory in the process (dsaprune.steady_malloc) while measuring",
    )
    ap.add_argument(
        "--sub-block-tolerance",
        type=float,
        help="override dsaprune.cost.latency.SUB_BLOCK_TOLERANCE (negative: no group keeps "
        "less than one channel block)",
    )
    a = ap.parse_args()
    if a.steady_malloc and not steady_malloc():
        sys.exit("--steady-malloc: this C library is not glibc")
    if a.sub_block_tolerance is not None:
        latency_module.SUB_BLOCK_TOLERANCE = a.sub_block_tolerance
    # result files hold no absolute paths: the folder given to --out is written OUT
    argv = sys.argv[1:]
    args = ["OUT" if k and argv[k - 1] == "--out" else v for k, v in enumerate(argv)]
    command = "python bench/latency.py " + " ".join(args)
    for device in a.devices.split(","):
        out = Path(a.out)
        if a.tables_only:
            d = json.loads((out / f"latency_{device}.json").read_text())
            for res in d["results"]:
                for rec in res["runs"]:
                    if "measured_ratio" in rec:
                        rec["ratio_error"] = rec["predicted_ratio"] / rec["measured_ratio"] - 1
            text = markdown(d["results"], d["command"], d.get("channel_sweep"))
            atomic_write_text(text, out / f"latency_{device}.md")
            continue
        results = []
        for name in a.models.split(","):
            for batch in (int(b) for b in a.batches.split(",")):
                res = run(name, device, batch)
                results.append(res)
                for rec in (r for r in res["runs"] if "floor" not in r):
                    print(
                        f"{name:>18} {device} b{batch:<3} {rec['budget']:<12} r{rec['round_to']} "
                        f"pred {rec['predicted_ratio']:.3f} meas {rec['measured_ratio']:.3f} "
                        f"flops {rec['flops_ratio']:.3f} err {100 * rec['prediction_error']:+.1f}%",
                        flush=True,
                    )
        sweep = channel_sweep(device)
        d = {"command": command, "results": results, "channel_sweep": sweep}
        atomic_write_json(d, out / f"latency_{device}.json")
        atomic_write_text(markdown(results, command, sweep), out / f"latency_{device}.md")


if __name__ == "__main__":
    main()
