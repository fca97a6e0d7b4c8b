"""Nodes of the ``synthesize`` pipeline: a thin call into :mod:`cellsynth.synthesis`."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cellsynth.encoding import check_decode_options
from cellsynth.gan.training import build_generator
from cellsynth.synthesis import ImagePainter, MaskSource, synthesize_dataset
from cellsynth.training import resolve_device
from cellsynth.translation import ChannelNormalizer
from cellsynth.translation import build_generator as build_painter

logger = logging.getLogger(__name__)


def write_synthetic_dataset(
    mask_gan_models: dict[str, dict[str, Any]],
    pix2pix_models: dict[str, dict[str, Any]],
    params: dict[str, Any],
    generation: dict[str, Any],
    runtime: dict[str, Any],
    encoding_params: dict[str, Any],
) -> dict[str, Any]:
    """``synthesize.n`` pairs from the models of the group ``all``, written to a new folder
    ``synthesize.output_dir/<UTC time>/``; returns its manifest without the per-pair list."""
    group = "all"
    for name, models in (("mask_gan", mask_gan_models), ("image_translation", pix2pix_models)):
        if group not in models:
            raise ValueError(f"synthesize needs the {name} model of the group 'all' (synthesize.training_scope: all),"
                             f" found {sorted(models)}")
    mask_model, paint_model = mask_gan_models[group], pix2pix_models[group]
    generator = build_generator(mask_model["architecture"])
    generator.load_state_dict(mask_model["G_ema"])
    painter = build_painter(paint_model["architecture"])
    painter.load_state_dict(paint_model["G"])
    masks = MaskSource(generator, mask_model.get("downsample", 1), encoding_params["method"],
                       generation["truncation_psi"], generation["min_objects"], generation["max_consistency_error"],
                       check_decode_options(generation.get("decode"), "mask_gan.generation.decode"))
    folder = Path(params["output_dir"]) / datetime.now(timezone.utc).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
    manifest = synthesize_dataset(
        folder, masks, ImagePainter(painter, ChannelNormalizer.from_dict(paint_model["normalizer"]),
                                    paint_model["representation"]),
        n=params["n"], batch=params["batch"], seed=params["seed"], layout=params["layout"],
        device=resolve_device(runtime["device"]))
    logger.info("synthesize: %d pairs (%s layout, pass rate %.2f) written to %s", manifest["kept"],
                manifest["layout"], manifest["pass_rate"], folder)
    return {**{k: v for k, v in manifest.items() if k != "pairs"}, "folder": str(folder)}
