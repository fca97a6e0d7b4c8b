#!/usr/bin/env bash
# The GPU figures the issues ask for, in one call of at most 9 minutes on one H100/H200 (within a
# 15-minute device lease):
#
#     bash benchmarks/gpu_check.sh [OUTPUT_DIR] [DSB_FLUO_DIR]   # defaults: $OUT (else benchmarks/results),
#                                                                # ../shared/data/dsb2018/fluo
#
# 1. bench_gan: StyleGAN2-ADA at the paper's size (256x256, batch 16, cbase 16384, ADA + lazy R1);
#    the target is <= 6 s/kimg.
# 2. converge_gan: the mask GAN's learning curve on the DSB fluorescence nuclei, 64x64 crops learnt
#    at full size, for 4 minutes of training: JSON, curve and sample grid under converge_64/.
# 3. bench_translation: pix2pix at the paper's size (256x256, 64 filters, depth 8, batch 1).
#
# A bare GPU machine has only the repository: copy the data into an ignored folder first and pass
# it (cp -r ../shared/data/dsb2018/fluo .gpu_data/), and carry the wheels of the packages its image
# lacks (cellpose 3.1 and its small dependencies, torch-fidelity) in .whl/: they are installed into
# /tmp/site when present (benchmarks/README.md, "GPU check"). Each benchmark writes <name>.json (its
# JSON line) and <name>.log; one that fails or runs over its time limit does not stop the others.
# DEVICE (default auto) and MINUTES (default 4, the convergence study's training time) can be set, e.g.
# DEVICE=cpu MINUTES=1 to try the whole script on a CPU machine.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results}}
data=${2:-../shared/data/dsb2018/fluo}
mkdir -p "$out"
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KEDRO_DISABLE_TELEMETRY=true

measure() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$python" "$@" >"$out/$name.json" 2>"$out/$name.log"
    echo "exit $? $(cat "$out/$name.json")"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
device=${DEVICE:-auto}
minutes=${MINUTES:-4}
measure gan_256 120 benchmarks/bench_gan.py --res 256 --batch 16 --kimg 2 --device "$device"
measure converge_64 $((minutes * 60 + 100)) benchmarks/converge_gan.py --data "$data" --res 64 --downsample 1 \
    --minutes "$minutes" --snapshot-kimg 20 --n-eval 256 --device "$device" --out "$out/converge_64"
measure translation_256 70 benchmarks/bench_translation.py --res 256 --batch 1 --epochs 3 --device "$device"
