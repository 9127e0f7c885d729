#!/usr/bin/env bash
# The CIFAR-10 comparison table (bench/cifar10_table.py) on one GPU, in one command (a short lease).
#
#   bash bench/gpu_table.sh DATA OUT MINUTES PARALLEL TABLE_ARGS...
#
# DATA: the CIFAR-10 archive, copied into an ignored folder that travels (the GPU machine cannot
# see ../shared). OUT: a folder for what comes back. PARALLEL runs at once for MINUTES; the rest
# of the arguments go to bench/cifar10_table.py (models, budgets, methods, seeds, epochs). Runs
# live in runs/gpu_table (ignored). In order:
#   1. decode the archive once into the cache that every run then reads;
#   2. a smoke table (DSA and group_fisher, a twentieth of an epoch each, side by side): a broken
#      path stops here, in under a minute, not after the lease;
#   3. the table for MINUTES (bench/cifar10_table.py --minutes: unfinished runs are interrupted
#      and listed as not run);
#   4. the table (cifar10.{json,md}, the plot) and the run folders without their checkpoints
#      packed into OUT/table.tar.gz; the checkpoints of unfinished runs (to continue from) into
#      OUT/resume.tar.gz.part*.
# On the development machine first (both folders in .git/info/exclude; carry .carry and .whl):
#   mkdir -p .carry && cp ../shared/data/cifar10-jpg.tar.gz .carry/
#   pip download --no-deps --only-binary=:all: -d .whl "torch-pruning==1.6.1"
# Back on the development machine: `tar xzf OUT/table.tar.gz -C DIR` unpacks runs and table.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=$1 OUT=$2 MINUTES=$3 PARALLEL=$4
shift 4
export OMP_NUM_THREADS=1
DEVICE=${DEVICE:-cuda}  # cpu: try the script on the development machine
RUNS=runs/gpu_table
mkdir -p "$OUT" "$RUNS"
source bench/gpu_setup.sh "$DATA"
if ! python bench/cifar10_table.py --models resnet20 --budgets 0.5 --methods dsa,group_fisher \
    --epochs 0.05 --data "$DATA" --device "$DEVICE" --parallel 2 --runs /tmp/smoke_runs \
    --results /tmp/smoke_results > /tmp/smoke.log 2>&1; then
    echo "smoke table failed"
    tail -n 40 /tmp/smoke.log /tmp/smoke_runs/*/table.log
    exit 1
fi
grep "| resnet20 |" /tmp/smoke_results/cifar10.md | head -n 2
echo "smoke passed at $(($(date +%s) - t0)) s"
python bench/cifar10_table.py --data "$DATA" --device "$DEVICE" --parallel "$PARALLEL" \
    --minutes "$MINUTES" --runs "$RUNS" --results "$RUNS" "$@" 2>&1 | tee "$OUT/table.log"
echo "table ended at $(($(date +%s) - t0)) s"
tar czf "$OUT/table.tar.gz" --exclude='*.pt' -C runs gpu_table
(cd runs && find gpu_table -mindepth 1 -maxdepth 1 -type d ! -exec test -e '{}/table_done.json' \; \
    -print | xargs -r -I{} find {} -name last.pt) | tar czf - -C runs -T - | \
    split -b 15M - "$OUT/resume.tar.gz.part"
ls -la "$OUT"
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null || true
