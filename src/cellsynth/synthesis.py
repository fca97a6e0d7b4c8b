"""A synthetic training set to take away: generate, decode and filter masks until N have passed, paint
an image for each, and stream the pairs to a folder that StarDist, Cellpose and napari read as it is.

Two layouts (:data:`LAYOUTS`):

- ``stardist``: ``images/<stem>.tif`` + ``masks/<stem>.tif``, paired by file name: the layout
  StarDist's training examples glob, and cellsynth's input format (:func:`cellsynth.io.read_dataset`),
  so the output can be fed back in;
- ``cellpose``: ``<stem>.tif`` + ``<stem>_masks.tif`` in one folder, as Cellpose's command line and GUI
  train from (``--mask_filter _masks``).

Masks are 16-bit TIFF labels; images keep the dtype and channels of the images pix2pix learnt.
``manifest.json`` records every pair (its latent seed, object count and consistency error), the
fingerprints of both generators, the filter statistics and the command. The folder is assembled beside
its destination and moved into place at the end (:func:`cellsynth.io.staged_directory`): an interrupted
run leaves nothing half-written. Memory stays flat in N: pairs are written batch by batch.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from tqdm.auto import tqdm

from cellsynth.image_painter import CollagePainter, ImagePainter
from cellsynth.io import staged_directory, validate_labels
from cellsynth.mask_generator import MaskSource

LAYOUTS: tuple[str, ...] = ("stardist", "cellpose")


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A short digest of a network's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


def synthesize_dataset(
    folder: str | Path,
    masks: MaskSource,
    painter: ImagePainter | CollagePainter,
    *,
    n: int,
    batch: int = 64,
    seed: int = 0,
    layout: str = "stardist",
    max_fields: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``n`` synthetic image/mask pairs to ``folder`` and return the manifest.

    Parameters
    ----------
    folder
        The dataset folder; replaced as a whole when the run succeeds, untouched when it fails.
    masks, painter
        The mask GAN and pix2pix to use.
    n
        Pairs to write (masks that passed the filters).
    batch
        Fields generated, decoded and painted at a time (memory grows with ``batch``, not ``n``).
    seed
        Batch ``k`` draws its latents with seed ``seed + k``; each pair records it.
    layout
        ``stardist`` or ``cellpose`` (:data:`LAYOUTS`).
    max_fields
        Give up after generating this many fields (default ``20 * n``): a generator whose masks never
        pass the filters stops with an error instead of running forever.

    Returns
    -------
    dict
        The manifest written as ``manifest.json``: ``pairs`` (per pair: stem, seed, index in its
        batch, objects, consistency error), ``generated``, ``kept``, ``pass_rate``, fingerprints,
        settings and command.
    """
    if n < 1:
        raise ValueError(f"synthesize.n must be >= 1, got {n}")
    if batch < 1:
        raise ValueError(f"synthesize.batch must be >= 1, got {batch}")
    if layout not in LAYOUTS:
        raise ValueError(f"synthesize.layout must be one of {LAYOUTS}, got {layout!r}")
    max_fields = 20 * n if max_fields is None else max_fields
    pairs: list[dict[str, Any]] = []
    generated = 0
    bar = tqdm(total=n, desc="synthetic pairs", unit="pair", disable=not progress)
    with staged_directory(folder) as staging:
        for sub in ("images", "masks") if layout == "stardist" else ():
            (staging / sub).mkdir()
        k = 0
        while len(pairs) < n:
            if generated >= max_fields:
                raise RuntimeError(
                    f"synthesize: only {len(pairs)} of {n} masks passed the filters in {generated} generated fields "
                    f"(pass rate {len(pairs) / max(generated, 1):.3f}); train the mask GAN longer "
                    "(mask_gan.training.kimg) or relax mask_gan.generation.min_objects / max_consistency_error")
            batch_seed = seed + k
            drawn = masks.sample(batch, seed=batch_seed, device=device)
            labels, kept, errors = drawn.labels, drawn.kept, drawn.errors
            generated += batch
            chosen = np.flatnonzero(kept)[: n - len(pairs)]
            if len(chosen):
                images = painter.paint(labels[chosen], batch=min(len(chosen), 16), seed=batch_seed, device=device)
                for image, index in zip(images, chosen):
                    stem = f"synthetic_{len(pairs):06d}"
                    _write_pair(staging, layout, stem, image, labels[index])
                    pairs.append({"stem": stem, "seed": batch_seed, "index_in_batch": int(index),
                                  "objects": int(labels[index].max()),
                                  "consistency_error": round(float(errors[index]), 4),
                                  "scale_factor": round(drawn.scale_factor, 4)})
                bar.update(len(chosen))
            bar.set_postfix(pass_rate=f"{len(pairs) / generated:.2f}")
            k += 1
        bar.close()
        manifest = {
            "layout": layout, "n": n, "generated": generated, "kept": len(pairs),
            "pass_rate": round(len(pairs) / generated, 4),
            "objects_per_pair": round(float(np.mean([p["objects"] for p in pairs])), 3),
            "mask_generator": weights_fingerprint(masks.generator.state_dict()),
            **({"pix2pix": weights_fingerprint(painter.generator.state_dict())} if isinstance(painter, ImagePainter)
               else {"collage": {"objects": len(painter.bank.patches), "canvases": len(painter.bank.canvases),
                                 "candidates": painter.candidates}}),
            "filters": {"min_objects": masks.filters.min_objects,
                        "max_consistency_error": masks.filters.max_consistency_error,
                        "decode": dict(masks.filters.decode), "truncation_psi": masks.filters.truncation_psi,
                        "match_scale": masks.filters.match_scale, "downsample": masks.downsample},
            "image": {"dtype": str(painter.normalizer.dtype), "channels": painter.normalizer.channels},
            "seed": seed, "batch": batch,
            "command": " ".join(sys.argv),
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pairs": pairs,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _write_pair(folder: Path, layout: str, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
    labels = validate_labels(labels, f"synthetic mask {stem}").astype(np.uint16)
    image_path, mask_path = ((folder / "images" / f"{stem}.tif", folder / "masks" / f"{stem}.tif")
                             if layout == "stardist" else  # Cellpose: <stem>.tif with <stem>_masks.tif beside it
                             (folder / f"{stem}.tif", folder / f"{stem}_masks.tif"))
    # one channel is written as a plain (H, W) image, as grayscale microscopy comes: napari, StarDist and
    # Cellpose would read a trailing axis of 1 as another spatial or time axis
    tifffile.imwrite(image_path, image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image,
                     compression="zlib")
    tifffile.imwrite(mask_path, labels, compression="zlib")
