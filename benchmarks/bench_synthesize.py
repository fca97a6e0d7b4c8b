"""Throughput and peak memory of writing a synthetic dataset (cellsynth.synthesis); prints one JSON line.

    python benchmarks/bench_synthesize.py --n 1000 [--n-small 500 --n-large 5000] [--threads 2]

The mask GAN is the shipped ``demo-phantom`` generator (what the demo fine-tunes for 1 kimg), with
conf/base's filters; pix2pix has conf/base's architecture for the demo's RGB crops (its weights do not
change the cost). ``pairs_per_s`` counts from the first generated field to the last written file.
Peak memory is measured in a child process per N (``ru_maxrss``), so the two do not share a heap;
memory should not grow with N because pairs are written batch by batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(n: int, batch: int, threads: int) -> dict[str, float]:
    from cellsynth.gan.pretrained import load_initial_weights
    from cellsynth.image_painter import ImagePainter
    from cellsynth.mask_generator import GenerationSettings, MaskSource
    from cellsynth.synthesis import synthesize_dataset
    from cellsynth.translation import ChannelNormalizer, Pix2PixConfig, UNetGenerator, mask_channels

    torch.set_num_threads(threads)
    params = yaml.safe_load((ROOT / "conf/base/parameters_mask_gan.yml").read_text())["mask_gan"]
    translation = yaml.safe_load((ROOT / "conf/base/parameters_image_translation.yml").read_text())
    config = Pix2PixConfig.from_params(translation["image_translation"]["training"])
    state = load_initial_weights("demo-phantom")
    masks = MaskSource.from_model({**state, "downsample": params["downsample"]}, "cellpose_flow",
                                  GenerationSettings.from_params(params["generation"]))
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    painter = ImagePainter(UNetGenerator(mask_channels(config.representation), 3, config.g_filters, config.g_depth,
                                         config.dropout, 64, config.norm, config.upsample).eval(),
                           ChannelNormalizer.fit(images), config.representation)
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        manifest = synthesize_dataset(Path(work) / "synthetic", masks, painter, n=n, batch=batch, progress=False)
        seconds = time.perf_counter() - started
    return {"n": n, "seconds": round(seconds, 1), "pairs_per_s": round(n / seconds, 2),
            "pass_rate": manifest["pass_rate"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child(n: int, batch: int, threads: int) -> dict[str, float]:
    output = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--batch", str(batch),
                             "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="pairs for the throughput run")
    parser.add_argument("--n-small", type=int, default=500)
    parser.add_argument("--n-large", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.n, args.batch, args.threads)))
        return
    throughput = child(args.n, args.batch, args.threads)
    small, large = child(args.n_small, args.batch, args.threads), child(args.n_large, args.batch, args.threads)
    print(json.dumps({"throughput": throughput, "memory": {"small": small, "large": large,
                      "large_over_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)},
                      "targets": {"pairs_per_s >= 5": throughput["pairs_per_s"] >= 5,
                                  "peak memory within 10 %": large["peak_rss_mb"] <= 1.1 * small["peak_rss_mb"]}}))


if __name__ == "__main__":
    main()
