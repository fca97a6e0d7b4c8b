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
from cellsynth.crops import Fold, crops_by_group, group_data, group_seed, heldout_groups
from cellsynth.figures import panel_grid
from cellsynth.image_painter import (
    ImagePainter,
    collage_model,
    paint_groups,
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


def extract_heldout_crops(
    images: list[AnnotatedImage], folds: dict[str, Any], groups: dict[str, list[str]], crops: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Crops of each fold's validation images (never seen by its generative models), unrotated, to
    measure pix2pix against real images. With ``training_scope: all`` the measurement is in-sample."""
    if "all" in groups:
        logger.warning("training_scope is 'all': pix2pix is measured on its own training images (in-sample)")
    heldout = heldout_groups(groups, [Fold.from_dict(f) for f in folds["folds"]])
    return crops_by_group(images, heldout, **{**crops, "rotations": False})


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
    models: dict[str, dict[str, Any]], synthetic_masks: Mapping[str, dict], params: dict[str, Any]
) -> dict[str, list[AnnotatedImage]]:
    """PIX2PIX-GENERATE: an image for every synthetic mask of each group, by that group's pix2pix.

    Returns ``{group: [AnnotatedImage("gan_0000", image, labels), ...]}``, written like a real dataset.
    """
    return paint_groups(models, synthetic_masks, source="gan", **params["generation"],
                        device=resolve_device(params["runtime"]["device"]))


def translate_training_masks(
    models: dict[str, dict[str, Any]], training_crops: Mapping[str, dict], synthetic_masks: Mapping[str, dict],
    params: dict[str, Any]
) -> dict[str, list[AnnotatedImage]]:
    """The ``realmasks`` control: pix2pix images of each group's own training masks, as many as the
    group's GAN masks (a seeded choice), so that it differs from ``merge`` only in where the masks came from."""
    chosen = {}
    for group in sorted(synthetic_masks):
        labels = training_crops[group]["labels"]
        n = min(len(synthetic_masks[group]["labels"]), len(labels))
        pick = np.sort(np.random.default_rng(group_seed(params["generation"]["seed"], group))
                       .choice(len(labels), n, replace=False))
        chosen[group] = {"labels": labels[pick]}
    return paint_groups(models, chosen, source="realmask", **params["generation"],
                        device=resolve_device(params["runtime"]["device"]))


def evaluate_translation(
    models: dict[str, dict[str, Any]],
    heldout_crops: Mapping[str, dict],
    synthetic_pairs: Mapping[str, list[AnnotatedImage]],
    params: dict[str, Any],
    fid: dict[str, Any],
) -> tuple[dict[str, dict[str, float]], plt.Figure]:
    """Image quality per group: pix2pix images of held-out real masks against the real images
    (FID/KID, PSNR, SSIM) and images of the GAN's masks against the same real images (FID/KID).

    Returns MLflow metrics ``image_translation.<group>.<heldout|gan_masks>.<metric>`` and their means
    over groups ``image_translation.<set>.<metric>``, and a sample grid (mask, real, pix2pix, GAN pair).
    """
    device = resolve_device(params["runtime"]["device"])
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"], device=device)
    per_group: dict[str, dict[str, float]] = {}
    panels = []
    for group in sorted(models):
        if group not in heldout_crops:
            raise ValueError(f"heldout_crops lacks group {group!r} of the pix2pix models; rerun image_translation")
        heldout = subsample(MaskSet(heldout_crops[group]["labels"], heldout_crops[group]["images"]),
                            params["evaluation"]["max_crops"], params["evaluation"]["seed"])
        pairs = synthetic_pairs.get(group, [])
        result = score_painter(ImagePainter.from_model(models[group]), heldout, features,
                               np.stack([p.image for p in pairs]) if pairs else None, synthetic_name="gan_masks",
                               batch=params["generation"]["batch"], seed=params["generation"]["seed"], device=device)
        per_group[group] = result.scores
        logger.info("%s: %s", group, ", ".join(f"{k} {v:.4g}" for k, v in result.scores.items()))
        shown = slice(0, SAMPLES_SHOWN)
        group_panels = [("masks", heldout.labels[shown]), ("real images", heldout.images[shown]),
                        ("pix2pix images", result.painted[shown])]
        if pairs:
            group_panels += [("GAN masks", np.stack([p.labels for p in pairs[shown]])),
                             ("their pix2pix images", np.stack([p.image for p in pairs[shown]]))]
        panels.append((group, group_panels))
    return {k: {"value": v, "step": 0} for k, v in with_group_means(per_group).items()}, panel_grid(panels)
