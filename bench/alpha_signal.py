"""Does the Θ-step's loss signal rank the groups the way removing their channels does?

On a trained network with every prunable group hard-masked to keep ratio ``--alpha`` (its most
important channels by |γ|) and BN statistics re-estimated under those masks:

- *truth*: the validation-loss increase when group k alone loses its next ``--delta`` of
  channels (least important first), BN re-estimated again under the new masks, divided by the
  FLOPs that saves (loss per FLOP);
- *signal*: what each registered estimator (``dsaprune.estimators``) gives the allocator,
  −∂L/∂α_k per unit of ∂F/∂α_k, averaged over the same validation batches (``ste`` once per
  gate temperature β2 in ``--beta2``).

Prints, and writes to a JSON file, the Spearman rank correlation of each signal with the truth
(1.0: the signal orders the groups exactly as removal does), and each truth value's standard
error over the validation batches. The validation batches are drawn in a fixed class-mixed
order (``class_mixed``): outputs made before 2026-11-24's seventh session (no ``val_order`` key)
measured class-sorted prefixes of the split and are superseded.

    python bench/alpha_signal.py --checkpoint bench/reference/cifar10_resnet20.pt \\
        --alpha 1.0,0.7 --out bench/results/alpha_signal_resnet20.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from sensitivity import spearman  # noqa: E402

from dsaprune.cli.prune import load_model_file  # noqa: E402
from dsaprune.cost import flops_model  # noqa: E402
from dsaprune.data import load_splits, make_loader, split_train_val  # noqa: E402
from dsaprune.estimators import ESTIMATORS, GateState  # noqa: E402
from dsaprune.gates import GateHooks, keep_probabilities, pad_groups, topn_masks  # noqa: E402
from dsaprune.grouping import channel_importance, find_groups  # noqa: E402
from dsaprune.io import atomic_write_json  # noqa: E402
from dsaprune.train import recalibrate_bn  # noqa: E402

VAL_ORDER = "class-mixed, seed 0"  # see class_mixed(); older outputs lack the key


def loss_under(model, hooks, masks, batches, bn_batches) -> torch.Tensor:
    """Validation loss of each batch with ``masks`` on, BN re-estimated under them first
    (``bn_batches`` None: with the BN statistics the model holds)."""
    hooks.set(masks)
    try:
        if bn_batches is not None:
            recalibrate_bn(model, bn_batches, len(bn_batches))
        model.eval()
        with torch.no_grad():
            losses = [float(torch.nn.functional.cross_entropy(model(x), y)) for x, y in batches]
    finally:
        hooks.clear()
    return torch.tensor(losses, dtype=torch.float64)


def measure_truth(
    model, G, cost, hooks, imp, valid, counts, chans, batches, bn_batches, delta, reestimate=True
):
    """(base loss, per group: loss increase per unit of FLOPs when it loses ``delta`` more,
    and its standard error over the validation batches; the two losses are paired by batch).
    ``reestimate`` False: the cut is judged with the base masks' BN statistics, as a signal
    taken at fixed statistics sees it (a diagnostic: what BN re-estimation changes)."""
    al = counts / chans
    base = loss_under(model, hooks, topn_masks(imp, valid, al), batches, bn_batches)
    after = bn_batches if reestimate else None
    truth, se = [], []
    for k in range(len(G.prunable)):
        fewer = counts.clone()
        fewer[k] = max(1.0, float(counts[k]) - max(1, round(delta * float(chans[k]))))
        loss = loss_under(model, hooks, topn_masks(imp, valid, fewer / chans), batches, after)
        saved = float(cost(al) - cost(fewer / chans))
        rise = (loss - base) / saved * cost.full
        truth.append(float(rise.mean()))
        se.append(float(rise.std() / len(rise) ** 0.5) if len(rise) > 1 else float("nan"))
    return float(base.mean()), truth, se


def class_mixed(data, seed: int = 0):
    """``data`` in a fixed random order. Evaluation loaders keep file order, and an image
    folder lists one class after another, so the first batches of the validation split are
    one or two classes: a truth measured on them ranks the groups by what matters to airplanes
    (8 batches: classes 0-1 only), and two "independent" halves measured different classes."""
    return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)))


def _agreement(a: list[float], b: list[float]) -> dict:
    """Two independent measurements of the truth and their Spearman ρ: how reproducible the
    ranking that a signal is judged against is. (With 12 or 30 groups and noise concentrated in
    a few of them, this is not a bound on a signal's ρ against the pooled truth: on ResNet-20
    the halves agree at +0.29 while ``fisher`` reaches +0.71 and +0.76 against each.)"""
    return {"truth_a": a, "truth_b": b, "spearman_a_b": spearman(a, b)}


def measure(model, G, cost, batches, bn_batches, alpha: float, a) -> dict:
    K = len(G.prunable)
    chans = torch.tensor([g.channels for g in G.prunable], dtype=torch.float64)
    imp, valid = pad_groups(channel_importance(G, "bn_first"))
    imp = imp.double()
    hooks = GateHooks(G)
    counts = (alpha * chans).round().clamp_min(1)
    al = counts / chans
    a_req = al.clone().requires_grad_(True)
    (dF,) = torch.autograd.grad(cost(a_req), a_req)

    def truth_on(val_batches, bn):
        return measure_truth(model, G, cost, hooks, imp, valid, counts, chans, val_batches, bn,
                             a.delta, a.truth_bn == "reestimated")  # fmt: skip

    t0 = time.perf_counter()
    halves = None
    if alpha in a.known_truth:  # measured by an earlier run on the same batches
        base, truth, se = a.known_truth[alpha]
        if len(truth) != K:
            raise SystemExit(f"--truth-from: {len(truth)} groups there, {K} here")
    elif a.halves:  # two independent truths: disjoint evaluation and BN batches
        tb, n = a.truth_batches, len(a.truth_batches) // 2
        halves = [
            truth_on(part, bn) for part, bn in ((tb[:n], bn_batches), (tb[n:], a.bn_batches_b))
        ]
        base = (halves[0][0] + halves[1][0]) / 2
        truth = [(x + y) / 2 for x, y in zip(halves[0][1], halves[1][1], strict=True)]
        se = [(x * x + y * y) ** 0.5 / 2 for x, y in zip(halves[0][2], halves[1][2], strict=True)]
    else:
        base, truth, se = truth_on(a.truth_batches, bn_batches)
    t_truth = time.perf_counter() - t0
    print(f"keep {alpha}: loss {base:.3f} (BN re-estimated); truth per group:",
          " ".join(f"{v:.2f}" for v in truth), f"({t_truth:.0f} s)", flush=True)  # fmt: skip
    if se:  # None: a --truth-from output made before errors were recorded
        print("  standard error per group:", " ".join(f"{v:.2f}" for v in se), flush=True)

    # the signals, at the base masks' re-estimated BN statistics, BN in eval mode (the Θ-step's);
    # with --disjoint those statistics come from other training batches than the truth's
    hooks.set(topn_masks(imp, valid, al))
    signal_bn = a.signal_bn_batches or bn_batches
    recalibrate_bn(model, signal_bn, len(signal_bn))
    hooks.clear()
    model.eval()
    out = {"alpha": alpha, "base_loss": base, "truth": truth, "truth_se": se, "signals": {}}
    if halves:
        out["halves"] = _agreement(halves[0][1], halves[1][1])
        print("  truth of one half against the other: Spearman "
              f"{out['halves']['spearman_a_b']:+.2f}", flush=True)  # fmt: skip
    loss_fn = torch.nn.functional.cross_entropy
    theta = torch.logit(al.clamp(1e-4, 1 - 1e-4)).float()
    variants = []
    for name in a.estimators:
        if name == "ste":
            variants += [(f"ste_beta2_{b:g}", name, b) for b in a.beta2]
        else:
            variants.append((name, name, None))
    for label, name, b2 in variants:
        est = ESTIMATORS[name]()
        beta2 = b2 if b2 is not None else 1.0

        def probabilities(alpha_t, iters, beta2=beta2):
            return keep_probabilities(imp.float(), valid, alpha_t, beta2, iters)[0]

        gates = GateState(imp.float(), valid, probabilities, 0.01)
        g = torch.zeros(K, dtype=torch.float64)
        t0 = time.perf_counter()
        for x, y in batches:
            for _ in range(a.samples if name == "ste" else 1):
                gt, _ = est.loss_grad(model, hooks, x, y, loss_fn, theta, gates)
                g += gt.double()
        g /= len(batches) * (a.samples if name == "ste" else 1)
        dt = (time.perf_counter() - t0) / len(batches)
        s = torch.sigmoid(theta.double())
        g_alpha = g / (s * (1 - s)).clamp_min(1e-6)
        # the allocator protects a group in proportion to −∂L/∂α per unit of cost
        signal = (-g_alpha / dF * cost.full).tolist()
        rho = spearman(signal, truth)
        out["signals"][label] = {"signal": signal, "spearman": rho, "s_per_batch": dt}
        if halves:  # against either half alone
            out["signals"][label]["spearman_halves"] = [spearman(signal, h[1]) for h in halves]
        print(f"  {label:16s} Spearman {rho:+.2f}  ({dt:.2f} s per batch)", flush=True)
    hooks.remove()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--alpha", default="1.0,0.7", help="keep ratios at which to compare")
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--beta2", default="0.05,5,100")
    p.add_argument("--estimators", default=",".join(ESTIMATORS), help="which to compare")
    p.add_argument("--batches", type=int, default=8, help="validation batches of 128")
    p.add_argument("--bn-batches", type=int, default=10, help="training batches for BN stats")
    p.add_argument("--samples", type=int, default=4, help="ste: mask samples per batch")
    p.add_argument("--out", default="bench/results/alpha_signal.json")
    p.add_argument(
        "--truth-from",
        help="reuse the truth of an earlier output made with the same --checkpoint, --batches, "
        "--bn-batches and --delta (only the signals are computed)",
    )
    p.add_argument(
        "--halves",
        action="store_true",
        help="measure the truth twice, on two disjoint sets of --batches validation batches "
        "with BN re-estimated from different training batches; report how far the two agree "
        "and each signal's rho against either",
    )
    p.add_argument(
        "--truth-data",
        choices=["val", "train"],
        default="val",
        help="train: measure the truth on unaugmented training images (45,000, against the "
        "validation split's 5,000; --batches counts them) and the signals on the whole "
        "validation split",
    )
    p.add_argument(
        "--disjoint",
        action="store_true",
        help="the signal on other images than the truth (the --batches validation batches "
        "after the truth's) and with BN re-estimated on other training batches: no noise "
        "shared between the two can raise rho",
    )
    p.add_argument(
        "--truth-bn",
        choices=["reestimated", "fixed"],
        default="reestimated",
        help="fixed: judge each cut with the BN statistics of the uncut masks (a diagnostic of "
        "what re-estimating them after the cut changes)",
    )
    a = p.parse_args(argv)
    a.known_truth = {}
    if a.truth_from:
        import json

        old = json.loads(Path(a.truth_from).read_text())
        ours = {"reference": Path(a.checkpoint).as_posix(), "delta": a.delta,
                "batches": a.batches, "bn_batches": a.bn_batches, "halves": a.halves,
                "truth_bn": a.truth_bn, "truth_data": a.truth_data}  # fmt: skip
        differ = [k for k, v in ours.items() if k in old and old[k] != v]
        if differ:
            p.error(f"--truth-from {a.truth_from} was measured with other {', '.join(differ)}")
        if old.get("val_order") != VAL_ORDER:
            p.error(f"--truth-from {a.truth_from} was measured on class-sorted batches; re-run it")
        a.known_truth = {
            r["alpha"]: (r["base_loss"], r["truth"], r.get("truth_se")) for r in old["results"]
        }
    a.beta2 = [float(v) for v in a.beta2.split(",")]
    a.estimators = a.estimators.split(",")
    torch.manual_seed(0)
    model, name = load_model_file(a.checkpoint)
    splits = load_splits("cifar10", a.data)
    train, val = split_train_val(splits.train)
    vl = make_loader(class_mixed(val), splits, 128, train=False)
    n_truth = a.batches * (2 if a.halves else 1)
    if a.disjoint and a.truth_data != "val":
        p.error("--disjoint takes the signal's batches after the truth's validation batches")
    if a.truth_data == "val":
        n = n_truth + (a.batches if a.disjoint else 0)
        batches = [b for _, b in zip(range(n), vl, strict=False)]
        a.truth_batches = batches[:n_truth]
        if a.disjoint:
            batches = batches[n_truth:]
            if len(batches) < a.batches:
                p.error(f"the validation split holds {n_truth + len(batches)} batches of 128, "
                        f"not {n}; lower --batches")  # fmt: skip
    else:  # the truth on unaugmented training images, the signals on the validation split
        batches = [b for b in vl if len(b[1]) == 128]
        tr = make_loader(class_mixed(train), splits, 128, train=False)
        a.truth_batches = [b for _, b in zip(range(n_truth), tr, strict=False)]
    if len(a.truth_batches) < n_truth:
        p.error(f"the {a.truth_data} split holds {len(a.truth_batches)} batches of 128, "
                f"not {n_truth}; lower --batches")  # fmt: skip
    tl = make_loader(train, splits, 128, train=True, seed=1)
    bn_batches = [b for _, b in zip(range(a.bn_batches), tl, strict=False)]
    if a.halves:  # the second half's BN statistics come from other training batches
        tl_b = make_loader(train, splits, 128, train=True, seed=2)
        a.bn_batches_b = [b for _, b in zip(range(a.bn_batches), tl_b, strict=False)]
    a.signal_bn_batches = None
    if a.disjoint:  # the signal's BN statistics from training batches the truth does not use
        tl_s = make_loader(train, splits, 128, train=True, seed=3)
        a.signal_bn_batches = [b for _, b in zip(range(a.bn_batches), tl_s, strict=False)]
    G = find_groups(model, batches[0][0][:1])
    cost = flops_model(G)
    res = {
        "model": name,
        "reference": Path(a.checkpoint).as_posix(),
        "delta": a.delta,
        "batches": a.batches,
        "bn_batches": a.bn_batches,
        "halves": a.halves,
        "disjoint": a.disjoint,
        "val_order": VAL_ORDER,
        "truth_bn": a.truth_bn,
        "truth_data": a.truth_data,
        **({"truth_from": a.truth_from} if a.truth_from else {}),
        "results": [
            measure(model, G, cost, batches, bn_batches, float(v), a) for v in a.alpha.split(",")
        ],  # fmt: skip
        "command": "python bench/alpha_signal.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    atomic_write_json(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
