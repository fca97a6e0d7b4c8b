"""Figures for reports and MLflow: sample grids of flow fields and masks."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
from skimage.color import label2rgb


def label_image_rgb(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` instance labels -> ``(H, W, 3)`` float RGB, a colour per object on black."""
    return label2rgb(labels, bg_label=0, bg_color=(0, 0, 0))


def sample_grid(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> plt.Figure:
    """Real vs synthetic samples, four rows per group.

    Parameters
    ----------
    rows
        ``(group, real_fields, real_labels, synthetic_fields, synthetic_labels)`` per group;
        fields ``(n, H, W, C)`` uint8 (C = 3 shown as RGB, else the first channel), labels ``(n, H, W)``.
    """
    n_cols = max(max(len(r[1]), len(r[3])) for r in rows)
    figure, axes = plt.subplots(4 * len(rows), n_cols, figsize=(1.8 * n_cols, 1.8 * 4 * len(rows)), squeeze=False)
    for g, (group, real_fields, real_labels, fake_fields, fake_labels) in enumerate(rows):
        panels = [("real flows", real_fields, False), ("real masks", real_labels, True),
                  ("GAN flows", fake_fields, False), ("GAN masks", fake_labels, True)]
        for r, (title, images, is_label) in enumerate(panels):
            for c in range(n_cols):
                axis = axes[4 * g + r, c]
                axis.set_axis_off()
                if c >= len(images):
                    continue
                image = images[c]
                if is_label:
                    axis.imshow(label_image_rgb(image), interpolation="nearest")
                else:
                    axis.imshow(image if image.shape[-1] == 3 else image[..., 0], cmap="gray", interpolation="nearest")
            axes[4 * g + r, 0].set_title(f"{group}: {title}", fontsize=8, loc="left")
    figure.tight_layout()
    return figure
