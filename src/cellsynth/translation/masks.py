"""Instance masks as generator input: ``(N, C, H, W)`` float32 in [-1, 1].

``"label"``
    The label image as one channel. Object ids carry no meaning, so each sample's ids
    are replaced by a random permutation of ``1..K`` (``K`` objects), so the model cannot
    learn a dependence on id order, and scaled to ``id / K`` in (0, 1]; the background
    is -1, well apart from every object however many there are.
``"flows"``
    The mask GAN's 3-channel encoding (:func:`cellsynth.encoding.encode_batch`:
    object probability, ``dx``, ``dy``), uint8 scaled by ``v / 127.5 - 1``.
``"boundary"``
    Foreground and object boundaries (:func:`skimage.segmentation.find_boundaries`,
    ``mode="inner"``), two binary channels at -1 / 1: touching objects stay separate.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from cellsynth.encoding import encode_batch

REPRESENTATIONS: tuple[str, ...] = ("label", "flows", "boundary")
_CHANNELS = {"label": 1, "flows": 3, "boundary": 2}
# How geometric augmentation resamples each representation: ids and binary maps must not be
# blended, flow vectors may.
INTERPOLATION = {"label": "nearest", "flows": "bilinear", "boundary": "nearest"}
# Channels that change sign under a flip along (width, height): the flow components dx, dy.
FLIP_SIGN_CHANNELS = {"label": (None, None), "flows": (1, 2), "boundary": (None, None)}


def check_representation(representation: str) -> None:
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")


def mask_channels(representation: str) -> int:
    """Number of generator input channels of ``representation``."""
    check_representation(representation)
    return _CHANNELS[representation]


def permute_labels(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Renumber one label image's objects ``1..K`` in random order (background stays 0).

    Parameters
    ----------
    labels
        ``(H, W)`` non-negative integer ids, not necessarily sequential.
    rng
        Source of the permutation.

    Returns
    -------
    np.ndarray
        ``(H, W)`` int64 with the same partition into objects.
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    objects = int(np.count_nonzero(ids))
    new_ids = np.zeros(len(ids), np.int64)
    new_ids[ids != 0] = rng.permutation(objects) + 1
    return new_ids[inverse.reshape(labels.shape)]


def masks_to_input(
    labels: np.ndarray, representation: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Generator input for a stack of instance masks.

    Parameters
    ----------
    labels
        ``(N, H, W)`` non-negative integer label images, 0 = background.
    representation
        One of :data:`REPRESENTATIONS`.
    rng
        Source of the ``"label"`` id permutation (a fresh unseeded generator if ``None``).

    Returns
    -------
    np.ndarray
        ``(N, C, H, W)`` float32 in [-1, 1], ``C = mask_channels(representation)``.
    """
    check_representation(representation)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"labels must be (N, H, W) non-negative integers, got {labels.dtype} {labels.shape}")
    if representation == "flows":
        return (encode_batch(labels).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    if representation == "boundary":
        foreground = labels > 0
        boundary = np.stack([find_boundaries(mask, mode="inner") for mask in labels])
        return np.stack([foreground, boundary], axis=1).astype(np.float32) * 2.0 - 1.0
    rng = np.random.default_rng() if rng is None else rng
    out = np.empty((len(labels), 1, *labels.shape[1:]), np.float32)
    for index, mask in enumerate(labels):
        permuted = permute_labels(mask, rng)
        out[index, 0] = np.where(permuted > 0, permuted / max(int(permuted.max()), 1), -1.0)
    return out
