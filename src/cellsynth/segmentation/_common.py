"""Input checks, per-image normalisation, seeding and atomic model folders shared by both trainers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

# wider than cellsynth.io.IMAGE_DTYPES (what files hold): the segmenters also take float images
SEGMENTER_INPUT_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
# csbdeep/StarDist's usual percentiles: robust to a few hot pixels, keeps the bright end.
NORMALIZE_PERCENTILES: tuple[float, float] = (1.0, 99.8)

T = TypeVar("T")


def check_images(images: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """Check raw images and return them as arrays.

    Each image must be ``(H, W)`` or ``(H, W, C)`` uint8, uint16, float32 or
    float64 with finite values. Raises ValueError naming ``what`` and the index.
    """
    if images is None or isinstance(images, np.ndarray) and images.ndim < 3:
        raise ValueError(f"{what}: expected a sequence of images, got {type(images).__name__}")
    arrays = [np.asarray(image) for image in images]
    for index, image in enumerate(arrays):
        if image.ndim not in (2, 3):
            raise ValueError(f"{what} image {index}: shape {image.shape} is not (H, W) or (H, W, C)")
        if image.dtype not in SEGMENTER_INPUT_DTYPES:
            raise ValueError(f"{what} image {index}: dtype {image.dtype} is not uint8, uint16, float32 or float64")
        if min(image.shape[:2]) < 8:
            raise ValueError(f"{what} image {index}: shape {image.shape} is too small (under 8 pixels)")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise ValueError(f"{what} image {index}: contains NaN or infinite values")
    return arrays


def check_pairs(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], what: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check a non-empty annotated set; return images as arrays and labels as int32 arrays.

    Labels must be ``(H, W)`` integer arrays, non-negative, matching their image's ``(H, W)``.
    """
    if images is None or len(images) == 0:
        raise ValueError(f"{what}: no images given (the set is empty)")
    if labels is None:
        raise ValueError(f"{what}: no label images given")
    arrays = check_images(images, what)
    if len(labels) != len(arrays):
        raise ValueError(f"{what}: {len(arrays)} images but {len(labels)} label images")
    checked = []
    for index, (image, label) in enumerate(zip(arrays, labels)):
        label = np.asarray(label)
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{what} labels {index}: dtype {label.dtype} is not an integer type")
        if label.shape != image.shape[:2]:
            raise ValueError(f"{what} pair {index}: labels of shape {label.shape} but image of shape {image.shape}")
        if label.size and label.min() < 0:
            raise ValueError(f"{what} labels {index}: negative label ids")
        if label.size and label.max() > np.iinfo(np.int32).max:
            raise ValueError(f"{what} labels {index}: label ids exceed int32")
        checked.append(label.astype(np.int32, copy=False))
    return arrays, checked


def channel_count(images: Sequence[np.ndarray], what: str) -> int:
    """Number of channels shared by all images (``(H, W)`` counts as 1); ValueError if mixed."""
    counts = {1 if image.ndim == 2 else image.shape[2] for image in images}
    if len(counts) != 1:
        raise ValueError(f"{what}: images have different channel counts {sorted(counts)}; convert them to one")
    return counts.pop()


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Per-image, per-channel percentile normalisation (1 -> 0, 99.8 -> 1) as StarDist's examples do.

    Returns ``(H, W)`` float32 for one channel (a trailing channel of size 1 is
    dropped), else ``(H, W, C)`` float32. A constant channel becomes 0.
    """
    from csbdeep.utils import normalize

    image = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    low, high = NORMALIZE_PERCENTILES
    return normalize(image, low, high, axis=(0, 1), dtype=np.float32)


def check_sample_weights(weights: Sequence[float] | None, n: int, what: str) -> np.ndarray | None:
    """Per-image sampling weights as a float64 ``(n,)`` array (None stays None: every image alike).

    Raises ValueError naming ``what`` for a wrong length, a negative or non-finite weight, or all zero.
    """
    if weights is None:
        return None
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{what}: {array.size} sample weights for {n} images")
    if not np.all(np.isfinite(array)) or (array < 0).any() or not (array > 0).any():
        raise ValueError(f"{what}: sample weights must be finite, >= 0 and not all 0")
    return array


def repeat_counts(weights: np.ndarray, limit: int = 100_000) -> list[int]:
    """How often to list each image so that uniform drawing over the list follows ``weights``: the
    lightest weighted image once, the others in proportion (rounded). Zero-weight images are left out."""
    lightest = weights[weights > 0].min()
    counts = [int(round(w / lightest)) if w > 0 else 0 for w in weights]
    if sum(counts) > limit:
        raise ValueError(f"sample weights spread too far ({weights.max() / lightest:.3g}:1): the training list "
                         f"would hold {sum(counts)} entries")
    return counts


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
