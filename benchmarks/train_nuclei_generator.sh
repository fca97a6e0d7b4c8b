#!/usr/bin/env bash
# Trains the shipped nuclei generator (mask_gan.init_from: nuclei) and writes it to
# src/cellsynth/gan/weights/mask_gan_nuclei.pt. It learns the 64x64 crops of the DSB 2018
# pretraining set (../shared/data/dsb2018_pretrain: 501 fluorescence and 78 H&E images, disjoint
# from ../shared/data/dsb2018, which it never sees), both modalities weighted alike, at 32x32
# (mask_gan.downsample 2) with conf/base's training settings, in two stages:
#   1. from scratch on the images as they are (MINUTES, default 75);
#   2. from stage 1 on the same images at 0.6x, 1x and 1.4x their size (MINUTES2, default 38): nuclei
#      of other magnifications and tissue packed up to 3x denser, so that fine-tuning to a new
#      microscope or tissue starts near it (the pretraining H&E holds 1.3 nuclei per 64x64 px, DSB's
#      evaluation H&E 4.4; benchmarks/README.md).
# 10 % of each folder's images are held out to follow the curve; nothing measured on them is a result
# on unseen data.
# Usage: bash benchmarks/train_nuclei_generator.sh [MINUTES] [WORK] [MINUTES2]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-75}"
WORK="${2:-data/06_models/nuclei_generator}"
MINUTES2="${3:-38}"
PRETRAIN="${PRETRAIN:-../shared/data/dsb2018_pretrain}"
# The shipped generators are 1024/64 wide (conf/base now trains from scratch at 512/32).
DATA=(--data "$PRETRAIN/fluo" --data "$PRETRAIN/he" --res 64 --heldout 0.1 --snapshot-kimg 10 --threads 2
      --set channel_base=1024 --set channel_max=64)
python benchmarks/converge_gan.py "${DATA[@]}" --minutes "$MINUTES" \
  --work "$WORK/run" --out "$WORK/report" --export "$WORK/nuclei_one_scale.pt"
python benchmarks/converge_gan.py "${DATA[@]}" --scale 0.6 --scale 1 --scale 1.4 --minutes "$MINUTES2" \
  --init-from "$WORK/nuclei_one_scale.pt" --work "$WORK/run_scales" --out "$WORK/report_scales" \
  --export src/cellsynth/gan/weights/mask_gan_nuclei.pt
