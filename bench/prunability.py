"""Does dsaprune prune *my* model? Every torchvision classification CNN and a broad set of timm
CNN families, each pruned to 50% FLOPs through ``dsaprune.prune`` at random init.

For each model, in its own subprocess (a crash or a hang costs one row, not the run):

- the number of channel groups (prunable / all) and the time to group them;
- the whole DSA flow with the library's defaults (the latency report included) on a few
  synthetic batches (64×64 inputs unless the model needs more, 10 classes), then on the pruned
  network: the FLOPs ratio counted by FlopCounterMode against the
  budget and against the cost model's prediction; that the output shape is kept; that
  ``PruneResult.save`` / ``dsaprune.load`` reproduces the outputs.

    python bench/prunability.py                     # all models, about an hour on 2 CPU cores
    python bench/prunability.py --models torchvision:resnet18,timm:ghostnet_100
    python bench/prunability.py --tables-only       # rewrite the .md from the .json

Writes ``bench/results/prunability.{json,md}`` after every model (``--resume`` keeps the rows
already there). Needs torchvision and timm (``pip install --no-deps torchvision timm``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results"

# torchvision's classification models that are not CNNs (attention blocks)
NOT_CNN = ("vit_", "swin_", "maxvit_")
TIMM = [
    "resnet18",
    "resnet50d",
    "resnext26ts",
    "seresnext26d_32x4d",
    "skresnet18",
    "resnest14d",
    "res2net50_26w_4s",
    "regnetx_002",
    "regnety_002",
    "regnetz_005",
    "efficientnet_b0",
    "efficientnet_lite0",
    "efficientnetv2_rw_t",
    "tf_efficientnet_b0",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "mnasnet_100",
    "fbnetc_100",
    "mixnet_s",
    "tinynet_a",
    "lcnet_050",
    "hardcorenas_a",
    "ghostnet_100",
    "rexnet_100",
    "dla34",
    "dpn68",
    "densenet121",
    "convnext_atto",
    "convnextv2_atto",
    "cspresnet50",
    "cspdarknet53",
    "darknet53",
    "hrnet_w18_small",
    "inception_v3",
    "xception41",
    "vgg11",
    "repvgg_a0",
    "selecsls42b",
    "ese_vovnet19b_dw",
    "gernet_s",
    "nf_resnet26",
]
MIN_SIZE = {"inception_v3": 96, "googlenet": 64, "xception41": 96, "hrnet_w18_small": 64}


def torchvision_names() -> list[str]:
    from dsaprune.models import import_torchvision

    import_torchvision()
    import torchvision.models as tvm

    return [
        f"torchvision:{n}" for n in sorted(tvm.list_models(module=tvm)) if not n.startswith(NOT_CNN)
    ]


def all_models() -> list[str]:
    return torchvision_names() + [f"timm:{n}" for n in TIMM]


def _size(name: str) -> int:
    return MIN_SIZE.get(name.split(":", 1)[1], 64)


def check_one(name: str, budget_text: str = "flops=0.5") -> dict:
    """The row for one model (run in a subprocess by ``main``)."""
    import warnings

    import torch

    import dsaprune
    from dsaprune import models
    from dsaprune.cost import count_flops, flops_model
    from dsaprune.grouping import find_groups

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    b = dsaprune.parse_budget(budget_text)
    budget = b.fraction
    row: dict = {"model": name, "stage": "create", "budget": str(b)}
    size = _size(name)
    shape = (3, size, size)
    model = models.create(name, num_classes=10).eval()
    row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    x = torch.randn(2, *shape)
    with torch.no_grad():
        y0 = model(x)
    full = count_flops(model, shape)
    row["stage"] = "group"
    t0 = time.perf_counter()
    groups = find_groups(model, x[:1])
    row["group_s"] = time.perf_counter() - t0
    row["groups"] = len(groups)
    row["prunable"] = len(groups.prunable)
    row["layers"] = len(groups.shapes)
    cost = flops_model(groups)
    row["floor"] = cost.floor()
    row["stage"] = "prune"
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, *shape, generator=g), torch.randint(0, 10, (8,), generator=g))]
    batches = batches * 4
    t0 = time.perf_counter()
    res = dsaprune.prune(
        model,
        batches,
        batches[:2],
        budget=str(b),
        epochs=1,
        lr=0.01,
        warmup_fraction=0.0,
        window_end_fraction=1.0,
        min_updates=1,
        progress=False,
        example_inputs=x[:1],
    )  # the library's defaults, the latency report (a latency model fitted on this CPU) included
    row["prune_s"] = time.perf_counter() - t0
    pruned = res.model.eval()
    row["stage"] = "check"
    with torch.no_grad():
        y1 = pruned(x)
    row["shape_kept"] = tuple(y1.shape) == tuple(y0.shape)
    row["flops_ratio"] = count_flops(pruned, shape) / full
    row["predicted_ratio"] = float(res.report.get("cost_ratio_model", float("nan")))
    row["met_by"] = res.report.get("met_by")
    lat = res.report.get("latency") or {}
    row["measured_speedup"] = lat.get("measured_speedup")
    # counted kinds on the pruned network; a latency budget on its fitted model (the measured
    # speed-up beside it)
    row["budget_ratio"] = res.report["budget_ratio"]
    row["budget_met"] = row["budget_ratio"] <= budget + 1e-9
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.pt"
        res.save(path, model_name=name)
        back = dsaprune.load(path)
        with torch.no_grad():
            y2 = back(x)
    row["reload_same"] = bool(torch.allclose(y1, y2, atol=1e-5, rtol=1e-4))
    row["stage"] = "done"
    # the cost model must describe the pruned network: a network cut far below its budget
    # means channels were coupled in a way the groups did not describe
    exact = abs(row["flops_ratio"] - row["predicted_ratio"]) <= 1e-3
    row["cost_exact"] = exact if b.kind == "flops" else None  # another kind's model predicts it
    checks = ("shape_kept", "budget_met", "reload_same", "cost_exact")
    row["ok"] = all(row[k] for k in checks if row[k] is not None)
    return row


def _child(name: str, budget: str) -> int:
    try:
        row = check_one(name, budget)
    except Exception as e:
        row = {"model": name, "ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
        # paths relative to the repository: result files hold no absolute paths
        row["trace"] = traceback.format_exc(limit=-3).replace(f"{ROOT}/", "")[-1200:]
    print("ROW " + json.dumps(row), flush=True)
    return 0


def run_one(name: str, timeout: float, budget: str) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--budget", budget]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    rows = [ln[4:] for ln in p.stdout.splitlines() if ln.startswith("ROW ")]
    if not rows:
        tail = (p.stderr or p.stdout)[-400:]
        return {"model": name, "ok": False, "error": f"crashed (exit {p.returncode}): {tail}"}
    row = json.loads(rows[-1])
    row["wall_s"] = time.perf_counter() - t0
    return row


def write_tables(out: dict, path: Path) -> None:
    rows = out["rows"]
    ok = [r for r in rows if r.get("ok")]
    budget = out.get("budget", "flops=0.5")
    kind = budget.split("=")[0]
    lines = [
        f"# Prunability: torchvision and timm CNNs pruned to `{budget}`",
        "",
        f"Made by `{out['command']}` ({out['machine']}; rows run again since say so below). "
        "Random init, 10 classes, 64×64 inputs "
        "(96 for Inception-v3 and Xception), the whole DSA flow on 4 synthetic batches of 8. "
        "*ratio*: FLOPs of the pruned network / the unpruned one, both counted by "
        "FlopCounterMode; *pred*: the cost model's value; *group s*: time to find the groups. "
        "*ok*: the output shape is kept, the ratio is within the budget and within 0.001 of the "
        "cost model's, and a saved copy reloads to the same outputs."
        + (
            ""
            if kind == "flops"
            else f" A `{kind}` budget: *ratio* is still FLOPs; the budget is checked on the "
            f"{kind} model fitted on this machine (*{kind}*), the measured speed-up beside it."
        ),
        "",
    ]
    for prefix in ("torchvision", "timm"):
        sub = [r for r in rows if r["model"].startswith(prefix + ":")]
        if not sub:
            continue
        n_ok = sum(1 for r in sub if r.get("ok"))
        lines += [
            f"## {prefix}: {n_ok} of {len(sub)} pruned correctly",
            "",
            "| model | groups (prunable) | layers | group s | ratio | pred | "
            + ("" if kind == "flops" else f"{kind} | speed-up | ")
            + "shape | reload | ok |",
            "|---|---|---|---|---|---|---|---|---|" + ("" if kind == "flops" else "---|---|"),
        ]
        for r in sub:
            if "error" in r:
                err = r["error"].replace("|", "/").replace("\n", " ")[:160]
                lines.append(f"| {r['model']} | | | | | | | | **no**: {err} |")
                continue
            lines.append(
                f"| {r['model']} | {r['groups']} ({r['prunable']}) | {r['layers']} | "
                f"{r['group_s']:.1f} | {r['flops_ratio']:.4f} | {r['predicted_ratio']:.4f} | "
                + (
                    ""
                    if kind == "flops"
                    else f"{r['budget_ratio']:.4f} | {r.get('measured_speedup') or 0:.2f}x | "
                )
                + f"{'yes' if r['shape_kept'] else '**no**'} | "
                f"{'yes' if r['reload_same'] else '**no**'} | "
                f"{'yes' if r['ok'] else '**no**'} |"
            )
        lines.append("")
    again = sorted({r["command"] for r in rows if "command" in r})
    for c in again:
        names = ", ".join(r["model"] for r in rows if r.get("command") == c)
        lines += [f"Run again by `{c}`: {names}.", ""]
    slow = max((r.get("group_s", 0) for r in rows), default=0)
    lines.append(
        f"{len(ok)} of {len(rows)} models pruned correctly in all; the slowest grouping took "
        f"{slow:.1f} s."
    )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="", help="comma-separated; default: the full set")
    p.add_argument("--timeout", type=float, default=600, help="seconds per model")
    p.add_argument("--resume", action="store_true", help="keep the rows already in the file")
    p.add_argument("--rerun", action="store_true", help="with --resume: run the named models again")
    p.add_argument("--tables-only", action="store_true")
    p.add_argument(
        "--budget",
        default="flops=0.5",
        help="the budget every model is pruned to; another kind than flops writes "
        "prunability_<kind>.{json,md} [%(default)s]",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return _child(a.child, a.budget)
    kind = a.budget.split("=")[0]
    path = RESULTS / ("prunability.json" if kind == "flops" else f"prunability_{kind}.json")
    if a.tables_only:
        write_tables(json.loads(path.read_text()), path)
        return 0
    from dsaprune.io import atomic_write_json

    names = a.models.split(",") if a.models else all_models()
    out = json.loads(path.read_text()) if a.resume and path.exists() else {"rows": []}
    command = "python bench/prunability.py " + " ".join(argv or sys.argv[1:])
    out.setdefault("command", command)  # the run that made the table; rows rerun say so
    out["machine"] = "2-core CPU"
    out["budget"] = a.budget
    # failures are retried; with --rerun every named model is
    done = set() if a.rerun else {r["model"] for r in out["rows"] if r.get("ok")}
    for name in names:
        if name in done:
            continue
        row = run_one(name, a.timeout, a.budget)
        if command != out["command"]:
            row["command"] = command
        out["rows"] = [r for r in out["rows"] if r["model"] != name] + [row]
        status = "ok" if row.get("ok") else f"FAIL {row.get('error', '')[:150]}"
        extra = (
            f"groups {row['groups']} ({row['prunable']}) in {row['group_s']:.1f}s, ratio "
            f"{row['flops_ratio']:.4f}"
            if "groups" in row and "flops_ratio" in row
            else ""
        )
        print(f"{name:40s} {status} {extra}", flush=True)
        atomic_write_json(out, path)
        write_tables(out, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
