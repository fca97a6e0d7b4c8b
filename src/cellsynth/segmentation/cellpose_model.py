"""Train and apply Cellpose (version 3 API) as in the paper, from scratch, offline.

Models are built with ``CellposeModel(pretrained_model=False, model_type=None)``:
with both unset Cellpose 3 creates a randomly initialised network and loads
nothing, so nothing is downloaded. Cellpose falls back to downloading its
``cyto3`` weights when ``pretrained_model`` names a file that does not exist, so
every path given here (``init_from``, model folders) is checked first and a
missing one raises FileNotFoundError instead.

Images: callers pass raw ``(H, W)`` or ``(H, W, C)`` uint8/uint16/float images.
``CellposeSettings.channels`` picks the input as Cellpose does (``(0, 0)``:
grayscale, the mean of all channels; ``(c, n)``: channel ``c`` to segment and
optional nuclear channel ``n``, 1-based). Each picked channel is normalised per
image with percentiles 1 -> 0 and 99.8 -> 1 (the same as for StarDist); the
network always gets 2 channels, the second zero without a nuclear channel.
Normalisation happens here, before Cellpose, and Cellpose's own is switched
off in training and prediction alike.

Augmentation: Cellpose's ``train_seg`` applies its own random rotations, flips
and rescaling to every batch but takes no augmenter. The paper's intensity
augmentation (scale, bias, noise; no elastic deformation for Cellpose) is
therefore applied as ``CellposeSettings.intensity_copies`` augmented copies of
each training image, drawn once per call from a generator seeded with
``settings.seed`` and added to the originals (labels shared). They are fixed
for the run, not redrawn each epoch. An epoch still means
``nimg_per_epoch`` images, by default the number of original images, so copies
do not lengthen training; Cellpose then samples the epoch's images from the
enlarged set with replacement.

A trained model is a folder with Cellpose's weight file
``models/cellpose_model`` and ``cellsynth_cellpose.json`` (settings,
losses); it is written to a staging folder beside the target and renamed into
place when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellsynth.io import staged_directory
from cellsynth.segmentation._common import (
    NORMALIZE_PERCENTILES,
    check_images,
    check_pairs,
    check_sample_weights,
    normalize_image,
    write_json,
)
from cellsynth.segmentation.augment import AugmentConfig, intensity_augment
from cellsynth.training.config import config_from_params

if TYPE_CHECKING:
    from cellpose.models import CellposeModel

logger = logging.getLogger(__name__)

SIDECAR = "cellsynth_cellpose.json"
WEIGHTS = Path("models") / "cellpose_model"


@dataclass(frozen=True)
class CellposeSettings:
    """Cellpose training and prediction settings.

    Attributes
    ----------
    epochs, batch_size
        Training length and batch (paper: batch 8; epochs are the caller's choice).
    learning_rate, weight_decay, sgd, momentum
        Optimiser: AdamW (Cellpose 3's default, ``sgd=False``) or SGD with ``momentum``.
        Cellpose warms the learning rate up linearly over the first 10 epochs.
    nimg_per_epoch
        Images per epoch (None: the number of original training images).
    rescale
        Rescale each training image so its mean object diameter becomes ``diam_mean``
        (Cellpose's default); False trains at the native size ("no rescaling by median
        size", as the paper's subset runs), and prediction then runs at native size too.
    diam_mean
        Object diameter the network works at when ``rescale`` is on.
    diameter
        Object diameter assumed at prediction when ``rescale`` is on (None: the training
        set's mean diameter stored in the model).
    channels
        Cellpose channel choice, see the module doc.
    bsize
        Square patch size for training and prediction tiles (Cellpose: 224); a multiple of 16.
    min_train_masks
        Training images with fewer objects are dropped by Cellpose (its default 5).
    intensity_copies
        Intensity-augmented copies added per training image (0: none), see the module doc.
    augment_config
        Intensity ranges for the copies (only scale, bias and noise are used).
    flow_threshold, cellprob_threshold, min_size
        Mask reconstruction at prediction (Cellpose's defaults).
    seed
        Seeds Python, NumPy, torch and the copies.
    gpu
        Run on a CUDA GPU when torch sees one (default: CPU).
    threads
        torch CPU threads during training and prediction (None: unchanged).
    log_progress
        Show Cellpose's training log (INFO) even when logging is not configured.
    """

    epochs: int = 500
    batch_size: int = 8
    learning_rate: float = 0.005
    weight_decay: float = 1e-5
    sgd: bool = False
    momentum: float = 0.9
    nimg_per_epoch: int | None = None
    rescale: bool = True
    diam_mean: float = 30.0
    diameter: float | None = None
    channels: tuple[int, int] = (0, 0)
    bsize: int = 224
    min_train_masks: int = 5
    intensity_copies: int = 1
    augment_config: AugmentConfig = AugmentConfig(elastic=False)
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
    min_size: int = 15
    seed: int = 0
    gpu: bool = False
    threads: int | None = None
    log_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CellposeSettings: {name}={getattr(self, name)} must be >= 1")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("CellposeSettings: learning_rate must be > 0 and weight_decay >= 0")
        if self.nimg_per_epoch is not None and self.nimg_per_epoch < 1:
            raise ValueError(f"CellposeSettings: nimg_per_epoch={self.nimg_per_epoch} must be >= 1 or None")
        if self.bsize < 16 or self.bsize % 16:
            raise ValueError(f"CellposeSettings: bsize={self.bsize} must be a positive multiple of 16")
        if len(self.channels) != 2 or min(self.channels) < 0:
            raise ValueError(f"CellposeSettings: channels={self.channels} must be two non-negative ints")
        if self.diam_mean <= 0 or (self.diameter is not None and self.diameter <= 0):
            raise ValueError("CellposeSettings: diam_mean and diameter must be > 0")
        if self.intensity_copies < 0 or self.min_train_masks < 0:
            raise ValueError("CellposeSettings: intensity_copies and min_train_masks must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"CellposeSettings: threads={self.threads} must be >= 1 or None")


@dataclass
class TrainedCellpose:
    """A loaded Cellpose network with the settings it was trained with (for prediction)."""

    model: CellposeModel
    settings: CellposeSettings
    path: Path | None = None


def _select_channels(image: np.ndarray, channels: tuple[int, int], what: str) -> list[np.ndarray]:
    """The ``(H, W)`` planes Cellpose would feed: gray (mean of all channels) or the chosen ones."""
    stack = image[..., None] if image.ndim == 2 else image
    stack = stack.astype(np.float32, copy=False)
    segment, nuclear = channels
    if segment == 0:
        return [stack.mean(axis=-1)]
    planes = []
    for number in (segment, nuclear) if nuclear else (segment,):
        if number > stack.shape[-1]:
            raise ValueError(f"{what}: channel {number} requested but the image has {stack.shape[-1]} channels")
        planes.append(stack[..., number - 1])
    return planes


def _network_input(
    image: np.ndarray,
    settings: CellposeSettings,
    what: str,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``(2, H, W)`` float32 network input: chosen channels, normalised, optionally intensity-augmented."""
    planes = [normalize_image(plane) for plane in _select_channels(image, settings.channels, what)]
    if rng is not None:
        config = settings.augment_config
        stacked = intensity_augment(np.stack(planes, axis=-1), rng, config.scale_range, config.bias_range,
                                    config.noise_sigma)
        planes = [stacked[..., i] for i in range(stacked.shape[-1])]
    while len(planes) < 2:
        planes.append(np.zeros_like(planes[0]))  # Cellpose's "no nuclear channel"
    return np.stack(planes).astype(np.float32, copy=False)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _cellpose_logging(enabled: bool) -> Iterator[None]:
    """Let Cellpose's INFO training log through; print it to stderr if nothing else would."""
    if not enabled:
        yield
        return
    cellpose_logger = logging.getLogger("cellpose")
    previous_level = cellpose_logger.level
    cellpose_logger.setLevel(logging.INFO)
    handler = None
    if not cellpose_logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        cellpose_logger.addHandler(handler)
    try:
        yield
    finally:
        cellpose_logger.setLevel(previous_level)
        if handler is not None:
            cellpose_logger.removeHandler(handler)


def _weights_file(path: str | os.PathLike) -> Path:
    """The weight file of a model folder (or a bare Cellpose weight file); FileNotFoundError if absent.

    Checking here matters: given a missing path, Cellpose would download its cyto3 model instead.
    """
    path = Path(path)
    candidate = path / WEIGHTS if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"{path} is not a Cellpose model folder or weight file ({candidate} is missing)")
    return candidate


def _new_model(settings: CellposeSettings, weights: Path | None) -> CellposeModel:
    import torch
    from cellpose.models import CellposeModel

    device = torch.device("cuda" if settings.gpu and torch.cuda.is_available() else "cpu")
    # pretrained_model=False with model_type=None: random initialisation, no download.
    return CellposeModel(
        gpu=device.type == "cuda",
        device=device,
        pretrained_model=str(weights) if weights is not None else False,
        model_type=None,
        diam_mean=settings.diam_mean,
        nchan=2,
    )


def train_cellpose(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray] | None,
    val_labels: Sequence[np.ndarray] | None,
    settings: CellposeSettings,
    workdir: str | os.PathLike,
    init_from: str | os.PathLike | None = None,
    sample_weights: Sequence[float] | None = None,
) -> Path:
    """Train a Cellpose network from scratch (or fine-tune ``init_from``), on the CPU unless ``settings.gpu``.

    Parameters
    ----------
    images, val_images
        Raw ``(H, W)`` or ``(H, W, C)`` uint8/uint16/float images. The validation set
        (optional: None or empty) only yields Cellpose's logged test loss.
    labels, val_labels
        ``(H, W)`` integer instance labels, 0 = background.
    settings
        Training settings.
    workdir
        Model folder to write; replaced as a whole when training succeeds.
    init_from
        A folder written by this function, or a Cellpose weight file, to start from.
    sample_weights
        How often each training image is drawn, relatively (None: alike); Cellpose's ``train_probs``.

    Returns
    -------
    Path
        ``workdir``, loadable with :func:`load_cellpose`.
    """
    workdir = Path(workdir)
    raw_images, raw_labels = check_pairs(images, labels, "Cellpose training set")
    draw_weights = check_sample_weights(sample_weights, len(raw_images), "Cellpose training set")
    has_val = val_images is not None and len(val_images) > 0
    if has_val:
        raw_val_images, raw_val_labels = check_pairs(val_images, val_labels, "Cellpose validation set")
    elif val_labels is not None and len(val_labels) > 0:
        raise ValueError("Cellpose validation set: labels given but no images")
    counts = [len(np.unique(label)) - (1 if (label == 0).any() else 0) for label in raw_labels]
    if max(counts) < max(settings.min_train_masks, 1):
        raise ValueError(
            f"Cellpose training set: no image has at least min_train_masks={settings.min_train_masks} objects "
            f"(most: {max(counts)}); Cellpose would drop every image"
        )
    weights = _weights_file(init_from) if init_from is not None else None

    # Imported only now so that bad inputs fail fast, before torch and Cellpose load.
    from cellpose import train

    from cellsynth.training.runtime import seed_everything

    seed_everything(settings.seed)
    rng = np.random.default_rng(settings.seed)
    train_x = [_network_input(image, settings, "Cellpose training set") for image in raw_images]
    # Copies: Cellpose renumbers training and validation labels in place (fastremap), which would change
    # the caller's arrays (and with them any digest of the training data taken later).
    train_y = [labels.copy() for labels in raw_labels]
    for _ in range(settings.intensity_copies):
        train_x += [_network_input(image, settings, "Cellpose training set", rng) for image in raw_images]
        train_y += [labels.copy() for labels in raw_labels]
    val_x = ([_network_input(image, settings, "Cellpose validation set") for image in raw_val_images]
             if has_val else None)
    val_y = [labels.copy() for labels in raw_val_labels] if has_val else None
    nimg_per_epoch = settings.nimg_per_epoch or (len(raw_images) if settings.intensity_copies else None)
    if draw_weights is not None and nimg_per_epoch in (None, len(train_x)):
        # Cellpose then walks a permutation of all images and never reads train_probs
        raise ValueError("Cellpose training set: sample weights need nimg_per_epoch set to another number than "
                         f"the {len(train_x)} training images (with intensity copies)")

    started = time.perf_counter()
    with staged_directory(workdir, create=False) as staging, _torch_threads(settings.threads), _cellpose_logging(
        settings.log_progress
    ):
        staging.mkdir()
        model = _new_model(settings, weights)
        logger.info(
            "Cellpose: training %s on %d images (+%d intensity copies each), %d epochs",
            "fine-tuned" if weights is not None else "from scratch", len(raw_images), settings.intensity_copies,
            settings.epochs,
        )
        filename, train_losses, test_losses = train.train_seg(
            model.net,
            train_data=train_x, train_labels=train_y, test_data=val_x, test_labels=val_y,
            load_files=False, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
            n_epochs=settings.epochs, weight_decay=settings.weight_decay, momentum=settings.momentum,
            SGD=settings.sgd, channels=None,
            # A dict, not False: Cellpose writes a bool into its module-wide defaults.
            normalize={"normalize": False},
            save_path=str(staging), save_every=max(settings.epochs, 1), nimg_per_epoch=nimg_per_epoch,
            rescale=settings.rescale, bsize=settings.bsize, min_train_masks=settings.min_train_masks,
            model_name=WEIGHTS.name,
            # the intensity copies of an image are drawn as often as the image
            train_probs=None if draw_weights is None else np.tile(draw_weights, 1 + settings.intensity_copies),
        )
        trained_s = time.perf_counter() - started
        if Path(filename) != staging / WEIGHTS:
            raise RuntimeError(f"Cellpose saved its weights to {filename}, expected {staging / WEIGHTS}")
        write_json(
            staging / SIDECAR,
            {
                "settings": asdict(settings),
                "weights": str(WEIGHTS),
                "normalize_percentiles": list(NORMALIZE_PERCENTILES),
                "init_from": None if init_from is None else str(Path(init_from).resolve()),
                "n_train": len(raw_images),
                "sample_weights": None if draw_weights is None else draw_weights.tolist(),
                "n_train_with_copies": len(train_x),
                "n_val": len(val_x) if val_x is not None else 0,
                "diam_labels": float(model.net.diam_labels.item()),
                "train_losses": np.asarray(train_losses).tolist(),
                "test_losses": np.asarray(test_losses).tolist(),
                "train_seconds": trained_s,
            },
        )
    logger.info("Cellpose: trained in %.1f s, saved to %s", trained_s, workdir)
    return workdir


def load_cellpose(path: str | os.PathLike, settings: CellposeSettings | None = None) -> TrainedCellpose:
    """Load a model folder written by :func:`train_cellpose` (or a bare Cellpose weight file).

    ``settings`` overrides those stored with the model (a bare weight file has none:
    defaults are used).
    """
    weights = _weights_file(path)
    if settings is None:
        sidecar = Path(path) / SIDECAR
        if sidecar.is_file():
            settings = read_cellpose_settings(path)
        else:
            settings = CellposeSettings()
    with _torch_threads(settings.threads):
        model = _new_model(settings, weights)
    return TrainedCellpose(model=model, settings=settings, path=Path(path))


def predict_cellpose(
    model: TrainedCellpose | CellposeModel | str | os.PathLike,
    images: Sequence[np.ndarray],
    settings: CellposeSettings | None = None,
) -> list[np.ndarray]:
    """Segment raw images with a Cellpose model.

    Parameters
    ----------
    model
        A :class:`TrainedCellpose`, a model folder/weight file, or a bare ``CellposeModel``
        (then ``settings`` or the defaults say how it was trained).
    images
        Raw ``(H, W)`` or ``(H, W, C)`` uint8/uint16/float images.
    settings
        Overrides the model's stored settings (channels, rescale, diameter, thresholds).

    Returns
    -------
    list of np.ndarray
        ``(H, W)`` int32 instance labels, 0 = background, one per image.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_cellpose(model, settings)
    if isinstance(model, TrainedCellpose):
        settings = settings or model.settings
        network = model.model
    else:
        settings = settings or CellposeSettings()
        network = model
    arrays = check_images(images, "Cellpose prediction")
    eval_kwargs: dict[str, Any] = dict(
        channels=None, channel_axis=0, normalize={"normalize": False}, batch_size=settings.batch_size,
        flow_threshold=settings.flow_threshold, cellprob_threshold=settings.cellprob_threshold,
        min_size=settings.min_size, bsize=settings.bsize,
    )
    if settings.rescale:
        eval_kwargs["diameter"] = settings.diameter  # None: the model's training diameter
    else:
        eval_kwargs["rescale"] = 1.0  # trained at native size: predict at native size
    results = []
    with _torch_threads(settings.threads):
        for image in arrays:
            masks = network.eval(_network_input(image, settings, "Cellpose prediction"), **eval_kwargs)[0]
            results.append(np.asarray(masks, dtype=np.int32).reshape(image.shape[:2]))
    return results


def read_cellpose_settings(path: str | os.PathLike) -> CellposeSettings:
    """The :class:`CellposeSettings` a model folder was trained with."""
    sidecar = Path(path) / SIDECAR
    return config_from_params(CellposeSettings, json.loads(sidecar.read_text())["settings"], str(sidecar),
                              strict=False)  # a record of an older version may hold settings since removed


__all__ = [
    "CellposeSettings",
    "TrainedCellpose",
    "load_cellpose",
    "predict_cellpose",
    "read_cellpose_settings",
    "train_cellpose",
]
