"""Object scale of instance masks: measure it, and bring generated masks to the scale of real ones.

A mask generator fine-tuned for minutes keeps the object size of its pretraining: the shipped nuclei
generator draws nuclei of about 220 px² in 64 px crops whatever the new data's magnification (DSB
fluorescence folds hold 114-461 px²). Segmentation trained on such masks learns the wrong size.
:func:`match_object_scale` zooms generated masks by the ratio of median object sizes, so that their
objects have the training crops' size while keeping their shapes and their arrangement.
:func:`largest_object_areas` lets a filter drop generated masks holding an object larger than any real one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential


def _check_label_masks(masks: np.ndarray) -> None:
    if masks.ndim != 3 or not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be (N, S, S) integer labels, got {masks.dtype} {masks.shape}")


def object_areas(masks: np.ndarray) -> np.ndarray:
    """``(K,)`` areas in pixels of the objects of ``(N, S, S)`` integer masks that do not touch a crop edge
    (edge objects are cut, so their area understates the size); of all objects when every one touches.

    Raises
    ------
    ValueError
        When the masks hold no object.
    """
    _check_label_masks(masks)
    inner, every = [], []
    for mask in masks:
        edge = np.unique(np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]]))
        ids, areas = np.unique(mask[mask > 0], return_counts=True)
        every.extend(areas)
        inner.extend(areas[~np.isin(ids, edge)])
    if not every:
        raise ValueError(f"the {len(masks)} masks hold no object: no object scale to measure")
    return np.asarray(inner if inner else every, np.int64)


def median_object_area(masks: np.ndarray) -> float:
    """Median of :func:`object_areas`: the typical size of the objects of ``(N, S, S)`` integer masks."""
    return float(np.median(object_areas(masks)))


def largest_object_areas(masks: np.ndarray) -> np.ndarray:
    """``(N,)`` area in pixels of the largest object of each ``(N, S, S)`` integer mask (0 when empty)."""
    _check_label_masks(masks)
    return np.array([np.bincount(mask.ravel())[1:].max(initial=0) for mask in masks], np.int64)


def rescale_masks(masks: np.ndarray, factor: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Zoom ``(N, S, S)`` instance masks by ``factor`` (linear), keeping ``S``.

    Enlarged masks are cropped at their centre; shrunk ones are cut from a mosaic of the mask and others of
    the set (drawn with ``rng``), so that the crop stays filled as densely as before. Labels are zoomed by
    nearest neighbour and renumbered 1..n per mask; objects left with fewer than 4 pixels are dropped.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must be (N, S, S), got {masks.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    size = masks.shape[1]
    tiles = int(np.ceil(1 / factor)) if factor < 1 else 1
    out = np.zeros_like(masks)
    for n, mask in enumerate(masks):
        if tiles > 1:  # a tiles x tiles mosaic: this mask and others, each one's labels kept apart
            others = rng.choice(len(masks), tiles * tiles - 1)
            parts, offset = [mask.astype(np.int64)], int(mask.max())
            for other in masks[others]:
                parts.append(np.where(other > 0, other.astype(np.int64) + offset, 0))
                offset += int(other.max())
            mask = np.block([[parts[r * tiles + c] for c in range(tiles)] for r in range(tiles)])
        zoomed = ndimage.zoom(mask, factor, order=0, grid_mode=True, mode="grid-constant")
        top = (zoomed.shape[0] - size) // 2 if tiles == 1 else 0
        crop = zoomed[top: top + size, top: top + size]
        ids, areas = np.unique(crop, return_counts=True)
        crop = np.where(np.isin(crop, ids[(ids > 0) & (areas < 4)]), 0, crop)
        out[n, : crop.shape[0], : crop.shape[1]] = relabel_sequential(crop)[0]
    return out


def match_object_scale(masks: np.ndarray, reference: np.ndarray, tolerance: float = 0.1,
                       seed: int = 0) -> tuple[np.ndarray, float]:
    """Zoom generated ``(N, S, S)`` masks so that their median object area matches ``reference`` masks'
    (e.g. the real training crops). Returns the masks and the linear factor applied (1.0, masks unchanged,
    when the sizes already agree within ``tolerance``)."""
    factor = float(np.sqrt(median_object_area(reference) / median_object_area(masks)))
    if abs(factor - 1) <= tolerance:
        return masks, 1.0
    return rescale_masks(masks, factor, np.random.default_rng(seed)), factor
