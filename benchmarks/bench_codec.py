"""Throughput of the cellpose_flow codec: ours against Cellpose's own code.

Builds ``--n`` crops of ``--size`` pixels from the nuclei mask bundled with
StarDist (rotated, mirrored and shifted copies, tiled when a crop is larger
than the mask), then times

* encoding: ``cellsynth.encoding.encode_batch`` (Cellpose's CPU flows plus
  quantisation) and Cellpose's ``dynamics.masks_to_flows`` alone on the device;
* decoding: our batched decoder and Cellpose's ``compute_masks`` one crop at a
  time (``backend="cellpose"``), both on the device.

Prints one JSON object: crops per second for each, the device, the library
versions, and the agreement (segmentation accuracy) of the two decoders.

Usage::

    python benchmarks/bench_codec.py --n 64 --size 256 --device auto --batch 32

On a CPU shared with other busy processes, torch's OpenMP threads can spin
waiting for each other and slow the many small tensor operations of the
batched decoder several-fold; ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``)
avoids that.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from typing import TypeVar

import numpy as np
import torch

from cellsynth.encoding import decode_batch, encode_batch
from cellsynth.metrics import segmentation_accuracy

T = TypeVar("T")


def nuclei_crops(n: int, size: int) -> np.ndarray:
    """``(n, size, size)`` int32 label crops cut from StarDist's test nuclei mask."""
    from stardist.data import test_image_nuclei_2d

    _, mask = test_image_nuclei_2d(return_mask=True)
    mask = mask.astype(np.int64)
    # Tile with distinct ids per copy until a crop plus shifts fits.
    reps = -(-(size + 64) // min(mask.shape)) if size + 64 > min(mask.shape) else 1
    stride = int(mask.max()) + 1
    tiles = [[np.where(mask > 0, mask + stride * (r * reps + c), 0) for c in range(reps)] for r in range(reps)]
    source = np.block(tiles)
    offsets = range(0, source.shape[0] - size + 1, 64)
    crops = []
    for index in range(n):
        view = np.rot90(source, index % 4)
        if (index // 4) % 2:
            view = view[:, ::-1]
        shift = index // 8
        y = offsets[shift % len(offsets)]
        x = offsets[(shift // len(offsets)) % len(offsets)]
        crops.append(view[y : y + size, x : x + size])
    return np.stack(crops).astype(np.int32)


class Stopwatch:
    """Accumulated wall time of named tasks; synchronises CUDA around each."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def time(self, name: str, task: Callable[[], T]) -> T:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        result = task()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="number of crops")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--batch", type=int, default=32, help="crops per batch of the batched decoder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    logging.getLogger("cellpose").setLevel(logging.ERROR)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    from cellpose import dynamics

    crops = nuclei_crops(args.n, args.size)
    # Warm-up: numba compiles Cellpose's kernels, CUDA initialises.
    warm = encode_batch(crops[:2])
    decode_batch(warm, device=device)
    decode_batch(warm, backend="cellpose", device=device)
    dynamics.masks_to_flows(crops[0], device=device)

    # Ours and Cellpose alternate batch by batch, so that a change in the load
    # of a shared machine affects both alike.
    clock = Stopwatch(device)
    decoded: dict[str, list[np.ndarray]] = {"batched": [], "cellpose": []}
    for start in range(0, args.n, args.batch):
        batch = crops[start : start + args.batch]
        encoded = clock.time("encode_ours", partial(encode_batch, batch))
        for crop in batch:
            clock.time("encode_cellpose", partial(dynamics.masks_to_flows, crop, device=device))
        for backend in decoded:
            decode = partial(decode_batch, encoded, backend=backend, device=device, batch_size=args.batch)
            decoded[backend].extend(clock.time(f"decode_{backend}", decode))

    rates = {f"{name}_crops_per_s": args.n / seconds for name, seconds in clock.seconds.items()}
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cellpose": version("cellpose"),
        "cpu_threads": torch.get_num_threads(),
        "n": args.n,
        "size": args.size,
        "batch": args.batch,
        **{key: round(value, 3) for key, value in rates.items()},
        "decode_speedup": round(clock.seconds["decode_cellpose"] / clock.seconds["decode_batched"], 3),
        "agreement": round(segmentation_accuracy(decoded["cellpose"], decoded["batched"]), 4),
        "round_trip_accuracy": round(segmentation_accuracy(list(crops), decoded["batched"]), 4),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
