"""Nodes of the ``simcep_baseline`` pipeline: thin calls into :mod:`cellsynth.simcep` and
:mod:`cellsynth.comparison`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cellsynth import quality, simcep
from cellsynth.comparison import ComparisonSettings, MaskSet, compare_mask_sets, comparison_table
from cellsynth.crops import group_seed
from cellsynth.figures import panel_grid
from cellsynth.image_painter import paint_groups
from cellsynth.io import AnnotatedImage
from cellsynth.metrics import with_group_means
from cellsynth.training import resolve_device
from cellsynth.training.config import config_from_params
from cellsynth.translation import ChannelNormalizer

logger = logging.getLogger(__name__)
SAMPLES_SHOWN = 4


def fit_simcep(
    training_crops: Mapping[str, dict], params: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Fit SIMCEP to each group's training crops (cells per crop, radius range, shape irregularity,
    clusters and their spread); the fitted values also go to MLflow as ``simcep.<group>.<parameter>``."""
    fitted, metrics = {}, {}
    for group in sorted(training_crops):
        labels = training_crops[group]["labels"]
        model = simcep.fit(list(labels), **params["fit"])
        fitted[group] = {"parameters": model.to_dict(), "size": int(labels.shape[1]), "fitted_on": len(labels)}
        metrics.update({f"{group}.{k}": float(v) for k, v in model.to_dict().items()})
        logger.info("%s: SIMCEP fitted to %d crops: %s", group, len(labels), model.to_dict())
    return fitted, {k: {"value": v, "step": 0} for k, v in metrics.items()}


def simulate_simcep_masks(
    fitted: dict[str, dict[str, Any]], params: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """``simulation.n`` SIMCEP masks per group, of the group's crop size."""
    masks = {}
    for group, model in sorted(fitted.items()):
        labels = simcep.simulate(simcep.SimcepParams.from_dict(model["parameters"]), params["simulation"]["n"],
                                 model["size"], group_seed(params["simulation"]["seed"], group))
        masks[group] = {"labels": np.stack(labels).astype(np.int32)}
    return masks


def translate_simcep_masks(
    models: dict[str, dict[str, Any]], simcep_masks: Mapping[str, dict], params: dict[str, Any]
) -> dict[str, list[AnnotatedImage]]:
    """Images of the SIMCEP masks by each group's pix2pix (so SIMCEP and GAN masks get images alike)."""
    return paint_groups(models, simcep_masks, source="simcep", **params["generation"],
                        device=resolve_device(params["runtime"]["device"]))


def compare_structure(
    pix2pix_models: dict[str, dict[str, Any]],
    training_crops: Mapping[str, dict],
    heldout_crops: Mapping[str, dict],
    synthetic_pairs: Mapping[str, list[AnnotatedImage]],
    simcep_pairs: Mapping[str, list[AnnotatedImage]],
    params: dict[str, Any],
    fid: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], plt.Figure]:
    """Real training crops, GAN masks and SIMCEP masks, each with their images, against the group's
    held-out real crops: FID/KID in flow space and of the images, and layout statistic distances.

    Returns the table (one row per group and set, plus the mean over groups as group ``mean``), the same
    numbers as MLflow metrics ``simcep_baseline.[<group>.]<set>.<metric>``, and a sample grid.
    """
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"])
    comparison = config_from_params(ComparisonSettings, params["comparison"], "simcep_baseline.comparison")
    scores, panels = {}, []
    for group in sorted(heldout_crops):
        heldout, training = heldout_crops[group], training_crops[group]
        sets = {"real": MaskSet(training["labels"], training["images"]),
                "gan": _mask_set(synthetic_pairs.get(group, [])),
                "simcep": _mask_set(simcep_pairs.get(group, []))}
        normalizer = ChannelNormalizer.from_dict(pix2pix_models[group]["normalizer"])
        scores[group] = compare_mask_sets(MaskSet(heldout["labels"], heldout["images"]), sets, features, normalizer,
                                          max_masks=comparison.max_masks, seed=comparison.seed)
        panels.append((group, [(f"{name} {kind}", data[:SAMPLES_SHOWN]) for name, s in sets.items()
                               for kind, data in (("masks", s.labels), ("images", s.images))
                               if data is not None and len(data)]))
    table = comparison_table(scores)
    for row in table[table["group"] == "mean"].to_dict("records"):
        logger.info("%s vs held-out real: %s", row["set"], ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k.startswith(("flows.fid", "images.fid", "layout."))))
    return table, {k: {"value": v, "step": 0} for k, v in with_group_means(scores).items()}, panel_grid(panels)


def _mask_set(pairs: list[AnnotatedImage]) -> MaskSet:
    if not pairs:
        return MaskSet(np.zeros((0, 1, 1), np.int32), None)
    return MaskSet(np.stack([p.labels for p in pairs]), np.stack([p.image for p in pairs]))
