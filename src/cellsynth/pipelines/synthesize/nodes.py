"""Nodes of the ``synthesize`` pipeline: a thin call into :mod:`cellsynth.synthesis`."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cellsynth.image_painter import ImagePainter
from cellsynth.mask_generator import GenerationSettings, MaskSource
from cellsynth.synthesis import synthesize_dataset
from cellsynth.training import resolve_device

logger = logging.getLogger(__name__)


def write_synthetic_dataset(
    mask_model: dict[str, Any],
    paint_model: dict[str, Any],
    params: dict[str, Any],
    generation: dict[str, Any],
    runtime: dict[str, Any],
    encoding_params: dict[str, Any],
) -> dict[str, Any]:
    """``synthesize.n`` pairs from the mask GAN and pix2pix of the group ``all``, written to a new folder
    ``synthesize.output_dir/<UTC time>/``; returns its manifest without the per-pair list."""
    masks = MaskSource.from_model(mask_model, encoding_params["method"], GenerationSettings.from_params(generation))
    folder = Path(params["output_dir"]) / datetime.now(timezone.utc).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
    manifest = synthesize_dataset(
        folder, masks, ImagePainter.from_model(paint_model),
        n=params["n"], batch=params["batch"], seed=params["seed"], layout=params["layout"],
        device=resolve_device(runtime["device"]))
    logger.info("synthesize: %d pairs (%s layout, pass rate %.2f) written to %s", manifest["kept"],
                manifest["layout"], manifest["pass_rate"], folder)
    return {**{k: v for k, v in manifest.items() if k != "pairs"}, "folder": str(folder)}
