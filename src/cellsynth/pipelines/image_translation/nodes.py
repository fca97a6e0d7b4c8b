"""Nodes of the ``image_translation`` pipeline: thin calls into :mod:`cellsynth.translation` and
:mod:`cellsynth.quality`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import torch

from cellsynth import quality
from cellsynth.comparison import MaskSet, subsample
from cellsynth.crops import Fold, crops_by_group, group_seed, heldout_groups
from cellsynth.figures import panel_grid
from cellsynth.io import AnnotatedImage
from cellsynth.metrics import with_group_means
from cellsynth.training import (
    CheckpointStore,
    Runtime,
    resolve_device,
    run_fingerprint,
    start_runtime,
)
from cellsynth.translation import (
    ChannelNormalizer,
    Pix2PixConfig,
    Pix2PixResult,
    build_generator,
    train_pix2pix,
    translate,
)

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


def train_pix2pix_models(training_crops: Mapping[str, dict], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """PIX2PIX-TRAIN for each group (fold or all) on its training crops only.

    Checkpoints go to ``image_translation.checkpoint_dir/<group>-<fingerprint>``; a rerun with the same
    settings and data resumes there, and a finished run (e.g. one trained with ``torchrun``) is only loaded.
    """
    runtime = start_runtime(**params["runtime"], seed=params["training"]["seed"])
    models = {}
    for group in sorted(training_crops):
        crops = training_crops[group]
        result, store = train_group(group, crops["labels"], crops["images"], params, runtime)
        models[group] = {"architecture": result.architecture, "G": result.generator.state_dict(),
                         "normalizer": result.normalizer, "representation": result.representation,
                         "history": result.history, "checkpoints": str(store.directory)}
    return models


def train_group(
    group: str, labels: np.ndarray, images: np.ndarray, params: dict[str, Any], runtime: Runtime
) -> tuple[Pix2PixResult, CheckpointStore]:
    """Train (or resume, or load) the pix2pix of one group; shared by the node and the torchrun entry point."""
    config = Pix2PixConfig.from_params(params["training"])
    fingerprint = run_fingerprint(config, labels, images, ignore=("epochs", "checkpoint_every"))
    store = CheckpointStore(Path(params["checkpoint_dir"]) / f"{group}-{fingerprint}")

    def log(metrics: dict[str, float], epoch: int) -> None:
        mlflow.log_metrics({f"image_translation.{group}.{k}": v for k, v in metrics.items()}, step=epoch)

    logger.info("Training pix2pix of %s on %d crops; checkpoints in %s", group, len(labels), store.directory)
    return train_pix2pix(labels, images, config, store, runtime, log_metrics=log), store


def translate_synthetic_masks(
    models: dict[str, dict[str, Any]], synthetic_masks: Mapping[str, dict], params: dict[str, Any]
) -> dict[str, list[AnnotatedImage]]:
    """PIX2PIX-GENERATE: an image for every synthetic mask of each group, by that group's pix2pix.

    Returns ``{group: [AnnotatedImage("gan_0000", image, labels), ...]}``, written like a real dataset.
    """
    return translate_masks(models, synthetic_masks, params, "gan")


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
    return translate_masks(models, chosen, params, "realmask")


def translate_masks(
    models: dict[str, dict[str, Any]], masks: Mapping[str, dict], params: dict[str, Any], source: str
) -> dict[str, list[AnnotatedImage]]:
    """Images for the ``labels`` of every group of ``masks`` by that group's pix2pix, named ``<source>_0000``, ..."""
    missing = sorted(set(masks) - set(models))
    if missing:
        raise ValueError(f"the {source} masks have group(s) {missing} that pix2pix_models lacks {sorted(models)}: "
                         f"rerun the pipelines with the same training_scope, folds and subsets")
    pairs, device = {}, resolve_device(params["runtime"]["device"])
    for group in sorted(masks):
        labels = masks[group]["labels"]
        if len(labels) == 0:
            logger.warning("%s: there is no %s mask to translate", group, source)
            pairs[group] = []
            continue
        images = _translate(models[group], labels, params["generation"], device)
        pairs[group] = [AnnotatedImage(f"{source}_{i:04d}", image, mask)
                        for i, (image, mask) in enumerate(zip(images, labels))]
        logger.info("%s: %d %s image/mask pairs", group, len(pairs[group]), source)
    return pairs


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
            raise ValueError(f"heldout_crops lacks group {group!r} of pix2pix_models; rerun image_translation")
        model = models[group]
        heldout = subsample(MaskSet(heldout_crops[group]["labels"], heldout_crops[group]["images"]),
                            params["evaluation"]["max_crops"], params["evaluation"]["seed"])
        normalizer = ChannelNormalizer.from_dict(model["normalizer"])
        real = normalizer.forward(heldout.images)
        generated = normalizer.forward(_translate(model, heldout.labels, params["generation"], device))
        reference = quality.extract_features(quality.feature_images(real), features, name=f"{group} real images")
        scores = {f"heldout.{k}": v for k, v in quality.translation_quality(real, generated, features,
                                                                            reference).items()}
        pairs = synthetic_pairs.get(group, [])
        if len(pairs) >= 2 and len(real) >= 2:
            synthetic = normalizer.forward(np.stack([p.image for p in pairs]))
            scores.update({f"gan_masks.{k}": v for k, v in quality.image_quality(
                reference, quality.feature_images(synthetic), features=features).items()})
        per_group[group] = scores
        logger.info("%s: %s", group, ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        shown = slice(0, SAMPLES_SHOWN)
        group_panels = [("masks", heldout.labels[shown]), ("real images", heldout.images[shown]),
                        ("pix2pix images", normalizer.inverse(generated[shown]))]
        if pairs:
            group_panels += [("GAN masks", np.stack([p.labels for p in pairs[shown]])),
                             ("their pix2pix images", np.stack([p.image for p in pairs[shown]]))]
        panels.append((group, group_panels))
    return {k: {"value": v, "step": 0} for k, v in with_group_means(per_group).items()}, panel_grid(panels)


def _translate(
    model: dict[str, Any], labels: np.ndarray, generation: dict[str, Any], device: torch.device
) -> np.ndarray:
    generator = build_generator(model["architecture"])
    generator.load_state_dict(model["G"])
    return translate(generator, labels, model["normalizer"], model["representation"],
                     batch=generation["batch"], device=device, seed=generation["seed"])
