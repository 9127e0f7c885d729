"""The trained network that ``dsaprune demo`` starts from: ResNet-20 trained on the built-in
shapes data, stored in half precision inside the package (``dsaprune/models/pretrained``), with
a JSON beside it that records how it was made and its test accuracy.

    python bench/demo_weights.py [--epochs 3] [--seed 0]

The demo prunes a *trained* network because that is where the allocation matters (and where a
user starts); training it inside the demo would spend most of its five minutes.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from common import ROOT, commit

from dsaprune.io import atomic_torch_save, atomic_write_json
from dsaprune.models.pretrained import DEMO_WEIGHTS
from dsaprune.train import read_checkpoint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/demo_weights", help="the training run (not committed)")
    a = p.parse_args(argv)
    train = ["train", "--model", "resnet20", "--dataset", "shapes", "--epochs", f"{a.epochs:g}",
             "--seed", str(a.seed), "--out", a.runs, "--force", "--quiet"]  # fmt: skip
    subprocess.run([sys.executable, "-m", "dsaprune", *train], cwd=ROOT, check=True)
    ckpt = read_checkpoint(ROOT / a.runs / "last.pt")
    state = {
        k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()
    }  # half precision: 0.5 MB in the package, no measurable change in accuracy
    atomic_torch_save(state, DEMO_WEIGHTS)
    info = {
        "model": "resnet20",
        "dataset": "shapes",
        "epochs": a.epochs,
        "seed": a.seed,
        "test_acc": ckpt["history"][-1]["test_acc"],
        "commit": commit(),
        "command": "dsaprune " + shlex.join(train),
    }
    atomic_write_json(info, DEMO_WEIGHTS.with_suffix(".json"))
    print(f"wrote {DEMO_WEIGHTS.relative_to(ROOT)} (test accuracy {100 * info['test_acc']:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
