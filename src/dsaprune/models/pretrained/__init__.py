"""Trained weights shipped inside the package: the ResNet-20 that ``dsaprune demo`` prunes,
trained on the built-in shapes data (made by ``bench/demo_weights.py``; its JSON records how)."""

from pathlib import Path

DEMO_WEIGHTS = Path(__file__).resolve().parent / "resnet20_shapes.pt"
