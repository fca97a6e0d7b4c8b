#!/usr/bin/env bash
# The GPU figures the issues ask for, in one short run (about 8 minutes on one H100, within a
# 15-minute device lease). Needs only torch, scipy, scikit-image and tqdm (no Kedro, no TensorFlow),
# so it runs on a bare GPU image with the repository's src/ on PYTHONPATH:
#
#     bash benchmarks/gpu_check.sh [OUTPUT_DIR]       # default: $OUT, else benchmarks/results
#
# Each benchmark writes <name>.json (its one JSON line) and <name>.log; one that fails or runs over
# its time limit (LIMIT seconds, default 200) does not stop the others.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results}}
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

measure() {
    local name=$1
    shift
    echo "== $name: $*"
    timeout "${LIMIT:-200}" "$python" "$@" >"$out/$name.json" 2>"$out/$name.log"
    echo "exit $? $(cat "$out/$name.json")"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Issue 3: StyleGAN2-ADA at the paper's size (256x256, batch 16, cbase 16384, ADA + lazy R1); target <= 6 s/kimg.
measure gan_256 benchmarks/bench_gan.py --res 256 --batch 16 --kimg 2
measure gan_256_grouped benchmarks/bench_gan.py --res 256 --batch 16 --kimg 2 --modulation grouped
measure gan_256_compile benchmarks/bench_gan.py --res 256 --batch 16 --kimg 2 --compile
# Issue 4: pix2pix at the paper's size (256x256, 64 filters, depth 8, batch 1).
measure translation_256 benchmarks/bench_translation.py --res 256 --batch 1 --epochs 3 --device auto
