"""Region intensity codes: pix2pixHD's instance-wise features (Wang et al. 2018, Sec. 3.4), with the mean
intensity of each object and of the background standing in for the features of a learnt encoder.

A pix2pix generator maps a mask to one image: dropout is its only noise, so every nucleus of a mask comes out
at about the same brightness and every image at about the same contrast. On DSB fluorescence the spread of
nucleus brightness in pix2pix images was about half the real one (``benchmarks/README.md``), and a
segmenter trained on such images learns that nuclei are alike. With codes, the generator also sees, painted
over each region of the mask, the region's mean normalised intensity in the real image. At generation the
codes come from a real training crop drawn at random: its background code, and for each object the code of
one of its objects, drawn with replacement. Brightness then varies within and between images as it does
in the training data, and the mask alone still decides where the objects are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CodeBank:
    """The region codes of a set of real crops, to draw from at generation.

    Attributes
    ----------
    backgrounds
        ``(M, C)`` float32: the mean normalised intensity of each crop's background.
    objects
        ``(K, C)`` float32: each object's mean, crop after crop.
    offsets
        ``(M + 1,)`` int64: crop ``m``'s objects are ``objects[offsets[m]:offsets[m + 1]]``.
    """

    backgrounds: np.ndarray
    objects: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.backgrounds.ndim != 2 or len(self.backgrounds) == 0:
            raise ValueError(f"a code bank needs (M >= 1, C) backgrounds, got shape {self.backgrounds.shape}")
        if self.offsets.shape != (len(self.backgrounds) + 1,) or self.offsets[-1] != len(self.objects):
            raise ValueError(f"code bank offsets {self.offsets.shape} do not match {len(self.backgrounds)} crops "
                             f"and {len(self.objects)} objects")

    @property
    def channels(self) -> int:
        return int(self.backgrounds.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {"backgrounds": self.backgrounds.tolist(), "objects": self.objects.tolist(),
                "offsets": self.offsets.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodeBank:
        backgrounds = np.asarray(data["backgrounds"], np.float32)
        objects = np.asarray(data["objects"], np.float32).reshape(-1, backgrounds.shape[1])
        return cls(backgrounds, objects, np.asarray(data["offsets"], np.int64))


def region_code_tables(labels: np.ndarray, images: np.ndarray) -> list[np.ndarray]:
    """Each crop's codes as a lookup table indexed by label id: row 0 the background's mean, row ``i`` object
    ``i``'s (rows of absent ids are 0).

    Parameters
    ----------
    labels
        ``(N, S, S)`` non-negative integer instance masks.
    images
        ``(N, C, S, S)`` float images (normalised, e.g. to [-1, 1]) paired with ``labels``.

    Returns
    -------
    list[np.ndarray]
        ``N`` float32 tables of shape ``(labels[n].max() + 1, C)``. A crop without background pixels gets
        its whole image's mean as the background code.
    """
    if labels.ndim != 3 or images.ndim != 4 or (images.shape[0], *images.shape[2:]) != labels.shape:
        raise ValueError(f"labels (N, S, S) and images (N, C, S, S) must pair up, got {labels.shape}, {images.shape}")
    tables = []
    for mask, image in zip(labels, images):
        ids = mask.ravel()
        counts = np.bincount(ids, minlength=int(mask.max()) + 1).astype(np.float64)
        sums = np.stack([np.bincount(ids, weights=channel.ravel(), minlength=len(counts)) for channel in image], 1)
        table = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if counts[0] == 0:
            table[0] = image.reshape(len(image), -1).mean(1)
        tables.append(table)
    return tables


def code_bank(labels: np.ndarray, tables: Sequence[np.ndarray]) -> CodeBank:
    """The :class:`CodeBank` of crops with instance masks ``labels`` ``(N, S, S)`` and their
    :func:`region_code_tables`."""
    if len(tables) == 0:
        raise ValueError("a code bank needs at least one crop")
    objects = [table[np.unique(mask[mask > 0])] for mask, table in zip(labels, tables)]
    offsets = np.concatenate([[0], np.cumsum([len(o) for o in objects])]).astype(np.int64)
    channels = tables[0].shape[1]
    return CodeBank(np.stack([table[0] for table in tables]).astype(np.float32),
                    np.concatenate(objects).astype(np.float32) if offsets[-1] else np.zeros((0, channels), np.float32),
                    offsets)


def sample_code_tables(labels: np.ndarray, bank: CodeBank, rng: np.random.Generator) -> list[np.ndarray]:
    """Codes for new masks: for each mask, a crop of ``bank`` drawn at random gives the background code and,
    for each object id, the code of one of its objects drawn with replacement (any crop's, when the drawn crop
    has none).

    Parameters
    ----------
    labels
        ``(N, S, S)`` non-negative integer instance masks.

    Returns
    -------
    list[np.ndarray]
        ``N`` float32 tables ``(labels[n].max() + 1, C)``, as :func:`region_code_tables` gives.
    """
    tables = []
    for mask in labels:
        crop = int(rng.integers(len(bank.backgrounds)))
        pool = bank.objects[bank.offsets[crop]:bank.offsets[crop + 1]]
        pool = pool if len(pool) else (bank.objects if len(bank.objects) else bank.backgrounds[crop:crop + 1])
        table = np.empty((int(mask.max()) + 1, bank.channels), np.float32)
        table[0] = bank.backgrounds[crop]
        table[1:] = pool[rng.integers(len(pool), size=len(table) - 1)]
        tables.append(table)
    return tables


def paint_codes(labels: np.ndarray, tables: Sequence[np.ndarray]) -> np.ndarray:
    """Code maps: every pixel of ``labels`` ``(N, S, S)`` takes its region's row of the mask's table.

    Returns
    -------
    np.ndarray
        ``(N, C, S, S)`` float32.
    """
    if len(tables) != len(labels):
        raise ValueError(f"{len(labels)} masks but {len(tables)} code tables")
    return np.stack([table[mask].transpose(2, 0, 1) for mask, table in zip(labels, tables)]).astype(np.float32)
