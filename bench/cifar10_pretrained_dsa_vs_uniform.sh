#!/usr/bin/env bash
# Pruning the trained reference ResNet-20 (bench/reference/cifar10_resnet20.pt, 85.47%) on the
# real CIFAR-10 archive (started with --weights, so no warm-up): DSA allocation vs uniform vs
# magnitude, then fine-tuning, one shared short CPU schedule (EPOCHS epochs, lr 0.01 cosine,
# weight decay 5e-4). Every method starts from the same weights and gets the same schedule, so
# they differ only in the allocation and the channels kept.
#
#   bash bench/cifar10_pretrained_dsa_vs_uniform.sh                          # 50%, seed 0
#   BUDGETS="0.5 0.333" SEEDS="0 1" bash bench/cifar10_pretrained_dsa_vs_uniform.sh
#
# Run folders: runs/cifar10_r20_pretrained_<method>_e<EPOCHS>[_f<budget %>][_s<seed>] (50% and
# seed 0 keep the names of the first runs). A finished run (report.json) is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-2}
WEIGHTS=${WEIGHTS:-bench/reference/cifar10_resnet20.pt}
BUDGETS=${BUDGETS:-0.5}
SEEDS=${SEEDS:-0}
for budget in $BUDGETS; do
  for seed in $SEEDS; do
    for method in dsa uniform magnitude; do
      out="runs/cifar10_r20_pretrained_${method}_e${EPOCHS}"
      [ "$budget" = 0.5 ] || out+="_f$(echo "$budget" | awk '{printf "%g", 100 * $1}' | tr . p)"
      [ "$seed" = 0 ] || out+="_s${seed}"
      [ -f "$out/report.json" ] && continue
      .venv/bin/dsaprune prune --model resnet20 --weights "$WEIGHTS" --dataset cifar10 \
        --data ../shared/data/cifar10-jpg.tar.gz --budget "flops=$budget" --epochs "$EPOCHS" \
        --lr 0.01 --weight-decay 5e-4 --method "$method" --seed "$seed" --quiet --out "$out"
    done
  done
done
