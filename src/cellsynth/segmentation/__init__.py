"""Train and apply the paper's segmentation baselines, StarDist and Cellpose.

Tasnadi et al. (2023) judge generated training data by how well StarDist and
Cellpose segment real test images after training on it. This package is the
plain library for that (no Kedro): the classical augmentation protocol
(:mod:`.augment`), StarDist 2D (:mod:`.stardist_model`) and Cellpose 3
(:mod:`.cellpose_model`), each trained from scratch or fine-tuned from an
earlier model, entirely offline (no pretrained weights). StarDist runs where
TensorFlow puts it; Cellpose on the CPU unless ``CellposeSettings.gpu``.

All functions take raw images, ``(H, W)`` or ``(H, W, C)`` uint8/uint16 (or
float), and ``(H, W)`` integer instance labels (0 = background); images are
normalised per image inside (percentiles 1 and 99.8). Trained models are
folders written atomically (staging folder, then rename). Heavy libraries
(TensorFlow, torch, Cellpose) are imported on first use.

Typical use::

    path = train_stardist(x, y, xv, yv, StarDistSettings(epochs=100), "models/stardist")
    labels = predict_stardist(load_stardist(path), test_images)
    path = train_cellpose(x, y, xv, yv, CellposeSettings(epochs=500, rescale=False), "models/cellpose")
    labels = predict_cellpose(path, test_images)
"""

from cellsynth.segmentation._common import normalize_image
from cellsynth.segmentation.augment import (
    AugmentConfig,
    StarDistAugmenter,
    augment_pair,
    elastic_deform,
    intensity_augment,
    random_flip_rotate,
)
from cellsynth.segmentation.cellpose_model import (
    CellposeSettings,
    TrainedCellpose,
    load_cellpose,
    predict_cellpose,
    read_cellpose_settings,
    train_cellpose,
)
from cellsynth.segmentation.stardist_model import (
    StarDistSettings,
    configure_tensorflow,
    load_stardist,
    predict_stardist,
    read_stardist_settings,
    train_stardist,
)

__all__ = [
    "AugmentConfig",
    "CellposeSettings",
    "StarDistAugmenter",
    "StarDistSettings",
    "TrainedCellpose",
    "augment_pair",
    "configure_tensorflow",
    "elastic_deform",
    "intensity_augment",
    "load_cellpose",
    "load_stardist",
    "normalize_image",
    "predict_cellpose",
    "predict_stardist",
    "random_flip_rotate",
    "read_cellpose_settings",
    "read_stardist_settings",
    "train_cellpose",
    "train_stardist",
]
