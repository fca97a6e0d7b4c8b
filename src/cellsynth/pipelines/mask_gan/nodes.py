"""Nodes of the ``mask_gan`` pipeline: thin calls into :mod:`cellsynth.gan` and :mod:`cellsynth.quality`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np

from cellsynth import encoding, generated_fields, quality
from cellsynth.crops import group_seed
from cellsynth.figures import sample_grid
from cellsynth.gan.networks import Generator
from cellsynth.gan.pretrained import load_initial_weights
from cellsynth.gan.training import (
    GANConfig,
    GANTrainingResult,
    build_generator,
    generate_images,
    run_fingerprint,
    train_gan,
)
from cellsynth.training import CheckpointStore, Runtime, resolve_device, start_runtime

logger = logging.getLogger(__name__)


def train_mask_gans(
    encoded_flows: Mapping[str, dict], params: dict[str, Any], encoding_params: dict[str, Any], fid: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """TRAIN-GAN for each group (fold or all) on its encoded training crops.

    Checkpoints go to ``mask_gan.checkpoint_dir/<group>-<fingerprint>``; a rerun with
    the same settings and data resumes there (and a finished run, e.g. one trained
    with ``torchrun -m cellsynth.pipelines.torchrun mask_gan``, is only loaded).
    Snapshot metrics go to MLflow as ``mask_gan.<group>.<metric>`` with the image count as step.
    """
    runtime = start_runtime(**params["runtime"], seed=params["training"]["seed"])
    models = {}
    for group in sorted(encoded_flows):
        result, store = train_group(group, encoded_flows[group]["flows"], params, encoding_params["method"], fid,
                                    runtime)
        logger.info("%s: best snapshot %s", group, result.best)
        models[group] = {"architecture": result.architecture, "G_ema": result.generator_ema.state_dict(),
                         "best": result.best, "history": result.history, "encoding": encoding_params["method"],
                         "downsample": params["downsample"],
                         "checkpoints": str(store.directory)}
    return models


def train_group(
    group: str, encoded: np.ndarray, params: dict[str, Any], method: str, fid: dict[str, Any], runtime: Runtime
) -> tuple[GANTrainingResult, CheckpointStore]:
    """Train (or resume, or load) the mask GAN of one group; shared by the node and the torchrun entry point."""
    config = GANConfig.from_params({**params["training"], "seed": group_seed(params["training"]["seed"], group)})
    if method != "cellpose_flow":
        config.vector_channels = None  # only the flow encoding has vector channels
    flows = encoding.as_gan_images(encoded, method)
    downsample = params["downsample"]
    evaluation, generation = params["evaluation"], params["generation"]
    decode_options = encoding.check_decode_options(generation.get("decode"), "mask_gan.generation.decode")
    sample = flows[np.random.default_rng(0).permutation(len(flows))[: evaluation["n_images"]]]
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"], device=runtime.device)
    reference = quality.extract_features(sample, features, name="real flows")

    def evaluate(generator: Generator) -> dict[str, float]:
        fake = generate_images(generator, len(sample), seed=evaluation["seed"], device=runtime.device)
        metrics, _, _ = generated_fields.generated_field_metrics(
            encoding.upscale_fields(fake, downsample, method), reference, features, method=method,
            min_objects=generation["min_objects"], max_consistency_error=generation["max_consistency_error"],
            **decode_options)
        return metrics

    def log(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({f"mask_gan.{group}.{k}": v for k, v in metrics.items()}, step=step)

    flows = encoding.downscale(flows, downsample)
    init_from = load_initial_weights(params["init_from"]) if params.get("init_from") else None
    store = CheckpointStore(Path(params["checkpoint_dir"]) / f"{group}-{run_fingerprint(config, flows, init_from)}")
    logger.info("Training the mask GAN of %s on %d crops; checkpoints in %s", group, len(flows), store.directory)
    result = train_gan(flows, config, store, runtime, evaluate=evaluate, log_metrics=log, init_from=init_from)
    return result, store


def generate_synthetic_masks(
    models: dict[str, dict[str, Any]],
    encoded_flows: Mapping[str, dict],
    generation: dict[str, Any],
    runtime: dict[str, Any],
    encoding_params: dict[str, Any],
) -> tuple[dict[str, dict[str, np.ndarray]], plt.Figure, dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """GAN-GENERATE + DECODE: synthetic flow fields from each group's best ``G_ema`` (on the
    ``runtime.device``), decoded into instance masks and filtered; plus a real-vs-synthetic sample
    grid, MLflow metrics and the filter's counts per group (``generated``, ``kept``, ``diversity``)."""
    synthetic, grids, summary = {}, [], {}
    device = resolve_device(runtime["device"])
    decode_options = encoding.check_decode_options(generation.get("decode"), "mask_gan.generation.decode")
    for group, model in sorted(models.items()):
        generator = build_generator(model["architecture"])
        generator.load_state_dict(model["G_ema"])
        fields = generate_images(generator, generation["n"], seed=group_seed(generation["seed"], group),
                                 truncation_psi=generation["truncation_psi"], device=device, progress=True)
        fields = encoding.upscale_fields(fields, model.get("downsample", 1), encoding_params["method"])
        labels = encoding.decode_batch(fields, method=encoding_params["method"], progress=True,
                                       **decode_options)
        kept = generated_fields.mask_filter(fields, labels, method=encoding_params["method"],
                                   min_objects=generation["min_objects"],
                                   max_consistency_error=generation["max_consistency_error"])
        synthetic[group] = {"flows": fields[kept], "labels": labels[kept]}
        summary[group] = {"generated": len(fields), "kept": int(kept.sum()),
                          "diversity": generated_fields.sample_diversity(fields) if len(fields) > 1 else None}
        logger.info("%s: %d of %d generated masks pass the filters", group, kept.sum(), len(fields))
        if not kept.any():
            logger.warning("%s: no generated mask passed the filters (mask_gan.generation.min_objects, "
                           "max_consistency_error); the GAN needs more training (mask_gan.training.kimg)", group)
        real = encoding.as_gan_images(encoded_flows[group]["flows"][:4], encoding_params["method"])
        real_labels = encoding.decode_batch(real, method=encoding_params["method"])
        grids.append((group, real, real_labels, fields[:4], labels[:4]))
    figure = sample_grid(grids)
    metrics = {f"{group}.{key}": {"value": float(value), "step": 0}
               for group, counts in summary.items() for key, value in counts.items() if value is not None}
    return synthetic, figure, metrics, summary
