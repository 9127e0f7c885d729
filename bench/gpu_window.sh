#!/usr/bin/env bash
# One GPU window of the paper's table: everything a short lease needs, in one command.
#
#   bash bench/gpu_window.sh DATA OUT MINUTES
#
# DATA: the CIFAR-10 archive (../shared/data/cifar10-jpg.tar.gz, copied beside the repo where the
# GPU machine cannot see ../shared). OUT: a folder for what comes back. MINUTES: the window for
# the table's runs. In order:
#   1. decode the archive once into the cache (the packed runs then share it);
#   2. bench/train_throughput.py on ResNet-20: eager fp32 against the fast path, every phase
#      (about a minute; its numbers size the next windows);
#   3. bench/paper_table.py for MINUTES, 8 runs at once, continuing from bench/paper_table_runs;
#   4. the run folders packed into OUT as parts of at most 15 MiB (the checkpoints to continue
#      from), with the table and the throughput beside them.
# On the development machine first: copy the archive into an ignored folder that travels, and the
# wheels the GPU machine lacks:
#   mkdir -p .carry && cp ../shared/data/cifar10-jpg.tar.gz .carry/
#   pip download --no-deps --only-binary=:all: -d .whl "torch-pruning>=1.6.1,<1.7"
#   (both in .git/info/exclude; the device command: bash bench/gpu_window.sh
#    .carry/cifar10-jpg.tar.gz $OUT 6, carrying .carry and .whl, timeout 600 s)
# Back on the development machine, `bash bench/gpu_window.sh --unpack OUT` puts the run folders
# and the table back into the tree, to be committed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--unpack" ]]; then
    cat "$2"/paper_runs.tar.gz.part* | tar xzf - -C bench
    cp "$2"/paper_table.json "$2"/paper_table.md bench/results/
    [[ -f "$2/train_throughput_gpu.json" ]] && cp "$2/train_throughput_gpu.json" bench/results/
    exit 0
fi
DATA=$1 OUT=$2 MINUTES=$3
source bench/gpu_setup.sh "$DATA"
timeout 240 python bench/train_throughput.py --models resnet20 --modes eager,fast --steps 40 \
    --device cuda --json "$OUT/train_throughput_gpu.json" 2>&1 | tee "$OUT/throughput.log" || true
python bench/paper_table.py --device cuda --parallel 8 --minutes "$MINUTES" --data "$DATA" \
    2>&1 | tee "$OUT/paper_table.log" || true
cp bench/results/paper_table.json bench/results/paper_table.md "$OUT/"
tar czf - -C bench paper_table_runs | split -b 15M - "$OUT/paper_runs.tar.gz.part"
ls -la "$OUT"
