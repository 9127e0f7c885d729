#!/usr/bin/env bash
# Allocation-quality rows side by side on one GPU, in one command (a short GPU lease).
#
#   BENCH_COMMIT=<commit> bash bench/gpu_allocation_quality.sh DATA OUT MINUTES PARALLEL JOBS
#
# DATA: the CIFAR-10 archive, copied into an ignored folder that travels (the GPU machine cannot
# see ../shared). OUT: a folder for what comes back. JOBS: a file, one bench/allocation_quality.py
# invocation per line (its arguments after `--device cuda --resume`; `#` lines are skipped),
# most important first; PARALLEL of them run at once, all adding rows to their files under the
# bench's lock, until MINUTES have passed. BENCH_COMMIT: the commit the rows record (the tree
# travels without its history). In order:
#   1. decode the archive once into the cache that every process then reads;
#   2. a smoke run on ResNet-20 (a few steps of a DSA variant and of group_fisher on the GPU):
#      a broken path stops here, in under a minute, not after the lease;
#   3. the jobs;
#   4. the result files the jobs wrote, and every job's log, packed into OUT.
# On the development machine first: copy the archive into an ignored folder that travels, and the
# wheel the GPU machine lacks (torch-pruning, which the grouping imports):
#   mkdir -p .carry && cp ../shared/data/cifar10-jpg.tar.gz .carry/
#   pip download --no-deps --only-binary=:all: -d .whl "torch-pruning==1.6.1"
#   (both in .git/info/exclude; carry .carry and .whl)
# Back on the development machine: `tar xzf OUT/results.tar.gz` in the repository root puts the
# rows into bench/results; `python bench/allocation_quality.py --tables-only` rebuilds the tables.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=$1 OUT=$2 MINUTES=$3 PARALLEL=$4 JOBS=$5
export OMP_NUM_THREADS=1 DATA
export DEVICE=${DEVICE:-cuda}  # cpu: try the script on the development machine
: "${BENCH_COMMIT:?set BENCH_COMMIT to the commit the tree is at}"
mkdir -p "$OUT" /tmp/aq_logs
source bench/gpu_setup.sh "$DATA"
smoke="python bench/allocation_quality.py --checkpoint bench/reference/cifar10_resnet20.pt
    --name scratch_gpu_smoke --data $DATA --device $DEVICE --split dev --seeds 0 --budgets 0.5
    --finetune-steps 3 --long-finetune-epochs 0.01"
$smoke --methods dsa --label smoke --dsa-set epochs=0.05,power=3,estimator=fisher_centred \
    > /tmp/aq_logs/smoke_dsa.log 2>&1 &
$smoke --methods group_fisher,uniform > /tmp/aq_logs/smoke_gf.log 2>&1
rc=$?
wait $! || rc=1
tail -n 3 /tmp/aq_logs/smoke_*.log
if [[ $rc -ne 0 ]]; then
    echo "smoke run failed"
    cat /tmp/aq_logs/smoke_*.log | tail -n 60
    exit 1
fi
rm -f bench/results/allocation_quality_scratch_*.json
echo "smoke passed at $(($(date +%s) - t0)) s"
# one job per line; a job's log is named by its line number
touch /tmp/aq_start
grep -v '^\s*#' "$JOBS" | grep -v '^\s*$' | nl -ba -w3 -s' ' | timeout "${MINUTES}m" \
    xargs -r -P "$PARALLEL" -L 1 bash -c 'n=$0
        python bench/allocation_quality.py --data "$DATA" --device "$DEVICE" --resume "$@" \
            > /tmp/aq_logs/job$n.log 2>&1
        echo "job $n exit $? at $(date +%T)"'
echo "jobs ended at $(($(date +%s) - t0)) s"
grep -h "flops=" /tmp/aq_logs/job*.log
find bench/results -name 'allocation_quality_*_*.json' -newer /tmp/aq_start \
    | tar czf "$OUT/results.tar.gz" -T - -C /tmp aq_logs
nvidia-smi --query-gpu=name,memory.used --format=csv || true
