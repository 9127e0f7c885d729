#!/usr/bin/env bash
# ResNet-20 at 50% FLOPs on the real CIFAR-10 archive: DSA and uniform pruning, one shared short
# CPU schedule (8 epochs, batch 128, lr 0.1 cosine, weight decay 5e-4), run one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-8}
for method in dsa uniform; do
  .venv/bin/dsaprune prune --model resnet20 --dataset cifar10 \
    --data ../shared/data/cifar10-jpg.tar.gz --budget flops=0.5 --epochs "$EPOCHS" \
    --lr 0.1 --weight-decay 5e-4 --method "$method" --quiet \
    --out "runs/cifar10_r20_${method}_e${EPOCHS}"
done
