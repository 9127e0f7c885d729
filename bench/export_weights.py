"""A training checkpoint (``last.pt``) as a weights-only pruned-model file (``dsaprune.save``:
weights, widths, model name, classes, normalisation; no optimizer state), for the reference
networks under ``bench/reference/``.

    python bench/export_weights.py runs/ref_resnet20_e18/last.pt bench/reference/cifar10_resnet20.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dsaprune import save  # noqa: E402
from dsaprune.cli.commands import model_from_checkpoint  # noqa: E402


def main(argv: list[str]) -> int:
    src, dst = argv
    model, ckpt = model_from_checkpoint(src)
    meta = {k: ckpt[k] for k in ("mean", "std") if k in ckpt}
    save(model, dst, model_name=ckpt["model_name"], num_classes=int(ckpt["num_classes"]), **meta)
    print(f"wrote {dst} ({ckpt['model_name']}, epoch {ckpt.get('epoch')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
