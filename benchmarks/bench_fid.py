"""Speed of the FID feature extractor (Inception-v3 at 299x299) as cellsynth runs it.

Times :func:`cellsynth.quality.extract_features` on ``--n`` random ``--size`` pixel
images, with the module in channels-last memory format (what
:func:`cellsynth.quality.inception_features` returns) and in the default
contiguous format, and checks that both give the same features.

Prints one JSON object: seconds per image for each format, the speed-up, the
largest feature difference, the device and thread count.

Usage::

    python benchmarks/bench_fid.py --n 64 --size 64 --threads 1 --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from cellsynth.quality import RandomInitFeaturesWarning, extract_features, inception_features
from cellsynth.training.runtime import resolve_device


def seconds_per_image(images: np.ndarray, features, repeats: int) -> tuple[float, np.ndarray]:
    extract_features(images[:4], features)  # warm-up: first-call allocations and kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        values = extract_features(images, features).values
        best = min(best, time.perf_counter() - started)
    return best / len(images), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="images per timing")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (resized to 299 inside)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--repeats", type=int, default=2, help="timings per format; the fastest is kept")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(None if args.device == "auto" else args.device)
    images = (np.random.default_rng(0).random((args.n, args.size, args.size, 3)) * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitFeaturesWarning)  # the weights do not change the speed
        features = inception_features(device=device)
    channels_last, fast = seconds_per_image(images, features, args.repeats)
    features.module.to(memory_format=torch.contiguous_format)
    contiguous, plain = seconds_per_image(images, features, args.repeats)
    print(json.dumps({
        "n": args.n, "size": args.size, "device": str(device), "threads": torch.get_num_threads(),
        "seconds_per_image": {"channels_last": round(channels_last, 4), "contiguous": round(contiguous, 4)},
        "speedup": round(contiguous / channels_last, 2),
        "max_feature_difference": float(np.abs(fast - plain).max()),
        "weights": features.name,
    }, indent=2))


if __name__ == "__main__":
    main()
