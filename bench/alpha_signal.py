"""Does DSA's α-gradient rank the groups the way removing their channels does?

On a trained network, every prunable group at keep ratio ``--alpha``:

- *signal*: the mean ∂L_val/∂α_k DSA's Θ-step reads (sampled gates, straight-through, BN in eval
  mode as in the Θ-step), for several gate temperatures β2, divided by ∂F/∂α_k (loss per FLOP);
  ``--bn batch`` uses each batch's own BN statistics for both measurements;
- *truth*: the loss increase when group k alone loses another ``--delta`` of its channels
  (lowest importance first, hard masks, the others hard at ``--alpha``), per FLOP saved.

Prints the Spearman rank correlation of signal and truth per β2 (1.0: DSA's gradient orders the
groups exactly as removal does), and writes both to a JSON file.

    python bench/alpha_signal.py --checkpoint runs/table/resnet20_unpruned_e8/last.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from sensitivity import spearman  # noqa: E402

from dsaprune.cli.commands import model_from_checkpoint  # noqa: E402
from dsaprune.cost import flops_model  # noqa: E402
from dsaprune.data import load_splits, make_loader, split_train_val  # noqa: E402
from dsaprune.gates import GateHooks, keep_probabilities, pad_groups, sample_masks  # noqa: E402
from dsaprune.grouping import channel_importance, find_groups  # noqa: E402
from dsaprune.io import atomic_write_json  # noqa: E402


def hard_masks(imp, valid, counts) -> torch.Tensor:
    m = torch.zeros_like(imp)
    for k, n in enumerate(counts):
        c = int(valid[k].sum())
        m[k, imp[k, :c].argsort(descending=True)[:n]] = 1
    return m


@torch.no_grad()
def mean_loss(model, hooks, masks, batches) -> float:
    hooks.set(masks)
    loss = sum(float(torch.nn.functional.cross_entropy(model(x), y)) for x, y in batches)
    hooks.clear()
    return loss / len(batches)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--beta2", default="0.05,0.5,2,5,20")
    p.add_argument("--batches", type=int, default=8, help="validation batches of 128")
    p.add_argument("--samples", type=int, default=4, help="mask samples per batch")
    p.add_argument(
        "--bn",
        choices=["eval", "batch"],
        default="eval",
        help="BN with running statistics (the Θ-step's default) or with each batch's own",
    )
    p.add_argument("--out", default="bench/results/alpha_signal.json")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    model, _ = model_from_checkpoint(a.checkpoint)
    model.eval()
    splits = load_splits("cifar10", a.data)
    _, val = split_train_val(splits.train)
    loader = make_loader(val, splits, 128, train=False)
    batches = [b for _, b in zip(range(a.batches), loader, strict=False)]
    G = find_groups(model, batches[0][0][:1])
    cost = flops_model(G)
    if a.bn == "batch":  # batch statistics, running statistics left as they are
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
                m.momentum = 0.0
    K = len(G.prunable)
    chans = [g.channels for g in G.prunable]
    imp, valid = pad_groups(channel_importance(G, "bn_first"))
    hooks = GateHooks(G)
    alpha0 = torch.full((K,), a.alpha, dtype=torch.float64, requires_grad=True)
    (dF,) = torch.autograd.grad(cost(alpha0), alpha0)

    counts = [max(1, round(a.alpha * c)) for c in chans]
    base = mean_loss(model, hooks, hard_masks(imp, valid, counts), batches)
    truth = []
    for k in range(K):
        fewer = list(counts)
        fewer[k] = max(1, counts[k] - max(1, round(a.delta * chans[k])))
        loss = mean_loss(model, hooks, hard_masks(imp, valid, fewer), batches)
        al = torch.tensor([n / c for n, c in zip(fewer, chans, strict=True)], dtype=torch.float64)
        ac = torch.tensor([n / c for n, c in zip(counts, chans, strict=True)], dtype=torch.float64)
        saved = float(cost(ac) - cost(al))
        truth.append((loss - base) / saved * cost.full)
    print(f"hard masks at keep {a.alpha}: loss {base:.3f}")
    print("removal cost per FLOP share, per group:", " ".join(f"{v:.2f}" for v in truth))

    out = {
        "bn": a.bn,
        "alpha": a.alpha,
        "delta": a.delta,
        "base_loss": base,
        "truth": truth,
        "beta2": {},
    }
    for b2 in [float(v) for v in a.beta2.split(",")]:
        grads = torch.zeros(K, dtype=torch.float64)
        for x, y in batches:
            for _ in range(a.samples):
                alpha = torch.full((K,), a.alpha, requires_grad=True)
                pk, _ = keep_probabilities(imp, valid, alpha, b2)
                hooks.set(sample_masks(pk, 0.01))
                loss = torch.nn.functional.cross_entropy(model(x), y)
                (g,) = torch.autograd.grad(loss, alpha)
                hooks.clear()
                grads += g.double()
        grads /= a.batches * a.samples
        # the Θ-step protects a group in proportion to −∂L/∂α per unit of cost
        signal = (-grads / dF * cost.full).tolist()
        rho = spearman(signal, truth)
        out["beta2"][str(b2)] = {"signal": signal, "spearman": rho}
        print(f"β2 {b2:g}: Spearman(signal, removal cost) {rho:+.2f}; signal per group:",
              " ".join(f"{v:.2f}" for v in signal), flush=True)  # fmt: skip
    out["command"] = "python bench/alpha_signal.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    atomic_write_json(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
