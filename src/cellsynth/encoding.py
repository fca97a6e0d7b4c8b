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
    ``backend="batched"`` is this module's PyTorch implementation that decodes a
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

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from tqdm.auto import tqdm

from cellsynth.training.runtime import resolve_device

METHODS: tuple[str, ...] = ("cellpose_flow", "binary", "label")
BACKENDS: tuple[str, ...] = ("batched", "cellpose")

_CHANNELS = {"cellpose_flow": 3, "binary": 1, "label": 1}

# Cellpose's network predicts flows scaled by this factor (its training targets
# are 5x the unit flows); compute_masks divides it out again.
_CELLPOSE_FLOW_SCALE = 5.0
# Probabilities 0 and 1 have infinite logits; clamp them for the logit map.
_PROBABILITY_EPS = 1e-6
# Cellpose's get_masks constants: a histogram bin seeds an object when it holds
# more than _SEED_MIN_COUNT end points and is the maximum of its 5x5
# neighbourhood; objects then grow _GROWTH_STEPS steps (3x3 neighbourhood)
# over bins holding more than _GROWTH_MIN_COUNT end points.
_SEED_MIN_COUNT = 10
_SEED_POOL_SIZE = 5
_GROWTH_STEPS = 5
_GROWTH_MIN_COUNT = 2
# The flow-error diffusion packs per-object tiles into shelves about this
# wide, and on CPU diffuses groups of whole shelves of about this many pixels
# at a time, so that its float64 working set stays in cache.
_SHELF_WIDTH = 256
_CPU_BAND_PIXELS = 1 << 17

_FLOW_DECODE_DEFAULTS: dict[str, Any] = {
    "niter": 200,
    "cellprob_threshold": 0.0,
    "flow_threshold": 0.4,
    "min_size": 15,
    "max_size_fraction": 0.4,
    "device": None,
    "backend": "batched",
    "batch_size": 64,
}


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


def decode(encoded: np.ndarray, method: str = "cellpose_flow", **opts: Any) -> np.ndarray:
    """Decode one encoded image into instance labels.

    Parameters
    ----------
    encoded
        ``(H, W, C)`` real array laid out as :func:`encode` returns it (uint8 or
        float; for ``"cellpose_flow"`` and ``"binary"`` on the 0..255 scale).
    method
        One of :data:`METHODS`.
    **opts
        Only for ``"cellpose_flow"`` (see :func:`decode_batch`).

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32 labels, 0 = background, objects numbered 1..N.
    """
    _check_method(method)
    image = _as_encoded(encoded, method, ndim=3)
    return decode_batch(image[None], method, **opts)[0]


def decode_batch(
    encoded: np.ndarray, method: str = "cellpose_flow", progress: bool = False, **opts: Any
) -> np.ndarray:
    """Decode a batch of encoded images into instance labels.

    Parameters
    ----------
    encoded
        ``(B, H, W, C)`` real array, each item laid out as :func:`encode`
        returns it.
    method
        One of :data:`METHODS`.
    progress
        Show a progress bar.
    **opts
        Options of ``"cellpose_flow"`` (the other methods take none):

        niter : int, default 200
            Euler steps along the flow field.
        cellprob_threshold : float, default 0.0
            Threshold on the logit of the probability channel (``p = v / 255``):
            pixels with ``log(p / (1 - p)) > cellprob_threshold`` are followed.
            0 means ``v > 127.5``.
        flow_threshold : float or None, default 0.4
            Cellpose's quality control: objects whose mean squared difference
            between the given flows and the flows recomputed from the object
            exceeds this are dropped. ``None`` or <= 0 disables it.
        min_size : int, default 15
            Objects smaller than this many pixels (after quality control) are
            dropped; <= 0 keeps all. Holes in objects are always filled.
        max_size_fraction : float, default 0.4
            Objects covering more than this fraction of the image are dropped.
        device : str, torch.device or None, default None
            Where to compute; None means ``"cuda"`` when available, else CPU.
        backend : {"batched", "cellpose"}, default "batched"
            ``"batched"`` is this module's batched PyTorch decoder,
            ``"cellpose"`` calls ``cellpose.dynamics.compute_masks`` per crop.
        batch_size : int, default 64
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
        Non-numeric ``encoded`` or options that ``method`` does not take.
    """
    _check_method(method)
    batch = _as_encoded(encoded, method, ndim=4)
    if method != "cellpose_flow":
        if opts:
            raise TypeError(f"decode method {method!r} takes no options, got {sorted(opts)}")
        decode_one = _decode_binary if method == "binary" else _decode_label
        out = np.empty(batch.shape[:3], np.int32)
        for index, image in enumerate(batch):
            out[index] = decode_one(image)
        return out
    settings = _flow_decode_settings(opts)
    backend = settings.pop("backend")
    batch_size = settings.pop("batch_size")
    if backend == "cellpose":
        return np.stack([_decode_flow_cellpose(image, **settings)
                         for image in tqdm(batch, desc="decode (cellpose)", unit="crop", disable=not progress)])
    return np.concatenate(
        [
            _decode_flow_batched(batch[start : start + batch_size], **settings)
            for start in tqdm(range(0, len(batch), batch_size), desc="decode (batched)", unit="batch",
                              disable=not progress)
        ]
    )


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


def _flow_decode_settings(opts: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(opts) - set(_FLOW_DECODE_DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for method 'cellpose_flow'; valid: {sorted(_FLOW_DECODE_DEFAULTS)}"
        )
    settings = {**_FLOW_DECODE_DEFAULTS, **opts}
    if settings["backend"] not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {settings['backend']!r}")
    for name, minimum in (("niter", 0), ("batch_size", 1)):
        value = settings[name]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    for name in ("cellprob_threshold", "flow_threshold", "min_size", "max_size_fraction"):
        value = settings[name]
        if name == "flow_threshold" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0 < settings["max_size_fraction"] <= 1:
        raise ValueError(f"max_size_fraction must be in (0, 1], got {settings['max_size_fraction']!r}")
    settings["device"] = resolve_device(settings["device"])
    return settings


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
# Flow decoding: shared pieces
# ----------------------------------------------------------------------------


def _unit_flows_and_foreground(
    encoded: np.ndarray, cellprob_threshold: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 2, H, W)`` float32 unit flows ``[dx, dy]`` and ``(B, H, W)`` bool foreground."""
    values = torch.as_tensor(encoded, device=device).to(torch.float32)
    cellprob_logit = torch.logit(values[..., 0] / 255.0, eps=_PROBABILITY_EPS)
    foreground = cellprob_logit > cellprob_threshold
    unit_flows = (values[..., 1:] / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
    return unit_flows, foreground


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

    unit_flows, foreground = _unit_flows_and_foreground(encoded[None], cellprob_threshold, torch.device("cpu"))
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
    return _relabel_sequential(masks)


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Map the ids present to 1..N (in increasing order), 0 stays 0; int32."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    new_ids = np.cumsum(present).astype(np.int32)
    new_ids[0] = 0
    return new_ids[labels]


# ----------------------------------------------------------------------------
# Flow decoding: the batched PyTorch decoder
# ----------------------------------------------------------------------------


@torch.no_grad()
def _decode_flow_batched(
    encoded: np.ndarray,
    *,
    niter: int,
    cellprob_threshold: float,
    flow_threshold: float | None,
    min_size: int,
    max_size_fraction: float,
    device: torch.device,
) -> np.ndarray:
    """Batched equivalent of Cellpose's compute_masks + fill_holes_and_remove_small_masks.

    Every foreground pixel follows the flows (:func:`_follow_flows`), end
    points are grouped into objects (:func:`_cluster_end_points`), then objects
    larger than ``max_size_fraction`` of the crop, failing the flow-error check
    (:func:`_flow_errors`) or smaller than ``min_size`` are dropped, holes are
    filled (:func:`_fill_holes`) and objects numbered 1..N per crop. All but
    the hole filling run on ``device`` over the whole batch. Cellpose drops
    small objects a second time after filling holes; filling only grows or
    absorbs objects, so that pass would change nothing and is left out.

    Parameters
    ----------
    encoded
        ``(B, H, W, 3)`` cellpose_flow images.

    Returns
    -------
    np.ndarray
        ``(B, H, W)`` int32 labels, sequential per item.
    """
    batch, height, width, _ = encoded.shape
    unit_flows, foreground = _unit_flows_and_foreground(encoded, cellprob_threshold, device)
    labels = torch.zeros(batch * height * width, dtype=torch.int64, device=device)
    pixel_index = torch.nonzero(foreground.view(-1)).squeeze(1)
    if len(pixel_index):
        end_points = _follow_flows(unit_flows * foreground.unsqueeze(1), pixel_index, niter)
        labels[pixel_index] = _cluster_end_points(end_points, (batch, height, width))
        labels = _remove_by_size(labels, max_size=max_size_fraction * height * width)
    labels = labels.view(batch, height, width)
    if flow_threshold is not None and flow_threshold > 0 and bool(labels.any()):
        errors = _flow_errors(labels, unit_flows)
        labels = torch.where((errors > flow_threshold)[labels], 0, labels)
    if min_size > 0:
        labels = _remove_by_size(labels.view(-1), min_size=min_size).view(batch, height, width)
    # Object ids are unique across the batch, so each crop can be finished
    # alone; int32 halves the copy to the host.
    return np.stack([_relabel_sequential(_fill_holes(crop)) for crop in labels.to(torch.int32).cpu().numpy()])


def _follow_flows(flows: torch.Tensor, pixel_index: torch.Tensor, niter: int) -> torch.Tensor:
    """Euler-integrate foreground pixels along the flow field.

    Each step samples the flow bilinearly at every point's position, moves the
    point by it and clamps it to the image, as Cellpose's steps_interp does.

    Parameters
    ----------
    flows
        ``(B, 2, H, W)`` float32 flows ``[dx, dy]`` in pixels per step, zero
        outside the foreground.
    pixel_index
        ``(N,)`` int64 flat indices into ``(B, H, W)`` of the pixels to move,
        increasing.
    niter
        Number of steps.

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64 flat indices into ``(B, H, W)`` of the pixel each point
        ends in (positions floored, as Cellpose truncates them).
    """
    batch, _, height, width = flows.shape
    device = flows.device
    crop = pixel_index // (height * width)
    # Points live in grid_sample's coordinates ([-1, 1] from the centre of the
    # first to the centre of the last pixel, align_corners=True), so a step is
    # one sample, one add and one clamp; flows are rescaled to match. Pixel
    # = (grid + 1) * half_extent maps the clamped ends -1 and 1 exactly.
    half_extent = torch.tensor([max(width - 1, 1) / 2, max(height - 1, 1) / 2], dtype=torch.float32, device=device)
    grid_flows = flows / half_extent.view(1, 2, 1, 1)
    start = torch.stack([pixel_index % width, (pixel_index // width) % height], dim=1) / half_extent - 1.0
    # grid_sample parallelises over crops, and on CPU a few crops at a time keep
    # their flow fields in cache; a GPU takes the whole batch at once.
    crops_per_pass = batch if device.type != "cpu" else 2 * torch.get_num_threads()
    counts = torch.bincount(crop, minlength=batch)
    offsets = torch.cumsum(counts, 0) - counts
    ends = torch.empty_like(start)
    for first in range(0, batch, crops_per_pass):
        last = min(first + crops_per_pass, batch)
        lo, hi = int(offsets[first]), int(offsets[last - 1] + counts[last - 1])
        if hi == lo:
            continue
        # Crops hold different numbers of points: pad each to the longest.
        local_crop = crop[lo:hi] - first
        slot = torch.arange(lo, hi, device=device) - offsets[crop[lo:hi]]
        # Stored channel-first like grid_sample's output, so that the update
        # is a contiguous add; grid_sample reads the permuted view as its grid.
        positions = torch.zeros(last - first, 2, 1, int(counts[first:last].max()), device=device)
        positions[local_crop, :, 0, slot] = start[lo:hi]
        grid = positions.permute(0, 2, 3, 1)
        field = grid_flows[first:last]
        for _ in range(niter):
            positions += F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)
            positions.clamp_(-1.0, 1.0)
        ends[lo:hi] = positions[local_crop, :, 0, slot]
    column, row = ((ends + 1.0) * half_extent).floor().long().unbind(1)
    column = column.clamp_(0, width - 1)
    row = row.clamp_(0, height - 1)
    return (crop * height + row) * width + column


def _cluster_end_points(end_index: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Group end points into objects, as Cellpose's get_masks does.

    A histogram of end points is made per crop. Seeds are bins that hold more
    than 10 points and are the maximum of their 5x5 neighbourhood. Each seed
    claims the bins reachable in 5 steps (8-neighbourhood) through bins holding
    more than 2 points; where claims overlap the seed with more points wins.
    Every point takes the object of the bin it ends in (0 if unclaimed).

    Parameters
    ----------
    end_index
        ``(N,)`` int64 flat indices into ``shape`` = ``(B, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64 object ids, unique across the batch, 0 = none.
    """
    counts = torch.bincount(end_index, minlength=shape[0] * shape[1] * shape[2]).to(torch.float32).view(shape)
    is_seed = (counts >= _max_filter(counts, _SEED_POOL_SIZE)) & (counts > _SEED_MIN_COUNT)
    seed_index = torch.nonzero(is_seed.view(-1)).squeeze(1)
    # Rank seeds by point count: a claim by a higher rank wins an overlap, and
    # max-filtering the ranks resolves all claims in the same passes.
    order = torch.argsort(counts.view(-1)[seed_index], stable=True)
    rank = torch.zeros_like(counts)
    rank.view(-1)[seed_index[order]] = torch.arange(1, len(order) + 1, dtype=rank.dtype, device=rank.device)
    can_grow = counts > _GROWTH_MIN_COUNT
    for _ in range(_GROWTH_STEPS):
        rank = _max_filter(rank, 3).mul_(can_grow)
    return rank.view(-1)[end_index].long()


def _max_filter(images: torch.Tensor, size: int) -> torch.Tensor:
    """Maximum over a ``size x size`` window (odd size) of ``(B, H, W)`` images.

    Pixels outside the image are ignored. Computed separably from shifted
    slices: max_pool2d is many times slower on CPU.
    """
    result = images.clone()
    for axis in (1, 2):
        source = result.clone()
        length = images.shape[axis]
        for shift in range(1, min(size // 2, length - 1) + 1):
            kept = length - shift
            # Each pixel meets the pixels `shift` before and after it.
            for start, neighbour_start in ((0, shift), (shift, 0)):
                window = result.narrow(axis, start, kept)
                torch.maximum(window, source.narrow(axis, neighbour_start, kept), out=window)
    return result


def _remove_by_size(labels: torch.Tensor, *, min_size: int = 0, max_size: float = float("inf")) -> torch.Tensor:
    """Zero the objects with fewer than ``min_size`` or more than ``max_size`` pixels."""
    sizes = torch.bincount(labels)
    drop = (sizes < min_size) | (sizes > max_size)
    drop[0] = False
    return torch.where(drop[labels], 0, labels)


def _flow_errors(labels: torch.Tensor, unit_flows: torch.Tensor) -> torch.Tensor:
    """Cellpose's flow error of every object, batched.

    The flows of each object are recomputed as Cellpose's masks_to_flows_cpu
    does: heat diffuses from the object's centre (the object pixel nearest its
    mean position) for ``2 * (h + w + 4)`` steps, ``h x w`` being the bounding
    box, each step averaging the 3x3 neighbourhood with other pixels held at 0;
    the flow is the normalised central difference of the heat. The error is
    the mean over the object's pixels of the squared difference to
    ``unit_flows``, summed over both components. All objects of the batch
    diffuse side by side in one packed canvas (:class:`_TileCanvas`).

    Sums are taken in another order than Cellpose's, so the heat differs in
    the last bits. That matters only where the gradient is rounding noise, at
    the centre of an exactly symmetric object: there both flows point in an
    arbitrary direction, which can move the error by up to ``4 / size``.

    Parameters
    ----------
    labels
        ``(B, H, W)`` int64 object ids, unique across the batch.
    unit_flows
        ``(B, 2, H, W)`` float32 ``[dx, dy]``.

    Returns
    -------
    torch.Tensor
        ``(max id + 1,)`` float64 errors; 0 for ids not present.
    """
    _, height, width = labels.shape
    device = labels.device
    flat = labels.view(-1)
    pixel = torch.nonzero(flat).squeeze(1)
    obj = flat[pixel]
    n_ids = int(obj.max()) + 1
    row = (pixel // width) % height
    col = pixel % width

    def per_object(values: torch.Tensor, reduce: str) -> torch.Tensor:
        initial = torch.zeros(n_ids, dtype=values.dtype, device=device)
        return initial.scatter_reduce(0, obj, values, reduce, include_self=False)

    size = torch.bincount(obj, minlength=n_ids)
    top, left = per_object(row, "amin"), per_object(col, "amin")
    # Coordinates in the object's tile: its bounding box plus a 1-pixel zero
    # ring, the frame in which Cellpose computes the centre (so that distance
    # ties are broken identically).
    tile_row = row - top[obj] + 1
    tile_col = col - left[obj] + 1
    tile_height = per_object(row, "amax") - top + 3
    tile_width = per_object(col, "amax") - left + 3
    mean_row = per_object(tile_row.double(), "sum") / size.clamp(min=1)
    mean_col = per_object(tile_col.double(), "sum") / size.clamp(min=1)
    distance = (tile_col - mean_col[obj]) ** 2 + (tile_row - mean_row[obj]) ** 2
    nearest = distance == per_object(distance, "amin")[obj]
    # Among equally near pixels Cellpose takes the first in row-major order.
    center = torch.full((n_ids,), len(flat), dtype=torch.int64, device=device)
    center = center.scatter_reduce(0, obj[nearest], pixel[nearest], "amin")
    center_row = (center // width) % height - top + 1
    center_col = center % width - left + 1
    niter = 2 * (tile_height + tile_width)

    # Tiles run in order of decreasing step count, so those still running are
    # a prefix of the canvas; pixels are sorted the same way so that the tiles
    # finishing at one step own a contiguous run of pixels.
    ids = torch.nonzero(size).squeeze(1)
    ids = ids[torch.argsort(niter[ids], descending=True, stable=True)]
    packing_rank = torch.empty(n_ids, dtype=torch.int64, device=device)
    packing_rank[ids] = torch.arange(len(ids), device=device)
    pixel_order = torch.argsort(packing_rank[obj], stable=True)
    canvas = _TileCanvas(tile_height[ids], tile_width[ids])
    origin = torch.zeros(n_ids, dtype=torch.int64, device=device)
    origin[ids] = canvas.origin
    inside_index = origin[obj] + tile_row * canvas.width + tile_col
    center_index = origin[ids] + center_row[ids] * canvas.width + center_col[ids]
    gradient = canvas.diffuse(inside_index[pixel_order], center_index, niter[ids], size[ids])
    flow_row, flow_col = torch.empty_like(gradient).index_copy_(1, pixel_order, gradient)
    norm = 1e-60 + torch.sqrt(flow_row**2 + flow_col**2)
    given = unit_flows.permute(0, 2, 3, 1).reshape(-1, 2)[pixel].double()
    squared = (flow_col / norm - given[:, 0]) ** 2 + (flow_row / norm - given[:, 1]) ** 2
    return torch.zeros(n_ids, dtype=torch.float64, device=device).index_add_(0, obj, squared) / size.clamp(min=1)


class _TileCanvas:
    """Per-object tiles packed into rows ("shelves") of one float64 image.

    Each tile is an object's bounding box plus a ring of zeros; neighbouring
    tiles share their rings, which stay 0, so the objects diffuse
    independently in one pass over the canvas.

    Parameters
    ----------
    tile_height, tile_width
        ``(n,)`` int64 tile sizes including the ring, in packing order.
    """

    def __init__(self, tile_height: torch.Tensor, tile_width: torch.Tensor) -> None:
        device = tile_height.device
        # Tiles are laid in one long strip, each starting on its left
        # neighbour's right ring column, and the strip is cut into shelves
        # every _SHELF_WIDTH columns; a tile across a cut stays whole and
        # overhangs its shelf (the canvas is wide enough).
        strip_start = torch.cumsum(tile_width - 1, 0) - (tile_width - 1)
        shelf = strip_start // _SHELF_WIDTH
        n_shelves = int(shelf[-1]) + 1
        # Shelves share their ring rows; a shelf left empty behind a wide
        # tile gets height 1, which takes no rows.
        shelf_height = torch.ones(n_shelves, dtype=torch.int64, device=device).scatter_reduce(
            0, shelf, tile_height, "amax"
        )
        shelf_top = torch.cumsum(shelf_height - 1, 0) - (shelf_height - 1)
        self.width = _SHELF_WIDTH + int(tile_width.max())
        self.height = int(shelf_top[-1] + shelf_height[-1])
        self.origin = shelf_top[shelf] * self.width + strip_start - shelf * _SHELF_WIDTH
        self.shelf_of_tile = shelf.tolist()
        self.shelf_top = shelf_top.tolist()
        self.shelf_bottom = (shelf_top + shelf_height).tolist()

    def diffuse(
        self, inside_index: torch.Tensor, center_index: torch.Tensor, niter: torch.Tensor, size: torch.Tensor
    ) -> torch.Tensor:
        """Run Cellpose's heat diffusion in every tile and return its gradient.

        Each step adds 1 at a tile's source and then replaces every object
        pixel by the mean of its 3x3 neighbourhood, pixels outside the object
        counting as 0 (float64 as in Cellpose: far from the source the heat is
        too small for float32).

        Parameters
        ----------
        inside_index
            ``(N,)`` canvas flat indices of the object pixels, grouped by tile
            in packing order.
        center_index
            ``(n,)`` canvas flat index of each tile's source pixel.
        niter
            ``(n,)`` steps per tile, non-increasing.
        size
            ``(n,)`` object pixels per tile.

        Returns
        -------
        torch.Tensor
            ``(2, N)`` float64 heat differences ``[down - up, right - left]``
            at the object pixels, each taken after its tile's last step.
        """
        device = inside_index.device
        width = self.width
        weight = torch.zeros(self.height * width, dtype=torch.float64, device=device)
        weight[inside_index] = 1.0 / 9.0
        # Averaging is linear, so the source's share of each step is fixed:
        # its 3x3 neighbourhood, weighted like any other pixel.
        source = torch.zeros_like(weight)
        for offset in (-width - 1, -width, -width + 1, -1, 0, 1, width - 1, width, width + 1):
            source[center_index + offset] = 1.0
        source = (source * weight).view(self.height, width)
        weight = weight.view(self.height, width)
        heat = torch.zeros(self.height, width, dtype=torch.float64, device=device)
        gradient = torch.empty(2, len(inside_index), dtype=torch.float64, device=device)
        pixel_start = [0, *torch.cumsum(size, 0).tolist()]
        niter_list = niter.tolist()
        # On CPU, bands of whole shelves stay in cache for all their steps.
        band_rows = _CPU_BAND_PIXELS // width if device.type == "cpu" else self.height
        for first, last in self._bands(band_rows):
            top = self.shelf_top[self.shelf_of_tile[first]]
            bottom = self.shelf_bottom[self.shelf_of_tile[last - 1]]
            pixels = slice(pixel_start[first], pixel_start[last])
            _diffuse_band(
                heat[top:bottom],
                source[top:bottom],
                weight[top:bottom],
                niter_list[first:last],
                [self.shelf_bottom[shelf] - top for shelf in self.shelf_of_tile[first:last]],
                [end - pixel_start[first] for end in pixel_start[first + 1 : last + 1]],
                inside_index[pixels] - top * width,
                gradient[:, pixels],
            )
        return gradient

    def _bands(self, max_rows: int) -> list[tuple[int, int]]:
        """Tile ranges ``[first, last)`` of consecutive whole shelves spanning at most
        ``max_rows`` rows each (or one shelf, if taller)."""
        bands = []
        first = 0
        for tile in range(1, len(self.shelf_of_tile)):
            shelf = self.shelf_of_tile[tile]
            new_shelf = shelf != self.shelf_of_tile[tile - 1]
            if new_shelf and self.shelf_bottom[shelf] - self.shelf_top[self.shelf_of_tile[first]] > max_rows:
                bands.append((first, tile))
                first = tile
        bands.append((first, len(self.shelf_of_tile)))
        return bands


def _diffuse_band(
    heat: torch.Tensor,
    source: torch.Tensor,
    weight: torch.Tensor,
    niter: list[int],
    tile_bottom: list[int],
    pixel_end: list[int],
    inside_index: torch.Tensor,
    gradient: torch.Tensor,
) -> None:
    """Diffuse the tiles of one band of a :class:`_TileCanvas`.

    Parameters
    ----------
    heat, source, weight
        ``(rows, width)`` float64 views of the band: heat (zeros, updated in
        place), the source's share of a step and 1/9 on object pixels.
    niter
        Steps per tile, non-increasing, so the tiles still running are a prefix.
    tile_bottom
        Per tile, the band row below its shelf.
    pixel_end
        Per tile, the end of its run in ``inside_index``.
    inside_index
        Flat indices into ``heat`` of the object pixels, grouped by tile.
    gradient
        ``(2, len(inside_index))`` output: ``[down - up, right - left]`` heat
        differences after each tile's last step.
    """
    width = heat.shape[1]
    # Sums of 3 rows, then of 3 columns of those: buffers reused every step.
    row_sums = torch.empty(heat.shape[0] - 2, width, dtype=heat.dtype, device=heat.device)
    box_sums = torch.empty(heat.shape[0] - 2, width - 2, dtype=heat.dtype, device=heat.device)
    flat_heat = heat.view(-1)
    last = len(niter) - 1
    for step in range(1, niter[0] + 1):
        rows = tile_bottom[last]
        active = heat[:rows]
        sums = torch.add(active[:-2], active[1:-1], out=row_sums[: rows - 2]).add_(active[2:])
        box = torch.add(sums[:, :-2], sums[:, 1:-1], out=box_sums[: rows - 2]).add_(sums[:, 2:])
        torch.addcmul(source[1 : rows - 1, 1:-1], box, weight[1 : rows - 1, 1:-1], out=active[1:-1, 1:-1])
        finished = last
        while finished >= 0 and niter[finished] == step:
            finished -= 1
        if finished < last:
            done = slice(pixel_end[finished] if finished >= 0 else 0, pixel_end[last])
            at = inside_index[done]
            gradient[0, done] = flat_heat[at + width] - flat_heat[at - width]
            gradient[1, done] = flat_heat[at + 1] - flat_heat[at - 1]
            last = finished


def _fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill every object's holes as Cellpose does (fill_voids per object).

    A hole of object ``i`` is a 4-connected region of pixels not in ``i`` that
    ``i`` encloses; it may hold background and whole other objects or pieces of
    them, which ``i`` absorbs. Split the image into 4-connected regions of one
    value. Call *outer* the background regions on the image border, *exposed*
    the object regions on the image border or touching outer background, and
    *sheltered* every other pixel. A connected area of sheltered pixels whose
    exposed neighbours all belong to one object is enclosed by it and absorbed
    whole. One bordered by several objects is enclosed by none of them (a path
    through another leads out), so only the objects with sheltered pieces
    inside it can hold holes, and those are filled one by one. Sheltered
    pixels are few (small pockets between touching objects, holes), so most
    of the work is one labelling pass over the image.

    Parameters
    ----------
    labels
        ``(H, W)`` integer object ids; modified in place and returned.
    """
    # background=-1: background regions are numbered too.
    regions, n_regions = connected_components(labels, background=-1, connectivity=1, return_num=True)
    region_label = np.zeros(n_regions + 1, np.int64)
    region_label[regions] = labels
    on_border = np.zeros(n_regions + 1, bool)
    for side in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
        on_border[regions[side]] = True
    is_outer = on_border & (region_label == 0)
    outer = is_outer[regions]
    is_exposed = on_border.copy()
    is_exposed[regions[_grow_by_one(outer)]] = True
    sheltered = ~is_exposed[regions]
    if not sheltered.any():
        return labels

    areas, n_areas = ndi.label(sheltered)
    # Exposed pixels next to a sheltered area, paired with every such area.
    rim_rows, rim_cols = np.nonzero(_grow_by_one(sheltered) & ~sheltered)
    neighbour_areas = np.stack(
        [
            areas[np.maximum(rim_rows - 1, 0), rim_cols],
            areas[np.minimum(rim_rows + 1, labels.shape[0] - 1), rim_cols],
            areas[rim_rows, np.maximum(rim_cols - 1, 0)],
            areas[rim_rows, np.minimum(rim_cols + 1, labels.shape[1] - 1)],
        ]
    ).astype(np.int64)
    rim_label = np.broadcast_to(labels[rim_rows, rim_cols], neighbour_areas.shape)
    touching = neighbour_areas > 0
    n_labels = int(labels.max()) + 1
    pair_key = np.unique(neighbour_areas[touching] * n_labels + rim_label[touching])
    touching_area, touching_label = np.divmod(pair_key, n_labels)
    single = np.bincount(touching_area, minlength=n_areas + 1)[touching_area] == 1
    enclosing_label = np.zeros(n_areas + 1, np.int64)
    enclosing_label[touching_area[single]] = touching_label[single]
    absorbing = enclosing_label[areas]
    absorbed = absorbing > 0
    labels[absorbed] = absorbing[absorbed]

    inner = np.unique(labels[(areas > 0) & ~absorbed])
    inner = inner[inner > 0]
    if inner.size:
        boxes = ndi.find_objects(labels)
        for obj in inner:
            box = boxes[obj - 1]
            labels[box][ndi.binary_fill_holes(labels[box] == obj)] = obj
    return labels


def _grow_by_one(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus its 4-neighbours."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown
