"""SIMCEP: parametric simulation of cell populations (Lehmussola et al., IEEE TMI 2007).

The baseline layout model: cells are smooth random blobs scattered in clusters.
It has no notion of tissue architecture (rings of cells around a gland lumen,
cells aligned along a fibre), which is what a learned mask generator should add.

Model of one crop, as described in the paper and re-implemented here:

* **Number of cells**: Poisson with mean ``cells_per_crop``.
* **Shape**: a regular polygon of ``n_vertices`` vertices on a circle of radius
  ``r ~ U(radius_min, radius_max)`` at a random rotation; each vertex is moved
  radially by ``r * N(0, shape_irregularity)``; the vertices are joined by a
  closed (periodic) cubic spline and the enclosed pixels filled.
* **Placement**: ``n_clusters`` cluster centres uniform in the crop; each cell
  picks a cluster uniformly and lies at ``centre + N(0, cluster_spread^2 I)``,
  or, with probability ``p_unclustered``, uniformly in the crop. Positions are
  redrawn until the cell centre lies inside the crop.
* **Overlap**: cells are placed one after another. A cell whose pixels overlap
  earlier cells by more than ``max_overlap`` of its area is moved to a new
  position (same shape), up to :data:`MAX_ATTEMPTS` times, then dropped. Earlier
  cells stay on top: a later cell only gets the pixels still free.

:func:`simulate` draws label masks, :func:`fit` estimates the parameters from
real masks, :func:`render_simcep_image` is SIMCEP's own image model (textured cells,
blur, uneven illumination, noise) for images without a learned translator.
They stay one module (a little over 600 lines) because they are one paper's
model: the fit estimates exactly the parameters the simulation draws from.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import CubicSpline
from skimage.draw import polygon
from skimage.measure import find_contours, regionprops

from cellsynth.layout import check_masks

# Positions a rejected cell may try before it is dropped.
MAX_ATTEMPTS = 50
# Spline samples per vertex: the chords deviate from the spline by under 0.05 px
# for radii up to ~20 px, and rasterising costs time per outline point.
SAMPLES_PER_VERTEX = 6
# Largest number of clusters fit() considers per crop.
MAX_CLUSTERS = 8
# Relative vertex noise is clipped here so radii stay positive.
_MIN_RELATIVE_RADIUS = 0.2
# Irregularity values at which fit() calibrates its outline statistic.
_IRREGULARITY_GRID = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
_CALIBRATION_SEED = 20070101


@dataclass(frozen=True)
class SimcepParams:
    """Parameters of the SIMCEP cell-population model, lengths in pixels.

    Attributes
    ----------
    cells_per_crop
        Mean number of cells per crop (> 0); each crop draws its count from a
        Poisson distribution with this mean. Cells that cannot be placed within
        ``max_overlap`` are dropped, so very crowded settings yield fewer.
    radius_min, radius_max
        Range (px) of the nominal cell radius, drawn uniformly;
        ``0 < radius_min <= radius_max``.
    shape_irregularity
        Standard deviation of the radial displacement of each polygon vertex,
        relative to the cell radius (dimensionless, in [0, 1)); 0 gives circles.
    n_vertices
        Vertices of the regular polygon the outline starts from (>= 3).
    n_clusters
        Number of cluster centres per crop (>= 1), uniform in the crop.
    cluster_spread
        Standard deviation (px, > 0) of each coordinate of a cell's offset from
        its cluster centre.
    p_unclustered
        Probability (in [0, 1]) that a cell ignores the clusters and is placed
        uniformly in the crop.
    max_overlap
        Largest fraction (in [0, 1]) of a cell's area that may fall on earlier
        cells; 0 lets cells touch but never overlap.
    """

    cells_per_crop: float = 20.0
    radius_min: float = 4.0
    radius_max: float = 8.0
    shape_irregularity: float = 0.1
    n_vertices: int = 10
    n_clusters: int = 3
    cluster_spread: float = 15.0
    p_unclustered: float = 0.2
    max_overlap: float = 0.1

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            kind = int if field.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"SimcepParams.{field.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"SimcepParams.{field.name} must be finite, got {value!r}")
            if kind is int and int(value) != value:
                raise ValueError(f"SimcepParams.{field.name} must be an integer, got {value!r}")
            object.__setattr__(self, field.name, kind(value))  # plain Python numbers, for YAML/JSON
        checks = {
            "cells_per_crop": (self.cells_per_crop > 0, "> 0"),
            "radius_min": (self.radius_min > 0, "> 0"),
            "radius_max": (self.radius_max >= self.radius_min, f">= radius_min ({self.radius_min})"),
            "shape_irregularity": (0 <= self.shape_irregularity < 1, "in [0, 1)"),
            "n_vertices": (self.n_vertices >= 3, ">= 3"),
            "n_clusters": (self.n_clusters >= 1, ">= 1"),
            "cluster_spread": (self.cluster_spread > 0, "> 0"),
            "p_unclustered": (0 <= self.p_unclustered <= 1, "in [0, 1]"),
            "max_overlap": (0 <= self.max_overlap <= 1, "in [0, 1]"),
        }
        for name, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"SimcepParams.{name} must be {rule}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimcepParams:
        """Parameters from a mapping; missing keys take the defaults, unknown keys raise ValueError."""
        unknown = set(data) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"SimcepParams: unknown parameter(s) {sorted(unknown)}")
        return cls(**data)


def simulate(params: SimcepParams, n: int, size: int | tuple[int, int], seed: int) -> list[np.ndarray]:
    """Draw ``n`` SIMCEP label masks.

    Crop ``i`` depends only on ``(params, size, seed, i)``, so a shorter run is
    a prefix of a longer one.

    Parameters
    ----------
    params
        Model parameters.
    n
        Number of masks, >= 1.
    size
        Side of square crops, or ``(H, W)``; each >= 8.
    seed
        Random seed.

    Returns
    -------
    list of np.ndarray
        ``n`` arrays ``(H, W)`` int32, 0 = background, cells numbered 1..k in
        placement order (no gaps; k may be 0).
    """
    if not isinstance(params, SimcepParams):
        raise ValueError(f"simulate: params must be SimcepParams, got {type(params).__name__}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"simulate: n must be an integer >= 1, got {n!r}")
    shape = (size, size) if np.isscalar(size) else tuple(size)
    if len(shape) != 2 or any(int(s) != s or s < 8 for s in shape):
        raise ValueError(f"simulate: size must be an integer >= 8 or a pair of them, got {size!r}")
    shape = (int(shape[0]), int(shape[1]))
    return [_simulate_crop(params, shape, np.random.default_rng([seed, i]))[0] for i in range(int(n))]


def cell_outline(
    radius: float, irregularity: float, n_vertices: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Outline of one cell around the origin: a perturbed polygon closed by a periodic spline.

    Returns
    -------
    rows, cols
        ``(n_vertices * SAMPLES_PER_VERTEX,)`` float64 offsets of the outline.
    """
    start = rng.uniform(0, 2 * np.pi / n_vertices)
    angles = start + 2 * np.pi * np.arange(n_vertices) / n_vertices
    rho = radius * np.maximum(1 + irregularity * rng.standard_normal(n_vertices), _MIN_RELATIVE_RADIUS)
    vertices = np.stack([rho * np.sin(angles), rho * np.cos(angles)], axis=1)
    outline = _spline_matrix(n_vertices) @ vertices
    return outline[:, 0], outline[:, 1]


@functools.lru_cache(maxsize=32)
def _spline_matrix(n_vertices: int) -> np.ndarray:
    """``(n_vertices * SAMPLES_PER_VERTEX, n_vertices)`` periodic cubic spline interpolation matrix.

    Interpolation is linear in the data and the vertices are equally spaced in
    the spline parameter, so the spline through any vertices is this fixed
    matrix times them: one ``CubicSpline`` of the unit vectors, instead of one
    per cell (which took ~1 ms each, most of the simulation time).
    """
    knots = np.arange(n_vertices + 1, dtype=float)
    basis = np.vstack([np.eye(n_vertices), np.eye(n_vertices)[:1]])  # repeat the first vertex: periodic
    spline = CubicSpline(knots, basis, bc_type="periodic")
    matrix = spline(np.arange(n_vertices * SAMPLES_PER_VERTEX) / SAMPLES_PER_VERTEX)
    matrix.setflags(write=False)
    return matrix


def _simulate_crop(
    params: SimcepParams, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """``(H, W)`` int32 labels of one crop, and the number of cells drawn (placed or dropped)."""
    labels = np.zeros(shape, np.int32)
    height, width = shape
    centres = rng.uniform((0, 0), (height, width), (params.n_clusters, 2))
    next_id = 1
    n_drawn = rng.poisson(params.cells_per_crop)
    for _ in range(n_drawn):
        radius = rng.uniform(params.radius_min, params.radius_max)
        rows, cols = cell_outline(radius, params.shape_irregularity, params.n_vertices, rng)
        # Rasterised once at a random sub-pixel offset, then moved by whole
        # pixels: each placement attempt is an index shift instead of a new
        # polygon fill. The centre is floor(position) + offset, distributed as
        # the position smoothed over one pixel.
        offset = rng.uniform(0, 1, 2)
        margin = int(np.ceil(max(np.abs(rows).max(), np.abs(cols).max()))) + 1
        cell_rows, cell_cols = polygon(rows + offset[0] + margin, cols + offset[1] + margin)
        cell_rows, cell_cols = cell_rows - margin, cell_cols - margin
        for _attempt in range(MAX_ATTEMPTS):
            corner = np.floor(_cell_position(params, centres, shape, rng)).astype(int)
            rr, cc = cell_rows + corner[0], cell_cols + corner[1]
            inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
            rr, cc = rr[inside], cc[inside]
            if rr.size == 0:
                continue  # a tiny cell at the very edge can miss every pixel centre
            free = labels[rr, cc] == 0
            # The fraction is of the cell's pixels inside the crop.
            if 1.0 - free.mean() <= params.max_overlap and free.any():
                labels[rr[free], cc[free]] = next_id
                next_id += 1
                break
    return labels, n_drawn


def _cell_position(
    params: SimcepParams, centres: np.ndarray, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A cell centre ``(row, col)`` inside the crop: clustered, or uniform with ``p_unclustered``."""
    upper = np.asarray(shape, float)
    if rng.random() < params.p_unclustered:
        return rng.uniform((0, 0), upper)
    centre = centres[rng.integers(len(centres))]
    for _ in range(100):
        position = centre + params.cluster_spread * rng.standard_normal(2)
        if np.all(position >= 0) and np.all(position < upper):
            return position
    return np.clip(position, 0, upper - 1e-6)  # practically unreachable: the centre itself is inside


# ----------------------------------------------------------------------------- fitting


def fit(
    masks: Sequence[np.ndarray],
    n_vertices: int = SimcepParams.n_vertices,
    max_overlap: float = SimcepParams.max_overlap,
) -> SimcepParams:
    """Estimate SIMCEP parameters from real instance label masks.

    * ``cells_per_crop``: mean number of labelled objects per mask.
    * ``radius_min``, ``radius_max``: from equivalent radii ``sqrt(area / pi)``
      of cells not touching the border. Their weighted mean ``m`` and standard
      deviation ``s`` give the uniform range ``m -+ sqrt(3) s`` (method of
      moments); weights ``1 / ((H - h)(W - w))`` (bounding box ``h x w``) undo
      the under-representation of large cells among border-free ones (Miles'
      minus-sampling). Rasterisation and outline noise bias this slightly, so
      the range is corrected by one step of parametric bootstrap: the same
      estimator is applied to simulated isolated cells with the first
      estimate, and its bias subtracted.
    * ``shape_irregularity``: the median, over border-free cells, of the
      relative standard deviation of the outline's distance to the centroid,
      mapped to the vertex noise through a calibration curve simulated with the
      estimated radii (the spline smooths the vertex noise and pixels add some).
    * ``n_clusters``, ``cluster_spread``, ``p_unclustered``: per crop, the cell
      centroids are fitted by EM with a mixture of ``k`` isotropic Gaussians of
      one shared spread plus a uniform background component; ``k`` (1 ..
      :data:`MAX_CLUSTERS`) minimises the BIC summed over crops, then spread
      and background weight are averaged over crops.
    * Overlap rejection drops cells in crowded crops and pushes cells of
      tight clusters apart, so count, spread and background weight are then
      corrected by simulation (:func:`_match_by_simulation`).
    * ``max_overlap`` cannot be told from masks and ``n_vertices`` is a
      modelling choice: both are passed through.

    Parameters
    ----------
    masks
        ``(H, W)`` integer label masks, 0 = background; ids need not be sequential.
    n_vertices
        Polygon vertices of the fitted model.
    max_overlap
        Overlap allowed in the fitted model (used by the simulation-based
        correction too).

    Raises
    ------
    ValueError
        On empty input, masks that are not 2-D integer arrays, or masks that
        hold no object at all.
    """
    masks = check_masks(masks, "simcep.fit")
    crops = [_crop_cells(mask) for mask in masks]
    n_cells = sum(len(crop.centroids) for crop in crops)
    if n_cells == 0:
        raise ValueError("simcep.fit: the masks hold no labelled object, nothing to fit")
    cells_per_crop = n_cells / len(crops)

    radii = np.concatenate([crop.radii for crop in crops])
    weights = np.concatenate([crop.weights for crop in crops])
    deviations = np.concatenate([crop.deviations for crop in crops])
    if len(radii) < 2:  # every cell touches the border: use them all, biased small
        radii = np.concatenate([crop.all_radii for crop in crops])
        weights = np.ones_like(radii)
    if deviations.size == 0:
        deviations = np.zeros(1)
    low, high = _uniform_range(radii, weights)
    low = max(low, 0.5)  # a strongly skewed real size distribution can put m - sqrt(3) s below 0
    high = max(high, low)
    rng = np.random.default_rng(_CALIBRATION_SEED)
    irregularity = _calibrate_irregularity(float(np.median(deviations)), low, high, n_vertices, rng)
    sim_radii, _ = _isolated_cells(np.linspace(low, high, 200), irregularity, n_vertices, rng)
    sim_low, sim_high = _uniform_range(sim_radii, np.ones_like(sim_radii))
    radius_min = max(low - (sim_low - low), 0.5)
    radius_max = max(high - (sim_high - high), radius_min)

    # A cluster narrower than a cell cannot hold two cells; without this floor
    # the likelihood is maximised by a "cluster" on every single cell.
    min_spread = float(np.median(np.concatenate([crop.all_radii for crop in crops])))
    n_clusters, spread, p_unclustered = _fit_clusters(crops, min_spread)
    first = SimcepParams(
        cells_per_crop=cells_per_crop,
        radius_min=radius_min,
        radius_max=radius_max,
        shape_irregularity=min(irregularity, 0.95),
        n_vertices=n_vertices,
        n_clusters=n_clusters,
        cluster_spread=spread,
        p_unclustered=p_unclustered,
        max_overlap=max_overlap,
    )
    shapes = [masks[i % len(masks)].shape for i in range(min(max(len(masks), 40), 100))]
    return _match_by_simulation(first, shapes, min_spread)


def _match_by_simulation(
    observed: SimcepParams, shapes: Sequence[tuple[int, int]], min_spread: float, rounds: int = 3
) -> SimcepParams:
    """Correct count, spread and background weight for what placement does to them.

    Overlap rejection drops cells in crowded crops and pushes cells of tight
    clusters outwards (wider spread, more apparent background), so the direct
    estimates are biased for this very simulator. Each round simulates crops of
    the given shapes with the current parameters, re-estimates with the same
    estimators (same ``k``) and moves the parameters by the difference to the
    estimates from the data; the mean count is divided by the fraction of
    drawn cells that were placed. Common random numbers across rounds keep the
    correction smooth.
    """
    params = observed
    for _round in range(rounds):
        runs = [
            _simulate_crop(params, shape, np.random.default_rng([_CALIBRATION_SEED, i]))
            for i, shape in enumerate(shapes)
        ]
        simulated = [_crop_cells(labels, morphology=False) for labels, _ in runs]
        placed = sum(len(crop.centroids) for crop in simulated)
        if placed == 0:
            break
        # Fraction of drawn cells that found a place: far less noisy than comparing Poisson counts.
        placed_fraction = placed / max(sum(drawn for _, drawn in runs), 1)
        _, spread, p_unclustered = _fit_clusters(simulated, min_spread, observed.n_clusters)
        params = replace(
            params,
            cells_per_crop=observed.cells_per_crop / placed_fraction,
            cluster_spread=max(params.cluster_spread + observed.cluster_spread - spread, 0.5),
            p_unclustered=float(np.clip(params.p_unclustered + observed.p_unclustered - p_unclustered, 0.0, 1.0)),
        )
    return params


@dataclass(frozen=True)
class _CropCells:
    shape: tuple[int, int]
    centroids: np.ndarray  # (n, 2) float, every cell
    all_radii: np.ndarray  # (n,) equivalent radius of every cell
    radii: np.ndarray  # (m,) equivalent radius of cells not touching the border
    weights: np.ndarray  # (m,) minus-sampling weights of those cells
    deviations: np.ndarray  # (m,) relative radial deviation of their outlines


def _crop_cells(mask: np.ndarray, morphology: bool = True) -> _CropCells:
    """Centroids and sizes of every cell and, with ``morphology``, outlines of border-free cells."""
    height, width = mask.shape
    ids, areas = np.unique(mask[mask > 0], return_counts=True)
    centroids = np.array(ndi.center_of_mass(np.ones(mask.shape), mask, ids), float).reshape(-1, 2)
    radii, weights, deviations = [], [], []
    for region in regionprops(mask) if morphology else ():
        top, left, bottom, right = region.bbox
        if top == 0 or left == 0 or bottom == height or right == width:
            continue
        radii.append(math.sqrt(region.area / math.pi))
        weights.append(1.0 / max((height - (bottom - top)) * (width - (right - left)), 1))
        deviations.append(_radial_deviation(region.image))
    return _CropCells(
        shape=(height, width),
        centroids=centroids,
        all_radii=np.sqrt(areas / math.pi),
        radii=np.asarray(radii, float),
        weights=np.asarray(weights, float),
        deviations=np.asarray(deviations, float),
    )


def _radial_deviation(image: np.ndarray) -> float:
    """Relative std of the (sub-pixel) outline's distance to the centroid of a binary cell image."""
    padded = np.pad(image.astype(float), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        return 0.0
    outline = max(contours, key=len)
    centre = np.array(ndi.center_of_mass(padded))
    rho = np.hypot(*(outline - centre).T)
    return float(rho.std() / rho.mean()) if rho.mean() > 0 else 0.0


def _uniform_range(radii: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Method-of-moments range ``(a, b)`` of a uniform distribution from weighted samples."""
    mean = float(np.average(radii, weights=weights))
    std = float(np.sqrt(np.average((radii - mean) ** 2, weights=weights)))
    return mean - math.sqrt(3) * std, mean + math.sqrt(3) * std


def _isolated_cells(
    radii: np.ndarray, irregularity: float, n_vertices: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Equivalent radii and radial deviations of simulated cells drawn alone on a blank canvas."""
    equivalent, deviations = [], []
    for radius in radii:
        rows, cols = cell_outline(max(radius, 0.5), irregularity, n_vertices, rng)
        half = int(np.ceil(max(np.abs(rows).max(), np.abs(cols).max()))) + 2
        canvas = np.zeros((2 * half + 1, 2 * half + 1), bool)
        offset = half + rng.uniform(-0.5, 0.5, 2)  # random sub-pixel position, as in a crop
        canvas[polygon(rows + offset[0], cols + offset[1], canvas.shape)] = True
        if not canvas.any():
            continue
        equivalent.append(math.sqrt(canvas.sum() / math.pi))
        deviations.append(_radial_deviation(canvas))
    return np.asarray(equivalent, float), np.asarray(deviations, float)


def _calibrate_irregularity(
    observed: float, low: float, high: float, n_vertices: int, rng: np.random.Generator
) -> float:
    """Vertex noise whose simulated median radial deviation matches ``observed``."""
    radii = np.linspace(max(low, 0.5), max(high, low, 0.5), 60)
    medians = np.array(
        [np.median(_isolated_cells(radii, s, n_vertices, rng)[1]) for s in _IRREGULARITY_GRID]
    )
    medians = np.maximum.accumulate(medians)  # monotone for interpolation despite sampling noise
    return float(np.interp(observed, medians, _IRREGULARITY_GRID))


def _fit_clusters(
    crops: Sequence[_CropCells], min_spread: float, n_clusters: int | None = None
) -> tuple[int, float, float]:
    """``(n_clusters, cluster_spread, p_unclustered)`` by per-crop EM and BIC summed over crops.

    ``n_clusters`` given: fit that many clusters instead of selecting by BIC,
    which considers at most a third of the median number of cells per crop.
    """
    usable = [crop for crop in crops if len(crop.centroids) >= 3]
    if not usable:
        return n_clusters or 1, SimcepParams.cluster_spread, 1.0
    counts = np.array([len(crop.centroids) for crop in usable], float)
    largest = max(1, min(MAX_CLUSTERS, int(np.median(counts)) // 3))
    candidates = [n_clusters] if n_clusters else range(1, largest + 1)
    rng = np.random.default_rng(_CALIBRATION_SEED)
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for k in candidates:
        log_likelihood, spreads, p_uniform = _em_mixture(usable, k, rng, min_spread)
        # Parameters per crop: 2k means, k - 1 weights, the spread and the uniform weight.
        bic = float((-2 * log_likelihood + (3 * k + 1) * np.log(counts)).sum())
        if best is None or bic < best[0]:
            best = (bic, k, spreads, p_uniform)
    _, k, spreads, p_uniform = best
    clustered = counts * (1 - p_uniform)
    spread = float(np.average(spreads, weights=clustered)) if clustered.sum() > 0 else float(spreads.mean())
    return k, spread, float(np.average(p_uniform, weights=counts))


def _em_mixture(
    crops: Sequence[_CropCells], k: int, rng: np.random.Generator, min_spread: float, restarts: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for ``p U(crop) + (1 - p) sum_j w_j N(mu_j, s^2 I)`` on each crop's centroids.

    All crops and ``restarts`` k-means++ seedings per crop run as one batch
    (centroid lists padded to one length and masked), best restart kept.

    Returns
    -------
    log_likelihood, spread, p
        ``(n_crops,)`` float64 each.
    """
    n_crops, n_max = len(crops), max(len(crop.centroids) for crop in crops)
    batch = n_crops * restarts
    points = np.zeros((batch, n_max, 2))
    valid = np.zeros((batch, n_max))
    means = np.zeros((batch, k, 2))
    area = np.zeros(batch)
    for c, crop in enumerate(crops):
        for r in range(restarts):
            b = c * restarts + r
            points[b, : len(crop.centroids)] = crop.centroids
            valid[b, : len(crop.centroids)] = 1.0
            means[b] = _kmeans_plus_plus(crop.centroids, k, rng)
            area[b] = crop.shape[0] * crop.shape[1]
    n = valid.sum(axis=1)
    min_variance = max(min_spread, 0.5) ** 2
    weights = np.full((batch, k), 1.0 / k)
    p = np.full(batch, 0.1)
    variance = (np.sqrt(area) / (2 * k + 2)) ** 2
    log_likelihood = np.full(batch, -np.inf)
    # Problems converge at very different speeds: iterate only on those still moving.
    active = np.arange(batch)
    for _iteration in range(300):
        pts, val, mu, var = points[active], valid[active], means[active], variance[active, None, None]
        # Squared distances (B, n, k), one coordinate at a time: a trailing axis of 2 is slow.
        sq = (pts[:, :, None, 0] - mu[:, None, :, 0]) ** 2 + (pts[:, :, None, 1] - mu[:, None, :, 1]) ** 2
        gauss = np.exp(-sq / (2 * var)) / (2 * np.pi * var)
        clustered = (1 - p[active])[:, None, None] * weights[active, None, :] * gauss
        density = np.maximum((p[active] / area[active])[:, None] + clustered.sum(axis=2), 1e-300)  # (B, n)
        current = (np.log(density) * val).sum(axis=1)
        moving = current - log_likelihood[active] > 1e-4  # log-likelihood units; far below BIC steps
        log_likelihood[active] = current
        active = active[moving]
        if active.size == 0:
            break
        pts, val, sq = pts[moving], val[moving], sq[moving]
        resp = clustered[moving] / density[moving, :, None] * val[:, :, None]  # (B, n, k), padding has none
        mass = resp.sum(axis=1)  # (B, k)
        total = np.maximum(mass.sum(axis=1), 1e-12)
        p[active] = np.clip(1 - total / n[active], 0.0, 1.0)
        weights[active] = mass / total[:, None]
        fitted = (resp.transpose(0, 2, 1) @ pts) / np.maximum(mass, 1e-12)[:, :, None]
        means[active] = np.where(mass[:, :, None] > 1e-9, fitted, means[active])  # an emptied component stays put
        variance[active] = np.maximum((resp * sq).sum(axis=(1, 2)) / (2 * total), min_variance)
    best = np.argmax(log_likelihood.reshape(n_crops, restarts), axis=1) + restarts * np.arange(n_crops)
    return log_likelihood[best], np.sqrt(variance[best]), p[best]


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k, 2)`` initial means, spread out (k-means++ seeding)."""
    chosen = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        distance = ((points[:, None, :] - np.array(chosen)[None]) ** 2).sum(axis=2).min(axis=1)
        total = distance.sum()
        index = rng.choice(len(points), p=distance / total) if total > 0 else rng.integers(len(points))
        chosen.append(points[index])
    return np.array(chosen, float)


# ----------------------------------------------------------------------------- image model


def render_simcep_image(
    labels: np.ndarray,
    seed: int,
    background: float = 0.1,
    cell_intensity: float = 0.6,
    intensity_variation: float = 0.15,
    texture: float = 0.25,
    texture_scale: float = 1.5,
    blur_sigma: float = 1.0,
    illumination: float = 0.3,
    photons: float = 200.0,
    read_noise: float = 0.01,
) -> np.ndarray:
    """SIMCEP-style fluorescence image of a label mask.

    Each cell gets a brightness ``cell_intensity * (1 + U(-v, v))`` modulated by
    a smooth random texture (Gaussian-filtered noise of scale ``texture_scale``
    px and relative amplitude ``texture``, standing in for SIMCEP's Perlin
    noise), on a ``background`` level. The optics blur it with a Gaussian PSF
    of ``blur_sigma`` px; the illumination falls off quadratically by up to
    ``illumination`` (relative) from a random bright point; the camera adds
    Poisson shot noise (``photons`` at intensity 1) and Gaussian read noise.

    Parameters
    ----------
    labels
        ``(H, W)`` integer labels, 0 = background.
    seed
        Random seed; the image is a deterministic function of the inputs.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float32 in [0, 1].
    """
    labels = check_masks([labels], "simcep.render_simcep_image")[0]
    if not 0 <= illumination < 1 or photons <= 0 or blur_sigma < 0 or read_noise < 0 or texture < 0:
        raise ValueError(
            "simcep.render_simcep_image: need 0 <= illumination < 1, photons > 0, blur_sigma >= 0, "
            "read_noise >= 0 and texture >= 0"
        )
    rng = np.random.default_rng(seed)
    height, width = labels.shape
    brightness = cell_intensity * (1 + rng.uniform(-intensity_variation, intensity_variation, labels.max() + 1))
    brightness[0] = background
    grain = ndi.gaussian_filter(rng.standard_normal(labels.shape), texture_scale)
    grain /= max(float(grain.std()), 1e-12)
    image = brightness[labels] * np.where(labels > 0, 1 + texture * grain, 1.0)
    if blur_sigma > 0:
        image = ndi.gaussian_filter(image, blur_sigma)
    bright_spot = rng.uniform((0, 0), (height, width))
    yy, xx = np.mgrid[:height, :width]
    distance2 = ((yy - bright_spot[0]) ** 2 + (xx - bright_spot[1]) ** 2) / float(height**2 + width**2)
    image = image * (1 - illumination * distance2)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons + read_noise * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1).astype(np.float32)
