"""Cellpose training speed in a process where StarDist (TensorFlow) has trained before.

The evaluation pipeline trains StarDist and Cellpose one after the other in one
process. TensorFlow's generator input sets glibc's mmap threshold to 128 KiB, after
which every torch tensor over that size is a fresh ``mmap`` that page-faults in;
:func:`cellsynth.segmentation.stardist_model.restore_malloc_thresholds` undoes it
when a StarDist training ends.

Times one small Cellpose training (``train_cellpose``, one thread, phantom tissue)
before and after a small StarDist training in one process, in two child
processes: one as cellsynth runs (thresholds restored when StarDist ends) and one
with the restore switched off (as it ran before). Prints one JSON object with the
seconds and minor page faults of each Cellpose training.

Usage::

    python benchmarks/bench_cellpose_after_stardist.py --epochs 20
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cellsynth.phantom import phantom_tissue
from cellsynth.segmentation import CellposeSettings, StarDistSettings, stardist_model, train_cellpose, train_stardist


def timed(train, workdir: Path) -> dict[str, float]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    train(workdir)
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "minor_page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
    }


def one_process(epochs: int, size: int, restore: bool) -> dict[str, dict[str, float]]:
    """Cellpose before and after StarDist in this process; ``restore=False`` skips the malloc restore."""
    logging.disable(logging.INFO)
    if not restore:
        stardist_model.restore_malloc_thresholds = lambda: False
    rng = np.random.default_rng(0)
    pairs = [phantom_tissue(size, rng) for _ in range(10)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    cellpose = CellposeSettings(
        epochs=epochs, batch_size=8, learning_rate=0.01, nimg_per_epoch=24, bsize=32, rescale=False,
        intensity_copies=1, threads=1,
    )
    stardist = StarDistSettings(
        epochs=2, steps_per_epoch=5, patch_size=(64, 64), n_rays=16, grid=(2, 2), unet_n_depth=2,
        unet_n_filter_base=16, augment=False, nms_threshs=(0.4,), iou_threshs=(0.5,), threads=1,
    )

    def cellpose_training(workdir: Path) -> None:
        train_cellpose(images[:8], labels[:8], images[8:], labels[8:], cellpose, workdir)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        timed(cellpose_training, root / "warm-up")  # first-call kernel selection and heap growth
        before = timed(cellpose_training, root / "before")
        train_stardist(images[:8], labels[:8], images[8:], labels[8:], stardist, root / "stardist")
        return {"cellpose_before_stardist": before, "cellpose_after_stardist": timed(cellpose_training, root / "after")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="Cellpose epochs (3 batches of 8 each)")
    parser.add_argument("--size", type=int, default=64, help="phantom tissue side in pixels")
    parser.add_argument("--child", choices=("restore", "no-restore"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_process(args.epochs, args.size, args.child == "restore")))
        return
    result: dict[str, object] = {"cellpose_epochs": args.epochs, "threads": 1}
    for mode in ("restore", "no-restore"):
        run = subprocess.run(
            [sys.executable, __file__, "--epochs", str(args.epochs), "--size", str(args.size), "--child", mode],
            check=True, capture_output=True, text=True,
        )
        result[mode.replace("-", "_")] = json.loads(run.stdout.strip().splitlines()[-1])
    after = {mode: result[mode]["cellpose_after_stardist"]["seconds"] for mode in ("restore", "no_restore")}
    result["speed_up_after_stardist"] = round(after["no_restore"] / after["restore"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
