#!/usr/bin/env bash
# Trains the generator the demo starts from (mask_gan.init_from: demo-phantom) and writes it to
# src/cellsynth/gan/weights/mask_gan_demo_phantom.pt. It learns phantom tissue of seed 1000
# (96 images), disjoint from the demo's own images (seed 0), with conf/base's training settings:
#   1. 160 kimg without mode seeking;
#   2. 50 kimg more with mode seeking 0.05 (diversity 0.08 -> 0.13, filter pass rate 0.34 -> 0.60).
# About 75 minutes on 2 CPU cores (11-15 s/kimg at 32x32). Usage: bash benchmarks/train_demo_generator.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-data/06_models/demo_generator}"
# The shipped generators are 1024/64 wide (conf/base now trains from scratch at 512/32).
COMMON=(--data demo --demo-images 96 --demo-seed 1000 --res 64 --snapshot-kimg 10 --set channel_base=1024 --set channel_max=64)
python benchmarks/converge_gan.py "${COMMON[@]}" --kimg 160 --set mode_seeking=0 \
  --work "$WORK/phase1" --out "$WORK/phase1_report"
python benchmarks/converge_gan.py "${COMMON[@]}" --kimg 50 --set mode_seeking=0.05 \
  --init-from "$(ls -d "$WORK"/phase1/checkpoints-* | head -n 1)" \
  --work "$WORK/phase2" --out "$WORK/phase2_report" --export src/cellsynth/gan/weights/mask_gan_demo_phantom.pt
