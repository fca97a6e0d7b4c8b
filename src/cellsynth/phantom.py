"""Deterministic phantom tissue: H&E-like images with nuclear instance masks.

The project's built-in demo data. Its layout carries *global structure* that a
parametric cell-population simulator (SIMCEP: random blobs in clusters) does not
model, so a generator that learns layout has something to learn:

* **glands** -- one layer of touching, radially elongated epithelial nuclei
  around an empty lumen, with eosinophilic cytoplasm and cell membranes;
* **stroma** -- sparse spindle-shaped nuclei aligned with a smooth flow field
  (from a random stream function, bent to wrap around glands), plus a few small
  round immune-cell nuclei;
* a smooth **density map** that makes stroma crowded in some regions and loose
  in others.

Cell sizes are fixed in pixels (not scaled with the image size) so that crops of
any image share one scale: gland nuclei about 11-15 x 7-10 px, spindles about
20-28 x 6-8 px, immune nuclei 8-11 px across.

Rendering imitates brightfield H&E: hematoxylin and eosin concentration maps
are turned into RGB by Beer-Lambert absorption with the Ruifrok & Johnston stain
vectors, then blurred, unevenly illuminated and corrupted by shot and read
noise. Nuclei are purple/blue with chromatin texture and a darker rim; cytoplasm
and collagen are pink; lumina are near white.

Public entry points are :func:`demo_dataset` and :func:`phantom_tissue`;
:func:`generate_layout` and :func:`render_image` expose the two stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

MIN_SIZE = 64
MIN_OBJECT_AREA = 30

# Optical densities per unit concentration, rows (R, G, B); Ruifrok & Johnston 2001.
_HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
_EOSIN_OD = np.array([0.07, 0.99, 0.11])

# Correlation lengths (px) of the smooth random fields; fixed, like cell sizes.
_DENSITY_SCALE = 160.0
_FLOW_SCALE = 110.0
_ILLUMINATION_SCALE = 300.0
# Largest gland-cell height relative to the gland's nominal thickness.
_MAX_HEIGHT = 1.15
_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


class CellType(IntEnum):
    """Kind of each labelled nucleus (index 0 of a per-label array is background)."""

    BACKGROUND = 0
    GLAND = 1
    SPINDLE = 2
    IMMUNE = 3


@dataclass(frozen=True)
class TissueLayout:
    """Geometry of one phantom, everything :func:`render_image` needs.

    Attributes
    ----------
    labels
        ``(H, W)`` int32 nuclear instance labels, 0 = background, 1..N sequential.
    cell_type
        ``(N + 1,)`` uint8, :class:`CellType` of each label (entry 0 = background).
    cytoplasm
        ``(H, W)`` int32 territory of each gland cell (nucleus plus surrounding
        cytoplasm), one id per cell, 0 outside glands. Boundaries between ids
        are cell membranes.
    lumen
        ``(H, W)`` bool, gland lumina.
    orientation
        ``(H, W)`` float64 local stroma fibre direction, radians; the direction
        vector is ``(row, col) = (sin, cos)`` of the angle, axial (mod pi).
    density
        ``(H, W)`` float64 in (0, 1], the smooth stromal cell density map.
    """

    labels: np.ndarray
    cell_type: np.ndarray
    cytoplasm: np.ndarray
    lumen: np.ndarray
    orientation: np.ndarray
    density: np.ndarray


def demo_dataset(
    n_images: int = 10, size: int = 512, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate a list of phantom tissue images with nuclear instance masks.

    Image ``i`` depends only on ``(seed, i)``, so a shorter dataset is a prefix
    of a longer one with the same seed and size.

    Parameters
    ----------
    n_images
        Number of samples, >= 1.
    size
        Side length in pixels of each square image, >= 64.
    seed
        Base random seed.

    Returns
    -------
    list of (image, labels)
        ``image`` is ``(size, size, 3)`` uint8 RGB; ``labels`` is ``(size, size)``
        int32 with 0 = background and objects numbered 1..N.

    Raises
    ------
    ValueError
        If ``n_images`` < 1 or ``size`` < 64.
    """
    if int(n_images) != n_images or n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
    _check_size(size)
    return [phantom_tissue(size, np.random.default_rng([seed, i])) for i in range(n_images)]


def phantom_tissue(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Generate one phantom tissue sample.

    Parameters
    ----------
    size
        Side length in pixels, >= 64.
    rng
        Source of randomness; the output is a deterministic function of its state.

    Returns
    -------
    image : np.ndarray
        ``(size, size, 3)`` uint8 H&E-like RGB image.
    labels : np.ndarray
        ``(size, size)`` int32 nuclear instance labels, 0 = background, 1..N.
    """
    layout = generate_layout(size, rng)
    return render_image(layout, rng), layout.labels


def generate_layout(size: int, rng: np.random.Generator) -> TissueLayout:
    """Lay out glands, then stroma around them, as non-overlapping objects.

    Parameters
    ----------
    size
        Side length in pixels, >= 64.
    rng
        Source of randomness.

    Returns
    -------
    TissueLayout
        Labels are cleaned: each object is one 4-connected component of at least
        ``MIN_OBJECT_AREA`` pixels (objects clipped by the image border to less
        are dropped), numbered 1..N.
    """
    _check_size(size)
    shape = (size, size)
    density = 0.05 + 0.95 / (1.0 + np.exp(-2.2 * smooth_noise(shape, _DENSITY_SCALE, rng)))
    labels = np.zeros(shape, np.int32)
    types = [CellType.BACKGROUND]
    glands = place_glands(labels, types, density, rng)
    orientation = flow_orientation(shape, glands.centres, glands.radii, rng)
    place_stroma(labels, types, glands.blocked, density, orientation, rng)
    labels, cell_type = _clean_labels(labels, np.asarray(types, np.uint8))
    return TissueLayout(labels, cell_type, glands.cytoplasm, glands.lumen, orientation, density)


def smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian random field with correlation length ``scale`` pixels.

    A cubic B-spline surface whose control points on a grid of spacing
    ``scale`` are white noise. Evaluated as ``B_rows @ noise @ B_cols.T`` with
    1-D basis matrices, which is far cheaper than a wide Gaussian filter or
    spline zoom at full resolution.

    Returns
    -------
    np.ndarray
        ``shape`` float64 array, zero mean and unit standard deviation.
    """
    b_rows, b_cols = _bspline_basis(shape[0], scale), _bspline_basis(shape[1], scale)
    coarse = b_rows @ rng.standard_normal((b_rows.shape[1], b_cols.shape[1]))
    # einsum, not BLAS, for the large product with a tiny inner dimension:
    # measured ~5x faster here and it spawns no threads.
    field = np.einsum("ik,jk->ij", coarse, b_cols)
    return (field - field.mean()) / max(field.std(), 1e-12)


def _bspline_basis(n: int, scale: float) -> np.ndarray:
    """``(n, k)`` cubic B-spline weights of ``k`` control points spaced ``scale`` px."""
    t = np.arange(n) / scale + 1.0  # one control point before pixel 0
    k = int(np.ceil((n - 1) / scale)) + 3
    x = np.abs(t[:, None] - np.arange(k)[None, :])
    return np.where(x < 1, 2 / 3 - x**2 + x**3 / 2, np.where(x < 2, (2 - x) ** 3 / 6, 0.0))


@dataclass(frozen=True)
class _Glands:
    centres: np.ndarray  # (G, 2) float, (row, col)
    radii: np.ndarray  # (G,) float, outer radius of the whole gland footprint
    lumen: np.ndarray  # (H, W) bool
    cytoplasm: np.ndarray  # (H, W) int32 cell territories
    blocked: np.ndarray  # (H, W) bool, footprint plus margin: no stroma here


def place_glands(
    labels: np.ndarray, types: list[CellType], density: np.ndarray, rng: np.random.Generator
) -> _Glands:
    """Draw non-overlapping glands into ``labels`` (in place) and extend ``types``.

    Each gland is an irregular round lumen, an apical cytoplasm band, a ring of
    touching nuclei (one per angular sector, rounded on the basal side) and a
    basal cytoplasm band. The first gland lies fully inside the image so every
    sample shows at least one closed lumen; later ones may be cut by the border.
    Gland centres are accepted with probability rising with ``density``.
    """
    size = labels.shape[0]
    lumen = np.zeros(labels.shape, bool)
    cytoplasm = np.zeros(labels.shape, np.int32)
    blocked = np.zeros(labels.shape, bool)
    # Keep a whole gland plus a little stroma inside small images.
    max_radius = min(80.0, 0.42 * size)
    n_target = max(1, rng.poisson(size * size / 170.0**2))
    centres: list[np.ndarray] = []
    radii: list[float] = []
    next_cell = 1
    for _ in range(30 * n_target):
        if len(centres) == n_target:
            break
        bands = (rng.uniform(2.5, 5.0), rng.uniform(11.0, 15.0), rng.uniform(3.0, 5.0))
        shell = bands[0] + _MAX_HEIGHT * bands[1] + bands[2]
        # Log-uniform lumen radius: many small glands, a few large ones.
        r0 = np.exp(rng.uniform(np.log(9.0), np.log(max(9.0, (max_radius - shell) / 1.3))))
        harmonics = (rng.uniform(0.0, 0.25), rng.uniform(0.0, 0.07))
        outer = r0 * (1.0 + sum(harmonics)) + shell
        if not centres:
            # Centred when a whole gland cannot fit (the smallest images).
            lo, hi = min(outer + 1.0, size / 2), max(size - outer - 1.0, size / 2)
            centre = rng.uniform(lo, hi, 2)
        else:
            centre = rng.uniform(-0.3 * outer, size + 0.3 * outer, 2)
            inside = np.clip(centre.astype(int), 0, size - 1)
            if rng.random() > np.sqrt(density[inside[0], inside[1]]):
                continue
            gaps = np.hypot(*(np.asarray(centres) - centre).T) - np.asarray(radii) - outer
            if gaps.min() < 4.0:
                continue
        next_cell = _draw_gland(
            labels, lumen, cytoplasm, blocked, centre, outer, r0, harmonics, bands, next_cell, rng
        )
        centres.append(centre)
        radii.append(outer)
    types.extend([CellType.GLAND] * (next_cell - len(types)))
    return _Glands(np.asarray(centres), np.asarray(radii), lumen, cytoplasm, blocked)


def _draw_gland(
    labels: np.ndarray,
    lumen: np.ndarray,
    cytoplasm: np.ndarray,
    blocked: np.ndarray,
    centre: np.ndarray,
    outer: float,
    r0: float,
    harmonics: tuple[float, float],
    bands: tuple[float, float, float],
    next_cell: int,
    rng: np.random.Generator,
) -> int:
    """Rasterise one gland in a local window; return the next free cell id."""
    apical, thickness, basal = bands
    half = int(np.ceil(outer)) + 4
    cy, cx = (int(round(c)) for c in centre)
    # The full (unclipped) window keeps the lumen distance map exact when the
    # gland is cut by the image border.
    yy, xx = np.mgrid[cy - half : cy + half + 1, cx - half : cx + half + 1].astype(float)
    dy, dx = yy - centre[0], xx - centre[1]
    phi = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    a2, a3 = rng.uniform(0, 2 * np.pi, 2)
    wobble = harmonics[0] * np.cos(2 * (phi - a2)) + harmonics[1] * np.cos(3 * (phi - a3))
    r_lumen = r0 * (1 + wobble)
    in_lumen = np.hypot(dy, dx) <= r_lumen
    depth = ndi.distance_transform_edt(~in_lumen)

    # Angular sectors of roughly one nucleus width at mid-nucleus radius.
    width = rng.uniform(7.5, 9.5)
    n_cells = max(6, int(round(2 * np.pi * (r0 + apical + thickness / 2) / width)))
    step = 2 * np.pi / n_cells
    edges = rng.uniform(0, step) + step * (np.arange(n_cells) + rng.uniform(-0.22, 0.22, n_cells))
    # Angles relative to the first edge, so the last sector ends at 2 pi.
    phi_rel = np.mod(phi - edges[0], 2 * np.pi)
    edges = edges - edges[0]
    sector = np.searchsorted(edges, phi_rel, side="right") - 1
    span = np.diff(np.append(edges, 2 * np.pi))[sector]
    frac = (phi_rel - edges[sector]) / span

    # Per-cell height, rounded basal end: sector edges reach 72 % of the height,
    # so neighbours share a border along most of their length.
    height = rng.uniform(2 - _MAX_HEIGHT, _MAX_HEIGHT, n_cells)[sector] * thickness
    top = apical + height * (0.72 + 0.28 * np.sin(np.pi * frac))
    nucleus = (depth > apical) & (depth <= top)
    territory = (depth > 0) & (depth <= apical + height + basal)
    footprint = depth <= apical + _MAX_HEIGHT * thickness + basal + 3.0

    # Paste the part of the window that lies inside the image.
    size_r, size_c = labels.shape
    r_lo, r_hi = max(cy - half, 0), min(cy + half + 1, size_r)
    c_lo, c_hi = max(cx - half, 0), min(cx + half + 1, size_c)
    if r_lo >= r_hi or c_lo >= c_hi:
        return next_cell
    win = np.s_[r_lo - (cy - half) : r_hi - (cy - half), c_lo - (cx - half) : c_hi - (cx - half)]
    img = np.s_[r_lo:r_hi, c_lo:c_hi]
    ids = (next_cell + sector)[win]
    labels[img] = np.where(nucleus[win], ids, labels[img])
    cytoplasm[img] = np.where(territory[win], ids, cytoplasm[img])
    lumen[img] |= in_lumen[win]
    blocked[img] |= footprint[win]
    return next_cell + n_cells


def flow_orientation(
    shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Axial orientation field of stroma: a random flow that wraps around glands.

    The flow is the curl of a smooth random stream function; near each gland
    it is blended with the tangential direction. Blending is done on doubled
    angles, since orientations are axial (theta and theta + pi are the same).

    Returns
    -------
    np.ndarray
        ``shape`` float64 angles in (-pi/2, pi/2]; direction ``(row, col) =
        (sin, cos)``.
    """
    psi = smooth_noise(shape, _FLOW_SCALE, rng)
    d_row, d_col = np.gradient(psi)
    # Velocity of a stream function: v_col = dpsi/drow, v_row = -dpsi/dcol.
    theta = np.arctan2(-d_col, d_row)
    jc, js = np.cos(2 * theta), np.sin(2 * theta)
    reach = 60.0  # beyond this the tangential pull is negligible
    for centre, radius in zip(centres, radii):
        half = int(np.ceil(radius + reach))
        r_lo, r_hi = max(int(centre[0]) - half, 0), min(int(centre[0]) + half + 1, shape[0])
        c_lo, c_hi = max(int(centre[1]) - half, 0), min(int(centre[1]) + half + 1, shape[1])
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        dy = np.arange(r_lo, r_hi)[:, None] - centre[0]
        dx = np.arange(c_lo, c_hi)[None, :] - centre[1]
        dist2 = np.maximum(dy * dy + dx * dx, 1e-9)
        weight = 2.0 * np.exp(-np.maximum(np.sqrt(dist2) - radius, 0.0) / 18.0)
        # Doubled tangent angle 2 (a + pi/2) of radial angle a, without trig:
        # cos = -(dx^2 - dy^2) / r^2, sin = -2 dx dy / r^2.
        jc[r_lo:r_hi, c_lo:c_hi] -= weight * (dx * dx - dy * dy) / dist2
        js[r_lo:r_hi, c_lo:c_hi] -= weight * 2 * dx * dy / dist2
    return 0.5 * np.arctan2(js, jc)


def place_stroma(
    labels: np.ndarray,
    types: list[CellType],
    blocked: np.ndarray,
    density: np.ndarray,
    orientation: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Scatter spindle and immune nuclei outside glands (in place).

    Random sequential addition: candidates are thinned by ``density``, oriented
    along ``orientation`` and kept only if they do not come within two pixels of
    an earlier object (``blocked`` is updated), so stroma nuclei never touch.
    """
    size_r, size_c = labels.shape
    # About one candidate per 120 px^2: sparse enough that fill stays roughly
    # proportional to density instead of saturating at jamming.
    n = int(size_r * size_c / 120)
    rows = rng.uniform(0, size_r, n)
    cols = rng.uniform(0, size_c, n)
    keep = rng.random(n) < density[rows.astype(int), cols.astype(int)]
    immune = rng.random(n) < 0.12
    major = np.where(immune, rng.uniform(4.0, 5.5, n), rng.uniform(10.0, 14.0, n))
    minor = np.where(immune, major * rng.uniform(0.85, 1.0, n), rng.uniform(3.0, 4.0, n))
    angle = orientation[rows.astype(int), cols.astype(int)] + rng.normal(0.0, 0.12, n)
    bend = np.where(immune, 0.0, rng.uniform(-0.015, 0.015, n))
    # Cheap vectorised pre-rejection before the per-candidate loop.
    keep &= ~blocked[rows.astype(int), cols.astype(int)]
    cos, sin = np.cos(angle), np.sin(angle)
    inv_major2, inv_minor2 = major**-2.0, minor**-2.0
    gap = 2.0
    next_label = len(types)
    for i in np.flatnonzero(keep):
        half = int(np.ceil(major[i] + gap)) + 1
        r, c = rows[i], cols[i]
        r_lo, r_hi = max(int(r) - half, 0), min(int(r) + half + 1, size_r)
        c_lo, c_hi = max(int(c) - half, 0), min(int(c) + half + 1, size_c)
        dy = np.arange(r_lo, r_hi)[:, None] - r
        dx = np.arange(c_lo, c_hi)[None, :] - c
        u = dx * cos[i] + dy * sin[i]
        v = dy * cos[i] - dx * sin[i] - bend[i] * u * u
        body = (u * u) * inv_major2[i] + (v * v) * inv_minor2[i] <= 1.0
        win = np.s_[r_lo:r_hi, c_lo:c_hi]
        if not body.any() or (blocked[win] & body).any():
            continue
        halo = (u / (major[i] + gap)) ** 2 + (v / (minor[i] + gap)) ** 2 <= 1.0
        labels[win][body] = next_label
        blocked[win] |= halo
        types.append(CellType.IMMUNE if immune[i] else CellType.SPINDLE)
        next_label += 1


def _clean_labels(labels: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep each object's largest 4-connected part, drop small ones, renumber."""
    out = labels.copy()
    for index, window in enumerate(ndi.find_objects(labels)):
        if window is None:
            continue
        own = labels[window] == index + 1
        parts, n_parts = ndi.label(own, _FOUR_CONNECTED)
        if n_parts > 1:
            sizes = np.bincount(parts.ravel())[1:]
            own_largest = parts == 1 + int(np.argmax(sizes))
            out[window][own & ~own_largest] = 0
            own = own_largest
        if own.sum() < MIN_OBJECT_AREA:
            out[window][own] = 0
    survivors = np.unique(out)
    survivors = survivors[survivors > 0]
    lut = np.zeros(len(types), np.int32)
    lut[survivors] = np.arange(1, survivors.size + 1)
    return lut[out], np.concatenate([[CellType.BACKGROUND], types[survivors]]).astype(np.uint8)


def render_image(layout: TissueLayout, rng: np.random.Generator) -> np.ndarray:
    """Render an H&E-like brightfield image of a layout.

    Hematoxylin marks nuclei (per-nucleus stain level, chromatin texture, darker
    rim), eosin marks gland cytoplasm (with membranes), collagen fibres along
    the stroma orientation and a faint background. Concentrations become RGB by
    Beer-Lambert absorption; then optical blur, smooth uneven illumination,
    shot noise and read noise are applied.

    Parameters
    ----------
    layout
        Output of :func:`generate_layout`.
    rng
        Source of randomness.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8 RGB image.
    """
    labels, shape = layout.labels, layout.labels.shape
    nuclei = labels > 0
    gland_tissue = layout.cytoplasm > 0
    stroma = ~(gland_tissue | layout.lumen)

    # Per-nucleus stain level: immune darkest, spindles dark, gland nuclei paler.
    level_by_type = np.array([0.0, 0.85, 1.15, 1.55], np.float32)
    jitter = rng.uniform(0.8, 1.2, layout.cell_type.size).astype(np.float32)
    level = level_by_type[layout.cell_type] * jitter
    chromatin = _fine_noise(shape, 0.9, rng)
    rim = find_boundaries(labels, mode="inner") & nuclei
    hema = level[labels] * (1.0 + 0.22 * chromatin + 0.35 * rim)
    hema += 0.08 * gland_tissue  # faint basophilia of epithelial cytoplasm

    fibres = _collagen_fibres(layout.orientation, stroma, rng)
    background = 0.22 + 0.06 * smooth_noise(shape, 60.0, rng) + 0.1 * layout.density
    membrane = find_boundaries(layout.cytoplasm, mode="inner") & gland_tissue & ~nuclei
    eosin = np.where(stroma, background + 0.35 * fibres, 0.0).astype(np.float32)
    cytoplasm = 0.55 + 0.05 * smooth_noise(shape, 20.0, rng)
    eosin += np.where(gland_tissue, cytoplasm, 0.0).astype(np.float32)
    eosin += 0.3 * membrane + 0.12 * nuclei + 0.04 * layout.lumen
    eosin *= 1.0 + 0.3 * _fine_noise(shape, 1.5, rng)  # uneven stain uptake

    np.clip(hema, 0, None, out=hema)
    np.clip(eosin, 0, None, out=eosin)
    od = (
        hema[..., None] * _HEMATOXYLIN_OD.astype(np.float32)
        + eosin[..., None] * _EOSIN_OD.astype(np.float32)
    )
    intensity = 245.0 * np.exp(-od)
    intensity = ndi.gaussian_filter(intensity, (rng.uniform(0.7, 1.2),) * 2 + (0,))
    illumination = 1.0 + 0.06 * smooth_noise(shape, _ILLUMINATION_SCALE, rng)
    intensity *= illumination.astype(np.float32)[..., None]
    # Shot noise (variance proportional to signal) plus read noise.
    noise_sd = np.sqrt(0.6 * np.maximum(intensity, 0) + 4.0)
    intensity += noise_sd * rng.standard_normal(intensity.shape, dtype=np.float32)
    return np.clip(np.rint(intensity), 0, 255).astype(np.uint8)


def _fine_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``shape`` float32 white noise blurred by ``sigma`` px, rescaled to unit std."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return noise / noise.std()


def _collagen_fibres(
    orientation: np.ndarray, stroma: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Short straight collagen strokes along the local stroma orientation.

    Returns
    -------
    np.ndarray
        ``orientation.shape`` float64 fibre map in [0, ~1], zero outside ``stroma``.
    """
    size_r, size_c = orientation.shape
    n = int(size_r * size_c / 250)
    rows = rng.uniform(0, size_r, n)
    cols = rng.uniform(0, size_c, n)
    half = rng.uniform(8.0, 22.0, n)
    strength = rng.uniform(0.4, 1.0, n)
    angle = orientation[rows.astype(int), cols.astype(int)]
    # Splat sub-pixel samples of all strokes at once, each carrying stain in
    # proportion to the stroke length it stands for; the blur below hides the
    # lack of anti-aliasing.
    n_samples = 64
    t = np.linspace(-1.0, 1.0, n_samples)
    pr = np.rint(rows[:, None] + np.sin(angle)[:, None] * half[:, None] * t).astype(int)
    pc = np.rint(cols[:, None] + np.cos(angle)[:, None] * half[:, None] * t).astype(int)
    ok = (pr >= 0) & (pr < size_r) & (pc >= 0) & (pc < size_c)
    step = 2.0 * half / (n_samples - 1)
    weight = np.broadcast_to((strength * step)[:, None], pr.shape)[ok]
    fibres = np.bincount((pr * size_c + pc)[ok], weight, size_r * size_c).reshape(size_r, size_c)
    return ndi.gaussian_filter(np.minimum(fibres, 1.0).astype(np.float32), 0.6) * stroma


def _check_size(size: int) -> None:
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
