"""Nodes of the ``augmentation`` pipeline: thin calls into :mod:`cellsynth.study` and
:mod:`cellsynth.segmentation.augment`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from cellsynth.crops import Fold
from cellsynth.figures import panel_grid
from cellsynth.io import AnnotatedImage
from cellsynth.segmentation import AugmentConfig, augment_pair, normalize_image
from cellsynth.study import Experiment, mixing_weights, plan_experiments

logger = logging.getLogger(__name__)
PREVIEW_SAMPLES = 4


def plan_training_sets(
    folds: dict[str, Any],
    groups: dict[str, list[str]],
    params: dict[str, Any],
    subsets: dict[str, Any],
    training_scope: str,
    *,
    fold: int,
) -> dict[str, Any]:
    """The training stages, validation and test images of every experiment of one fold (a JSON manifest):
    which real images and which synthetic pairs each training draws from."""
    if training_scope != "folds":
        raise ValueError("the segmentation experiments need held-out test images: set training_scope: folds "
                         f"(it is {training_scope!r}; 'all' only makes a synthetic dataset)")
    plan = plan_experiments([Fold.from_dict(f) for f in folds["folds"]], params["experiments"],
                            subsets["fractions"], groups, params.get("controls") or ())
    plan = [experiment for experiment in plan if experiment.fold == fold]
    if not plan:
        raise ValueError(f"the folds hold no fold {fold}: rerun data_prep with this run's data_prep.folds.k")
    for experiment in plan:
        logger.info("fold %d %s: %s", experiment.fold, experiment.name,
                    " then ".join(f"{len(s.real)} real + synthetic {s.synthetic or '-'} ({s.budget})"
                                  for s in experiment.stages))
    share = params.get("synthetic_share")
    mixing_weights(1, 1, share)  # a bad share fails here, before any training
    return {"augmenter": params["augmenter"], "synthetic_share": share, "experiments": [e.to_dict() for e in plan]}


def gather_training_sets(plans: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The folds' plans as one manifest (``training_sets``: what the report and the benchmark scripts read)."""
    first, *_ = (plans[fold] for fold in sorted(plans))
    return {**first, "experiments": [e for fold in sorted(plans) for e in plans[fold]["experiments"]]}


def preview_augmentation(
    images: list[AnnotatedImage], training_sets: dict[str, Any], params: dict[str, Any]
) -> plt.Figure:
    """A few training images of the first experiment and random augmentations of them, as the
    segmentation trainers draw them (StarDist: with elastic deformation; Cellpose: without)."""
    first = Experiment.from_dict(training_sets["experiments"][0])
    names = [n for stage in first.stages for n in stage.real][:PREVIEW_SAMPLES]
    by_name = {s.name: s for s in images}
    samples = [by_name[n] for n in names]
    config = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in params["augmenter"].items()})
    rng = np.random.default_rng(0)
    side = min(min(s.labels.shape) for s in samples)
    originals = [normalize_image(s.image)[:side, :side] for s in samples]
    augmented = [augment_pair(image, s.labels[:side, :side], rng, config) for image, s in zip(originals, samples)]
    return panel_grid([("augmentation", [
        ("images", np.stack(originals)), ("masks", np.stack([s.labels[:side, :side] for s in samples])),
        ("augmented", np.stack([a[0] for a in augmented])), ("augmented masks", np.stack([a[1] for a in augmented])),
    ])])
