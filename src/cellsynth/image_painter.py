"""The image painter end to end: pix2pix (:mod:`cellsynth.translation`) trained on one group's crops with
resume, or a collage of the crops' real objects (:mod:`cellsynth.collage`), images painted for any masks,
and its images scored against held-out real ones (:mod:`cellsynth.quality`).

The ``image_translation``, ``simcep_baseline`` and ``synthesize`` pipelines and the torchrun entry point
call it; it knows nothing of Kedro.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellsynth import quality
from cellsynth.collage import ObjectBank, build_object_bank, paint_collage
from cellsynth.comparison import MaskSet
from cellsynth.io import AnnotatedImage
from cellsynth.training import CheckpointStore, Runtime, run_fingerprint
from cellsynth.translation import (
    ChannelNormalizer,
    Pix2PixConfig,
    Pix2PixResult,
    UNetGenerator,
    build_unet_generator,
    train_pix2pix,
    translate,
)
from cellsynth.translation.codes import CodeBank, sample_code_tables

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagePainter:
    """A trained pix2pix generator with its normaliser, mask representation and, when it was trained with
    ``intensity_codes``, the training crops' region codes to draw from (:mod:`cellsynth.translation.codes`)."""

    generator: UNetGenerator
    normalizer: ChannelNormalizer
    representation: str
    codes: CodeBank | None = None

    @classmethod
    def from_model(cls, model: Mapping[str, Any]) -> ImagePainter | CollagePainter:
        """From a trained model as the ``<group>.pix2pix_model`` datasets store it (``architecture``, ``G``,
        ``normalizer``, ``representation``, ``intensity_codes``; or ``painter: collage`` with its bank)."""
        if model.get("painter") == "collage":
            return CollagePainter(ObjectBank.from_dict(model["bank"]), int(model["candidates"]))
        generator = build_unet_generator(model["architecture"])
        generator.load_state_dict(model["G"])
        codes = model.get("intensity_codes")
        return cls(generator, ChannelNormalizer.from_dict(model["normalizer"]), model["representation"],
                   None if codes is None else CodeBank.from_dict(codes))

    def paint(self, labels: np.ndarray, batch: int = 16, seed: int = 0,
              device: str | torch.device = "cpu") -> np.ndarray:
        """Images ``(N, S, S, C)`` in the training images' dtype for ``(N, S, S)`` instance masks
        (:func:`cellsynth.translation.translate`); region codes, if any, are drawn with ``seed``."""
        tables = None if self.codes is None else sample_code_tables(labels, self.codes, np.random.default_rng(seed))
        return translate(self.generator, labels, self.normalizer, self.representation, batch=batch, device=device,
                         seed=seed, code_tables=tables)


@dataclass(frozen=True)
class CollagePainter:
    """Real objects' pixels pasted onto the masks' shapes (:mod:`cellsynth.collage`): nothing to train."""

    bank: ObjectBank
    candidates: int = 8

    @property
    def normalizer(self) -> ChannelNormalizer:
        return self.bank.normalizer

    def paint(self, labels: np.ndarray, batch: int = 16, seed: int = 0,
              device: str | torch.device = "cpu") -> np.ndarray:
        """Images ``(N, S, S, C)`` in the training images' dtype for ``(N, S, S)`` instance masks; ``batch``
        and ``device`` are ignored (it runs on the CPU, mask by mask)."""
        return paint_collage(self.bank, labels, seed=seed, candidates=self.candidates)


def collage_model(labels: np.ndarray, images: np.ndarray, sources: np.ndarray | None = None, *, margin: int = 6,
                  candidates: int = 8, seed: int = 0) -> dict[str, Any]:
    """A collage painter of one group's ``(N, S, S)`` masks and ``(N, S, S, C)`` crops cut from the ``(N,)``
    images ``sources``, as a ``<group>.pix2pix_model`` dataset stores it (:meth:`ImagePainter.from_model`
    reads it)."""
    bank = build_object_bank(images, labels, sources=sources, margin=margin, seed=seed)
    logger.info("Collage painter: %d objects, %d background canvases", len(bank.patches), len(bank.canvases))
    return {"painter": "collage", "bank": bank.to_dict(), "candidates": candidates,
            "normalizer": bank.normalizer.to_dict()}


def train_painter(
    labels: np.ndarray,
    images: np.ndarray,
    config: Pix2PixConfig,
    *,
    group: str,
    checkpoint_dir: str | Path,
    runtime: Runtime,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
) -> tuple[Pix2PixResult, CheckpointStore]:
    """Train (or resume, or load) the pix2pix of one group.

    Parameters
    ----------
    labels, images
        ``(N, S, S)`` int instance masks and their ``(N, S, S, C)`` uint8/uint16 images.
    config
        The pix2pix settings (``image_translation.training``).
    group
        The group's name; with a fingerprint of the settings and data (training length left out, so a
        finished run can be extended) it names the run's folder under ``checkpoint_dir``.
    log_metrics
        Called with each epoch's losses and the epoch.
    """
    # intensity_codes came later: left out while off, so models trained before it are still found
    fingerprint = run_fingerprint(config, labels, images, ignore=("epochs", "checkpoint_every")
                                  + (() if config.intensity_codes else ("intensity_codes",)))
    store = CheckpointStore(Path(checkpoint_dir) / f"{group}-{fingerprint}")
    logger.info("Training pix2pix of %s on %d crops; checkpoints in %s", group, len(labels), store.directory)
    return train_pix2pix(labels, images, config, store, runtime, log_metrics=log_metrics), store


def trained_model(result: Pix2PixResult, store: CheckpointStore) -> dict[str, Any]:
    """A trained pix2pix as a ``<group>.pix2pix_model`` dataset stores it (:meth:`ImagePainter.from_model` reads it)."""
    return {"architecture": result.architecture, "G": result.generator.state_dict(), "normalizer": result.normalizer,
            "representation": result.representation, "history": result.history,
            "intensity_codes": result.codes, "checkpoints": str(store.directory)}


@dataclass(frozen=True)
class PainterScores:
    """How a painter's images compare with real ones.

    Attributes
    ----------
    scores
        ``heldout.<metric>``: images painted from held-out real masks against those masks' real images
        (PSNR, SSIM, FID/KID); ``synthetic.<metric>``: the given synthetic images against the same real
        images (FID/KID).
    painted
        ``(N, S, S, C)`` the images painted from the held-out masks, in the images' dtype.
    """

    scores: dict[str, float]
    painted: np.ndarray


def score_painter(
    painter: ImagePainter | CollagePainter,
    heldout: MaskSet,
    features: quality.InceptionFeatures,
    synthetic_images: np.ndarray | None = None,
    *,
    synthetic_name: str = "synthetic",
    batch: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> PainterScores:
    """Score a painter on held-out real pairs (masks with their images), and optionally synthetic images.

    Parameters
    ----------
    heldout
        Held-out masks ``(N, S, S)`` with their real images ``(N, S, S, C)``, never seen in training.
    synthetic_images
        ``(M, S, S, C)`` images of other masks (e.g. the GAN's), compared with the real images by FID/KID
        when ``M >= 2``; their keys start with ``synthetic_name``.
    """
    if heldout.images is None:
        raise ValueError("score_painter needs the held-out masks' real images")
    real = painter.normalizer.forward(heldout.images)
    painted = painter.paint(heldout.labels, batch=batch, seed=seed, device=device)
    generated = painter.normalizer.forward(painted)
    reference = quality.extract_features(quality.feature_images(real), features, name="real images")
    scores = {f"heldout.{k}": v for k, v in quality.translation_quality(real, generated, features, reference,
                                                                         heldout.labels).items()}
    if synthetic_images is not None and len(synthetic_images) >= 2 and len(real) >= 2:
        synthetic = painter.normalizer.forward(synthetic_images)
        scores.update({f"{synthetic_name}.{k}": v for k, v in quality.image_quality(
            reference, quality.feature_images(synthetic), features=features).items()})
    return PainterScores(scores, painted)


def paint_masks(
    model: Mapping[str, Any],
    labels: np.ndarray,
    *,
    source: str,
    group: str,
    batch: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[AnnotatedImage]:
    """Images for ``(N, H, W)`` instance masks ``labels`` by one group's painter (a trained model as the
    ``<group>.pix2pix_model`` datasets store it).

    Returns ``[AnnotatedImage("<source>_0000", image, labels), ...]``, written like a real dataset.
    """
    if len(labels) == 0:
        logger.warning("%s: there is no %s mask to paint", group, source)
        return []
    images = ImagePainter.from_model(model).paint(labels, batch=batch, seed=seed, device=device)
    pairs = [AnnotatedImage(f"{source}_{i:04d}", image, mask) for i, (image, mask) in enumerate(zip(images, labels))]
    logger.info("%s: %d %s image/mask pairs", group, len(pairs), source)
    return pairs
