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
from cellsynth.study import Experiment, mixing_weights, plan_experiments, synthetic_sources

logger = logging.getLogger(__name__)
PREVIEW_SAMPLES = 4


def plan_training_sets(
    folds: dict[str, Any],
    groups: dict[str, list[str]],
    synthetic_pairs: Mapping[str, list[AnnotatedImage]],
    simcep_pairs: Mapping[str, list[AnnotatedImage]],
    realmask_pairs: Mapping[str, list[AnnotatedImage]],
    params: dict[str, Any],
    subsets: dict[str, Any],
    training_scope: str,
) -> dict[str, Any]:
    """The training stages, validation and test images of every experiment and fold (a JSON manifest)."""
    if training_scope != "folds":
        raise ValueError("the segmentation experiments need held-out test images: set training_scope: folds "
                         f"(it is {training_scope!r}; 'all' only makes a synthetic dataset)")
    plan = plan_experiments([Fold.from_dict(f) for f in folds["folds"]], params["experiments"],
                            subsets["fractions"], groups, params.get("controls") or ())
    sources = synthetic_sources(synthetic_pairs, {"simcep": simcep_pairs, "realmasks": realmask_pairs})
    missing = sorted({g for e in plan for g in e.synthetic_groups} - set(sources))
    if missing:
        raise ValueError(f"the synthetic pairs lack {missing}: rerun mask_gan, image_translation and "
                         f"simcep_baseline with the same folds and subsets.fractions")
    for experiment in plan:
        logger.info("fold %d %s: %s", experiment.fold, experiment.name,
                    " then ".join(f"{len(s.real)} real + synthetic {s.synthetic or '-'} ({s.budget})"
                                  for s in experiment.stages))
    share = params.get("synthetic_share")
    mixing_weights(1, 1, share)  # a bad share fails here, before any training
    return {"augmenter": params["augmenter"], "synthetic_share": share, "experiments": [e.to_dict() for e in plan]}


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
