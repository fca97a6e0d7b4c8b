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
#    at full size, for 3 minutes of training (plus up to 3 for data and baselines): JSON, curve and
#    sample grid under converge_64/.
# 3. bench_translation: pix2pix at the paper's size (256x256, 64 filters, depth 8, batch 1).
#
# A bare GPU machine has only the repository: copy the data into an ignored folder first and pass
# it (cp -r ../shared/data/dsb2018/fluo .gpu_data/), and carry the wheels of the packages its image
# lacks (cellpose 3.1 and its small dependencies, torch-fidelity) in .whl/: they are installed into
# /tmp/site when cellpose or torch-fidelity cannot be imported (benchmarks/README.md, "GPU check").
# Each benchmark writes <name>.json (its JSON line) and its messages to gpu_check.log (7 files in all
# with converge_64/'s curve, grid and JSON); one that fails or runs over its limit does not stop the others.
# DEVICE (default auto), MINUTES (3, the convergence study's training time), SNAPSHOT_KIMG (20; the
# budget is checked between snapshots) and SETUP_S (180, its time for data and baselines) can be set:
# DEVICE=cpu MINUTES=1 SNAPSHOT_KIMG=0.5 SETUP_S=300 tries the whole script on a 2-core CPU machine.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results}}
data=${2:-../shared/data/dsb2018/fluo}
mkdir -p "$out"
python=${PYTHON:-python3}
if ! "$python" -c "import cellpose, torch_fidelity" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KEDRO_DISABLE_TELEMETRY=true

measure() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    echo "== $name: $*" >>"$out/gpu_check.log"
    timeout "$limit" "$python" "$@" >"$out/$name.json" 2>>"$out/gpu_check.log"
    echo "exit $? $(cat "$out/$name.json")"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
device=${DEVICE:-auto}
minutes=${MINUTES:-3}
measure gan_256 110 benchmarks/bench_gan.py --res 256 --batch 16 --kimg 2 --device "$device"
measure converge_64 $((minutes * 60 + ${SETUP_S:-180})) benchmarks/converge_gan.py --data "$data" --res 64 \
    --downsample 1 --minutes "$minutes" --snapshot-kimg "${SNAPSHOT_KIMG:-20}" --n-eval 256 --device "$device" \
    --out "$out/converge_64"
measure translation_256 60 benchmarks/bench_translation.py --res 256 --batch 1 --epochs 3 --device "$device"
