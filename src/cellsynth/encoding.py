"""Encode instance label images as GAN targets and decode them back.

Three encodings are available (:data:`METHODS`):

``"cellpose_flow"``
    The paper's representation (Tasnadi et al. 2023): Cellpose's heat-diffusion
    flow field plus an object-probability map, as a ``(H, W, 3)`` uint8 image.

    * channel 0 -- object probability, 255 inside objects and 0 outside;
    * channel 1 -- horizontal flow ``dx`` (along columns, positive = rightwards);
    * channel 2 -- vertical flow ``dy`` (along rows, positive = downwards).

    Flows are Cellpose's unit vectors, which point from every object pixel
    towards its object's centre (so right of a centre ``dx < 0``). Each
    component ``v`` in [-1, 1] is stored as ``round((v + 1) * 127.5)``; a zero
    flow (background) is stored as 128. Note the order: Cellpose's own ``dP``
    is ``[dy, dx]``, here the channels are ``dx, dy``.

    Encoding calls Cellpose's own ``dynamics.masks_to_flows`` (CPU version).
    Decoding follows the flows to their sinks and groups the pixels that meet
    there, as Cellpose's ``dynamics.compute_masks`` does; the default
    ``backend="batched"`` is the PyTorch implementation of :mod:`cellsynth.flow_dynamics` that decodes a
    whole batch of crops in tensor passes on CPU or GPU, ``backend="cellpose"``
    calls Cellpose one crop at a time (the reference).

``"binary"``
    Foreground as ``(H, W, 1)`` uint8, 0 or 255. Decoding thresholds at 127 and
    splits the foreground into 4-connected components, so touching objects merge.

``"label"``
    The label image itself as ``(H, W, 1)`` float32 (ids unchanged, not
    normalised: the GAN's data loader scales it). Decoding rounds to the nearest
    integer, clips negatives to 0 and renumbers 8-connected regions of equal
    value 1..N, so every id is one connected component.

Every decoder returns ``(H, W)`` int32 labels, 0 = background, objects 1..N.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import label as connected_components
from tqdm.auto import tqdm

from cellsynth import flow_dynamics
from cellsynth.training.config import check_positive_int
from cellsynth.training.runtime import resolve_device

METHODS: tuple[str, ...] = ("cellpose_flow", "binary", "label")
BACKENDS: tuple[str, ...] = ("batched", "cellpose")

_CHANNELS = {"cellpose_flow": 3, "binary": 1, "label": 1}

# Cellpose's network predicts flows scaled by this factor (its training targets
# are 5x the unit flows); compute_masks divides it out again.
_CELLPOSE_FLOW_SCALE = 5.0

# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def encode(labels: np.ndarray, method: str = "cellpose_flow") -> np.ndarray:
    """Encode one instance label image.

    Parameters
    ----------
    labels
        ``(H, W)`` label image, 0 = background; integer dtype (or bool, or float
        holding whole numbers), non-negative. Ids need not be sequential.
    method
        One of :data:`METHODS`.

    Returns
    -------
    np.ndarray
        ``"cellpose_flow"``: ``(H, W, 3)`` uint8 ``[probability, dx, dy]``;
        ``"binary"``: ``(H, W, 1)`` uint8 in {0, 255};
        ``"label"``: ``(H, W, 1)`` float32 copy of ``labels``.
        For ``"cellpose_flow"`` an id whose pixels form several 8-connected
        pieces is encoded as one object per piece (Cellpose diffuses from a
        single centre, so the other pieces would get no flow).

    Raises
    ------
    ValueError
        Unknown ``method``; ``labels`` not 2-D, empty, negative or non-integer.
    TypeError
        ``labels`` of a non-numeric dtype.
    """
    _check_method(method)
    image = _as_labels(labels, ndim=2, name="labels")
    return _encode_one(image, method)


def encode_batch(labels: np.ndarray, method: str = "cellpose_flow", progress: bool = False) -> np.ndarray:
    """Encode a stack of label images; see :func:`encode`.

    Parameters
    ----------
    labels
        ``(B, H, W)`` label images.
    method
        One of :data:`METHODS`.
    progress
        Show a progress bar.

    Returns
    -------
    np.ndarray
        ``(B, H, W, C)`` with the dtype and channels of :func:`encode`.
    """
    _check_method(method)
    stack = _as_labels(labels, ndim=3, name="labels")
    channels = _CHANNELS[method]
    dtype = np.float32 if method == "label" else np.uint8
    out = np.empty((*stack.shape, channels), dtype)
    for index, image in enumerate(tqdm(stack, desc=f"encode ({method})", unit="crop", disable=not progress)):
        out[index] = _encode_one(image, method)
    return out


def decode(
    encoded: np.ndarray,
    method: str = "cellpose_flow",
    *,
    niter: int = 200,
    cellprob_threshold: float = 0.0,
    flow_threshold: float | None = 0.4,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
    device: str | torch.device | None = None,
    backend: str = "batched",
    batch_size: int = 64,
) -> np.ndarray:
    """Decode one encoded image into instance labels.

    Parameters
    ----------
    encoded
        ``(H, W, C)`` real array laid out as :func:`encode` returns it (uint8 or
        float; for ``"cellpose_flow"`` and ``"binary"`` on the 0..255 scale).
    method
        One of :data:`METHODS`.
    niter, cellprob_threshold, flow_threshold, min_size, max_size_fraction, device, backend, batch_size
        Options of ``"cellpose_flow"`` (see :func:`decode_batch`).

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32 labels, 0 = background, objects numbered 1..N.
    """
    _check_method(method)
    image = _as_encoded(encoded, method, ndim=3)
    return decode_batch(image[None], method, niter=niter, cellprob_threshold=cellprob_threshold,
                        flow_threshold=flow_threshold, min_size=min_size, max_size_fraction=max_size_fraction,
                        device=device, backend=backend, batch_size=batch_size)[0]


def decode_batch(
    encoded: np.ndarray,
    method: str = "cellpose_flow",
    progress: bool = False,
    *,
    niter: int = 200,
    cellprob_threshold: float = 0.0,
    flow_threshold: float | None = 0.4,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
    device: str | torch.device | None = None,
    backend: str = "batched",
    batch_size: int = 64,
) -> np.ndarray:
    """Decode a batch of encoded images into instance labels.

    The keyword-only parameters (:data:`FLOW_DECODE_OPTIONS`) are the options of
    ``"cellpose_flow"``; the binary and label methods refuse any value but the default.

    Parameters
    ----------
    encoded
        ``(B, H, W, C)`` real array, each item laid out as :func:`encode`
        returns it.
    method
        One of :data:`METHODS`.
    progress
        Show a progress bar.
    niter
        Euler steps along the flow field.
    cellprob_threshold
        Threshold on the logit of the probability channel (``p = v / 255``):
        pixels with ``log(p / (1 - p)) > cellprob_threshold`` are followed.
        0 means ``v > 127.5``.
    flow_threshold
        Cellpose's quality control: objects whose mean squared difference
        between the given flows and the flows recomputed from the object
        exceeds this are dropped. ``None`` or <= 0 disables it.
    min_size
        Objects smaller than this many pixels (after quality control) are
        dropped; <= 0 keeps all. Holes in objects are always filled.
    max_size_fraction
        Objects covering more than this fraction of the image are dropped.
    device
        Where to compute; None means ``"cuda"`` when available, else CPU.
    backend
        One of :data:`BACKENDS`: ``"batched"`` is the batched PyTorch decoder of
        :mod:`cellsynth.flow_dynamics`, ``"cellpose"`` calls ``cellpose.dynamics.compute_masks``
        per crop.
    batch_size
        Crops decoded together by the batched backend (bounds memory).

    Returns
    -------
    np.ndarray
        ``(B, H, W)`` int32 labels, 0 = background, objects numbered 1..N in
        each item.

    Raises
    ------
    ValueError
        Unknown ``method`` or ``backend``, wrong shape or channel count,
        non-finite values, or an option out of range.
    TypeError
        Non-numeric ``encoded``, or a flow option given to another method.
    """
    _check_method(method)
    batch = _as_encoded(encoded, method, ndim=4)
    options = {"niter": niter, "cellprob_threshold": cellprob_threshold, "flow_threshold": flow_threshold,
               "min_size": min_size, "max_size_fraction": max_size_fraction, "device": device}
    if method != "cellpose_flow":
        given = {**options, "backend": backend, "batch_size": batch_size}
        changed = sorted(name for name, value in given.items() if value != _FLOW_DECODE_DEFAULTS[name])
        if changed:
            raise TypeError(f"decode method {method!r} takes no options, got {changed}")
        decode_one = _decode_binary if method == "binary" else _decode_label
        out = np.empty(batch.shape[:3], np.int32)
        for index, image in enumerate(batch):
            out[index] = decode_one(image)
        return out
    _check_flow_options(options, backend, batch_size)
    options["device"] = resolve_device(device)
    if backend == "cellpose":
        return np.stack([_decode_flow_cellpose(image, **options)
                         for image in tqdm(batch, desc="decode (cellpose)", unit="crop", disable=not progress)])
    return np.concatenate(
        [
            flow_dynamics.masks_from_flows(batch[start : start + batch_size], **options)
            for start in tqdm(range(0, len(batch), batch_size), desc="decode (batched)", unit="batch",
                              disable=not progress)
        ]
    )


# The options of the flow decoder and their defaults, read from its signature (one source of truth).
_FLOW_DECODE_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(decode_batch).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}
FLOW_DECODE_OPTIONS: tuple[str, ...] = tuple(_FLOW_DECODE_DEFAULTS)


@dataclass(frozen=True)
class CodecCheckSettings:
    """The ENCODE -> DECODE round trip that data_prep measures (``data_prep.codec_check``): the first
    ``max_crops`` crops of each group, decoded with ``decode`` (options of :func:`decode_batch`)."""

    max_crops: int = 64
    decode: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive_int(self.max_crops, "data_prep.codec_check.max_crops")
        object.__setattr__(self, "decode", check_decode_options(self.decode, "data_prep.codec_check.decode"))


def check_decode_options(options: Mapping[str, Any] | None, section: str) -> dict[str, Any]:
    """``options`` (e.g. a parameter block) as keyword arguments for :func:`decode_batch`.

    Raises
    ------
    ValueError
        Naming ``section`` and every key that is not one of :data:`FLOW_DECODE_OPTIONS`, so a typo
        in the configuration is reported where it was made.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(FLOW_DECODE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown {section} option(s) {unknown}; known: {sorted(FLOW_DECODE_OPTIONS)}")
    return options


def as_gan_images(encoded: np.ndarray, method: str) -> np.ndarray:
    """The uint8 images a GAN trains on, from a batch of :func:`encode_batch` output.

    ``cellpose_flow`` and ``binary`` are already uint8 on the 0..255 scale and
    pass unchanged. ``label`` ids are clipped to 255 (the paper's naive label
    encoding is an 8-bit image; a crop rarely holds more objects); :func:`decode`
    reads such images back by rounding.

    Parameters
    ----------
    encoded
        ``(B, H, W, C)`` encoded batch.

    Returns
    -------
    np.ndarray
        ``(B, H, W, C)`` uint8.
    """
    _check_method(method)
    batch = _as_encoded(encoded, method, ndim=4)
    if batch.dtype == np.uint8:
        return batch
    return np.clip(np.round(batch), 0, 255).astype(np.uint8)


def downscale(batch: np.ndarray, factor: int) -> np.ndarray:
    """Label images or encoded images at ``1 / factor`` of their size, for a GAN trained at reduced scale.

    Nearest-neighbour sampling at the centre of every ``factor x factor`` block: ids stay ids and
    encoded fields keep their values (objects narrower than ``factor`` pixels may vanish).
    Sampling the full-size encoding decodes as well as encoding the sampled labels (measured on
    DSB nuclei at factor 2: segmentation accuracy 0.82 vs 0.83 after :func:`upscale_fields` and
    decoding). :func:`upscale_fields` brings generated fields back to full size before decoding.

    Parameters
    ----------
    batch
        ``(B, H, W)`` or ``(B, H, W, C)``, ``H`` and ``W`` multiples of ``factor``.
    factor
        Integer >= 1; 1 returns ``batch`` unchanged.

    Returns
    -------
    np.ndarray
        ``(B, H / factor, W / factor[, C])``, dtype of ``batch``.
    """
    _check_factor(factor, batch.shape[1:3])
    return batch if factor == 1 else np.ascontiguousarray(batch[:, factor // 2 :: factor, factor // 2 :: factor])


def upscale_fields(encoded: np.ndarray, factor: int, method: str = "cellpose_flow") -> np.ndarray:
    """Generated images ``factor`` times larger, to decode a GAN trained at reduced scale at full size.

    ``cellpose_flow`` and ``binary`` images are interpolated bilinearly: the probability stays a
    soft map that the decoder thresholds at its midpoint and the flows keep pointing to the same
    sinks, so the masks follow the outlines smoothly rather than in ``factor``-pixel steps.
    ``label`` images are enlarged by repetition (ids must not be interpolated).

    Parameters
    ----------
    encoded
        ``(B, h, w, C)`` uint8 on the 0..255 scale (:func:`as_gan_images`).
    factor
        Integer >= 1; 1 returns ``encoded`` unchanged.
    method
        One of :data:`METHODS`.

    Returns
    -------
    np.ndarray
        ``(B, h * factor, w * factor, C)`` uint8.
    """
    _check_method(method)
    _check_factor(factor, ())
    if encoded.ndim != 4 or encoded.dtype != np.uint8:
        raise ValueError(f"encoded must be uint8 (B, h, w, C), got {encoded.dtype} {encoded.shape}")
    if factor == 1:
        return encoded
    if method == "label":
        return np.ascontiguousarray(encoded.repeat(factor, axis=1).repeat(factor, axis=2))
    batch = torch.from_numpy(np.ascontiguousarray(encoded)).permute(0, 3, 1, 2).float()
    larger = F.interpolate(batch, scale_factor=factor, mode="bilinear", align_corners=False)
    return np.ascontiguousarray(larger.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


def _check_factor(factor: int, shape: tuple[int, ...]) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"scale factor must be an integer >= 1, got {factor!r}")
    if any(side % factor for side in shape):
        raise ValueError(f"image size {tuple(shape)} is not a multiple of the scale factor {factor}")


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _as_labels(labels: np.ndarray, ndim: int, name: str) -> np.ndarray:
    """Validated int64 copy of a label image (ndim 2) or stack (ndim 3)."""
    array = np.asarray(labels)
    if array.dtype.kind not in "buif":
        raise TypeError(f"{name} must have an integer, bool or float dtype, got {array.dtype}")
    layout = "(H, W)" if ndim == 2 else "(B, H, W)"
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty, shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name} is a float array with non-integer values; label ids must be whole numbers")
    if array.min() < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {array.min()}")
    return array.astype(np.int64)


def _as_encoded(encoded: np.ndarray, method: str, ndim: int) -> np.ndarray:
    """Validated encoded image (ndim 3) or batch (ndim 4), dtype unchanged."""
    array = np.asarray(encoded)
    if array.dtype.kind not in "uif":
        raise TypeError(f"encoded must have an integer or float dtype, got {array.dtype}")
    layout = "(H, W, C)" if ndim == 3 else "(B, H, W, C)"
    if array.ndim != ndim:
        raise ValueError(f"encoded must be {ndim}-D {layout}, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"encoded is empty, shape {array.shape}")
    channels = _CHANNELS[method]
    if array.shape[-1] != channels:
        raise ValueError(
            f"method {method!r} expects {channels} channel(s) in the last axis of encoded, got {array.shape[-1]}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("encoded contains NaN or infinite values")
    return array


def _check_flow_options(options: dict[str, Any], backend: str, batch_size: int) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, value, minimum in (("niter", options["niter"], 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    for name in ("cellprob_threshold", "flow_threshold", "min_size", "max_size_fraction"):
        value = options[name]
        if name == "flow_threshold" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0 < options["max_size_fraction"] <= 1:
        raise ValueError(f"max_size_fraction must be in (0, 1], got {options['max_size_fraction']!r}")


# ----------------------------------------------------------------------------
# Encoders and the simple decoders
# ----------------------------------------------------------------------------


def _encode_one(labels: np.ndarray, method: str) -> np.ndarray:
    if method == "label":
        return labels.astype(np.float32)[..., None]
    if method == "binary":
        return ((labels > 0) * 255).astype(np.uint8)[..., None]
    encoded = np.full((*labels.shape, 3), 128, np.uint8)
    if not labels.any():
        encoded[..., 0] = 0
        return encoded
    # Imported here: cellpose pulls in numba, cv2 and its models (seconds).
    from cellpose import dynamics

    pieces = connected_components(labels, connectivity=2).astype(np.int32)
    dy_dx = dynamics.masks_to_flows(pieces, device=torch.device("cpu"))
    encoded[..., 0] = np.where(pieces > 0, 255, 0)
    encoded[..., 1] = _quantise(dy_dx[1])
    encoded[..., 2] = _quantise(dy_dx[0])
    return encoded


def _quantise(flow: np.ndarray) -> np.ndarray:
    """Unit flow component in [-1, 1] -> uint8, round((v + 1) * 127.5)."""
    return np.clip(np.round((flow + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _decode_binary(encoded: np.ndarray) -> np.ndarray:
    return connected_components(encoded[..., 0] > 127, connectivity=1).astype(np.int32)


def _decode_label(encoded: np.ndarray) -> np.ndarray:
    ids = np.clip(np.rint(encoded[..., 0].astype(np.float64)), 0, None).astype(np.int64)
    return connected_components(ids, background=0, connectivity=2).astype(np.int32)


# ----------------------------------------------------------------------------
# Flow decoding: Cellpose itself (the reference backend)
# ----------------------------------------------------------------------------


def _decode_flow_cellpose(
    encoded: np.ndarray,
    *,
    niter: int,
    cellprob_threshold: float,
    flow_threshold: float | None,
    min_size: int,
    max_size_fraction: float,
    device: torch.device,
) -> np.ndarray:
    """Reference decoder: Cellpose's compute_masks on one ``(H, W, 3)`` crop."""
    from cellpose import dynamics, utils

    unit_flows, foreground = flow_dynamics.unit_flows_and_foreground(encoded[None], cellprob_threshold,
                                                                     torch.device("cpu"))
    dx, dy = unit_flows[0].numpy()
    network_dp = (np.stack([dy, dx]) * _CELLPOSE_FLOW_SCALE).astype(np.float32)
    # compute_masks only compares cellprob with the threshold: +-inf hands it
    # exactly our foreground.
    cellprob = np.where(foreground[0].numpy(), np.inf, -np.inf).astype(np.float32)
    masks = dynamics.compute_masks(
        network_dp,
        cellprob,
        niter=niter,
        cellprob_threshold=cellprob_threshold,
        flow_threshold=flow_threshold if flow_threshold is not None else 0.0,
        min_size=-1,
        max_size_fraction=max_size_fraction,
        device=device,
    )
    masks = utils.fill_holes_and_remove_small_masks(masks, min_size=min_size)
    return flow_dynamics.sequential_ids(masks)
