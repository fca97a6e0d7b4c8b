"""Per-channel intensity scaling of microscopy images to the generator's [-1, 1] range and back.

The range of each channel is the minimum and maximum over the training images (not
robust percentiles): every training intensity maps into [-1, 1] and back to itself
exactly, so 16-bit images and faint channels keep their full dynamic range and nothing
the model was trained on is clipped. Only intensities outside the training range
(unseen images) are clipped by :meth:`ChannelNormalizer.forward`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DTYPES: tuple[str, ...] = ("uint8", "uint16")


class ChannelNormalizer:
    """Linear map of each channel's ``[low, high]`` onto ``[-1, 1]``.

    Parameters
    ----------
    low, high
        ``(C,)`` per-channel intensity bounds, ``high > low``.
    dtype
        ``"uint8"`` or ``"uint16"``: the dtype :meth:`inverse` returns.
    """

    def __init__(self, low: np.ndarray | list[float], high: np.ndarray | list[float], dtype: str):
        self.low = np.asarray(low, np.float64).reshape(-1)
        self.high = np.asarray(high, np.float64).reshape(-1)
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        if self.low.shape != self.high.shape or not np.all(self.high > self.low):
            raise ValueError(f"need high > low per channel, got low={self.low}, high={self.high}")

    @property
    def channels(self) -> int:
        return len(self.low)

    @classmethod
    def fit(cls, images: np.ndarray) -> ChannelNormalizer:
        """Bounds from training images.

        Parameters
        ----------
        images
            ``(N, H, W, C)`` uint8 or uint16.

        Notes
        -----
        A constant channel gets ``high = low + 1`` so the map stays invertible.
        """
        if images.ndim != 4 or images.dtype.name not in DTYPES or images.size == 0:
            raise ValueError(f"images must be non-empty (N, H, W, C) uint8 or uint16, got {images.dtype} "
                             f"{images.shape}")
        low = images.min(axis=(0, 1, 2)).astype(np.float64)
        high = images.max(axis=(0, 1, 2)).astype(np.float64)
        return cls(low, np.maximum(high, low + 1), images.dtype.name)

    def forward(self, images: np.ndarray) -> np.ndarray:
        """``(..., C)`` intensities -> ``(..., C)`` float32 in [-1, 1] (outside the training range clipped)."""
        self._check_channels(images)
        scaled = (images.astype(np.float64) - self.low) / (self.high - self.low) * 2.0 - 1.0
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """``(..., C)`` float in [-1, 1] -> ``(..., C)`` intensities rounded to the fitted dtype."""
        self._check_channels(x)
        values = (np.clip(x.astype(np.float64), -1.0, 1.0) + 1.0) / 2.0 * (self.high - self.low) + self.low
        return np.rint(values).astype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python statistics (JSON-serialisable), stored with the model."""
        return {"low": self.low.tolist(), "high": self.high.tolist(), "dtype": self.dtype.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelNormalizer:
        return cls(data["low"], data["high"], data["dtype"])

    def _check_channels(self, array: np.ndarray) -> None:
        if array.ndim < 1 or array.shape[-1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s) last, got shape {array.shape}")
