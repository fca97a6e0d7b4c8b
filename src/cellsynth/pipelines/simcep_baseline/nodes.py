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
from cellsynth.crops import group_data, group_seed
from cellsynth.figures import panel_grid
from cellsynth.image_painter import paint_masks
from cellsynth.io import AnnotatedImage
from cellsynth.metrics import with_group_means
from cellsynth.training import resolve_device
from cellsynth.training.config import config_from_params
from cellsynth.translation import ChannelNormalizer

logger = logging.getLogger(__name__)
SAMPLES_SHOWN = 4


def fit_simcep(training_crops: Mapping[str, dict], params: dict[str, Any], *, group: str) -> dict[str, Any]:
    """Fit SIMCEP to one group's training crops (cells per crop, radius range, shape irregularity, clusters
    and their spread)."""
    labels = group_data(training_crops, group, "training_crops")["labels"]
    model = simcep.fit(list(labels), **params["fit"])
    logger.info("%s: SIMCEP fitted to %d crops: %s", group, len(labels), model.to_dict())
    return {"parameters": model.to_dict(), "size": int(labels.shape[1]), "fitted_on": len(labels)}


def simulate_simcep_masks(fitted: dict[str, Any], params: dict[str, Any], *, group: str) -> dict[str, np.ndarray]:
    """``simulation.n`` SIMCEP masks of the group's crop size: ``labels`` ``(N, S, S)`` int32."""
    labels = simcep.simulate(simcep.SimcepParams.from_dict(fitted["parameters"]), params["simulation"]["n"],
                             fitted["size"], group_seed(params["simulation"]["seed"], group))
    return {"labels": np.stack(labels).astype(np.int32)}


def translate_simcep_masks(
    model: dict[str, Any], simcep_masks: dict[str, np.ndarray], params: dict[str, Any], *, group: str
) -> list[AnnotatedImage]:
    """Images of the group's SIMCEP masks by its painter (so SIMCEP and GAN masks get images alike)."""
    return paint_masks(model, simcep_masks["labels"], source="simcep", group=group, **params["generation"],
                       device=resolve_device(params["runtime"]["device"]))


def compare_structure(
    pix2pix_model: dict[str, Any],
    training_crops: Mapping[str, dict],
    heldout_crops: Mapping[str, dict],
    synthetic_pairs: list[AnnotatedImage],
    simcep_pairs: list[AnnotatedImage],
    params: dict[str, Any],
    fid: dict[str, Any],
    *,
    group: str,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Real training crops, GAN masks and SIMCEP masks, each with their images, against the group's
    held-out real crops: FID/KID in flow space and of the images, and layout statistic distances
    (``{set: {metric: value}}``), and a few masks and images of each set for the grid."""
    features = quality.inception_features(fid["inception_weights"], fid["allow_download"])
    comparison = config_from_params(ComparisonSettings, params["comparison"], "simcep_baseline.comparison")
    heldout = group_data(heldout_crops, group, "heldout_crops")
    training = group_data(training_crops, group, "training_crops")
    sets = {"real": MaskSet(training["labels"], training["images"]), "gan": _mask_set(synthetic_pairs),
            "simcep": _mask_set(simcep_pairs)}
    normalizer = ChannelNormalizer.from_dict(pix2pix_model["normalizer"])
    scores = compare_mask_sets(MaskSet(heldout["labels"], heldout["images"]), sets, features, normalizer,
                               max_masks=comparison.max_masks, seed=comparison.seed)
    samples = {f"{name} {kind}": data[:SAMPLES_SHOWN] for name, s in sets.items()
               for kind, data in (("masks", s.labels), ("images", s.images)) if data is not None and len(data)}
    return _plain(scores), samples


def summarise_structure(
    scores: Mapping[str, dict[str, dict[str, float]]],
    samples: Mapping[str, dict[str, np.ndarray]],
    fitted: Mapping[str, dict[str, Any]],
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], plt.Figure, dict[str, dict[str, float]]]:
    """The groups' comparisons side by side: the table (one row per group and set, plus the mean over
    groups as group ``mean``), the same numbers as MLflow metrics ``simcep_baseline.[<group>.]<set>.<metric>``,
    a sample grid, and the fitted SIMCEP parameters as MLflow metrics ``simcep.<group>.<parameter>``."""
    table = comparison_table(dict(scores))
    for row in table[table["group"] == "mean"].to_dict("records"):
        logger.info("%s vs held-out real: %s", row["set"], ", ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k.startswith(("flows.fid", "images.fid", "layout."))))
    panels = [(group, list(samples[group].items())) for group in sorted(samples)]
    parameters = {f"{group}.{k}": {"value": float(v), "step": 0}
                  for group, model in sorted(fitted.items()) for k, v in model["parameters"].items()}
    return (table, {k: {"value": v, "step": 0} for k, v in with_group_means(dict(scores)).items()},
            panel_grid(panels), parameters)


def _plain(value: Any) -> Any:
    """Scores as JSON takes them: nested dicts of Python floats."""
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else float(value)


def _mask_set(pairs: list[AnnotatedImage]) -> MaskSet:
    if not pairs:
        return MaskSet(np.zeros((0, 1, 1), np.int32), None)
    return MaskSet(np.stack([p.labels for p in pairs]), np.stack([p.image for p in pairs]))
