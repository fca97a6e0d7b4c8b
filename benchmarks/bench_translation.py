"""pix2pix training and inference throughput (images/s); prints one JSON object.

    python benchmarks/bench_translation.py --res 256 --batch 1 --epochs 3 --device auto

Training images/s is measured between the end of the first and of the last epoch (start-up and
the first, cuDNN-tuning epoch excluded), with jitter, flips, label permutation and checkpoints as
in training; inference is :func:`cellsynth.translation.translate` at batch 16. The data are crops
of the demo phantom (RGB uint8) with their instance masks.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from cellsynth.phantom import demo_dataset
from cellsynth.training import CheckpointStore, start_runtime
from cellsynth.translation import Pix2PixConfig, train_pix2pix, translate


def phantom_pairs(resolution: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, R, R)`` int32 masks and ``(n, R, R, 3)`` uint8 images: tiles of demo-phantom images."""
    images, labels = [], []
    for image, label in demo_dataset(n_images=max(1, -(-n // 4)), size=2 * resolution, seed=0):
        for y in (0, resolution):
            for x in (0, resolution):
                images.append(image[y:y + resolution, x:x + resolution])
                labels.append(label[y:y + resolution, x:x + resolution])
    return np.stack(labels[:n]), np.stack(images[:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--n", type=int, default=32, help="training pairs (one epoch)")
    parser.add_argument("--batch", type=int, default=1, help="the paper: 1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--filters", type=int, default=64, help="g_filters = d_filters (the paper: 64)")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--representation", default="label")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    runtime = start_runtime(args.device, args.precision, seed=0)
    labels, images = phantom_pairs(args.res, args.n)
    config = Pix2PixConfig(epochs=args.epochs, decay_epochs=0, batch=args.batch, g_filters=args.filters,
                           d_filters=args.filters, g_depth=args.depth, representation=args.representation,
                           checkpoint_every=args.epochs)
    stamps: list[float] = []

    def log(metrics: dict[str, float], epoch: int) -> None:
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    cuda = runtime.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as folder:
        result = train_pix2pix(labels, images, config, CheckpointStore(folder), runtime, log_metrics=log,
                               progress=False)
    steps_per_epoch = len(labels) // args.batch
    train_rate = (len(stamps) - 1) * steps_per_epoch * args.batch / (stamps[-1] - stamps[0])
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    translate(result.generator, labels[:16], result.normalizer, args.representation, device=runtime.device)  # warm-up
    start = time.perf_counter()
    translate(result.generator, labels, result.normalizer, args.representation, batch=16, device=runtime.device)
    if cuda:
        torch.cuda.synchronize()
    inference_rate = len(labels) / (time.perf_counter() - start)
    print(json.dumps({
        "device": torch.cuda.get_device_name(runtime.device) if cuda else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__, "precision": str(runtime.amp_dtype), "resolution": args.res,
        "batch": args.batch, "filters": args.filters, "depth": args.depth, "representation": args.representation,
        "epochs_measured": len(stamps) - 1, "train_images_per_s": round(train_rate, 2),
        "inference_images_per_s": round(inference_rate, 2),
        "peak_train_memory_gib": round(peak, 2) if peak is not None else None,
    }))


if __name__ == "__main__":
    main()
