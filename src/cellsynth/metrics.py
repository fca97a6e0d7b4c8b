"""Segmentation quality metrics.

The paper (Tasnadi et al. 2023) scores a segmentation by the mean, over IoU
thresholds 0.5, 0.55, ..., 0.9, of ``TP / (TP + FP + FN)`` where objects are
matched one-to-one at each threshold. Counts are pooled over all images of a
set before the ratio is taken, as in the Data Science Bowl evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from stardist.matching import matching_dataset

DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.5, 0.901, 0.05), 2))


def segmentation_accuracy(
    gt_list: Sequence[np.ndarray],
    pred_list: Sequence[np.ndarray],
    thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
) -> float:
    """Mean over IoU thresholds of ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    gt_list, pred_list
        Ground-truth and predicted instance label images, paired by position;
        each ``(H, W)`` integer array, 0 = background. Pairs must share a shape.
    thresholds
        IoU thresholds at which objects are matched one-to-one.

    Returns
    -------
    float
        Accuracy in [0, 1]; 1.0 when every object is matched at every threshold.
        Two empty sets of objects count as a perfect match.
    """
    return float(np.mean(list(accuracy_by_threshold(gt_list, pred_list, thresholds).values())))


def accuracy_by_threshold(
    gt_list: Sequence[np.ndarray],
    pred_list: Sequence[np.ndarray],
    thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
) -> dict[str, float]:
    """``TP / (TP + FP + FN)`` at each IoU threshold, keyed by the threshold as text (``"0.5"``, ...,
    ``"0.9"``): low thresholds score finding the objects, high ones their outlines.
    Arguments as :func:`segmentation_accuracy`, whose value is the mean of these."""
    if len(gt_list) != len(pred_list):
        raise ValueError(f"segmentation_accuracy: {len(gt_list)} ground-truth images but {len(pred_list)} predictions")
    if len(gt_list) == 0:
        raise ValueError("segmentation_accuracy: no images to score")
    if len(thresholds) == 0:
        raise ValueError("segmentation_accuracy: no IoU thresholds given")
    for index, (gt, pred) in enumerate(zip(gt_list, pred_list)):
        if gt.shape != pred.shape:
            raise ValueError(f"segmentation_accuracy: pair {index} has shapes {gt.shape} (gt) and {pred.shape} (pred)")
    gt_int = [np.asarray(g).astype(np.int32, copy=False) for g in gt_list]
    pred_int = [np.asarray(p).astype(np.int32, copy=False) for p in pred_list]
    keys = [f"{float(t):g}" for t in thresholds]
    if not any(g.any() for g in gt_int) and not any(p.any() for p in pred_int):
        return dict.fromkeys(keys, 1.0)
    stats = matching_dataset(gt_int, pred_int, thresh=list(thresholds), show_progress=False, by_image=False)
    scores = {}
    for key, s in zip(keys, stats, strict=True):
        denominator = s.tp + s.fp + s.fn
        scores[key] = float(s.tp / denominator) if denominator else 1.0
    return scores


def with_group_means(per_group: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """Metrics of every group, named ``<group>.<name>``, and their means over groups, named ``<name>``.

    Parameters
    ----------
    per_group
        ``{group: {name: value}}``; values may be nested mappings, whose keys join the name with dots
        (``{"fold_0": {"gan": {"fid": 3.0}}}`` -> ``fold_0.gan.fid``).

    Returns
    -------
    dict
        Only finite values; a mean is taken over the groups that have a finite value of the name.
    """
    flat = {group: _flatten(scores) for group, scores in per_group.items()}
    metrics = {f"{group}.{name}": value for group, scores in flat.items() for name, value in scores.items()}
    for name in sorted({name for scores in flat.values() for name in scores}):
        metrics[name] = float(np.mean([scores[name] for scores in flat.values() if name in scores]))
    return metrics


def _flatten(scores: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in scores.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif np.isfinite(value):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def object_statistics(label_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Counts and size quantiles of the objects in a set of label images.

    Parameters
    ----------
    label_images
        ``(H, W)`` integer label images, 0 = background.

    Returns
    -------
    dict
        ``images``, ``objects``, ``objects_per_image`` and the object area
        (pixels) quantiles ``area_p05``, ``area_p50``, ``area_p95``.
    """
    areas = (np.concatenate([np.bincount(np.asarray(labels).ravel())[1:] for labels in label_images])
             if len(label_images) else [])
    areas = np.asarray(areas)
    areas = areas[areas > 0]
    quantiles = np.quantile(areas, [0.05, 0.5, 0.95]) if areas.size else [0.0, 0.0, 0.0]
    return {
        "images": float(len(label_images)),
        "objects": float(areas.size),
        "objects_per_image": float(areas.size / max(len(label_images), 1)),
        "area_p05": float(quantiles[0]),
        "area_p50": float(quantiles[1]),
        "area_p95": float(quantiles[2]),
    }
