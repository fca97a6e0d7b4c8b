"""Tests of the phantom tissue generator (built-in demo data)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops

from cellsynth.phantom import (
    MIN_OBJECT_AREA,
    CellType,
    TissueLayout,
    demo_dataset,
    generate_layout,
    phantom_tissue,
    render_image,
)

SEEDS = range(4)


@pytest.fixture(scope="module")
def layouts() -> list[TissueLayout]:
    """256 px layouts, seeded like ``demo_dataset`` image i of seed 0."""
    return [generate_layout(256, np.random.default_rng([0, i])) for i in SEEDS]


@pytest.fixture(scope="module")
def big_sample() -> tuple[np.ndarray, np.ndarray]:
    return demo_dataset(1, 512, seed=7)[0]


def _axis_angle(region) -> float:
    """Angle of the major axis, direction ``(row, col) = (sin, cos)``."""
    _, vectors = np.linalg.eigh(np.cov(region.coords.T.astype(float)))
    return float(np.arctan2(vectors[0, 1], vectors[1, 1]))


def _lumina(labels: np.ndarray, min_area: int = 150) -> list[np.ndarray]:
    """Background holes of at least ``min_area`` px enclosed by objects."""
    objects = labels > 0
    holes, n = ndi.label(ndi.binary_fill_holes(objects) & ~objects)
    masks = [holes == i for i in range(1, n + 1)]
    return [m for m in masks if m.sum() >= min_area]


def test_same_seed_is_bit_identical_and_other_seed_differs() -> None:
    first = demo_dataset(2, 128, seed=3)
    again = demo_dataset(2, 128, seed=3)
    other = demo_dataset(2, 128, seed=4)
    for (im_a, lab_a), (im_b, lab_b), (im_c, lab_c) in zip(first, again, other):
        assert np.array_equal(im_a, im_b) and np.array_equal(lab_a, lab_b)
        assert not np.array_equal(im_a, im_c) and not np.array_equal(lab_a, lab_c)
    # Images within one dataset differ too.
    assert not np.array_equal(first[0][1], first[1][1])


def test_shorter_dataset_is_prefix_of_longer() -> None:
    short = demo_dataset(2, 96, seed=5)
    long = demo_dataset(4, 96, seed=5)
    for (im_s, lab_s), (im_l, lab_l) in zip(short, long[:2]):
        assert np.array_equal(im_s, im_l) and np.array_equal(lab_s, lab_l)


@pytest.mark.parametrize("size", [64, 100, 256])
def test_shapes_dtypes_and_value_ranges(size: int) -> None:
    image, labels = phantom_tissue(size, np.random.default_rng(size))
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert labels.shape == (size, size) and labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() >= 1
    # A real picture, not a constant or saturated one.
    assert image.std() > 15 and 80 < image.mean() < 240


def test_labels_sequential_single_component_min_area(
    layouts: list[TissueLayout], big_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    four = ndi.generate_binary_structure(2, 1)
    for labels in [layout.labels for layout in layouts] + [big_sample[1]]:
        n = int(labels.max())
        assert np.array_equal(np.unique(labels), np.arange(n + 1))
        for index, window in enumerate(ndi.find_objects(labels)):
            mask = labels[window] == index + 1
            assert ndi.label(mask, four)[1] == 1, f"object {index + 1} is fragmented"
            assert mask.sum() >= MIN_OBJECT_AREA


def test_cell_type_table_matches_labels(layouts: list[TissueLayout]) -> None:
    for layout in layouts:
        assert layout.cell_type.shape == (layout.labels.max() + 1,)
        assert layout.cell_type[0] == CellType.BACKGROUND
        kinds = {CellType.GLAND, CellType.SPINDLE, CellType.IMMUNE}
        assert set(np.unique(layout.cell_type[1:])) <= kinds
        # Every type is present, so the layout has glands and stroma.
        assert len(np.unique(layout.cell_type[1:])) == 3


def test_object_sizes_are_fixed_in_pixels(layouts: list[TissueLayout]) -> None:
    props = [
        (p, layout.cell_type[p.label]) for layout in layouts for p in regionprops(layout.labels)
    ]
    gland = [p.equivalent_diameter_area for p, kind in props if kind == CellType.GLAND]
    spindle_major = [p.axis_major_length for p, kind in props if kind == CellType.SPINDLE]
    spindle_minor = [p.axis_minor_length for p, kind in props if kind == CellType.SPINDLE]
    assert 8 <= np.median(gland) <= 16
    assert 18 <= np.median(spindle_major) <= 30
    assert 5 <= np.median(spindle_minor) <= 9


def test_typical_64px_crop_holds_5_to_30_objects(big_sample: tuple[np.ndarray, np.ndarray]) -> None:
    labels = big_sample[1]
    tiles = (np.array([p.centroid for p in regionprops(labels)]) // 64).astype(int)
    counts = np.bincount(tiles[:, 0] * 8 + tiles[:, 1], minlength=64)
    assert 5 <= np.median(counts) <= 30


@pytest.mark.parametrize("size", [128, 256])
def test_every_sample_has_a_lumen_ringed_by_touching_nuclei(size: int) -> None:
    for _, labels in demo_dataset(3, size, seed=11):
        lumina = _lumina(labels)
        assert lumina, "no enclosed lumen"
        ring = np.unique(labels[ndi.binary_dilation(lumina[0], iterations=3)])
        ring = ring[ring > 0]
        assert ring.size >= 8
        # Ring nuclei share borders with their neighbours.
        touching = [
            np.setdiff1d(labels[ndi.binary_dilation(labels == i)], [0, i]).size > 0 for i in ring
        ]
        assert np.mean(touching) > 0.9


def test_gland_nuclei_point_at_their_lumen(layouts: list[TissueLayout]) -> None:
    radial = []
    for layout in layouts:
        props = regionprops(layout.labels)
        for lumen in _lumina(layout.labels):
            centre = np.array(ndi.center_of_mass(lumen))
            ring = np.unique(layout.labels[ndi.binary_dilation(lumen, iterations=3)])
            for label in ring[ring > 0]:
                offset = np.array(props[label - 1].centroid) - centre
                direction = np.arctan2(offset[0], offset[1])
                radial.append(abs(np.cos(_axis_angle(props[label - 1]) - direction)))
    assert len(radial) >= 40
    # Major axis within 30 degrees of the radial direction for most nuclei.
    assert np.mean(np.array(radial) > np.cos(np.pi / 6)) > 0.8


def test_stroma_nuclei_are_elongated(layouts: list[TissueLayout]) -> None:
    eccentricity = [
        p.eccentricity
        for layout in layouts
        for p in regionprops(layout.labels)
        if layout.cell_type[p.label] != CellType.GLAND
    ]
    assert np.median(eccentricity) > 0.8


def test_neighbouring_spindles_are_aligned(layouts: list[TissueLayout]) -> None:
    """Orientation coherence <cos 2(a_i - a_j)> over pairs closer than 40 px.

    Shuffling orientations among the spindles of an image keeps their global
    distribution but destroys local alignment, giving the random baseline.
    """
    rng = np.random.default_rng(0)
    for layout in layouts:
        spindles = [
            p for p in regionprops(layout.labels) if layout.cell_type[p.label] == CellType.SPINDLE
        ]
        centres = np.array([p.centroid for p in spindles])
        angles = np.array([_axis_angle(p) for p in spindles])
        i, j = np.triu_indices(len(spindles), 1)
        near = np.hypot(*(centres[i] - centres[j]).T) < 40

        def coherence(a: np.ndarray) -> float:
            return float(np.mean(np.cos(2 * (a[i] - a[j]))[near]))

        shuffled = np.mean([coherence(rng.permutation(angles)) for _ in range(20)])
        assert coherence(angles) > 0.3
        assert coherence(angles) > shuffled + 0.25


def test_stroma_density_follows_density_map(layouts: list[TissueLayout]) -> None:
    """Stroma away from glands is fuller where the density map is high."""
    ratios = []
    for layout in layouts:
        stroma = ndi.distance_transform_edt((layout.cytoplasm == 0) & ~layout.lumen) > 10
        sparse = stroma & (layout.density < 0.25)
        dense = stroma & (layout.density > 0.75)
        if sparse.sum() < 3000 or dense.sum() < 3000:
            continue
        objects = layout.labels > 0
        ratios.append(objects[dense].mean() / objects[sparse].mean())
    assert len(ratios) >= 2
    assert min(ratios) > 1.4 and np.mean(ratios) > 2.0


def test_rendering_maps_mask_to_stain(layouts: list[TissueLayout]) -> None:
    layout = layouts[0]
    image = render_image(layout, np.random.default_rng(1)).astype(float)
    grey = image.mean(axis=2)
    nuclei = layout.labels > 0
    stroma = ~nuclei & (layout.cytoplasm == 0) & ~layout.lumen
    # Hematoxylin-dark nuclei, pink (green-absorbing) stroma, near-white lumen.
    assert grey[nuclei].mean() < grey[stroma].mean() - 40
    assert image[stroma][:, 1].mean() < image[stroma][:, 0].mean() - 20
    assert grey[layout.lumen].mean() > grey[stroma].mean() + 10


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_images": 0}, "n_images"),
        ({"n_images": -2}, "n_images"),
        ({"n_images": 1.5}, "n_images"),
        ({"size": 63}, "size"),
        ({"size": 100.5}, "size"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        demo_dataset(**kwargs)


def test_phantom_tissue_rejects_small_size() -> None:
    with pytest.raises(ValueError, match="size"):
        phantom_tissue(32, np.random.default_rng(0))
