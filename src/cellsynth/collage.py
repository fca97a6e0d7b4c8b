"""Collage painting: an image for an instance mask made of real objects' pixels, without training.

A non-learned painter beside pix2pix (:mod:`cellsynth.translation`), and the control that tells whether
pix2pix's images are what costs segmentation accuracy. Every object of the mask gets the pixels of a real
object whose bounding box has a similar height and width (in either orientation), warped so that the real
object's outline lands on the mask object's outline (:func:`shape_warp`), and blended there; the
background is a real training crop's, with that crop's own objects emptied (filled with its background
level and noise). Image and mask therefore agree at every outline, whatever the two objects' shapes, and
texture, noise and staining are those of real images. A crop's objects come from the image its
background came from, so that they look imaged together; objects of another image (where one has too few)
are scaled per channel to the canvas's object and background levels. Copy-paste augmentation (Ghiasi et
al., CVPR 2021) pastes whole objects; here the mask's shapes come first and the pixels follow them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from cellsynth.translation.normalization import DTYPES, ChannelNormalizer

_GAIN_RANGE = (0.25, 4.0)  # source-to-canvas contrast factors beyond this come from near-empty statistics
_MIN_BACKGROUND = 0.05  # share of a crop's pixels that must be background for it to serve as a canvas
_HALO = 8  # pixels around an object that its out-of-focus glow reaches: emptied on canvases
_HALO_DECAY = 2.0  # pixels over which a pasted object's own surroundings fade into the canvas
_RAYS = 32  # directions in which an object's outline is measured for the warp (StarDist's default)


@dataclass(frozen=True)
class ObjectBank:
    """Real objects and backgrounds to paint from (:func:`build_object_bank`).

    Attributes
    ----------
    canvases
        ``(M, S, S, C)`` training crops whose objects are filled in with background, in the images' dtype.
    canvas_levels
        ``(M, 2, C)`` float32 per-channel background and object medians of each canvas's original crop
        (object median NaN where the crop had no object).
    patches
        Per object clear of its crop's edges, ``(h + 2 margin, w + 2 margin, C)`` pixels around its bounding
        box, in the images' dtype.
    patch_masks
        Per object, the ``(h + 2 margin, w + 2 margin)`` bool mask of that object alone within its patch.
    sizes
        ``(K, 2)`` int bounding-box height and width of each object.
    patch_levels
        ``(K, 2, C)`` float32 background and object medians of the crop each object comes from.
    normalizer
        The training images' per-channel range and dtype; painted images are clipped to it.
    margin
        Pixels of context kept around each object.
    canvas_sources, patch_sources
        ``(M,)`` and ``(K,)`` int: the image each canvas and each object was cut from (its crop when unknown).
    """

    canvases: np.ndarray
    canvas_levels: np.ndarray
    patches: list[np.ndarray]
    patch_masks: list[np.ndarray]
    sizes: np.ndarray
    patch_levels: np.ndarray
    normalizer: ChannelNormalizer
    margin: int
    canvas_sources: np.ndarray
    patch_sources: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """Arrays and plain values, as a model dataset stores them (:meth:`from_dict` reads them)."""
        return {"canvases": self.canvases, "canvas_levels": self.canvas_levels, "patches": list(self.patches),
                "patch_masks": list(self.patch_masks), "sizes": self.sizes, "patch_levels": self.patch_levels,
                "normalizer": self.normalizer.to_dict(),
                "margin": self.margin, "canvas_sources": self.canvas_sources, "patch_sources": self.patch_sources}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectBank:
        if "patch_masks" not in data:
            raise ValueError("this collage painter was stored before painters kept their objects' outlines: "
                             "build it again (kedro run --pipeline=image_translation)")
        return cls(np.asarray(data["canvases"]), np.asarray(data["canvas_levels"], np.float32),
                   [np.asarray(p) for p in data["patches"]], [np.asarray(m, bool) for m in data["patch_masks"]],
                   np.asarray(data["sizes"], np.int64),
                   np.asarray(data["patch_levels"], np.float32), ChannelNormalizer.from_dict(data["normalizer"]),
                   int(data["margin"]), np.asarray(data["canvas_sources"], np.int64),
                   np.asarray(data["patch_sources"], np.int64))


def _levels(image: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """``(2, C)`` per-channel medians of the background and of the object pixels (NaN without objects)."""
    background = np.median(image[~objects], axis=0) if (~objects).any() else np.median(image, axis=(0, 1))
    inside = np.median(image[objects], axis=0) if objects.any() else np.full(image.shape[-1], np.nan)
    return np.stack([background, inside]).astype(np.float32)


def _empty_canvas(image: np.ndarray, objects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` with its (dilated) objects replaced by the background's median plus noise as strong as the
    background's own fine-scale noise, blended in softly: a smooth fill from the nearest background would
    keep the objects' out-of-focus halo as ghost objects."""
    covered = ndimage.binary_dilation(objects, iterations=_HALO)
    if not covered.any():
        return image.copy()
    background = ~covered
    level = np.median(image[background], axis=0) if background.any() else np.median(image, axis=(0, 1))
    noise = (image - ndimage.gaussian_filter(image, sigma=(1, 1, 0)))[background].std(axis=0) \
        if background.any() else np.zeros(image.shape[-1], np.float32)
    fill = level + rng.normal(0.0, 1.0, image.shape).astype(np.float32) * noise
    keep = ndimage.gaussian_filter(background.astype(np.float32), sigma=2.0)[..., None]
    return (keep * image + (1 - keep) * fill).astype(np.float32)


def build_object_bank(images: np.ndarray, labels: np.ndarray, *, sources: np.ndarray | None = None, margin: int = 6,
                      seed: int = 0) -> ObjectBank:
    """Collect every object and every usable background of a set of annotated crops.

    Parameters
    ----------
    images
        ``(N, S, S, C)`` uint8 or uint16 training crops.
    labels
        ``(N, S, S)`` integer instance masks (0 = background).
    sources
        ``(N,)`` the image each crop was cut from (e.g. the crops' ``source`` names): a painted crop then takes
        its objects from the image its background came from, at their own values, as a real crop has one
        staining and exposure. Objects of other images (when the canvas's has too few) are scaled to it.
    margin
        Pixels of context kept around each object's bounding box (its own outline's falloff).
    seed
        Seeds the noise that fills the canvases' objects.

    Raises
    ------
    ValueError
        Shapes or dtypes that do not match, no object at all, or no crop with background to paint on.
    """
    if images.ndim != 4 or labels.shape != images.shape[:3]:
        raise ValueError(f"images must be (N, S, S, C) with labels (N, S, S), got {images.shape} and {labels.shape}")
    if images.dtype.name not in DTYPES or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"images must be uint8/uint16 and labels integer, got {images.dtype} and {labels.dtype}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if sources is not None and len(sources) != len(labels):
        raise ValueError(f"sources must name the image of each of the {len(labels)} crops, got {len(sources)}")
    # unknown sources: every crop counts as an image of its own
    image_ids = np.arange(len(labels)) if sources is None else np.unique(sources, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    canvases, canvas_levels, patches, patch_masks, sizes, patch_levels = [], [], [], [], [], []
    canvas_sources, patch_sources = [], []
    for image, mask, image_id in zip(images.astype(np.float32), labels, image_ids):
        objects = mask > 0
        levels = _levels(image, objects)
        if (~objects).mean() >= _MIN_BACKGROUND:
            canvases.append(_empty_canvas(image, objects, rng))
            canvas_levels.append(levels)
            canvas_sources.append(image_id)
        padded = np.pad(image, ((margin, margin), (margin, margin), (0, 0)), mode="reflect")
        padded_mask = np.pad(mask, margin)
        for label, box in enumerate(ndimage.find_objects(mask), start=1):
            if box is None:
                continue
            rows, cols = box
            if rows.start == 0 or cols.start == 0 or rows.stop == mask.shape[0] or cols.stop == mask.shape[1]:
                continue  # cut by the crop's edge: resized onto a whole object it would look truncated
            around = (slice(rows.start, rows.stop + 2 * margin), slice(cols.start, cols.stop + 2 * margin))
            patches.append(padded[around].astype(images.dtype))
            patch_masks.append(padded_mask[around] == label)
            sizes.append((rows.stop - rows.start, cols.stop - cols.start))
            patch_levels.append(levels)
            patch_sources.append(image_id)
    if not patches:
        raise ValueError(f"no object clear of the crop edges in the {len(labels)} training masks: nothing to "
                         f"paint with")
    if not canvases:
        raise ValueError(f"every one of the {len(labels)} training crops is more than {1 - _MIN_BACKGROUND:.0%} "
                         f"objects: no background to paint on")
    # stored in the images' dtype: a bank of thousands of crops is a quarter of its float32 size
    info = np.iinfo(images.dtype)
    canvases = np.rint(np.clip(np.stack(canvases), info.min, info.max)).astype(images.dtype)
    return ObjectBank(canvases, np.stack(canvas_levels), patches, patch_masks, np.asarray(sizes, np.int64),
                      np.stack(patch_levels), ChannelNormalizer.fit(images), margin,
                      np.asarray(canvas_sources, np.int64), np.asarray(patch_sources, np.int64))


def _gain(canvas_levels: np.ndarray, source_levels: np.ndarray) -> np.ndarray:
    """``(C,)`` per-channel contrast factor from a source crop's object-to-background step to the canvas's."""
    source_step = source_levels[1] - source_levels[0]
    canvas_step = canvas_levels[1] - canvas_levels[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = canvas_step / source_step
    usable = np.isfinite(gain) & (np.abs(source_step) > 1e-6)
    return np.where(usable, np.clip(gain, *_GAIN_RANGE), 1.0).astype(np.float32)


def _center_and_rays(shape: np.ndarray, n_rays: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(2,)`` point deepest inside a 2-D bool object, and the ``(n_rays,)`` distances from it to the
    object's outline in the directions ``2 pi k / n_rays`` (counter-clockwise from +x, in (row, col) axes:
    row offset ``sin``, column offset ``cos``). A ray ends where it first leaves the object or the array."""
    depth = ndimage.distance_transform_edt(np.pad(shape, 1))[1:-1, 1:-1]
    center = np.array(np.unravel_index(np.argmax(depth), shape.shape), np.float64)
    angles = 2 * np.pi * np.arange(n_rays) / n_rays
    step = 0.25
    radii = np.arange(step, np.hypot(*shape.shape) + 2 * step, step)
    rows = np.rint(center[0] + radii[None] * np.sin(angles)[:, None]).astype(np.int64)
    cols = np.rint(center[1] + radii[None] * np.cos(angles)[:, None]).astype(np.int64)
    within = (rows >= 0) & (rows < shape.shape[0]) & (cols >= 0) & (cols < shape.shape[1])
    inside = within & shape[np.clip(rows, 0, shape.shape[0] - 1), np.clip(cols, 0, shape.shape[1] - 1)]
    first_out = np.argmin(inside, axis=1)  # every ray leaves the array before its last step
    return center, np.maximum(radii[first_out] - step / 2, 0.5)


def shape_warp(source: np.ndarray, target: np.ndarray, *, n_rays: int = _RAYS) -> np.ndarray:
    """Where to sample an object's pixels so that its outline lands on another object's outline.

    Both objects are seen from their deepest inside point, as star-convex shapes (StarDist's model of a
    nucleus): along every direction, the target's outline radius maps to the source's, points inside are
    scaled by the ratio of the two radii, and points outside keep their distance beyond the outline (the
    object's own out-of-focus falloff keeps its width).

    Parameters
    ----------
    source
        ``(hs, ws)`` bool mask of the object whose pixels are moved.
    target
        ``(ht, wt)`` bool mask of the object they are moved onto.
    n_rays
        Directions in which the outlines are measured and matched.

    Returns
    -------
    ``(2, ht, wt)`` float64 row and column coordinates into the source's array for each target pixel, as
    :func:`scipy.ndimage.map_coordinates` takes them.
    """
    if source.ndim != 2 or target.ndim != 2 or not source.any() or not target.any():
        raise ValueError(f"source and target must be 2-D masks holding an object, got {source.shape} and "
                         f"{target.shape}")
    source_center, source_radii = _center_and_rays(source.astype(bool), n_rays)
    target_center, target_radii = _center_and_rays(target.astype(bool), n_rays)
    offsets = np.indices(target.shape, dtype=np.float64) - target_center[:, None, None]
    distance = np.hypot(offsets[0], offsets[1])
    angle = np.arctan2(offsets[0], offsets[1])
    # each pixel's outline radius in both objects, linearly between the two nearest rays
    position = np.mod(angle, 2 * np.pi) / (2 * np.pi) * n_rays
    lower = np.floor(position).astype(np.int64) % n_rays
    upper, fraction = (lower + 1) % n_rays, position - np.floor(position)

    def radius(radii: np.ndarray) -> np.ndarray:
        return (1 - fraction) * radii[lower] + fraction * radii[upper]

    source_radius, target_radius = radius(source_radii), radius(target_radii)
    moved = np.where(distance <= target_radius, distance * source_radius / target_radius,
                     source_radius + distance - target_radius)
    return np.stack([source_center[0] + moved * np.sin(angle), source_center[1] + moved * np.cos(angle)])


def paint_collage(bank: ObjectBank, labels: np.ndarray, *, seed: int = 0, candidates: int = 8) -> np.ndarray:
    """Images for instance masks from the bank's real objects and backgrounds.

    Parameters
    ----------
    bank
        From :func:`build_object_bank`; its canvases must be the masks' size.
    labels
        ``(N, S, S)`` integer instance masks.
    seed
        Seeds the choice of canvases, source objects and flips: the same seed paints the same images.
    candidates
        Each object's source is drawn from this many bank objects with the closest bounding boxes, among the
        objects of the canvas's own image when it has that many.

    Returns
    -------
    ``(N, S, S, C)`` images in the training images' dtype.
    """
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be (N, S, S) integer masks, got {labels.dtype} {labels.shape}")
    if labels.shape[1:] != bank.canvases.shape[1:3]:
        raise ValueError(f"masks of {labels.shape[1:]} pixels, but the bank's crops are {bank.canvases.shape[1:3]}")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    rng = np.random.default_rng(seed)
    m = bank.margin
    painted = np.empty((*labels.shape, bank.canvases.shape[-1]), np.float32)
    for n, mask in enumerate(labels):
        which = rng.integers(len(bank.canvases))
        canvas, levels = bank.canvases[which].astype(np.float32), bank.canvas_levels[which]
        pool = np.flatnonzero(bank.patch_sources == bank.canvas_sources[which])
        pool = pool if len(pool) >= candidates else np.arange(len(bank.patches))
        log_sizes = np.log(bank.sizes[pool])
        if np.isnan(levels[1]).any():  # a canvas without objects: keep the sources' own values
            levels = None
        for label, box in enumerate(ndimage.find_objects(mask), start=1):
            if box is None:
                continue
            rows, cols = box
            height, width = rows.stop - rows.start, cols.stop - cols.start
            # the closest boxes, as they are or turned a quarter (an index past the pool's: turned)
            upright = np.abs(log_sizes - np.log([height, width])).sum(1)
            turned = np.abs(log_sizes[:, ::-1] - np.log([height, width])).sum(1)
            distances = np.concatenate([upright, turned])
            best = np.argpartition(distances, min(candidates, len(distances)) - 1)[:candidates]
            pick = int(rng.choice(best))
            k = pool[pick % len(pool)]
            patch = bank.patches[k].astype(np.float32)
            patch = patch if pick < len(pool) else patch.transpose(1, 0, 2)
            shape = bank.patch_masks[k] if pick < len(pool) else bank.patch_masks[k].T
            flip = (slice(None, None, rng.choice([-1, 1])), slice(None, None, rng.choice([-1, 1])))
            patch, shape = patch[flip], shape[flip]
            # the object's box with its margin, clipped to the crop
            r0, c0 = max(rows.start - m, 0), max(cols.start - m, 0)
            r1, c1 = min(rows.stop + m, mask.shape[0]), min(cols.stop + m, mask.shape[1])
            inside = mask[r0:r1, c0:c1] == label
            where = shape_warp(shape, inside)
            pixels = np.stack([ndimage.map_coordinates(patch[..., c], where, order=1, mode="nearest")
                               for c in range(patch.shape[-1])], axis=-1)
            if levels is not None and bank.patch_sources[k] != bank.canvas_sources[which]:
                # from another image: its contrast scaled to the canvas's (one image needs no scaling)
                source_levels = bank.patch_levels[k]
                pixels = levels[0] + (pixels - source_levels[0]) * _gain(levels, source_levels)
            # the object's pixels, and its own glow fading out over a few pixels around it
            halo = np.exp(-ndimage.distance_transform_edt(~inside) / _HALO_DECAY)
            alpha = np.maximum(ndimage.gaussian_filter(inside.astype(np.float32), sigma=0.7), halo)[..., None]
            region = canvas[r0:r1, c0:c1]
            canvas[r0:r1, c0:c1] = alpha * pixels + (1 - alpha) * region
        painted[n] = canvas
    low, high = bank.normalizer.low, bank.normalizer.high
    return np.rint(np.clip(painted, low, high)).astype(bank.normalizer.dtype)
