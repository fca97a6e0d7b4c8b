"""Figures for reports and MLflow: sample grids of masks, flow fields and images."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
from skimage.color import label2rgb

Panel = tuple[str, np.ndarray]


def label_image_rgb(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` instance labels -> ``(H, W, 3)`` float RGB, a colour per object on black."""
    return label2rgb(labels, bg_label=0, bg_color=(0, 0, 0))


def display_image(image: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` image of any dtype -> ``(H, W, 3)`` or ``(H, W)`` float in [0, 1] for ``imshow``.

    Three channels are shown as RGB, others by their first channel; each image is stretched to
    its own range (16-bit images would otherwise look black).
    """
    shown = image if image.shape[-1] == 3 else image[..., 0]
    shown = shown.astype(np.float64)
    low, high = shown.min(), shown.max()
    return (shown - low) / (high - low) if high > low else np.zeros_like(shown)


def panel_grid(groups: Sequence[tuple[str, Sequence[Panel]]], size: float = 1.8) -> plt.Figure:
    """A row per panel, a column per sample, panels grouped (e.g. by fold).

    Parameters
    ----------
    groups
        ``(group, panels)`` with ``panels`` a list of ``(title, samples)``: ``(n, H, W)`` integer
        instance masks (drawn in colour) or ``(n, H, W, C)`` images.
    size
        Inches per cell.
    """
    rows = [(f"{group}: {title}", samples) for group, panels in groups for title, samples in panels]
    n_cols = max(len(samples) for _, samples in rows)
    figure, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols, size * len(rows)), squeeze=False)
    for r, (title, samples) in enumerate(rows):
        for c in range(n_cols):
            axis = axes[r, c]
            axis.set_axis_off()
            if c >= len(samples):
                continue
            sample = samples[c]
            if sample.ndim == 2:
                axis.imshow(label_image_rgb(sample), interpolation="nearest")
            else:
                axis.imshow(display_image(sample), cmap="gray", interpolation="nearest")
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    figure.tight_layout()
    return figure


def sample_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> plt.Figure:
    """Real vs synthetic flow fields and masks, four rows per group.

    Parameters
    ----------
    rows
        ``(group, real_fields, real_labels, synthetic_fields, synthetic_labels)`` per group;
        fields ``(n, H, W, C)`` uint8 (C = 3 shown as RGB, else the first channel), labels ``(n, H, W)``.
    """
    return panel_grid([(group, [("real flows", real_fields), ("real masks", real_labels),
                                ("GAN flows", fake_fields), ("GAN masks", fake_labels)])
                       for group, real_fields, real_labels, fake_fields, fake_labels in rows])
