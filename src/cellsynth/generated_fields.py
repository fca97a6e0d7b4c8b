"""Checks on generated flow fields: do they decode into the masks they encode, which masks to keep.

A flow field from the mask GAN is only a labelled sample if it is a numerically
correct Cellpose encoding: decoding it and encoding the masks again must give
the field back (Tasnadi et al. 2023 needed FID < 100 for that; here it is
measured directly). :func:`consistency_errors` scores that per field,
:func:`mask_filter` keeps the samples with enough objects and a small error,
:func:`sample_diversity` detects mode collapse, and
:func:`generated_field_metrics` sums up a GAN snapshot (FID/KID from
:mod:`cellsynth.quality`, pass rate, cells per crop, diversity).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellsynth import flow_dynamics
from cellsynth.encoding import decode_batch, encode_batch
from cellsynth.quality import ImageFeatures, InceptionFeatures, image_quality

# decode_consistency / mask_filter: a field is consistent when its error is below this.
# It is Cellpose's own quality control, flow_threshold 0.4 (the mean squared
# difference between an object's given and recomputed unit flows), applied to
# the whole field, whose dropped foreground counts too. Encoded real masks score
# <= 0.05 at full size; fields as smooth as a GAN's score more without being
# wrong: real nuclei (DSB) and phantom masks learnt at half size and enlarged
# score a median 0.055 / 0.13 (blurred by sigma 1 px: 0.08 / 0.20), and >= 97 %
# of them pass 0.4, against 3-10 % passing the 0.1 used before. Fields whose
# touching cells merge (phantom blurred by 2 px: 9 objects decode to 4) score
# 0.6-1.1; uniform noise ~1.7.
DECODE_TOLERANCE = 0.4



def consistency_errors(flows: np.ndarray, labels: np.ndarray, method: str = "cellpose_flow",
                       cellprob_threshold: float = 0.0) -> np.ndarray:
    """How far each flow field is from the encoding of its decoded masks.

    With ``P`` the field's foreground (the pixels the decoder followed: probability
    logit above ``cellprob_threshold``; at 0 the channel > 127.5, the midpoint of the
    encoding's 0/255), ``Q`` that of ``encode(labels)`` and ``U = P | Q``, the error
    of a field is

        mean over U of (dx_f - dx_e)^2 + (dy_f - dy_e)^2   (flows in [-1, 1])
        + |P xor Q| / |U|                                  (foreground disagreement)

    in [0, 9]; 0 when ``U`` is empty.

    Parameters
    ----------
    flows
        ``(N, H, W, 3)`` fields ``[probability, dx, dy]`` on the 0..255 scale,
        uint8 or float.
    labels
        ``(N, H, W)`` integer masks decoded from ``flows``.
    method
        Must be ``"cellpose_flow"``.
    cellprob_threshold
        The decoder's threshold (:func:`cellsynth.encoding.decode_batch`) the
        masks were decoded with: below 0 a soft probability map decodes into
        larger objects, and ``P`` must be the foreground they were grown from.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 errors.

    Raises
    ------
    ValueError
        Another ``method``, bad ``flows`` or ``labels`` of another ``(N, H, W)``.
    """
    _check_flows(flows, method)
    labels = np.asarray(labels)
    if labels.shape != flows.shape[:3]:
        raise ValueError(f"labels must have shape (N, H, W) = {flows.shape[:3]} like flows, got {labels.shape}")
    encoded = encode_batch(labels, method=method)
    field_on = flow_dynamics.foreground(flows, cellprob_threshold).numpy()
    encoded_on = encoded[..., 0] > 127.5
    union = field_on | encoded_on
    # [0, 255] -> [-1, 1] as the encoding maps it (128 ~ 0).
    difference = (flows[..., 1:].astype(np.float64) - encoded[..., 1:]) / 127.5
    flow_error = np.where(union, (difference**2).sum(-1), 0.0).sum((1, 2))
    disagreement = (field_on != encoded_on).sum((1, 2))
    area = union.sum((1, 2))
    return np.where(area > 0, (flow_error + disagreement) / np.maximum(area, 1), 0.0)


def decode_consistency(
    flows: np.ndarray,
    method: str = "cellpose_flow",
    tolerance: float = DECODE_TOLERANCE,
    labels: np.ndarray | None = None,
    **decode_opts: Any,
) -> float:
    """Fraction of flow fields that decode into masks re-encoding to the field.

    Each field is decoded (``decode_batch(flows, method, **decode_opts)``),
    the masks are re-encoded, and the field counts as consistent when its
    :func:`consistency_errors` value is below ``tolerance``. Objects dropped
    by the decoder (Cellpose's flow check, ``min_size``) make a field
    inconsistent; an empty field (no probability above 127.5) is consistent.

    With the default tolerance (:data:`DECODE_TOLERANCE`, Cellpose's flow_threshold
    0.4), encoded real masks score ~1, also when learnt at reduced scale, uniform
    noise 0 (errors ~1.7). The paper needed FID < 100 for numerically correct masks;
    this score shows that directly.

    Parameters
    ----------
    flows
        ``(N, H, W, 3)`` fields on the 0..255 scale (uint8 or float), N >= 1.
    method
        Must be ``"cellpose_flow"``: the binary and label encodings have no
        flows to check.
    tolerance
        Largest error (exclusive) of a consistent field, > 0.
    labels
        ``(N, H, W)`` masks already decoded from ``flows``, to skip decoding them again.
    **decode_opts
        Passed to :func:`cellsynth.encoding.decode_batch`.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        Another ``method``, bad ``flows`` or a non-positive ``tolerance``.
    """
    _check_flows(flows, method)
    if not np.isfinite(tolerance) or tolerance <= 0:
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    if labels is None:
        labels = decode_batch(flows, method, **decode_opts)
    errors = consistency_errors(flows, labels, method, decode_opts.get("cellprob_threshold", 0.0))
    return float(np.mean(errors < tolerance))


def generated_field_metrics(
    fields: np.ndarray,
    reference: ImageFeatures,
    features: InceptionFeatures,
    method: str = "cellpose_flow",
    min_objects: int = 3,
    max_consistency_error: float = DECODE_TOLERANCE,
    **decode_opts: Any,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """What a snapshot of the mask GAN is worth: FID/KID of its fields against real ones, the
    share of its masks that pass :func:`mask_filter`, their objects, and its sample diversity.

    Parameters
    ----------
    fields
        ``(N, H, W, C)`` uint8 generated fields at the size of the real crops, ``N >= 2``.
    reference
        :func:`extract_features` of real fields of that size.
    features
        The extractor ``reference`` was made with.
    method, min_objects, max_consistency_error
        The encoding and the filter settings (:func:`mask_filter`).
    **decode_opts
        Passed to :func:`cellsynth.encoding.decode_batch`.

    Returns
    -------
    metrics, labels, kept
        ``{fid..., kid..., "pass_rate", "objects_per_mask" (all masks), "cells_per_crop" (kept
        masks; NaN when none), "diversity"}``, the decoded ``(N, H, W)`` int32 masks and the
        ``(N,)`` bool filter verdicts.
    """
    metrics = image_quality(reference, fields, features=features)
    labels = decode_batch(fields, method=method, **decode_opts)
    kept = mask_filter(fields, labels, method=method, min_objects=min_objects,
                       max_consistency_error=max_consistency_error,
                       cellprob_threshold=decode_opts.get("cellprob_threshold", 0.0))
    objects = labels.reshape(len(labels), -1).max(axis=1)
    metrics.update({
        "pass_rate": float(kept.mean()),
        "objects_per_mask": float(objects.mean()),
        "cells_per_crop": float(objects[kept].mean()) if kept.any() else float("nan"),
        "diversity": sample_diversity(fields),
    })
    return metrics, labels, kept


def sample_diversity(images: np.ndarray) -> float:
    """How much a set of images differs from sample to sample: the standard deviation across
    the set at every pixel and channel, averaged, on a [0, 1] scale.

    A generator that ignores its latent (mode collapse) scores near 0 whatever its images look
    like; compare with the score of real crops measured the same way (about 0.27 for 64x64
    Cellpose flow fields of nuclei, with 6 objects per crop).

    Parameters
    ----------
    images
        ``(N, H, W, C)`` uint8 (or any numbers on the 0..255 scale), ``N >= 2``.

    Returns
    -------
    float
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"sample_diversity needs (N, H, W, C) images with N >= 2, got shape {images.shape}")
    return float((np.asarray(images, np.float64) / 255.0).std(axis=0).mean())


def _check_flows(flows: Any, method: str) -> None:
    if method != "cellpose_flow":
        raise ValueError(
            f"decode consistency is defined for method 'cellpose_flow' only (the other encodings have no flows), "
            f"got {method!r}"
        )
    if not isinstance(flows, np.ndarray) or flows.dtype.kind not in "uif":
        found = getattr(flows, "dtype", type(flows).__name__)
        raise ValueError(f"flows must be a numeric numpy array (N, H, W, 3), got {found}")
    if flows.ndim != 4 or flows.shape[-1] != 3 or flows.size == 0:
        raise ValueError(f"flows must have shape (N, H, W, 3) with N >= 1, got {flows.shape}")
    if flows.dtype != np.uint8 and not (np.isfinite(flows).all() and flows.min() >= 0 and flows.max() <= 255):
        raise ValueError("flows must hold finite values in [0, 255]")


def mask_filter(
    flows: np.ndarray,
    labels: np.ndarray,
    method: str = "cellpose_flow",
    min_objects: int = 3,
    max_consistency_error: float = DECODE_TOLERANCE,
    errors: np.ndarray | None = None,
    cellprob_threshold: float = 0.0,
) -> np.ndarray:
    """Which generated samples to keep: enough objects and, for flow fields, a consistent decode.

    Parameters
    ----------
    flows
        ``(N, H, W, C)`` generated fields the masks were decoded from.
    labels
        ``(N, H, W)`` decoded instance masks.
    min_objects
        Fewest objects a kept mask holds.
    max_consistency_error
        Largest :func:`consistency_errors` value of a kept sample (``cellpose_flow`` only).
    errors
        ``(N,)`` :func:`consistency_errors` of these samples when the caller has them already
        (they re-encode every mask: the costly part).
    cellprob_threshold
        The decoder's threshold the masks were decoded with (:func:`consistency_errors`).

    Returns
    -------
    np.ndarray
        ``(N,)`` bool.
    """
    if min_objects < 0 or not max_consistency_error > 0:
        raise ValueError(f"need min_objects >= 0 and max_consistency_error > 0, got {min_objects}, "
                         f"{max_consistency_error}")
    keep = labels.reshape(len(labels), -1).max(axis=1, initial=0) >= min_objects
    if method == "cellpose_flow":
        if errors is None:
            errors = consistency_errors(flows, labels, method, cellprob_threshold)
        keep &= errors <= max_consistency_error
    return keep
