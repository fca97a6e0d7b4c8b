"""StyleGAN2-ADA training and generation throughput; prints one JSON object.

    python benchmarks/bench_gan.py --res 256 --batch 16 --kimg 1 --device auto [--compile] [--modulation batched]

sec/kimg is measured between the first and the last snapshot (so start-up, the
first, slow cuDNN-tuning steps and, with --compile, the compilation are excluded;
``startup_s`` reports them), with ADA and lazy R1 / path length on, as in training.
Generation throughput is G_ema images per second at batch 64.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from cellsynth.encoding import encode_batch
from cellsynth.gan.training import GANConfig, generate_images, train_gan
from cellsynth.phantom import demo_dataset
from cellsynth.training import CheckpointStore, start_runtime


def flow_crops(resolution: int, n: int) -> np.ndarray:
    """``(n, R, R, 3)`` uint8 encoded flow fields of demo-phantom crops."""
    tiles = []
    for _, labels in demo_dataset(n_images=max(1, n // 4), size=max(2 * resolution, 128), seed=0):
        for y in (0, resolution):
            for x in (0, resolution):
                tiles.append(labels[y : y + resolution, x : x + resolution])
    return encode_batch(np.stack(tiles[:n]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--kimg", type=float, default=1.0)
    parser.add_argument("--channel-base", type=int, default=16384)
    parser.add_argument("--channel-max", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--aug", default="ada")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training steps")
    parser.add_argument("--modulation", default="batched", choices=("batched", "grouped"))
    args = parser.parse_args()

    runtime = start_runtime(args.device, args.precision, seed=0, compile=args.compile)
    images = flow_crops(args.res, 64)
    config = GANConfig(kimg=args.kimg, batch=args.batch, channel_base=args.channel_base,
                       channel_max=args.channel_max, aug=args.aug, modulation=args.modulation,
                       snapshot_kimg=args.kimg / 4)
    stamps: list[tuple[float, float]] = []

    def log(metrics: dict[str, float], step: int) -> None:
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append((step / 1000, time.perf_counter()))

    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = train_gan(images, config, CheckpointStore(folder), runtime, log_metrics=log, progress=False)
    (k0, t0), (k1, t1) = stamps[0], stamps[-1]
    sec_per_kimg = (t1 - t0) / (k1 - k0)
    startup = t0 - train_start - sec_per_kimg * k0  # time to the first snapshot beyond its steady-state share
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if runtime.device.type == "cuda" else None

    n_generate = 256 if runtime.device.type == "cuda" else 32
    generate_images(result.generator_ema, 64, device=runtime.device)  # warm-up
    start = time.perf_counter()
    generate_images(result.generator_ema, n_generate, batch=64, device=runtime.device)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    generation = n_generate / (time.perf_counter() - start)
    print(json.dumps({
        "device": torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": str(runtime.amp_dtype), "resolution": args.res, "batch": args.batch,
        "channel_base": args.channel_base, "channel_max": args.channel_max, "aug": args.aug,
        "compile": args.compile, "modulation": args.modulation, "startup_s": round(startup, 1),
        "kimg_measured": round(k1 - k0, 4),
        "sec_per_kimg": round(sec_per_kimg, 3), "generation_images_per_s": round(generation, 1),
        "peak_memory_gib": round(peak_train, 2) if peak_train is not None else None,
        "final_augment_p": result.history[-1]["augment_p"],
    }))


if __name__ == "__main__":
    main()
