"""The trained network that ``dsaprune demo`` starts from: ResNet-20 trained on the built-in
shapes data, stored in half precision inside the package (``dsaprune/models/pretrained``), with
a JSON beside it that records how it was made and its test accuracy.

    python bench/demo_weights.py [--epochs 3] [--seed 0]

The demo prunes a *trained* network because that is where the allocation matters (and where a
user starts); training it inside the demo would spend most of its five minutes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys

import torch
from common import ROOT, commit

from dsaprune.io import atomic_write_json
from dsaprune.models.pretrained import DEMO_WEIGHTS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/demo_weights", help="the training run (not committed)")
    a = p.parse_args(argv)
    train = ["train", "--model", "resnet20", "--dataset", "shapes", "--epochs", f"{a.epochs:g}",
             "--seed", str(a.seed), "--out", a.runs, "--force", "--quiet"]  # fmt: skip
    subprocess.run([sys.executable, "-m", "dsaprune", *train], cwd=ROOT, check=True)
    ckpt = torch.load(ROOT / a.runs / "last.pt", map_location="cpu", weights_only=True)
    state = {
        k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()
    }  # half precision: 0.5 MB in the package, no measurable change in accuracy
    DEMO_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = DEMO_WEIGHTS.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(DEMO_WEIGHTS)
    metrics = [
        json.loads(line)
        for line in (ROOT / a.runs / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    info = {
        "model": "resnet20",
        "dataset": "shapes",
        "epochs": a.epochs,
        "seed": a.seed,
        "test_acc": metrics[-1]["test_acc"],
        "commit": commit(),
        "command": "dsaprune " + shlex.join(train),
    }
    atomic_write_json(info, DEMO_WEIGHTS.with_suffix(".json"))
    print(f"wrote {DEMO_WEIGHTS.relative_to(ROOT)} (test accuracy {100 * info['test_acc']:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
