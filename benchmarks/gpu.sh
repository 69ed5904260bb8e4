#!/usr/bin/env bash
# What matters on a GPU, in one run (under 5 minutes on one GPU): meta-steps per second and peak
# memory against higher / learn2learn, test-time tasks per second (benchmarks/bench_gpu.py),
# peak memory against inner steps (bench_inner_memory.py), and the tests that need CUDA.
#
#   benchmarks/gpu.sh                 # on a machine with a CUDA GPU
#   benchmarks/gpu.sh --device cpu    # smoke test of the same script on the CPU (small sizes)
#
# Run from the repository root with the project importable (an installed metaunsup, or
# PYTHONPATH=src); PYTHON picks the interpreter (default: python3). Results go to
# benchmarks/results/gpu/ (--out DIR), each JSON beside the table it printed.
set -euo pipefail

DEVICE=cuda
OUT=benchmarks/results/gpu
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument $1 (use --device cuda|cpu, --out DIR)" >&2; exit 2 ;;
    esac
done
PYTHON=${PYTHON:-python3}
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
start=$(date +%s)

echo "== environment"
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

if [ "$DEVICE" = cpu ]; then
    MEMORY_STEPS="1 5"
    IMPLS="maml maml-ckpt imaml"
else
    MEMORY_STEPS="1 10 50"
    IMPLS="maml maml-ckpt fomaml imaml learn2learn higher"
fi

echo "== meta-steps, test time (bench_gpu.py)"
"$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" --json "$OUT/bench_gpu.json"

echo "== peak memory against inner steps (bench_inner_memory.py)"
"$PYTHON" benchmarks/bench_inner_memory.py --device "$DEVICE" --steps $MEMORY_STEPS \
    --impls $IMPLS --json "$OUT/bench_inner_memory.json"

echo "== tests that need CUDA (they skip, saying why, without one)"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs

echo "== done in $(( $(date +%s) - start )) s; results in $OUT"
