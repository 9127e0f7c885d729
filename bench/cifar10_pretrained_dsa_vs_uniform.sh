#!/usr/bin/env bash
# Pruning the trained reference ResNet-20 (bench/reference/cifar10_resnet20.pt, 85.47%) to 50%
# FLOPs on the real CIFAR-10 archive (started with --weights, so no warm-up): DSA allocation vs
# uniform vs magnitude, then fine-tuning, one shared short CPU schedule (EPOCHS epochs, lr 0.01
# cosine, weight decay 5e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-2}
WEIGHTS=${WEIGHTS:-bench/reference/cifar10_resnet20.pt}
for method in dsa uniform magnitude; do
  .venv/bin/dsaprune prune --model resnet20 --weights "$WEIGHTS" --dataset cifar10 \
    --data ../shared/data/cifar10-jpg.tar.gz --budget flops=0.5 --epochs "$EPOCHS" \
    --lr 0.01 --weight-decay 5e-4 --method "$method" --quiet \
    --out "runs/cifar10_r20_pretrained_${method}_e${EPOCHS}"
done
