"""Nodes of the ``image_translation`` pipeline: thin calls into :mod:`cellsynth.image_painter`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np

from cellsynth import quality
from cellsynth.comparison import MaskSet, subsample
from cellsynth.crops import group_data, group_seed
from cellsynth.figures import panel_grid
from cellsynth.image_painter import (
    ImagePainter,
    collage_model,
    paint_masks,
    score_painter,
    train_painter,
    trained_model,
)
from cellsynth.io import AnnotatedImage
from cellsynth.metrics import with_group_means
from cellsynth.training import resolve_device, start_runtime
from cellsynth.translation import Pix2PixConfig

logger = logging.getLogger(__name__)
SAMPLES_SHOWN = 4


def train_group_pix2pix(training_crops: Mapping[str, dict], params: dict[str, Any], *, group: str) -> dict[str, Any]:
    """PIX2PIX-TRAIN of one group (a fold, a fold's subset or all) on its training crops only.

    Checkpoints go to ``image_translation.checkpoint_dir/<group>-<fingerprint>``; a rerun with the same
    settings and data resumes there, and a finished run (e.g. one trained with ``torchrun``) is only loaded.
    With ``image_translation.painter: collage`` nothing is trained: the group's crops become the collage's bank.
    """
    crops = group_data(training_crops, group, "training_crops")
    painter = params.get("painter", "pix2pix")
    if painter == "collage":
        return collage_model(crops["labels"], crops["images"], crops.get("source"), **params["collage"],
                             seed=group_seed(params["training"]["seed"], group))
    if painter != "pix2pix":
        raise ValueError(f"image_translation.painter must be 'pix2pix' or 'collage', got {painter!r}")
    config = Pix2PixConfig.from_params(params["training"])
    runtime = start_runtime(**params["runtime"], seed=config.seed)

    def log(metrics: dict[str, float], epoch: int) -> None:
        mlflow.log_metrics({f"image_translation.{group}.{k}": v for k, v in metrics.items()}, step=epoch)

    result, store = train_painter(crops["labels"], crops["images"], config, group=group,
                                  checkpoint_dir=params["checkpoint_dir"], runtime=runtime, log_metrics=log)
    return trained_model(result, store)


def translate_synthetic_masks(
    model: dict[str, Any], synthetic_masks: dict[str, np.ndarray], params: dict[str, Any], *, group: str
) -> list[AnnotatedImage]:
    """PIX2PIX-GENERATE: an image for every synthetic mask of the group, by the group's painter.

    Returns ``[AnnotatedImage("gan_0000", image, labels), ...]``, written like a real dataset.
    """
    return paint_masks(model, synthetic_masks["labels"], source="gan", group=group, **params["generation"],
                       device=resolve_device(params["runtime"]["device"]))


def translate_training_masks(
    model: dict[str, Any], training_crops: Mapping[str, dict], synthetic_masks: dict[str, np.ndarray],
    params: dict[str, Any], *, group: str
) -> list[AnnotatedImage]:
    """The ``realmasks`` control: painted images of the group's own training masks, as many as the group's
    GAN masks (a seeded choice), so that it differs from ``merge`` only in where the masks came from."""
    labels = group_data(training_crops, group, "training_crops")["labels"]
    n = min(len(synthetic_masks["labels"]), len(labels))
    pick = np.sort(np.random.default_rng(group_seed(params["generation"]["seed"], group))
                   .choice(len(labels), n, replace=False))
    return paint_masks(model, labels[pick], source="realmask", group=group, **params["generation"],
                       device=resolve_device(params["runtime"]["device"]))


def evaluate_translation(
    model: dict[str, Any],
    heldout_crops: Mapping[str, dict],
    synthetic_pairs: list[AnnotatedImage],
    params: dict[str, Any],
    fid: dict[str, Any],
    *,
    group: str,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Image quality of one group's painter: its images of held-out real masks against the real images
    (FID/KID, PSNR, SSIM, mask agreement) and its images of the GAN's masks against the same real images
    (FID/KID). Returns the scores ``<heldout|gan_masks>.<metric>`` and a few samples for the grid."""
    device = resolve_device(params["runtime"]["device"])
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"], device=device)
    crops = group_data(heldout_crops, group, "heldout_crops")
    heldout = subsample(MaskSet(crops["labels"], crops["images"]), params["evaluation"]["max_crops"],
                        params["evaluation"]["seed"])
    result = score_painter(ImagePainter.from_model(model), heldout, features,
                           np.stack([p.image for p in synthetic_pairs]) if synthetic_pairs else None,
                           synthetic_name="gan_masks", batch=params["generation"]["batch"],
                           seed=params["generation"]["seed"], device=device)
    logger.info("%s: %s", group, ", ".join(f"{k} {v:.4g}" for k, v in result.scores.items()))
    shown = slice(0, SAMPLES_SHOWN)
    samples = {"masks": heldout.labels[shown], "real images": heldout.images[shown],
               "painted images": result.painted[shown]}
    if synthetic_pairs:
        samples |= {"GAN masks": np.stack([p.labels for p in synthetic_pairs[shown]]),
                    "their painted images": np.stack([p.image for p in synthetic_pairs[shown]])}
    return {k: float(v) for k, v in result.scores.items()}, samples


def summarise_translation(
    scores: Mapping[str, dict[str, float]], samples: Mapping[str, dict[str, np.ndarray]]
) -> tuple[dict[str, dict[str, float]], plt.Figure]:
    """The groups' image quality side by side: MLflow metrics ``image_translation.<group>.<set>.<metric>``
    and their means over groups ``image_translation.<set>.<metric>``, and a sample grid (mask, real image,
    painted image; GAN masks and their images)."""
    metrics = with_group_means(dict(scores))
    panels = [(group, list(samples[group].items())) for group in sorted(samples)]
    return {k: {"value": v, "step": 0} for k, v in metrics.items()}, panel_grid(panels)
