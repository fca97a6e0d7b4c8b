"""Train and apply StarDist 2D as in the paper.

The paper trains StarDist with 32 rays, batch size 4 and learning rate 0.003,
with the classical augmentation of :mod:`.augment` (elastic deformation
included), for 100 epochs from scratch, 20 epochs when fine-tuning and 50 on
subsets; those epoch counts are the caller's :class:`StarDistSettings`.

Callers pass raw images (uint8/uint16 or float, ``(H, W)`` or ``(H, W, C)``);
each is normalised here on its own, per channel, percentiles 1 -> 0 and
99.8 -> 1 (csbdeep's ``normalize``), in training and prediction alike. The
number of input channels is taken from the data.

A trained model is a StarDist model folder (``config.json``,
``weights_best.h5``, ``weights_last.h5``, ``thresholds.json``) plus
``cellsynth_stardist.json`` with the settings and the training history. It is
written into a staging folder beside the target and renamed into place when
complete, so a crash never leaves a half-written model.

TensorFlow is imported lazily (importing this module is cheap). Its thread
pools are sized on first use from ``StarDistSettings.threads``; TensorFlow
cannot resize them afterwards in the same process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellsynth.io import staged_directory
from cellsynth.segmentation._common import (
    NORMALIZE_PERCENTILES,
    channel_count,
    check_images,
    check_pairs,
    check_sample_weights,
    normalize_image,
    repeat_counts,
    write_json,
)
from cellsynth.segmentation.augment import AugmentConfig, StarDistAugmenter
from cellsynth.training.config import config_from_params

if TYPE_CHECKING:
    from stardist.models import StarDist2D

logger = logging.getLogger(__name__)

SIDECAR = "cellsynth_stardist.json"


@dataclass(frozen=True)
class StarDistSettings:
    """StarDist training settings (defaults: the paper's StarDist set-up).

    Attributes
    ----------
    epochs, steps_per_epoch
        Training length; the paper used 100 epochs (20 fine-tuning, 50 on subsets).
    batch_size, learning_rate
        Paper: 4 and 0.003 (Adam; StarDist halves it on a 40-epoch validation-loss plateau).
    n_rays, grid, unet_n_depth, unet_n_filter_base, net_conv_after_unet
        Architecture (ignored when fine-tuning: the initial model's is kept); StarDist's
        defaults except ``grid`` (2, 2), as in StarDist's 2D training example. Smaller
        networks are only for quick tests.
    patch_size
        Training patch ``(H, W)``; must be divisible by ``2**unet_n_depth * grid``.
        Smaller images are zero-padded (bottom/right, after normalisation) up to it.
    augment
        Apply :mod:`.augment`'s protocol on the fly; ``augment_config.elastic`` switches
        elastic deformation (on for StarDist in the paper).
    n_val_patches
        Validation patches per epoch (None: one per validation image).
    nms_threshs, iou_threshs
        Grid for ``optimize_thresholds`` on the validation images (StarDist's defaults).
    seed
        Seeds NumPy, Python, TensorFlow and the augmenter.
    threads
        TensorFlow intra-op threads (None: TensorFlow's default, one per core); inter-op is 1.
        On a loaded 2-core machine 1 thread trained the tiny test network faster than 2.
    """

    epochs: int = 100
    steps_per_epoch: int = 100
    batch_size: int = 4
    learning_rate: float = 0.003
    n_rays: int = 32
    grid: tuple[int, int] = (2, 2)
    unet_n_depth: int = 3
    unet_n_filter_base: int = 32
    net_conv_after_unet: int = 128
    patch_size: tuple[int, int] = (256, 256)
    augment: bool = True
    augment_config: AugmentConfig = AugmentConfig()
    n_val_patches: int | None = None
    nms_threshs: tuple[float, ...] = (0.3, 0.4, 0.5)
    iou_threshs: tuple[float, ...] = (0.3, 0.5, 0.7)
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "n_rays", "unet_n_depth", "unet_n_filter_base",
                     "net_conv_after_unet"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"StarDistSettings: {name}={getattr(self, name)} must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"StarDistSettings: learning_rate={self.learning_rate} must be > 0")
        if len(self.patch_size) != 2 or len(self.grid) != 2:
            raise ValueError("StarDistSettings: patch_size and grid must have two entries (H, W)")
        for size, grid in zip(self.patch_size, self.grid):
            divisor = 2**self.unet_n_depth * grid
            if size % divisor:
                raise ValueError(
                    f"StarDistSettings: patch_size {self.patch_size} must be divisible by "
                    f"2**unet_n_depth * grid = {divisor}"
                )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"StarDistSettings: threads={self.threads} must be >= 1 or None")


def _load_tensorflow() -> None:
    """Import TensorFlow, loading torch's Triton first when it is installed.

    Triton's compiled extension segfaults when it is loaded after TensorFlow (it is
    loaded lazily, e.g. when torch builds its first optimiser, as Cellpose training
    does); loaded before TensorFlow both work. Every TensorFlow import of this module
    goes through here.
    """
    if "tensorflow" not in sys.modules:
        with contextlib.suppress(ImportError):
            import triton  # noqa: F401
    import tensorflow  # noqa: F401


def configure_tensorflow(threads: int | None) -> None:
    """Size TensorFlow's thread pools, if it has not started yet: inter-op 1, intra-op ``threads``
    (None: TensorFlow's default, one per core).

    StarDist's network is one chain of ops, so parallel op scheduling (inter-op) only
    oversubscribes a small machine; once TensorFlow has run an op the sizes are fixed
    and this call only logs.
    """
    _load_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        if threads is None:
            return
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads:
            logger.info("TensorFlow already initialised with %s intra-op threads; keeping them", current)


# glibc's own ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>


def restore_malloc_thresholds() -> bool:
    """Undo the malloc setting TensorFlow leaves behind after training on a Python generator.

    TensorFlow's ``GeneratorDataset`` (StarDist feeds Keras from a generator) calls
    ``mallopt(M_MMAP_THRESHOLD, 128 KiB)`` on Python 3.11, which also switches off
    glibc's dynamic threshold. From then on every block over 128 KiB is a fresh
    ``mmap``, so torch work later in the same process (Cellpose training, FID)
    page-faults on each tensor: a small Cellpose training takes 1.8x as long (see
    ``benchmarks/README.md``). This sets the thresholds to the values glibc's dynamic
    rule settles at. Returns False where there is no glibc ``mallopt`` (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2 * GLIBC_MMAP_THRESHOLD_MAX)
    )


def _seed_tensorflow(seed: int) -> None:
    _load_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)  # Python, NumPy and the TensorFlow backend


def _prepare(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], what: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check, normalise, relabel sequentially and fill holes (StarDist wants star-convex, hole-free ids)."""
    from skimage.segmentation import relabel_sequential
    from stardist import fill_label_holes

    raw_images, raw_labels = check_pairs(images, labels, what)
    normalised = [normalize_image(image) for image in raw_images]
    prepared = [fill_label_holes(relabel_sequential(label)[0]).astype(np.int32) for label in raw_labels]
    return normalised, prepared


def _pad_to(image: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad bottom/right up to ``size`` (0 is the background level after normalisation)."""
    pad_h, pad_w = max(size[0] - labels.shape[0], 0), max(size[1] - labels.shape[1], 0)
    if not pad_h and not pad_w:
        return image, labels
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths), np.pad(labels, widths[:2])


def _build_config(settings: StarDistSettings, n_channel: int, base: Any = None) -> Any:
    """Config2D from the settings; when fine-tuning (``base`` is the initial model's config) the
    architecture comes from ``base`` and only the training parameters from ``settings``."""
    from stardist.models import Config2D

    training = dict(
        train_patch_size=tuple(settings.patch_size),
        train_batch_size=settings.batch_size,
        train_learning_rate=settings.learning_rate,
        train_epochs=settings.epochs,
        train_steps_per_epoch=settings.steps_per_epoch,
        train_n_val_patches=settings.n_val_patches,
        train_tensorboard=False,  # the TensorBoard callback fails under Keras 3
        use_gpu=False,  # gputools (OpenCL) is not used; TensorFlow still uses a GPU if it has one
    )
    if base is None:
        return Config2D(
            axes="YX" if n_channel == 1 else "YXC",
            n_rays=settings.n_rays,
            grid=tuple(settings.grid),
            n_channel_in=n_channel,
            unet_n_depth=settings.unet_n_depth,
            unet_n_filter_base=settings.unet_n_filter_base,
            net_conv_after_unet=settings.net_conv_after_unet,
            **training,
        )
    values = dict(vars(base))
    values.update(training)
    return Config2D(**values)


def train_stardist(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray],
    val_labels: Sequence[np.ndarray],
    settings: StarDistSettings,
    workdir: str | os.PathLike,
    init_from: str | os.PathLike | None = None,
    sample_weights: Sequence[float] | None = None,
) -> Path:
    """Train StarDist 2D (from scratch, or fine-tune ``init_from``) and tune its thresholds.

    Parameters
    ----------
    images, val_images
        Raw ``(H, W)`` or ``(H, W, C)`` uint8/uint16/float images, one channel count for all.
    labels, val_labels
        ``(H, W)`` integer instance labels (0 = background), one per image.
    settings
        Training settings.
    workdir
        Folder that will hold the model; replaced as a whole when training succeeds.
    init_from
        A model folder written by this function: its architecture and weights are the
        starting point (fine-tuning) and its channel count must match the data.
    sample_weights
        How often each training image is drawn, relatively (None: alike). StarDist draws images
        uniformly, so an image is listed in proportion to its weight (the same array, not copies).

    Returns
    -------
    Path
        ``workdir``, a StarDist model folder loadable with :func:`load_stardist`.
    """
    workdir = Path(workdir)
    x_train, y_train = _prepare(images, labels, "StarDist training set")
    weights = check_sample_weights(sample_weights, len(x_train), "StarDist training set")
    x_val, y_val = _prepare(val_images, val_labels, "StarDist validation set")
    n_channel = channel_count(x_train, "StarDist training set")
    if channel_count(x_val, "StarDist validation set") != n_channel:
        raise ValueError("StarDist validation images have a different channel count from the training images")
    if not any(label.any() for label in y_train):
        raise ValueError("StarDist training set: no labelled objects in any label image")

    if init_from is not None and not (Path(init_from) / "config.json").is_file():
        raise FileNotFoundError(f"init_from {init_from} is not a StarDist model folder (no config.json)")

    # Imported only now so that bad inputs fail fast, before TensorFlow loads.
    _load_tensorflow()
    from stardist.models import StarDist2D

    configure_tensorflow(settings.threads)
    base_model = None
    if init_from is not None:
        base_model = load_stardist(init_from)  # fails early if the folder is not a model
        if base_model.config.n_channel_in != n_channel:
            raise ValueError(
                f"init_from model takes {base_model.config.n_channel_in} channels, the data have {n_channel}"
            )
    _seed_tensorflow(settings.seed)

    patch = tuple(settings.patch_size)
    train_pairs = [_pad_to(x, y, patch) for x, y in zip(x_train, y_train)]
    if weights is not None:
        train_pairs = [pair for pair, count in zip(train_pairs, repeat_counts(weights)) for _ in range(count)]
    val_pairs = [_pad_to(x, y, patch) for x, y in zip(x_val, y_val)]
    augmenter = StarDistAugmenter(settings.augment_config, settings.seed) if settings.augment else None

    started = time.perf_counter()
    with staged_directory(workdir, create=False) as staging:
        config = _build_config(settings, n_channel, None if base_model is None else base_model.config)
        model = StarDist2D(config, name=staging.name, basedir=str(staging.parent))
        if base_model is not None:
            model.keras_model.set_weights(base_model.keras_model.get_weights())
            del base_model
        logger.info(
            "StarDist: training %s on %d images (%d validation), %d epochs x %d steps",
            "fine-tuned" if init_from is not None else "from scratch", len(train_pairs), len(val_pairs),
            settings.epochs, settings.steps_per_epoch,
        )
        try:
            history = model.train(
                [x for x, _ in train_pairs], [y for _, y in train_pairs],
                validation_data=([x for x, _ in val_pairs], [y for _, y in val_pairs]),
                augmenter=augmenter, seed=settings.seed,
                epochs=settings.epochs, steps_per_epoch=settings.steps_per_epoch,
            )
        finally:
            restore_malloc_thresholds()
        trained_s = time.perf_counter() - started
        # Thresholds on the unpadded validation images: prediction pads by itself.
        thresholds = model.optimize_thresholds(
            x_val, y_val, nms_threshs=list(settings.nms_threshs), iou_threshs=list(settings.iou_threshs),
            optimize_kwargs={"verbose": 0},
        )
        record = {key: [float(v) for v in history.history.get(key, [])] for key in ("loss", "val_loss")}
        write_json(
            staging / SIDECAR,
            {
                "settings": asdict(settings),
                "n_channel_in": n_channel,
                "normalize_percentiles": list(NORMALIZE_PERCENTILES),
                "init_from": None if init_from is None else str(Path(init_from).resolve()),
                "n_train": len(x_train),
                "sample_weights": None if weights is None else weights.tolist(),
                "n_val": len(val_pairs),
                "thresholds": dict(thresholds),
                "history": record,
                "train_seconds": trained_s,
                "total_seconds": time.perf_counter() - started,
            },
        )
    logger.info("StarDist: trained in %.1f s, thresholds %s, saved to %s", trained_s, thresholds, workdir)
    return workdir


def load_stardist(path: str | os.PathLike, threads: int | None = None) -> StarDist2D:
    """Load a StarDist model folder (best weights and tuned thresholds).

    Raises FileNotFoundError if ``path`` holds no ``config.json``.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a StarDist model folder (no config.json)")
    _load_tensorflow()
    from stardist.models import StarDist2D

    configure_tensorflow(threads)
    return StarDist2D(None, name=path.name, basedir=str(path.parent))


def read_stardist_settings(path: str | os.PathLike) -> StarDistSettings:
    """The :class:`StarDistSettings` a model folder was trained with (from its sidecar JSON)."""
    import json

    sidecar = Path(path) / SIDECAR
    return config_from_params(StarDistSettings, json.loads(sidecar.read_text())["settings"], str(sidecar),
                              strict=False)  # a record of an older version may hold settings since removed


def predict_stardist(
    model: StarDist2D | str | os.PathLike,
    images: Sequence[np.ndarray],
    prob_thresh: float | None = None,
    nms_thresh: float | None = None,
) -> list[np.ndarray]:
    """Segment raw images with a StarDist model (or a model folder).

    Parameters
    ----------
    images
        Raw ``(H, W)`` or ``(H, W, C)`` images with the model's channel count; normalised here.
    prob_thresh, nms_thresh
        Override the model's tuned thresholds.

    Returns
    -------
    list of np.ndarray
        ``(H, W)`` int32 instance labels, 0 = background, one per image.
    """
    if not hasattr(model, "predict_instances"):
        model = load_stardist(model)
    arrays = check_images(images, "StarDist prediction")
    expected = model.config.n_channel_in
    results = []
    for index, image in enumerate(arrays):
        channels = 1 if image.ndim == 2 else image.shape[2]
        if channels != expected:
            raise ValueError(f"StarDist prediction image {index}: {channels} channels, the model takes {expected}")
        labels, _ = model.predict_instances(
            normalize_image(image), prob_thresh=prob_thresh, nms_thresh=nms_thresh, show_tile_progress=False
        )
        results.append(np.asarray(labels, dtype=np.int32))
    return results


__all__ = [
    "StarDistSettings",
    "configure_tensorflow",
    "load_stardist",
    "predict_stardist",
    "read_stardist_settings",
    "train_stardist",
]
