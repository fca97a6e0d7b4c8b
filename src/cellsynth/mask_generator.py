"""The mask generator end to end: a StyleGAN2-ADA (:mod:`cellsynth.gan`) trained on encoded instance masks
(:mod:`cellsynth.encoding`), scored at every snapshot by the masks its fields decode to, and sampled,
decoded and filtered into instance masks (:mod:`cellsynth.generated_fields`).

The ``mask_gan`` and ``synthesize`` pipelines, the torchrun entry point and the benchmarks call it; it
knows nothing of Kedro. :class:`MaskGANSettings` parses the ``mask_gan`` parameter block once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellsynth import encoding, generated_fields
from cellsynth.crops import group_seed
from cellsynth.gan.networks import Generator
from cellsynth.gan.pretrained import load_initial_weights
from cellsynth.gan.training import (
    GANConfig,
    GANTrainingResult,
    build_generator,
    gan_run_fingerprint,
    generate_images,
    train_gan,
)
from cellsynth.mask_scale import largest_object_areas, median_object_area, object_areas, rescale_masks
from cellsynth.quality import InceptionFeatures, extract_features
from cellsynth.training import CheckpointStore, Runtime
from cellsynth.training.config import config_from_params

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """``mask_gan.generation``: how many fields to draw, and which decoded masks to keep.

    Attributes
    ----------
    n, seed
        Fields drawn per group, and the seed of their latents (each group offsets it).
    truncation_psi
        StyleGAN's truncation (1: none).
    min_objects, max_consistency_error
        The filters: a decoded mask is kept when it holds at least ``min_objects`` objects and its
        re-encoded flows differ from the generated field by at most ``max_consistency_error``.
    match_scale
        Zoom the decoded masks so that their median object area is the training crops' (recorded with
        the trained model; :mod:`cellsynth.mask_scale`): a generator fine-tuned for minutes keeps the
        object size of its pretraining. The fields are encoded again from the zoomed masks.
    drop_oversized
        Also drop masks holding an object larger than the largest whole object of the training crops
        (recorded with the trained model), after ``match_scale``'s zoom: a generator fine-tuned on few
        images draws some fields as one merged blob, bigger than any real nucleus, and painters stretch
        real objects' pixels over it.
    decode
        Options of :func:`cellsynth.encoding.decode_batch` (``niter``, ``flow_threshold``, ...).
    """

    n: int = 32
    seed: int = 0
    truncation_psi: float = 1.0
    min_objects: int = 3
    max_consistency_error: float = 0.4
    match_scale: bool = False
    drop_oversized: bool = False
    decode: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"mask_gan.generation.n must be an integer >= 1, got {self.n!r}")
        if int(self.min_objects) != self.min_objects or self.min_objects < 0:
            raise ValueError(f"mask_gan.generation.min_objects must be an integer >= 0, got {self.min_objects!r}")
        if not self.max_consistency_error > 0:
            raise ValueError(f"mask_gan.generation.max_consistency_error must be > 0, "
                             f"got {self.max_consistency_error!r}")
        if not 0 <= self.truncation_psi <= 1:
            raise ValueError(f"mask_gan.generation.truncation_psi must be in [0, 1], got {self.truncation_psi!r}")
        object.__setattr__(self, "decode",
                           encoding.check_decode_options(self.decode, "mask_gan.generation.decode"))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GenerationSettings:
        """From the ``mask_gan.generation`` parameters, naming any key that is not a setting."""
        return config_from_params(cls, {**params, "decode": params.get("decode") or {}}, "mask_gan.generation")


@dataclass(frozen=True)
class MaskGANSettings:
    """The ``mask_gan`` parameter block, parsed once.

    Attributes
    ----------
    training
        The StyleGAN2-ADA settings (``mask_gan.training``); each group trains with its own seed.
    generation
        :class:`GenerationSettings`; its filters also score the snapshots.
    downsample
        The GAN learns fields this many times smaller than the crops.
    checkpoint_dir
        Each group's run lives in ``<checkpoint_dir>/<group>-<fingerprint>``.
    init_from
        Starting weights: a shipped generator's name or a file (None: from scratch).
    eval_images, eval_seed
        Snapshot metrics compare this many generated fields (drawn with ``eval_seed``) with as many
        training fields.
    runtime
        ``device``, ``precision`` and ``compile`` (:func:`cellsynth.training.start_runtime`).
    """

    training: GANConfig
    generation: GenerationSettings
    downsample: int = 1
    checkpoint_dir: Path = Path("data/06_models/mask_gan_checkpoints")
    init_from: str | None = None
    eval_images: int = 32
    eval_seed: int = 123
    runtime: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MaskGANSettings:
        """From the ``mask_gan`` parameters (``training``, ``generation``, ``evaluation``, ...)."""
        known = {"training", "generation", "evaluation", "downsample", "checkpoint_dir", "init_from", "runtime"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown mask_gan parameter(s) {unknown}; known: {sorted(known)}")
        evaluation = dict(params.get("evaluation") or {})
        extra = sorted(set(evaluation) - {"n_images", "seed"})
        if extra:
            raise ValueError(f"unknown mask_gan.evaluation parameter(s) {extra}; known: ['n_images', 'seed']")
        downsample = params.get("downsample", 1)
        if int(downsample) != downsample or downsample < 1:
            raise ValueError(f"mask_gan.downsample must be an integer >= 1, got {downsample!r}")
        return cls(
            training=GANConfig.from_params(dict(params["training"])),
            generation=GenerationSettings.from_params(params.get("generation") or {}),
            downsample=int(downsample),
            checkpoint_dir=Path(params.get("checkpoint_dir", cls.checkpoint_dir)),
            init_from=params.get("init_from") or None,
            eval_images=int(evaluation.get("n_images", cls.eval_images)),
            eval_seed=int(evaluation.get("seed", cls.eval_seed)),
            runtime=dict(params.get("runtime") or {}),
        )


@dataclass(frozen=True)
class GeneratedMasks:
    """Fields drawn from a mask generator and what they decode to.

    Attributes
    ----------
    fields
        ``(N, H, W, C)`` uint8 generated fields, at the crops' size.
    labels
        ``(N, H, W)`` int32 decoded instance masks.
    kept
        ``(N,)`` bool: the masks that pass the filters.
    errors
        ``(N,)`` float consistency error of each mask (of the field as generated).
    scale_factor
        The linear zoom applied to the masks (``match_scale``; 1: none).
    """

    fields: np.ndarray
    labels: np.ndarray
    kept: np.ndarray
    errors: np.ndarray
    scale_factor: float = 1.0


@dataclass(frozen=True)
class MaskSource:
    """A trained mask generator (``G_ema``), how its fields become masks, and the median and largest object
    areas of the crops it was trained on (``object_area`` for ``match_scale``, ``object_area_max`` for
    ``drop_oversized``)."""

    generator: Generator
    downsample: int = 1
    method: str = "cellpose_flow"
    filters: GenerationSettings = GenerationSettings()
    object_area: float | None = None
    object_area_max: float | None = None

    @classmethod
    def from_model(cls, model: Mapping[str, Any], method: str, filters: GenerationSettings) -> MaskSource:
        """From a trained model as the ``<group>.mask_gan_model`` datasets store it (``architecture``, ``G_ema``,
        ``downsample``, ``object_area``, ``object_area_max``)."""
        generator = build_generator(model["architecture"])
        generator.load_state_dict(model["G_ema"])
        return cls(generator, int(model.get("downsample", 1)), method, filters, model.get("object_area"),
                   model.get("object_area_max"))

    def sample(self, n: int, seed: int, device: str | torch.device = "cpu", progress: bool = False) -> GeneratedMasks:
        """Draw ``n`` fields with latents of ``seed``, decode and filter them."""
        # before drawing: a setting this model cannot serve fails at once
        for setting, recorded in (("match_scale", self.object_area), ("drop_oversized", self.object_area_max)):
            if getattr(self.filters, setting) and recorded is None:
                raise ValueError(f"mask_gan.generation.{setting} needs object areas of the training crops that "
                                 f"this trained model does not record (trained before {setting} existed): train "
                                 f"it again or set {setting}: false")
        small = generate_images(self.generator, n, seed=seed, truncation_psi=self.filters.truncation_psi,
                                device=device, progress=progress)
        fields = encoding.upscale_fields(small, self.downsample, self.method)
        labels = encoding.decode_batch(fields, method=self.method, progress=progress, **self.filters.decode)
        errors = generated_fields.consistency_errors(fields, labels, self.method,
                                                     self.filters.decode.get("cellprob_threshold", 0.0))
        kept = generated_fields.mask_filter(fields, labels, method=self.method, min_objects=self.filters.min_objects,
                                            max_consistency_error=self.filters.max_consistency_error, errors=errors)
        factor = 1.0
        if self.filters.match_scale and kept.any():
            factor = float(np.sqrt(self.object_area / median_object_area(labels[kept])))
            labels = rescale_masks(labels, factor, np.random.default_rng(seed)).astype(np.int32)
            fields = encoding.as_gan_images(encoding.encode_batch(labels, self.method), self.method)
            counts = labels.reshape(len(labels), -1).max(axis=1)  # rescale_masks numbers each mask's objects 1..n
            kept = kept & (counts >= self.filters.min_objects)
        if self.filters.drop_oversized:
            kept = kept & (largest_object_areas(labels) <= self.object_area_max)
        return GeneratedMasks(fields, labels, kept, errors, factor)


def train_mask_gan(
    encoded: np.ndarray,
    settings: MaskGANSettings,
    *,
    group: str,
    method: str,
    features: InceptionFeatures,
    runtime: Runtime,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
) -> tuple[GANTrainingResult, CheckpointStore]:
    """Train (or resume, or load) the mask GAN of one group on its encoded crops.

    Parameters
    ----------
    encoded
        ``(N, H, W, C)`` float32 encoded training crops (:func:`cellsynth.encoding.encode_batch`).
    settings
        The ``mask_gan`` block; the group trains with seed ``group_seed(training.seed, group)``.
    group
        The group's name (``fold_0``, ``all``, ...), which names its checkpoint folder.
    method
        The encoding (``cellpose_flow``, ...); only the flow encoding has vector channels for ADA.
    features
        Inception features for the snapshots' FID against ``settings.eval_images`` training fields.
    log_metrics
        Called with each snapshot's metrics and the images shown so far.

    Returns
    -------
    The training result (best snapshot, history, ``G_ema``) and the run's checkpoint store.
    """
    config = dataclasses.replace(settings.training, seed=group_seed(settings.training.seed, group))
    if method != "cellpose_flow":
        config = dataclasses.replace(config, vector_channels=None)
    flows = encoding.as_gan_images(encoded, method)
    sample = flows[np.random.default_rng(0).permutation(len(flows))[: settings.eval_images]]
    reference = extract_features(sample, features, name="real flows")
    filters = settings.generation

    def evaluate(generator: Generator) -> dict[str, float]:
        fake = generate_images(generator, len(sample), seed=settings.eval_seed, device=runtime.device)
        metrics, _, _ = generated_fields.generated_field_metrics(
            encoding.upscale_fields(fake, settings.downsample, method), reference, features, method=method,
            min_objects=filters.min_objects, max_consistency_error=filters.max_consistency_error, **filters.decode)
        return metrics

    flows = encoding.downscale(flows, settings.downsample)
    init_from = load_initial_weights(settings.init_from) if settings.init_from else None
    store = CheckpointStore(settings.checkpoint_dir / f"{group}-{gan_run_fingerprint(config, flows, init_from)}")
    logger.info("Training the mask GAN of %s on %d crops; checkpoints in %s", group, len(flows), store.directory)
    result = train_gan(flows, config, store, runtime, evaluate=evaluate, log_metrics=log_metrics, init_from=init_from)
    return result, store


def crops_object_areas(encoded: np.ndarray, method: str, n: int = 256) -> dict[str, float]:
    """The median (``object_area``) and largest (``object_area_max``) area in px of the whole objects
    (:func:`cellsynth.mask_scale.object_areas`) of up to ``n`` of the ``(N, H, W, C)`` encoded training crops,
    decoded (exactly, at full size) from their flows."""
    sample = encoded[np.random.default_rng(0).permutation(len(encoded))[:n]]
    areas = object_areas(encoding.decode_batch(encoding.as_gan_images(sample, method), method=method))
    return {"object_area": float(np.median(areas)), "object_area_max": float(areas.max())}


def trained_model(
    result: GANTrainingResult, store: CheckpointStore, method: str, downsample: int,
    object_areas: Mapping[str, float],
) -> dict[str, Any]:
    """A trained mask GAN as a ``<group>.mask_gan_model`` dataset stores it (:meth:`MaskSource.from_model` reads
    it), with the median and largest object areas of its training crops (:func:`crops_object_areas`)."""
    return {"architecture": result.architecture, "G_ema": result.generator_ema.state_dict(), "best": result.best,
            "history": result.history, "encoding": method, "downsample": downsample,
            "object_area": object_areas["object_area"], "object_area_max": object_areas["object_area_max"],
            "checkpoints": str(store.directory)}
