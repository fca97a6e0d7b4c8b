#!/usr/bin/env bash
# Transfer in minutes: the mask GAN fine-tuned from the shipped nuclei generator on DSB fluorescence and
# on DSB H&E (../shared/data/dsb2018, which the generator never saw), each run at most 15 minutes on
# 2 CPU cores from start to last score (MINUTES of training and scoring, plus crops, encoding and the
# SIMCEP and real baselines), then the transfer figure against the recorded from-scratch curve.
# Fine-tuning runs at a quarter of conf/base's learning rate (0.0005, as conf/workstation): at 0.002 the
# pass rate first fell from 0.72 to 0.28 (benchmarks/README.md).
# Usage: bash benchmarks/transfer_nuclei.sh [WORK] [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-data/06_models/transfer}"
MINUTES="${2:-12}"
DATA="${DATA:-../shared/data/dsb2018}"
for modality in fluo he; do
  python benchmarks/converge_gan.py --data "$DATA/$modality" --res 64 --init-from nuclei --minutes "$MINUTES" \
    --snapshot-kimg 4 --threads 2 --set learning_rate=0.0005 --work "$WORK/$modality" --out "$WORK/$modality/report"
done
python benchmarks/plot_transfer.py --out docs/transfer_curve.png "$WORK/fluo/report/converge_gan.json" \
  "$WORK/he/report/converge_gan.json" benchmarks/recorded/dsb_fluo_scratch_2026-12-01.json
