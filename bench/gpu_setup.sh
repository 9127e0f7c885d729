# What every GPU lease needs before its runs; sourced by the bench/gpu_*.sh scripts:
#
#   source bench/gpu_setup.sh DATA
#
# - the wheels the GPU machine lacks (torch-pruning, which the grouping imports), carried in .whl
#   beside the repo (pip download --no-deps --only-binary=:all: -d .whl "torch-pruning==1.6.1"),
#   installed into /tmp/site and put on PYTHONPATH after src;
# - the CIFAR-10 archive DATA decoded once into the cache that every run then reads; t0 (its
#   start) stays set for the calling script's timings. A failed decode ends the calling script.
export PYTHONPATH=src PYTHONUNBUFFERED=1
if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=src:/tmp/site
fi
t0=$(date +%s)
python -c "import sys; from dsaprune.data import load_splits; load_splits('cifar10', sys.argv[1])" \
    "$1" || exit 1
echo "decoded in $(($(date +%s) - t0)) s"
