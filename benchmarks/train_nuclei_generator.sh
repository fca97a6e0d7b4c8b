#!/usr/bin/env bash
# Trains the shipped nuclei generator (mask_gan.init_from: nuclei) and writes it to
# src/cellsynth/gan/weights/mask_gan_nuclei.pt. It learns the 64x64 crops of the DSB 2018
# pretraining set (../shared/data/dsb2018_pretrain: 501 fluorescence and 78 H&E images, disjoint
# from ../shared/data/dsb2018, which it never sees), both modalities weighted alike, at 32x32
# (mask_gan.downsample 2) with conf/base's training settings, from scratch. 10 % of each folder's
# images are held out to follow the curve; nothing measured on them is a result on unseen data.
# Usage: bash benchmarks/train_nuclei_generator.sh [MINUTES] [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-75}"
WORK="${2:-data/06_models/nuclei_generator}"
PRETRAIN="${PRETRAIN:-../shared/data/dsb2018_pretrain}"
python benchmarks/converge_gan.py --data "$PRETRAIN/fluo" --data "$PRETRAIN/he" --res 64 --heldout 0.1 \
  --minutes "$MINUTES" --snapshot-kimg 10 --threads 2 \
  --work "$WORK/run" --out "$WORK/report" --export src/cellsynth/gan/weights/mask_gan_nuclei.pt
