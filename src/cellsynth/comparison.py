"""Structure comparison of mask sets (the paper's Figure 5 and what FID cannot show).

Each candidate set (e.g. real training crops, GAN masks, SIMCEP masks) is measured against one
reference set of real crops by

- FID/KID of the masks in flow space: every set is encoded the same way (Cellpose flows of its
  label images), so generated fields and simulated masks are compared alike;
- FID/KID of the images made from the masks (e.g. by pix2pix) against the real images;
- the distance of each layout and morphology statistic (:func:`cellsynth.layout.compare_layouts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellsynth import encoding, layout, quality
from cellsynth.training.config import check_positive_int
from cellsynth.translation import ChannelNormalizer


@dataclass(frozen=True)
class ComparisonSettings:
    """How sets of masks are compared with the held-out real crops (``simcep_baseline.comparison``):
    at most ``max_masks`` masks per set (None: all), drawn with ``seed``."""

    max_masks: int | None = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_masks is not None:
            check_positive_int(self.max_masks, "simcep_baseline.comparison.max_masks")


@dataclass(frozen=True)
class MaskSet:
    """Instance masks ``labels`` ``(N, S, S)`` int, with images ``(N, S, S, C)`` uint8/uint16 or None."""

    labels: np.ndarray
    images: np.ndarray | None = None


def compare_mask_sets(
    reference: MaskSet,
    candidates: dict[str, MaskSet],
    features: quality.InceptionFeatures,
    normalizer: ChannelNormalizer | None = None,
    max_masks: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Distances of every candidate set to the reference set.

    Parameters
    ----------
    reference
        Real crops: labels, and images when image FID is wanted.
    candidates
        ``{name: MaskSet}``; a set with fewer than 2 masks gets NaN FID/KID.
    features
        The feature extractor (:func:`cellsynth.quality.inception_features`).
    normalizer
        Scales images of any bit depth/channels to [-1, 1] alike for every set (e.g. the pix2pix
        model's); required when images are given.
    max_masks
        Use at most this many masks per set (a seeded random choice), to bound the cost.
    seed
        Seed of that choice.

    Returns
    -------
    dict
        ``{name: {"flows.<fid|kid...>", "images.<fid|kid...>", "layout.<statistic>", "n_masks"}}``.
    """
    if len(reference.labels) < 2:
        raise ValueError(f"the reference set needs at least 2 masks, has {len(reference.labels)}")
    reference = subsample(reference, max_masks, seed)
    ref_flows = quality.extract_features(encoding.encode_batch(reference.labels), features, name="reference flows")
    ref_layout = layout.layout_statistics(list(reference.labels))
    ref_images = None
    if reference.images is not None:
        if normalizer is None:
            raise ValueError("compare_mask_sets: images need a normalizer")
        ref_images = quality.extract_features(quality.feature_images(normalizer.forward(reference.images)), features,
                                              name="reference images")
    result = {}
    for name, candidate in candidates.items():
        candidate = subsample(candidate, max_masks, seed)
        if len(candidate.labels) and candidate.labels.shape[1:] != reference.labels.shape[1:]:
            raise ValueError(f"set {name!r}: masks of shape {candidate.labels.shape[1:]}, the reference's are "
                             f"{reference.labels.shape[1:]}")
        scores: dict[str, float] = {"n_masks": float(len(candidate.labels))}
        if len(candidate.labels) >= 2:
            flows = encoding.encode_batch(candidate.labels)
            scores.update({f"flows.{k}": v for k, v in quality.image_quality(ref_flows, flows, features).items()})
            if ref_images is not None and candidate.images is not None:
                images = quality.feature_images(normalizer.forward(candidate.images))
                image_scores = quality.image_quality(ref_images, images, features)
                scores.update({f"images.{k}": v for k, v in image_scores.items()})
        if len(candidate.labels):
            distances = layout.compare_layouts(ref_layout, list(candidate.labels))
            scores.update({f"layout.{k}": v for k, v in distances.items()})
        result[name] = scores
    return result


def comparison_table(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> pd.DataFrame:
    """The results of :func:`compare_mask_sets` for several groups as one table.

    Parameters
    ----------
    scores
        ``{group: {set: {metric: value}}}``.

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``set`` and one per metric; one row per group and set, then one row per
        set with ``group = "mean"``, the mean over groups (missing values skipped).
    """
    rows = [{"group": group, "set": name, **values} for group, sets in scores.items() for name, values in sets.items()]
    if not rows:
        raise ValueError("there is no group to compare")
    table = pd.DataFrame(rows)
    means = table.drop(columns="group").groupby("set", sort=False).mean().reset_index().assign(group="mean")
    return pd.concat([table, means[table.columns]], ignore_index=True)


def mean_table(table: pd.DataFrame) -> pd.DataFrame:
    """The means over groups of a :func:`comparison_table`: one row per metric (flow and image
    FID/KID, layout distances), one column per set."""
    means = table[table["group"] == "mean"].drop(columns="group").set_index("set")
    return means[[c for c in means.columns if c.split(".")[0] in ("flows", "images", "layout")]].T


_SPACES = {"flows": "masks (as flow fields)", "images": "images"}
_SCORES = {"fid": "FID", "kid": "KID"}
_LAYOUT = {"cells_per_crop": "cells per crop", "area": "object area (px²)", "eccentricity": "eccentricity",
           "nn_distance": "nearest-neighbour distance (px)", "orientation_coherence": "orientation coherence",
           "ripley_l": "Ripley's L (px)"}
_SET_NAMES = {"real": "real training crops", "gan": "GAN", "simcep": "SIMCEP"}


def plain_metric_name(key: str) -> str:
    """A row name that reads without a glossary: ``flows.kid_randinit_std`` -> "KID of the masks (as flow
    fields), spread, random-init Inception"; ``layout.ripley_l`` -> "Ripley's L (px): distribution distance"."""
    space, _, metric = key.partition(".")
    if space == "layout":
        return f"{_LAYOUT.get(metric, metric)}: distribution distance"
    score, *rest = metric.split("_")
    words = [f"{_SCORES.get(score, score)} of the {_SPACES.get(space, space)}"]
    words += ["spread" for part in rest if part == "std"]
    words += ["random-init Inception" for part in rest if part == "randinit"]
    return ", ".join(words)


def readable_quality_table(means: pd.DataFrame) -> pd.DataFrame:
    """:func:`mean_table` as a reader gets it: plain row names, plain set names, and per row which of
    GAN and SIMCEP lies closer to the held-out real crops.

    Every value is a distance to each fold's held-out real crops (lower is closer), averaged over
    folds; the ``real training crops`` column is the floor, how far other real crops of the same
    tissue lie. Spreads (``_std`` rows) get no verdict.
    """
    table = means.rename(columns=lambda name: _SET_NAMES.get(name, name))
    closer = []
    for key, row in table.iterrows():
        gan, sim = row.get("GAN", np.nan), row.get("SIMCEP", np.nan)
        if key.endswith("_std") or pd.isna(gan) or pd.isna(sim) or gan == sim:
            closer.append("")
        else:
            closer.append("GAN" if gan < sim else "SIMCEP")
    table = table.assign(**{"closer to real": closer})
    table.index = [plain_metric_name(key) for key in table.index]
    table.index.name = "distance to held-out real crops (lower is closer)"
    return table


def subsample(masks: MaskSet, max_masks: int | None, seed: int) -> MaskSet:
    """At most ``max_masks`` of a set (a seeded random choice, in their order); None keeps them all."""
    if max_masks is None or len(masks.labels) <= max_masks:
        return masks
    keep = np.sort(np.random.default_rng(seed).choice(len(masks.labels), max_masks, replace=False))
    return MaskSet(masks.labels[keep], None if masks.images is None else masks.images[keep])
