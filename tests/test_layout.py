"""Tests of the layout and morphology statistics of mask sets."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import disk_labels
from skimage.draw import ellipse

from cellsynth.crops import extract_crops
from cellsynth.layout import RIPLEY_RADII, compare_layouts, layout_statistics
from cellsynth.phantom import demo_dataset
from cellsynth.simcep import fit, simulate

LATTICE = [(8 + 16 * i, 8 + 16 * j) for i in range(4) for j in range(4)]


def lattice(radius: int = 3) -> np.ndarray:
    """``(64, 64)`` 4x4 disks on a 16 px square lattice, none touching the border."""
    return disk_labels((64, 64), LATTICE, radius)


def points_as_labels(points: np.ndarray, size: int) -> np.ndarray:
    """One single-pixel object per (distinct) integer point."""
    labels = np.zeros((size, size), np.int32)
    labels[points[:, 0], points[:, 1]] = np.arange(1, len(points) + 1)
    return labels


def ellipses(angles: np.ndarray, spacing: int = 20, size: int = 100) -> np.ndarray:
    """Ellipses (semi-axes 7 and 3) on a square lattice, row-major, at the given major-axis angles."""
    labels = np.zeros((size, size), np.int32)
    steps = range(size // spacing)
    centres = [(spacing // 2 + spacing * i, spacing // 2 + spacing * j) for i in steps for j in steps]
    for index, ((row, col), angle) in enumerate(zip(centres, angles), start=1):
        labels[ellipse(row, col, 3, 7, (size, size), rotation=angle)] = index
    return labels


def test_lattice_statistics_are_exact() -> None:
    stats = layout_statistics([lattice()])
    disk_area = np.count_nonzero(lattice() == 1)
    np.testing.assert_array_equal(stats["cells_per_crop"], [16])
    np.testing.assert_array_equal(stats["area"], np.full(16, disk_area))
    assert np.all(stats["eccentricity"] < 0.2)
    np.testing.assert_allclose(stats["nn_distance"], 16.0)
    assert stats["ripley_l"].shape == (1, len(RIPLEY_RADII))
    radii = np.asarray(RIPLEY_RADII)
    # No pair is closer than the lattice spacing: K = 0, so L(r) - r = -r.
    np.testing.assert_allclose(stats["ripley_l"][0, radii < 16], -radii[radii < 16])
    assert np.all(stats["ripley_l"][0, radii >= 16] > -radii[radii >= 16])


def test_empty_and_single_cell_crops_add_no_neighbour_statistics() -> None:
    single = disk_labels((64, 64), [(30, 30)], 4)
    stats = layout_statistics([np.zeros((64, 64), np.int32), single])
    np.testing.assert_array_equal(stats["cells_per_crop"], [0, 1])
    assert stats["area"].shape == (1,)
    assert stats["nn_distance"].size == 0 and stats["orientation_coherence"].size == 0
    assert stats["ripley_l"].shape == (0, len(RIPLEY_RADII))
    distances = compare_layouts([single, single], [lattice()])
    assert np.isnan(distances["nn_distance"]) and np.isnan(distances["ripley_l"])
    assert distances["cells_per_crop"] == pytest.approx(15.0)


def test_border_cells_are_left_out_of_morphology_only() -> None:
    labels = disk_labels((64, 64), [(2, 30), (30, 30)], 5)  # the first is cut by the top border
    stats = layout_statistics([labels])
    assert stats["area"].shape == (1,)
    assert stats["area"][0] == np.count_nonzero(labels == 2)
    np.testing.assert_allclose(stats["nn_distance"], [28.0, 28.0], atol=1.0)


def test_ripley_l_is_zero_for_random_points_and_positive_for_clusters() -> None:
    rng = np.random.default_rng(3)
    size, n = 128, 40
    random_crops = [
        points_as_labels(np.array(np.unravel_index(rng.choice(size * size, n, replace=False), (size, size))).T, size)
        for _ in range(100)
    ]
    mean_random = layout_statistics(random_crops)["ripley_l"].mean(axis=0)
    # Without edge correction the mean drifts to -2.9 px at r = 28 and -3.6 px at r = 32.
    np.testing.assert_allclose(mean_random, 0.0, atol=0.6)
    clustered_crops = []
    for _ in range(20):
        centres = rng.uniform(20, 108, (3, 2))
        points = np.clip(np.rint(centres[rng.integers(3, size=n)] + rng.normal(0, 5, (n, 2))), 0, size - 1)
        clustered_crops.append(points_as_labels(np.unique(points.astype(int), axis=0), size))
    mean_clustered = layout_statistics(clustered_crops)["ripley_l"].mean(axis=0)
    assert np.all(mean_clustered[np.asarray(RIPLEY_RADII) <= 16] > 3.0)


def test_orientation_coherence_tells_aligned_from_crossed_and_random() -> None:
    n = 25
    aligned = layout_statistics([ellipses(np.full(n, 0.4))])["orientation_coherence"]
    np.testing.assert_allclose(aligned, 1.0, atol=0.05)
    # Checkerboard of horizontal and vertical cells: the nearest neighbours are all perpendicular.
    checker = np.array([0.0 if (i + j) % 2 else np.pi / 2 for i in range(5) for j in range(5)])
    crossed = layout_statistics([ellipses(checker)], k_neighbours=4)["orientation_coherence"]
    interior = [5 * i + j for i in range(1, 4) for j in range(1, 4)]  # those have 4 neighbours at the spacing
    np.testing.assert_allclose(crossed[interior], -1.0, atol=0.05)
    assert crossed.mean() < -0.5
    rng = np.random.default_rng(0)
    scattered = layout_statistics([ellipses(rng.uniform(0, np.pi, n)) for _ in range(8)])["orientation_coherence"]
    assert abs(scattered.mean()) < 0.15


def test_compare_layouts_is_zero_for_identical_sets_and_measures_shifts() -> None:
    small, large = [lattice(3)] * 2, [lattice(4)] * 2
    same = compare_layouts(small, small)
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in same.values())
    assert set(same) == {"cells_per_crop", "area", "eccentricity", "nn_distance", "ripley_l", "orientation_coherence"}
    shifted = compare_layouts(small, large)
    area_gap = np.count_nonzero(lattice(4) == 1) - np.count_nonzero(lattice(3) == 1)
    assert shifted["area"] == pytest.approx(area_gap)  # all cells grow by the same area
    assert shifted["nn_distance"] == pytest.approx(0.0, abs=1e-9)  # the centres did not move
    # Precomputed statistics give the same answer as masks.
    assert compare_layouts(layout_statistics(small), large) == shifted


def test_compare_layouts_refuses_statistics_at_different_radii() -> None:
    with pytest.raises(ValueError, match="radii"):
        compare_layouts(layout_statistics([lattice()]), layout_statistics([lattice()], radii=(5.0, 10.0)))


@pytest.mark.parametrize(
    "masks, message",
    [
        ([], "empty"),
        ([np.zeros((8, 8, 3), np.int32)], "2-D"),
        ([np.zeros((8, 8), np.float32)], "integer"),
        ([np.full((8, 8), -1, np.int32)], "negative"),
    ],
)
def test_layout_statistics_rejects_bad_masks(masks: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layout_statistics(masks)


@pytest.mark.parametrize("kwargs, message", [({"radii": (0.0, 5.0)}, "radii"), ({"k_neighbours": 0}, "k_neighbours")])
def test_layout_statistics_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layout_statistics([lattice()], **kwargs)


def test_statistics_separate_simcep_from_the_phantom() -> None:
    """SIMCEP fitted to half the phantom crops lies clearly further from the other
    half than the halves lie from each other: it cannot make glandular rings of
    touching nuclei nor stroma aligned along fibres."""
    samples = demo_dataset(12, 256, seed=0)
    # Non-overlapping 128 px crops; halves split by image so no tissue is shared.
    crops = [list(extract_crops(image, labels, size=128, stride=128)[1]) for image, labels in samples]
    half_a, half_b = sum(crops[:6], []), sum(crops[6:], [])
    assert len(half_a) >= 20 and len(half_b) >= 20
    params = fit(half_a)
    synthetic = simulate(params, len(half_b), 128, seed=1)
    stats_a = layout_statistics(half_a)
    real_vs_real = compare_layouts(stats_a, half_b)
    real_vs_simcep = compare_layouts(stats_a, synthetic)
    # Density is matched, so the separation is not a matter of cell count.
    assert np.mean([s.max() for s in synthetic]) == pytest.approx(stats_a["cells_per_crop"].mean(), rel=0.15)
    for name in ("ripley_l", "nn_distance", "orientation_coherence"):
        assert real_vs_simcep[name] > 2 * real_vs_real[name], (name, real_vs_real[name], real_vs_simcep[name])
