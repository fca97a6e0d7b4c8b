"""The paper's classical augmentation protocol, as on-the-fly NumPy augmenters.

Tasnadi et al. (2023) train the segmentation baselines with "classical"
augmentation: intensity scaling, an additive bias, Gaussian noise, random
90-degree rotations and flips, and (StarDist only) elastic deformation. This
module implements each step on one ``(image, labels)`` pair:

- ``image``: ``(H, W)`` or ``(H, W, C)`` float32, already normalised so that
  background is near 0 and foreground near 1 (percentile normalisation);
- ``labels``: ``(H, W)`` integer instance labels, 0 = background.

Every function draws from an explicit :class:`numpy.random.Generator`, so a
seeded generator reproduces the same augmented pair.

Choices the paper does not pin down, made here and kept as
:class:`AugmentConfig` fields:

- the additive bias is ``U(-0.2, 0.2)`` on the normalised image (one value
  for the whole image, all channels), i.e. up to a fifth of the
  background-to-foreground range;
- intensity scale ``U(0.6, 2)`` and bias are shared by all channels; noise is
  drawn per pixel and channel; the result is not clipped (normalised images
  already exceed [0, 1] at their brightest and darkest percentiles);
- a 90-degree rotation (by 90, 180 or 270 degrees, uniformly) is applied with
  probability 0.5, then a vertical and a horizontal flip with probability 0.5
  each; non-square images are only rotated by 180 degrees so shapes keep;
- the elastic deformation (probability 0.5) uses a 3 x 3 grid of control
  points with displacement standard deviation 10 pixels, cubic interpolation
  for the image and nearest-neighbour (order 0) for the labels, with the
  outside filled by 0 in both (background), so no label id is invented or
  reflected into a second piece.

Elastic deformation uses the ``elasticdeform`` package. Its PyPI wheel
0.5.1 is compiled against NumPy 1.x and fails to import under NumPy 2
("numpy.core.multiarray failed to import"); building it from source
(``pip install --no-binary elasticdeform elasticdeform``) works. Where it cannot
be imported, :func:`elastic_deform` falls back to the same algorithm
(cubic-spline interpolated random control-point grid) written with
``scipy.ndimage``, and logs that once.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the augmentation protocol (defaults: the paper's values, see module doc).

    Attributes
    ----------
    scale_range
        Multiplicative intensity factor drawn from ``U(low, high)``.
    bias_range
        Additive intensity offset drawn from ``U(low, high)``, in normalised units.
    noise_sigma
        Standard deviation of the additive Gaussian pixel noise.
    p_rotate
        Probability of a random 90-degree rotation.
    p_flip
        Probability of each of the vertical and the horizontal flip.
    elastic
        Whether to apply elastic deformation at all (StarDist: yes; Cellpose: no).
    p_elastic
        Probability of elastic deformation when ``elastic`` is on.
    elastic_sigma
        Standard deviation (pixels) of the control-point displacements.
    elastic_points
        Number of control points per axis.
    """

    scale_range: tuple[float, float] = (0.6, 2.0)
    bias_range: tuple[float, float] = (-0.2, 0.2)
    noise_sigma: float = 0.02
    p_rotate: float = 0.5
    p_flip: float = 0.5
    elastic: bool = True
    p_elastic: float = 0.5
    elastic_sigma: float = 10.0
    elastic_points: int = 3

    def __post_init__(self) -> None:
        if not self.scale_range[0] <= self.scale_range[1] or self.scale_range[0] < 0:
            raise ValueError(f"AugmentConfig: scale_range {self.scale_range} must be 0 <= low <= high")
        if not self.bias_range[0] <= self.bias_range[1]:
            raise ValueError(f"AugmentConfig: bias_range {self.bias_range} must be low <= high")
        if self.noise_sigma < 0 or self.elastic_sigma < 0:
            raise ValueError("AugmentConfig: noise_sigma and elastic_sigma must be >= 0")
        for name in ("p_rotate", "p_flip", "p_elastic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig: {name}={getattr(self, name)} is not a probability")
        if self.elastic_points < 2:
            raise ValueError(f"AugmentConfig: elastic_points={self.elastic_points} must be >= 2")


def _check_pair(image: np.ndarray, labels: np.ndarray | None) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if labels is not None:
        if labels.ndim != 2 or labels.shape != image.shape[:2]:
            raise ValueError(f"labels of shape {labels.shape} do not match image of shape {image.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")


def intensity_augment(
    image: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.6, 2.0),
    bias_range: tuple[float, float] = (-0.2, 0.2),
    noise_sigma: float = 0.02,
) -> np.ndarray:
    """``image * s + b + N(0, noise_sigma)`` with ``s ~ U(scale_range)``, ``b ~ U(bias_range)``.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` normalised float image.
    rng
        Source of randomness.

    Returns
    -------
    np.ndarray
        float32 array of the input's shape; the input is not modified.
    """
    _check_pair(image, None)
    scale = rng.uniform(*scale_range)
    bias = rng.uniform(*bias_range)
    out = np.asarray(image, np.float32) * np.float32(scale) + np.float32(bias)
    if noise_sigma > 0:
        out = out + rng.normal(0.0, noise_sigma, size=out.shape).astype(np.float32)
    return out.astype(np.float32, copy=False)


def random_flip_rotate(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    p_rotate: float = 0.5,
    p_flip: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Random 90-degree rotation (probability ``p_rotate``) then vertical and horizontal flips.

    Image and labels get the same transform. Non-square inputs are rotated by
    180 degrees only, so that the output shape equals the input shape (batches
    of training patches must keep one shape).

    Returns
    -------
    (image, labels)
        C-contiguous arrays of the input shapes and dtypes.
    """
    _check_pair(image, labels)
    if rng.random() < p_rotate:
        k = int(rng.integers(1, 4)) if image.shape[0] == image.shape[1] else 2
        image = np.rot90(image, k, axes=(0, 1))
        labels = np.rot90(labels, k, axes=(0, 1))
    for axis in (0, 1):
        if rng.random() < p_flip:
            image = np.flip(image, axis=axis)
            labels = np.flip(labels, axis=axis)
    # StarDist's C code and torch want contiguous buffers, not negative-stride views.
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


@lru_cache(maxsize=1)
def _elasticdeform() -> ModuleType | None:
    try:
        # The failing NumPy-1 extension prints a long traceback to stderr before raising; keep the
        # log to the one warning below.
        with contextlib.redirect_stderr(io.StringIO()):
            import elasticdeform
    except ImportError as error:  # the NumPy-1 wheel under NumPy 2 raises ImportError
        logger.warning(
            "elasticdeform cannot be imported (%s); using the scipy.ndimage implementation of the same "
            "deformation. `pip install --no-binary elasticdeform elasticdeform` builds a working one.",
            error,
        )
        return None
    return elasticdeform


def _deform_with_scipy(
    image: np.ndarray, labels: np.ndarray, displacement: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fallback of ``elasticdeform.deform_grid``: control points span the image evenly, their
    displacements are interpolated to every pixel with a cubic spline, then the image is sampled
    at ``pixel + displacement`` (cubic) and the labels likewise (nearest)."""
    height, width = labels.shape
    points = displacement.shape[1:]
    # Pixel coordinates expressed in control-grid units (grid point i sits at i * (size-1)/(points-1)).
    gy = np.linspace(0, points[0] - 1, height)
    gx = np.linspace(0, points[1] - 1, width)
    grid = np.stack(np.meshgrid(gy, gx, indexing="ij"))
    dense = [ndimage.map_coordinates(d, grid, order=3, mode="mirror") for d in displacement]
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    coords = np.stack([yy + dense[0], xx + dense[1]])
    if image.ndim == 2:
        warped = ndimage.map_coordinates(image, coords, order=3, mode="constant", cval=0.0)
    else:
        warped = np.stack(
            [ndimage.map_coordinates(image[..., c], coords, order=3, mode="constant", cval=0.0)
             for c in range(image.shape[2])],
            axis=-1,
        )
    warped_labels = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)
    return warped, warped_labels


def elastic_deform(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    sigma: float = 10.0,
    points: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Elastic deformation applied identically to image and labels.

    A ``points x points`` grid of control-point displacements ``N(0, sigma)``
    (pixels) is drawn from ``rng`` and applied with ``elasticdeform.deform_grid``
    (cubic for the image, order 0 for the labels, zero outside), so labels stay
    integers and no new ids appear; ids may vanish if their object leaves the frame.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` float image.
    labels
        ``(H, W)`` integer labels.

    Returns
    -------
    (image, labels)
        float32 image of the input shape, labels of the input shape and dtype.
    """
    _check_pair(image, labels)
    displacement = rng.normal(0.0, sigma, size=(2, points, points))
    image32 = np.ascontiguousarray(image, dtype=np.float32)
    labels_in = np.ascontiguousarray(labels, dtype=np.int32)  # one integer type for the C and scipy paths
    module = _elasticdeform()
    if module is not None:
        warped, warped_labels = module.deform_grid(
            [image32, labels_in], displacement, order=[3, 0], mode="constant", cval=[0.0, 0],
            axis=[(0, 1), (0, 1)],
        )
    else:
        warped, warped_labels = _deform_with_scipy(image32, labels_in, displacement)
    return warped.astype(np.float32, copy=False), warped_labels.astype(labels.dtype, copy=False)


def augment_pair(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """The whole protocol: rotation/flips, elastic (if ``config.elastic``), then intensity.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(H, W, C)`` normalised float image.
    labels
        ``(H, W)`` integer instance labels.

    Returns
    -------
    (image, labels)
        float32 image and labels (input dtype), both of the input shapes.
    """
    _check_pair(image, labels)
    image, labels = random_flip_rotate(image, labels, rng, config.p_rotate, config.p_flip)
    if config.elastic and rng.random() < config.p_elastic:
        image, labels = elastic_deform(image, labels, rng, config.elastic_sigma, config.elastic_points)
    image = intensity_augment(image, rng, config.scale_range, config.bias_range, config.noise_sigma)
    return image, labels


class StarDistAugmenter:
    """Callable ``(x, y) -> (x, y)`` for ``StarDist2D.train(..., augmenter=...)``.

    StarDist calls it on each normalised training patch (``x``: ``(H, W)`` or
    ``(H, W, C)`` float32, ``y``: ``(H, W)`` int labels). It owns a generator
    seeded once, so a training run draws a reproducible stream of augmentations
    (StarDist's data loader runs in one worker thread by default).
    """

    def __init__(self, config: AugmentConfig = AugmentConfig(), seed: int | None = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return augment_pair(x, y, self.rng, self.config)
