"""Cross-validation folds and training crops (the paper's EXTRACT-CROPS).

Folds are made at image level so no crop of a test image can reach training.
Crops overlap (stride < size), are kept only when they hold enough objects,
and are multiplied by the four orthogonal rotations.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from skimage.segmentation import relabel_sequential
from skimage.transform import resize
from tqdm.auto import tqdm

from cellsynth.io import AnnotatedImage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """Image names of one cross-validation fold; the three sets are disjoint."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {key: list(names) for key, names in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[str]]) -> Fold:
        return cls(tuple(data["train"]), tuple(data["val"]), tuple(data["test"]))


def make_folds(names: Sequence[str], k: int, seed: int, val_fraction: float | None = None) -> list[Fold]:
    """Split image names into ``k`` cross-validation folds.

    The shuffled names are dealt into ``k`` chunks and fold ``i`` tests on chunk ``i``, so every image is a
    test image in exactly one fold. The validation images are, with ``val_fraction`` None, chunk
    ``i + 1`` (cyclically; the fold trains on the other ``k - 2`` chunks), or else that share of the
    fold's other images (at least one; a seeded choice per fold), the rest training: with 3 folds of
    40 images, 13 training images against about 21 with ``val_fraction`` 0.2.

    Raises
    ------
    ValueError
        When ``k`` is too small (3 with chunk validation, else 2), ``val_fraction`` is outside (0, 1)
        or leaves no training image, names repeat, or there are fewer names than folds.
    """
    smallest = 3 if val_fraction is None else 2
    if k < smallest:
        raise ValueError(f"folds.k must be >= {smallest} (train, validation and test each need images), got {k}")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"folds.val_fraction must be in (0, 1) or null, got {val_fraction}")
    if len(set(names)) != len(names):
        raise ValueError("make_folds: image names must be unique")
    if len(names) < k:
        raise ValueError(f"folds.k = {k} needs at least {k} images, the dataset has {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    chunks = [tuple(sorted(names[j] for j in chunk)) for chunk in np.array_split(order, k)]
    folds = []
    for i in range(k):
        test = chunks[i]
        if val_fraction is None:
            val = chunks[(i + 1) % k]
            rest = [n for j, chunk in enumerate(chunks) if j not in (i, (i + 1) % k) for n in chunk]
        else:
            others = [n for j, chunk in enumerate(chunks) if j != i for n in chunk]
            n_val = max(1, round(val_fraction * len(others)))
            if n_val >= len(others):
                raise ValueError(f"folds.val_fraction {val_fraction} leaves fold {i} no training image "
                                 f"({len(others)} images outside its test set)")
            shuffled = [others[j] for j in np.random.default_rng([seed, i]).permutation(len(others))]
            val, rest = tuple(sorted(shuffled[:n_val])), shuffled[n_val:]
        folds.append(Fold(train=tuple(sorted(rest)), val=val, test=test))
    return folds


def subset_group(fold: int, fraction: float) -> str:
    """Name of the group holding ``fraction`` of fold ``fold``'s training images, e.g. ``fold_0-subset_0.625``."""
    return f"fold_{fold}-subset_{fraction:g}"


def training_subset(names: Sequence[str], fraction: float, seed: int) -> tuple[str, ...]:
    """The first ``ceil(fraction * n)`` of a seeded shuffle of ``names`` (at least one), sorted.

    Subsets of one seed are nested: a smaller fraction takes a prefix of the same shuffle.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"subsets.fractions must lie in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(len(names))
    count = max(1, int(np.ceil(fraction * len(names) - 1e-9)))
    return tuple(sorted(names[j] for j in order[:count]))


def group_names(scope: str, n_folds: int, subset_fractions: Sequence[float] = ()) -> tuple[str, ...]:
    """The names of the groups :func:`training_groups` makes, without the images: folds first, then
    their subsets (``fold_0``, ..., ``fold_0-subset_0.25``, ...), or ``all``."""
    if scope == "folds":
        return (*(f"fold_{i}" for i in range(n_folds)),
                *(subset_group(i, fraction) for i in range(n_folds) for fraction in subset_fractions))
    if scope == "all":
        return ("all",)
    raise ValueError(f"parameter training_scope must be 'folds' or 'all', got {scope!r}")


def training_groups(
    folds: Sequence[Fold], names: Sequence[str], scope: str, subset_fractions: Sequence[float] = (), seed: int = 0
) -> dict[str, tuple[str, ...]]:
    """Image names each generative model trains on.

    ``scope="folds"``: one group per fold (``fold_0``, ...) holding that fold's training images
    only, what the evaluation needs, plus for every fraction in ``subset_fractions`` a group with
    that share of them (:func:`subset_group`, :func:`training_subset`) for the subset experiments;
    ``scope="all"``: one group ``all`` with every image, for a user who just wants a synthetic dataset.
    """
    if scope == "all":
        return {"all": tuple(names)}
    groups = dict(zip(group_names(scope, len(folds)), (fold.train for fold in folds)))  # checks scope
    for i, fold in enumerate(folds):
        for fraction in subset_fractions:
            groups[subset_group(i, fraction)] = training_subset(fold.train, fraction, seed + i)
    return groups


def fold_of_group(group: str) -> int | None:
    """The fold index of a group name (``fold_2`` and ``fold_2-subset_0.5`` -> 2; ``all`` -> None)."""
    match = re.fullmatch(r"fold_(\d+)(?:-subset_[0-9.e-]+)?", group)
    return int(match.group(1)) if match else None


def group_data(data: Mapping[str, Any], group: str, name: str) -> Any:
    """``data[group]`` of a per-group dataset called ``name``, or an error saying which groups it holds."""
    if group not in data:
        raise ValueError(f"{name} lacks the group {group!r} (it holds {sorted(data)}): rerun data_prep with this "
                         "run's training_scope, folds and subsets")
    return data[group]


def group_seed(seed: int, group: str) -> int:
    """A seed of its own for each group, stable across runs and processes (``seed`` for ``all``):
    folds fine-tuned from one generator would otherwise draw the same latents and give the same masks."""
    return seed if group == "all" else (seed + zlib.crc32(group.encode())) % 2**31


def heldout_groups(groups: dict[str, Sequence[str]], folds: Sequence[Fold]) -> dict[str, tuple[str, ...]]:
    """Images each group's generative models never train on, to measure them against: the
    validation images of the group's fold (its test images stay untouched by every generative
    step). The group ``all`` has no held-out images; it gets its own (an in-sample measurement)."""
    heldout = {}
    for group, names in groups.items():
        fold = fold_of_group(group)
        heldout[group] = tuple(names) if fold is None else folds[fold].val
    return heldout


def crop_origins(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of crops along one axis: every ``stride``, plus one flush with the end."""
    if length < size:
        return []
    origins = list(range(0, length - size + 1, stride))
    if origins[-1] != length - size:
        origins.append(length - size)
    return origins


def extract_crops(
    image: np.ndarray,
    labels: np.ndarray,
    size: int = 256,
    stride: int = 128,
    min_objects: int = 3,
    min_object_area: int = 15,
) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping crops of one annotated image that hold at least ``min_objects`` objects.

    Objects cut by the crop border to fewer than ``min_object_area`` pixels are
    dropped: such slivers carry no shape and Cellpose's decoder removes masks
    below 15 pixels anyway.

    Parameters
    ----------
    image
        ``(H, W, C)`` uint8/uint16.
    labels
        ``(H, W)`` int labels, 0 = background.

    Returns
    -------
    images, labels
        ``(N, size, size, C)`` of the image dtype and ``(N, size, size)`` int32,
        each crop relabelled ``1..n``; ``N`` may be 0.
    """
    if size < 8 or stride < 1:
        raise ValueError(f"crops.size must be >= 8 and crops.stride >= 1, got size={size}, stride={stride}")
    image_crops, label_crops = [], []
    for top in crop_origins(labels.shape[0], size, stride):
        for left in crop_origins(labels.shape[1], size, stride):
            crop = labels[top : top + size, left : left + size]
            too_small = np.bincount(crop.ravel()) < min_object_area
            too_small[0] = False
            crop = relabel_sequential(np.where(too_small[crop], 0, crop).astype(np.int32))[0]
            if crop.max() >= min_objects:
                label_crops.append(crop)
                image_crops.append(image[top : top + size, left : left + size])
    channels = image.shape[2]
    if not label_crops:
        return np.zeros((0, size, size, channels), image.dtype), np.zeros((0, size, size), np.int32)
    return np.stack(image_crops), np.stack(label_crops).astype(np.int32)


def add_rotations(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append the 90, 180 and 270 degree rotations of every crop.

    Parameters
    ----------
    images
        ``(N, S, S, C)``.
    labels
        ``(N, S, S)``.

    Returns
    -------
    images, labels
        ``(4N, S, S, C)`` and ``(4N, S, S)``: all crops at 0 degrees first, then 90, 180, 270.
    """
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"add_rotations needs square crops, got {images.shape[1:3]}")
    rotated_images = np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)])
    rotated_labels = np.concatenate([np.rot90(labels, k, axes=(1, 2)) for k in range(4)])
    return np.ascontiguousarray(rotated_images), np.ascontiguousarray(rotated_labels)


def rescale_sample(sample: AnnotatedImage, factor: float) -> AnnotatedImage:
    """The annotated image at ``factor`` times its size, as if imaged at another magnification.

    The image is resampled linearly (its dtype kept), the labels by nearest neighbour and numbered
    again from 1 (objects shrunk below one pixel disappear). The name gains ``@<factor>x``.

    Raises
    ------
    ValueError
        When ``factor`` is not positive or leaves a side shorter than one pixel.
    """
    if not factor > 0:
        raise ValueError(f"rescale factor must be > 0, got {factor}")
    height, width = sample.labels.shape
    shape = (round(height * factor), round(width * factor))
    if min(shape) < 1:
        raise ValueError(f"{sample.name}: rescaling {height}x{width} by {factor} leaves no pixel")
    image = resize(sample.image, (*shape, sample.image.shape[2]), order=1, preserve_range=True,
                   anti_aliasing=factor < 1)
    labels = resize(sample.labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
    return AnnotatedImage(f"{sample.name}@{factor:g}x", np.round(image).astype(sample.image.dtype),
                          relabel_sequential(labels)[0])


def crops_from_images(
    samples: Sequence[AnnotatedImage],
    *,
    size: int = 256,
    stride: int = 128,
    min_objects: int = 3,
    min_object_area: int = 15,
    rotations: bool = True,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """EXTRACT-CROPS over a set of annotated images.

    Returns
    -------
    dict
        ``images`` ``(N, size, size, C)`` (image dtype), ``labels`` ``(N, size, size)``
        int32 and ``source`` ``(N,)`` str, the name of the image each crop came
        from (so lineage can be checked down to the crop).

    Raises
    ------
    ValueError
        When no image yields a crop: all images are smaller than ``size`` or
        no crop holds ``min_objects`` objects.
    """
    if not samples:
        raise ValueError("crops_from_images: no images given")
    images, labels, sources = [], [], []
    for sample in tqdm(samples, desc="extract crops", unit="image", disable=not progress):
        image_crops, label_crops = extract_crops(sample.image, sample.labels, size, stride, min_objects,
                                                 min_object_area)
        if rotations:
            image_crops, label_crops = add_rotations(image_crops, label_crops)
        images.append(image_crops)
        labels.append(label_crops)
        sources += [sample.name] * len(label_crops)
    if not sources:
        smallest = min(min(s.labels.shape) for s in samples)
        raise ValueError(
            f"no crop of {len(samples)} image(s) is usable: crops.size={size} (smallest image side {smallest}), "
            f"crops.min_objects={min_objects}"
        )
    return {"images": np.concatenate(images), "labels": np.concatenate(labels), "source": np.array(sources)}


def crops_by_group(
    samples: Sequence[AnnotatedImage], groups: dict[str, Sequence[str]], **settings: Any
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`crops_from_images` of the images each group names (``{group: image names}``),
    with the settings of :func:`crops_from_images` (``size``, ``stride``, ...)."""
    by_name = {s.name: s for s in samples}
    missing = sorted({n for names in groups.values() for n in names} - by_name.keys())
    if missing:
        raise ValueError(f"the folds name images the dataset does not hold: {missing[:5]}; rerun data_prep")
    result = {}
    for group, names in groups.items():
        result[group] = crops_from_images([by_name[n] for n in names], progress=True, **settings)
        logger.info("%s: %d crops from %d images", group, len(result[group]["labels"]), len(names))
    return result
