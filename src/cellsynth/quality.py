"""Quality of generated flow fields and images: FID/KID and PSNR/SSIM.

Snapshots of the mask GAN are selected by FID (Tasnadi et al. 2023), which
StyleGAN2-ADA computes from the 2048-d pool features of the TensorFlow
Inception-v3 graph of 2015-12-05, images resized to 299x299. Here that graph
runs as torch-fidelity's port with the weights file
``pt_inception-2015-12-05-6726825d.pth`` that pytorch-fid and torch-fidelity
distribute (not NVIDIA's TorchScript copy, so values may differ from
StyleGAN2-ADA's in the last digits). The flow fields are fed as the 3-channel
images they are, as the paper did.

Without those weights (no network, no cached copy) the same architecture is
used with fixed-seed random weights. Such scores are comparable only with each
other; they are *not* FID/KID and are never labelled so: their keys are
``fid_randinit`` and ``kid_randinit_*``.

FID and KID are computed here from the features rather than with torchmetrics'
metric classes (for which :attr:`InceptionFeatures.module` is still a valid
``feature``): torchmetrics takes the eigenvalues of a non-symmetric 2048x2048
product (42 s per FID measured on the two shared CPU cores) and draws KID
subsets from the global RNG.

Whether generated fields are numerically correct encodings, and which of their
masks to keep, is :mod:`cellsynth.generated_fields`.
:func:`feature_images` brings microscopy images of any bit depth and channel
count to the extractor's 8-bit 1- or 3-channel input; :func:`paired_similarity`
scores generated images against the real images of the same masks.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.filters import threshold_otsu
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)

# File names of the weights: pytorch-fid's (the StyleGAN2-ADA / torch hub
# convention) and torch-fidelity's download of the same file. The 8 hex digits
# are the SHA-256 prefix (torch hub convention); torch-fidelity's metadata has
# only that prefix, the full digest is the one published with the pytorch-fid
# and torch-fidelity release files (95,628,359 bytes).
INCEPTION_FILENAMES: tuple[str, ...] = (
    "pt_inception-2015-12-05-6726825d.pth",
    "weights-inception-2015-12-05-6726825d.pth",
)
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
STANDARD_NAME = "inception-2015-12-05"
RANDOM_INIT_SEED = 0
FEATURE_DIM = 2048

# StyleGAN2-ADA's KID settings: 100 subsets of at most 1000 images.
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000


_HASH_CHUNK_BYTES = 1 << 20


class RandomInitFeaturesWarning(UserWarning):
    """The Inception weights are missing, scores use random features (not FID/KID)."""


@dataclass(frozen=True)
class InceptionFeatures:
    """A feature extractor for FID/KID and what its scores may be called.

    Attributes
    ----------
    module
        Maps uint8 images ``(N, 3, H, W)`` (any ``H, W``; resized to 299
        inside) to ``(N, F)`` float32 features, ``F = 2048`` for Inception.
        Usable as ``feature=`` of torchmetrics' ``FrechetInceptionDistance``
        and ``KernelInceptionDistance``.
    standard
        True only with the verified pt_inception-2015-12-05 weights.
    name
        Identifies the weights; features of different names are not comparable.
    """

    module: nn.Module
    standard: bool
    name: str

    @property
    def metric_prefix(self) -> str:
        """Key of the Fréchet distance: ``"fid"`` or ``"fid_randinit"``."""
        return "fid" if self.standard else "fid_randinit"

    @property
    def kid_prefix(self) -> str:
        """Key stem of the kernel distance: ``"kid"`` or ``"kid_randinit"``."""
        return "kid" if self.standard else "kid_randinit"


@dataclass(frozen=True)
class ImageFeatures:
    """Features of an image set, to reuse one set (the real one) across calls.

    Attributes
    ----------
    values
        ``(N, F)`` float64 features.
    extractor
        :attr:`InceptionFeatures.name` of the extractor that made them.
    image_shape
        ``(H, W, C)`` of the images.
    """

    values: np.ndarray
    extractor: str
    image_shape: tuple[int, int, int]


class _InceptionPool3(FeatureExtractorInceptionV3):
    """torch-fidelity's FID Inception-v3 returning the 2048-d pool features as one tensor.

    Parameters
    ----------
    weights_path
        A verified weights file, or None to keep the layers' initial weights
        (torch-fidelity's constructor would otherwise download them).
    """

    # Read by torchmetrics instead of running a dummy 299x299 image.
    num_features = FEATURE_DIM

    def __init__(self, weights_path: Path | None) -> None:
        # Set before nn.Module.__init__ (allowed for plain attributes): the
        # parent constructor calls load_state_dict.
        self._keep_initial_weights = weights_path is None
        if weights_path is None:
            source: str | io.BytesIO = io.BytesIO()
            torch.save({}, source)
            source.seek(0)
        else:
            source = str(weights_path)
        super().__init__("inception-v3-pool3", ["2048"], feature_extractor_weights_path=source)
        self._keep_initial_weights = False

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        if self._keep_initial_weights:
            return super().load_state_dict(state_dict, strict=False)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> _InceptionPool3:
        # Batch norm must keep its statistics even when a parent metric module
        # is switched to training mode.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]


# ----------------------------------------------------------------------------
# Feature extractor
# ----------------------------------------------------------------------------


def inception_features(
    weights_path: str | Path | None = None,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
) -> InceptionFeatures:
    """The FID Inception-v3, with the standard weights when they can be had.

    Resolution order: ``weights_path``; the torch hub cache
    (``torch.hub.get_dir()/checkpoints/`` + one of :data:`INCEPTION_FILENAMES`);
    a download into that cache when ``allow_download``; otherwise the same
    architecture with weights drawn from a fixed seed (identical on every
    call, the caller's RNG state untouched) and a
    :class:`RandomInitFeaturesWarning`. Every weights file must have SHA-256
    :data:`INCEPTION_SHA256`.

    Parameters
    ----------
    weights_path
        Local ``pt_inception-2015-12-05-6726825d.pth``.
    allow_download
        Let torch hub fetch the weights when neither a path nor a cached copy
        exists. With False no network access is attempted.
    device
        Where the module is placed.

    Returns
    -------
    InceptionFeatures
        ``standard=True``, ``name="inception-2015-12-05"`` with the verified
        weights, else ``standard=False``, ``name="inception-v3-randinit-seed0"``.

    Raises
    ------
    FileNotFoundError
        ``weights_path`` does not exist.
    ValueError
        A weights file (given, cached or downloaded) has the wrong checksum.
    RuntimeError
        ``allow_download`` and the download failed.
    """
    path = _resolve_weights(weights_path, allow_download)
    # Building (and redrawing) the layers on CPU uses the global CPU RNG: fork
    # it so the caller's stream is not advanced, and seed it so every call gets
    # the same weights (torch.manual_seed would also reseed CUDA, unforked).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(RANDOM_INIT_SEED)
        module = _InceptionPool3(path)
        if path is None:
            _randomise(module)
    if path is None:
        warnings.warn(
            f"No Inception weights {INCEPTION_FILENAMES[0]} (none given, none in {_hub_checkpoints()}, "
            f"download not allowed): using Inception-v3 with random weights "
            f"(seed {RANDOM_INIT_SEED}). Scores are reported as fid_randinit/kid_randinit; they are NOT standard "
            "FID/KID and not comparable with published values.",
            RandomInitFeaturesWarning,
            stacklevel=2,
        )
        name = f"inception-v3-randinit-seed{RANDOM_INIT_SEED}"
    else:
        name = STANDARD_NAME
    # Channels-last convolutions: the same features (to ~1e-6), measured 25 % faster on one CPU core.
    module = module.to(device=device, memory_format=torch.channels_last)
    return InceptionFeatures(module=module, standard=path is not None, name=name)


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve_weights(weights_path: str | Path | None, allow_download: bool) -> Path | None:
    """A verified weights file, or None when none is available."""
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file {path} does not exist")
        _verify_sha256(path)
        return path
    for filename in INCEPTION_FILENAMES:
        cached = _hub_checkpoints() / filename
        if cached.is_file():
            _verify_sha256(cached)
            return cached
    if not allow_download:
        return None
    target = _hub_checkpoints() / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Looked up on torch.hub at call time so that it can be replaced in tests.
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(target), progress=False)
    except Exception as error:
        raise RuntimeError(f"downloading the Inception weights from {URL_INCEPTION_V3} to {target} failed") from error
    try:
        _verify_sha256(target)
    except ValueError:
        target.unlink()
        raise
    return target


def _verify_sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != INCEPTION_SHA256:
        raise ValueError(
            f"Inception weights file {path}: SHA-256 checksum mismatch (expected {INCEPTION_SHA256}, got {actual}); "
            "it is not pt_inception-2015-12-05-6726825d.pth: replace or delete it"
        )


def _randomise(module: nn.Module) -> None:
    """Redraw every weight matrix He-normal (std ``sqrt(2 / fan_in)``).

    With the batch norms left neutral (mean 0, variance 1, scale 1, shift 0)
    this keeps the activations O(1) through the ReLU layers: PyTorch's default
    initialisation shrinks them to ~1e-8 at the pool, where FID would vanish.
    """
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() > 1:
                nn.init.kaiming_normal_(parameter, nonlinearity="relu")


# ----------------------------------------------------------------------------
# FID and KID
# ----------------------------------------------------------------------------


def extract_features(
    images: np.ndarray,
    features: InceptionFeatures,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    name: str = "images",
) -> ImageFeatures:
    """Features of an image set.

    Parameters
    ----------
    images
        ``(N, H, W, C)`` uint8, ``C`` = 1 (repeated to 3) or 3, ``N >= 1``.
    features
        The extractor, e.g. from :func:`inception_features`.
    batch_size
        Images per forward pass.
    device
        Where to run; the module is moved there (in place). None keeps it
        where it is.
    name
        Name of the argument in error messages.

    Returns
    -------
    ImageFeatures
        ``(N, F)`` float64 values.

    Raises
    ------
    ValueError
        ``images`` is not a uint8 ``(N, H, W, 1 or 3)`` array with ``N >= 1``,
        or ``batch_size < 1``.
    """
    _check_images(images, name, min_count=1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    module = features.module if device is None else features.module.to(device)
    # The device of the module's first tensor; a module without any runs on CPU.
    target = next(itertools.chain(module.parameters(), module.buffers()), torch.empty(0)).device
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(target)
            batch = batch.permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
            chunks.append(module(batch).to(torch.float64).cpu())
    values = torch.cat(chunks).numpy()
    if values.ndim != 2 or len(values) != len(images):
        raise ValueError(f"feature module returned shape {values.shape} for {len(images)} images, expected (N, F)")
    return ImageFeatures(values=values, extractor=features.name, image_shape=images.shape[1:])


def image_quality(
    real: np.ndarray | ImageFeatures,
    fake: np.ndarray | ImageFeatures,
    features: InceptionFeatures | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    kid_subsets: int = KID_SUBSETS,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID between a real and a generated image set.

    FID is ``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr(sqrt(S_r S_f))`` over
    the features' means and (N - 1)-normalised covariances; KID is the
    unbiased MMD^2 with kernel ``(x.y / F + 1)^3``, averaged over
    ``kid_subsets`` random subsets of ``min(1000, N_real, N_fake)`` images of
    each set (as StyleGAN2-ADA computes them).

    Parameters
    ----------
    real, fake
        ``(N, H, W, C)`` uint8 images, ``C`` = 1 or 3 (flow fields are fed as
        the 3-channel images they are), ``N >= 2``, both of one ``(H, W, C)``;
        or their :func:`extract_features` (to reuse the real set's).
    features
        The extractor; None resolves :func:`inception_features` with its
        defaults (no download) when images are given.
    batch_size, device
        See :func:`extract_features`.
    kid_subsets
        Number of KID subsets.
    seed
        Seed of the KID subsets (a local generator: the result is
        reproducible and the global RNG untouched).

    Returns
    -------
    dict
        ``{p: fid, q + "_mean": kid, q + "_std": kid spread over subsets}`` with
        ``p, q`` = ``"fid", "kid"`` for the standard weights and
        ``"fid_randinit", "kid_randinit"`` otherwise.

    Raises
    ------
    ValueError
        Bad images (argument named), fewer than 2 per set, different
        ``(H, W, C)``, features of different extractors, ``kid_subsets < 1``.
    """
    if kid_subsets < 1:
        raise ValueError(f"kid_subsets must be >= 1, got {kid_subsets}")
    for name, value in (("real", real), ("fake", fake)):
        if isinstance(value, ImageFeatures):
            if len(value.values) < 2:
                raise ValueError(f"{name} has {len(value.values)} feature vectors; FID and KID need at least 2")
        else:
            _check_images(value, name, min_count=2)
    if isinstance(real, np.ndarray) or isinstance(fake, np.ndarray):
        features = inception_features() if features is None else features
    real_set = real if isinstance(real, ImageFeatures) else extract_features(real, features, batch_size, device, "real")
    fake_set = fake if isinstance(fake, ImageFeatures) else extract_features(fake, features, batch_size, device, "fake")
    if real_set.image_shape != fake_set.image_shape:
        raise ValueError(
            f"real and fake differ in (H, W, C): {tuple(real_set.image_shape)} vs {tuple(fake_set.image_shape)}"
        )
    extractors = {real_set.extractor, fake_set.extractor} | ({features.name} if features is not None else set())
    if len(extractors) > 1:
        raise ValueError(f"real, fake and features come from different extractors: {sorted(extractors)}")
    standard = real_set.extractor == STANDARD_NAME if features is None else features.standard
    x = torch.from_numpy(real_set.values)
    y = torch.from_numpy(fake_set.values)
    kid = _kernel_distances(x, y, kid_subsets, min(KID_MAX_SUBSET_SIZE, len(x), len(y)), seed)
    fid_key, kid_key = ("fid", "kid") if standard else ("fid_randinit", "kid_randinit")
    return {
        fid_key: float(_frechet_distance(x, y)),
        f"{kid_key}_mean": float(kid.mean()),
        f"{kid_key}_std": float(kid.std(unbiased=False)),
    }


def feature_images(images: np.ndarray) -> np.ndarray:
    """Images scaled to [-1, 1] per channel -> what the feature extractor takes.

    Parameters
    ----------
    images
        ``(N, H, W, C)`` float in [-1, 1], e.g. :meth:`cellsynth.translation.ChannelNormalizer.forward`
        of 8- or 16-bit images (the same normaliser for the real and the generated set, so both are
        scaled alike).

    Returns
    -------
    np.ndarray
        ``(N, H, W, 1 or 3)`` uint8: one and three channels are kept, two get an empty third
        channel, more than three keep the first three.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    channels = images.shape[-1]
    if channels == 2:
        images = np.concatenate([images, np.full_like(images[..., :1], -1.0)], axis=-1)
    elif channels > 3:
        images = images[..., :3]
    return np.rint((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def paired_similarity(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of generated images against the real images of the same masks.

    Parameters
    ----------
    real, fake
        ``(N, H, W, C)`` float in [-1, 1] (data range 2), the same shape, ``N >= 1``, ``H, W >= 7``.

    Returns
    -------
    dict
        ``{"psnr": mean PSNR, "ssim": mean SSIM over channels and images}``; a pair that is
        identical counts as 100 dB rather than infinity.
    """
    if real.shape != fake.shape or real.ndim != 4 or len(real) == 0:
        raise ValueError(f"real and fake must be non-empty (N, H, W, C) of one shape, got {real.shape}, {fake.shape}")
    with np.errstate(divide="ignore"):  # identical pairs: infinite PSNR, capped below
        psnr = [min(100.0, peak_signal_noise_ratio(r, f, data_range=2.0)) for r, f in zip(real, fake)]
    ssim = [structural_similarity(r, f, data_range=2.0, channel_axis=-1) for r, f in zip(real, fake)]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def object_brightness(labels: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """How much the brightness of objects varies: the spread of their mean intensities over the whole set
    and within each image.

    Parameters
    ----------
    labels
        ``(N, H, W)`` instance masks.
    images
        ``(N, H, W, C)`` float images paired with them (e.g. normalised to [-1, 1]); the channels are averaged.

    Returns
    -------
    dict
        ``brightness_spread`` (standard deviation of every object's mean intensity) and
        ``within_image_spread`` (the same within each image holding 2 or more objects, averaged over
        images; NaN when none does).
    """
    if labels.shape != images.shape[:3] or images.ndim != 4:
        raise ValueError(f"labels (N, H, W) and images (N, H, W, C) must pair up, got {labels.shape}, {images.shape}")
    every, within = [], []
    for mask, image in zip(labels, images.mean(-1)):
        ids = mask.ravel()
        counts = np.bincount(ids)
        means = (np.bincount(ids, weights=image.ravel(), minlength=len(counts)) / np.maximum(counts, 1))[1:]
        means = means[counts[1:] > 0]
        every.extend(means)
        if len(means) >= 2:
            within.append(means.std())
    return {"brightness_spread": float(np.std(every)) if every else float("nan"),
            "within_image_spread": float(np.mean(within)) if within else float("nan")}


def mask_agreement(labels: np.ndarray, images: np.ndarray) -> float:
    """How closely images show their masks' objects: the IoU of each image's Otsu foreground with its mask's
    foreground, averaged over the images that hold an object and some background.

    A painter whose objects keep another outline than their mask's (or come out too dim to tell from the
    background) scores lower than the real images of the same masks do.

    Parameters
    ----------
    labels
        ``(N, H, W)`` instance masks.
    images
        ``(N, H, W, C)`` float images paired with them; the channels are averaged. Objects darker than the
        background (stained tissue in brightfield) count as foreground as well as bright ones.

    Returns
    -------
    float
        Mean IoU in [0, 1]; NaN when no image holds both objects and background.
    """
    if labels.shape != images.shape[:3] or images.ndim != 4:
        raise ValueError(f"labels (N, H, W) and images (N, H, W, C) must pair up, got {labels.shape}, {images.shape}")
    scores = []
    for mask, image in zip(labels > 0, images.mean(-1)):
        if not mask.any() or mask.all() or image.min() == image.max():
            continue
        foreground = image > threshold_otsu(image)
        if image[mask].mean() < image[~mask].mean():  # dark objects on a bright background
            foreground = ~foreground
        scores.append((foreground & mask).sum() / (foreground | mask).sum())
    return float(np.mean(scores)) if scores else float("nan")


def translation_quality(
    real: np.ndarray, generated: np.ndarray, features: InceptionFeatures, reference: ImageFeatures | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """How close images painted from real masks come to the real images of those masks.

    Parameters
    ----------
    real, generated
        ``(N, H, W, C)`` float in [-1, 1], scaled by one normaliser, pair ``i`` from mask ``i``.
    features
        The FID extractor (:func:`inception_features`).
    reference
        :func:`extract_features` of ``feature_images(real)``, when already computed.
    labels
        ``(N, H, W)`` the masks, to compare how much object brightness varies (:func:`object_brightness`).

    Returns
    -------
    dict
        :func:`paired_similarity` (``psnr``, ``ssim``); for ``N >= 2``, :func:`image_quality` of the
        generated against the real images (FID/KID); with ``labels``, the generated images'
        :func:`object_brightness` spreads as a share of the real images' (``brightness_spread_ratio``,
        ``within_image_spread_ratio``: 1 is as varied as real, below 1 too uniform), and their
        :func:`mask_agreement` as a share of the real images' (``mask_agreement_ratio``: 1 follows the masks
        as closely as real images do).
    """
    scores = paired_similarity(real, generated)
    if labels is not None:
        spread_real, spread_generated = object_brightness(labels, real), object_brightness(labels, generated)
        scores.update({f"{key}_ratio": spread_generated[key] / spread_real[key] if spread_real[key] > 0
                       else float("nan") for key in spread_real})
        agreement_real = mask_agreement(labels, real)
        scores["mask_agreement_ratio"] = (mask_agreement(labels, generated) / agreement_real if agreement_real > 0
                                          else float("nan"))
    if len(real) >= 2:
        reference = reference or extract_features(feature_images(real), features, name="real images")
        scores.update(image_quality(reference, feature_images(generated), features=features))
    return scores


def _check_images(images: Any, name: str, min_count: int) -> None:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of uint8 images (N, H, W, C), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (images on the 0..255 scale), got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, H, W, C) with C = 1 or 3, got {images.shape}")
    if len(images) < min_count:
        raise ValueError(f"{name} has {len(images)} images; at least {min_count} are needed")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"{name} has empty images, shape {images.shape}")


def _covariance_factor(x: torch.Tensor) -> torch.Tensor:
    """``A`` with ``A A^T`` = the (N - 1)-normalised covariance of the rows of ``x`` ((F, k) float64)."""
    centred = x - x.mean(0)
    if len(x) <= x.shape[1]:
        return centred.T / (len(x) - 1) ** 0.5
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(x) - 1))
    return eigenvectors * eigenvalues.clamp(min=0).sqrt()


def _frechet_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FID of feature sets ``x (N, F)``, ``y (M, F)``.

    With ``S_x = A A^T`` and ``S_y = B B^T``, the non-zero eigenvalues of
    ``S_x S_y`` are the squared singular values of ``A^T B``, so
    ``tr(sqrt(S_x S_y))`` is the nuclear norm of ``A^T B``: exact, real, and
    cheap when ``N, M << F``.
    """
    a, b = _covariance_factor(x), _covariance_factor(y)
    trace_sqrt = torch.linalg.svdvals(a.T @ b).sum()
    return (x.mean(0) - y.mean(0)).square().sum() + a.square().sum() + b.square().sum() - 2 * trace_sqrt


def _kernel_distances(x: torch.Tensor, y: torch.Tensor, subsets: int, size: int, seed: int) -> torch.Tensor:
    """Unbiased polynomial-kernel MMD^2 of ``subsets`` random subset pairs of ``size`` rows ((subsets,) float64)."""
    generator = torch.Generator().manual_seed(seed)
    dim = x.shape[1]
    scores = torch.empty(subsets, dtype=torch.float64)
    for index in range(subsets):
        xs = x[torch.randperm(len(x), generator=generator)[:size]]
        ys = y[torch.randperm(len(y), generator=generator)[:size]]
        k_xx = (xs @ xs.T / dim + 1) ** 3
        k_yy = (ys @ ys.T / dim + 1) ** 3
        k_xy = (xs @ ys.T / dim + 1) ** 3
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (size * (size - 1))
        scores[index] = within - 2 * k_xy.mean()
    return scores
