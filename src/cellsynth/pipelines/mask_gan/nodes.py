"""Nodes of the ``mask_gan`` pipeline: thin calls into :mod:`cellsynth.mask_generator`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np

from cellsynth import encoding, generated_fields, quality
from cellsynth.crops import group_data, group_seed
from cellsynth.figures import sample_grid
from cellsynth.mask_generator import (
    GenerationSettings,
    MaskGANSettings,
    MaskSource,
    crops_object_areas,
    train_mask_gan,
    trained_model,
)
from cellsynth.training import resolve_device, start_runtime

logger = logging.getLogger(__name__)
SAMPLES_SHOWN = 4


def train_group_gan(
    encoded_flows: Mapping[str, dict], params: dict[str, Any], encoding_params: dict[str, Any], fid: dict[str, Any],
    *, group: str,
) -> dict[str, Any]:
    """TRAIN-GAN of one group (a fold, a fold's subset or all) on its encoded training crops.

    Checkpoints go to ``mask_gan.checkpoint_dir/<group>-<fingerprint>``; a rerun with the same settings and
    data resumes there (and a finished run, e.g. one trained with ``torchrun -m cellsynth.pipelines.torchrun
    mask_gan``, is only loaded). Snapshot metrics go to MLflow as ``mask_gan.<group>.<metric>`` with the image
    count as step.
    """
    settings = MaskGANSettings.from_params(params)
    runtime = start_runtime(**settings.runtime, seed=settings.training.seed)
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"], device=runtime.device)

    def log(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({f"mask_gan.{group}.{k}": v for k, v in metrics.items()}, step=step)

    flows = group_data(encoded_flows, group, "encoded_flows")["flows"]
    result, store = train_mask_gan(flows, settings, group=group, method=encoding_params["method"], features=features,
                                   runtime=runtime, log_metrics=log)
    logger.info("%s: best snapshot %s", group, result.best)
    return trained_model(result, store, encoding_params["method"], settings.downsample,
                         crops_object_areas(flows, encoding_params["method"]))


def generate_group_masks(
    model: dict[str, Any], generation: dict[str, Any], runtime: dict[str, Any], encoding_params: dict[str, Any],
    *, group: str,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """GAN-GENERATE + DECODE for one group: synthetic flow fields from its best ``G_ema`` (on the
    ``runtime.device``), decoded into instance masks and filtered. Returns the kept ``flows`` and ``labels``,
    and the filter's counts (``generated``, ``kept``, ``diversity``, ``scale_factor``)."""
    filters = GenerationSettings.from_params(generation)
    drawn = MaskSource.from_model(model, encoding_params["method"], filters).sample(
        filters.n, seed=group_seed(filters.seed, group), device=resolve_device(runtime["device"]), progress=True)
    fields, labels, kept = drawn.fields, drawn.labels, drawn.kept
    summary = {"generated": len(fields), "kept": int(kept.sum()),
               "diversity": float(generated_fields.sample_diversity(fields)) if len(fields) > 1 else None,
               "scale_factor": float(drawn.scale_factor)}
    logger.info("%s: %d of %d generated masks pass the filters", group, kept.sum(), len(fields))
    if not kept.any():
        logger.warning("%s: no generated mask passed the filters (mask_gan.generation.min_objects, "
                       "max_consistency_error); the GAN needs more training (mask_gan.training.kimg)", group)
    return {"flows": fields[kept], "labels": labels[kept]}, summary


def summarise_generation(
    synthetic_masks: Mapping[str, dict[str, np.ndarray]],
    summaries: Mapping[str, dict[str, Any]],
    encoded_flows: Mapping[str, dict],
    encoding_params: dict[str, Any],
) -> tuple[plt.Figure, dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """The groups' generation side by side: a real-vs-synthetic sample grid (kept masks), MLflow metrics
    ``mask_gan.<group>.<generated|kept|diversity|scale_factor>`` and the summary per group."""
    method, grids = encoding_params["method"], []
    for group in sorted(synthetic_masks):
        real = encoding.as_gan_images(encoded_flows[group]["flows"][:SAMPLES_SHOWN], method)
        synthetic = synthetic_masks[group]
        grids.append((group, real, encoding.decode_batch(real, method=method),
                      synthetic["flows"][:SAMPLES_SHOWN], synthetic["labels"][:SAMPLES_SHOWN]))
    metrics = {f"{group}.{key}": {"value": float(value), "step": 0}
               for group, counts in sorted(summaries.items()) for key, value in counts.items() if value is not None}
    return sample_grid(grids), metrics, dict(sorted(summaries.items()))
