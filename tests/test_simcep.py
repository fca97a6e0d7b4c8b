"""Tests of the SIMCEP cell-population model: parameters, simulation, fitting, rendering."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from cellsynth.simcep import SimcepParams, fit, render_simcep_image, simulate

# Well-separated clusters (a few cluster spreads apart in a 128 px crop), one
# setting per regime: medium cells, many small irregular cells, big smooth
# cells that may not overlap at all.
RECOVERY_CASES = {
    "medium": SimcepParams(
        cells_per_crop=28, radius_min=4, radius_max=7, shape_irregularity=0.1,
        n_clusters=2, cluster_spread=9, p_unclustered=0.1,
    ),
    "small_irregular": SimcepParams(
        cells_per_crop=36, radius_min=2.5, radius_max=4, shape_irregularity=0.2,
        n_clusters=3, cluster_spread=6, p_unclustered=0.1,
    ),
    "large_no_overlap": SimcepParams(
        cells_per_crop=16, radius_min=5, radius_max=8, shape_irregularity=0.05,
        n_clusters=1, cluster_spread=25, p_unclustered=0.2, max_overlap=0.0,
    ),
}


@pytest.mark.parametrize("name", sorted(RECOVERY_CASES))
def test_fit_recovers_the_parameters_of_simulated_masks(name: str) -> None:
    truth = RECOVERY_CASES[name]
    n_crops = 60 if truth.cells_per_crop < 20 else 40  # keeps the Poisson error of the mean count near 3 %
    fitted = fit(simulate(truth, n_crops, 128, seed=11), max_overlap=truth.max_overlap)
    assert fitted.cells_per_crop == pytest.approx(truth.cells_per_crop, rel=0.1)
    assert fitted.radius_min == pytest.approx(truth.radius_min, rel=0.1)
    assert fitted.radius_max == pytest.approx(truth.radius_max, rel=0.1)
    assert fitted.shape_irregularity == pytest.approx(truth.shape_irregularity, rel=0.25)
    assert fitted.n_clusters == truth.n_clusters
    # Tight clusters of non-overlapping cells are not Gaussian: spread and background are rougher.
    assert fitted.cluster_spread == pytest.approx(truth.cluster_spread, rel=0.4)
    assert fitted.p_unclustered == pytest.approx(truth.p_unclustered, abs=0.15)
    assert (fitted.n_vertices, fitted.max_overlap) == (truth.n_vertices, truth.max_overlap)


def test_fit_does_not_depend_on_label_numbering() -> None:
    masks = simulate(SimcepParams(cells_per_crop=12), 8, 64, seed=2)
    renumbered = [np.where(mask > 0, 3 * mask + 7, 0) for mask in masks]  # gaps, no label 1
    assert fit(renumbered) == fit(masks)


def test_simulate_is_deterministic_and_prefix_stable() -> None:
    params = SimcepParams()
    first = simulate(params, 3, 64, seed=5)
    again = simulate(params, 3, 64, seed=5)
    other = simulate(params, 3, 64, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert all(np.array_equal(a, b) for a, b in zip(simulate(params, 2, 64, seed=5), first))


def test_simulated_masks_are_int32_with_sequential_ids() -> None:
    masks = simulate(SimcepParams(cells_per_crop=25), 6, (48, 80), seed=0)
    for mask in masks:
        assert mask.shape == (48, 80) and mask.dtype == np.int32
        np.testing.assert_array_equal(np.unique(mask), np.arange(mask.max() + 1))
    assert sum(mask.max() for mask in masks) > 0


def test_cell_count_is_poisson_around_the_mean_when_cells_fit() -> None:
    params = SimcepParams(cells_per_crop=15, radius_min=2, radius_max=3, p_unclustered=1.0)
    counts = np.array([mask.max() for mask in simulate(params, 60, 128, seed=3)])
    assert counts.mean() == pytest.approx(15, rel=0.1)
    assert counts.var() == pytest.approx(15, rel=0.4)  # Poisson: variance = mean


def test_circles_without_irregularity_have_the_nominal_area() -> None:
    params = SimcepParams(radius_min=6, radius_max=6, shape_irregularity=0.0, p_unclustered=1.0, max_overlap=0.0)
    regions = [
        region
        for mask in simulate(params, 4, 96, seed=1)
        for region in regionprops(mask)
        if min(region.bbox[:2]) > 0 and max(region.bbox[2:]) < 96
    ]
    assert len(regions) > 20
    np.testing.assert_allclose([region.area for region in regions], np.pi * 36, rtol=0.1)
    assert max(region.eccentricity for region in regions) < 0.4


def test_max_overlap_limits_crowding_and_earlier_cells_stay_whole() -> None:
    crowded = {"cells_per_crop": 60, "radius_min": 6, "radius_max": 8, "n_clusters": 1, "cluster_spread": 8}
    strict = simulate(SimcepParams(**crowded, max_overlap=0.0), 6, 64, seed=4)
    loose = simulate(SimcepParams(**crowded, max_overlap=0.6), 6, 64, seed=4)
    # Without overlap far fewer cells fit than are drawn; allowing overlap admits more.
    assert np.mean([m.max() for m in strict]) < 0.6 * 60
    assert np.mean([m.max() for m in loose]) > 1.3 * np.mean([m.max() for m in strict])
    # Without overlap no cell is cut by a later one: each is a single connected piece.
    for mask in strict:
        for index in range(1, mask.max() + 1):
            assert connected_components(mask == index, connectivity=1).max() == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("cells_per_crop", 0),
        ("radius_min", -1.0),
        ("radius_max", 2.0),  # below the default radius_min
        ("shape_irregularity", 1.0),
        ("n_vertices", 2),
        ("n_vertices", 8.5),
        ("n_clusters", 0),
        ("cluster_spread", 0.0),
        ("p_unclustered", 1.5),
        ("max_overlap", -0.1),
        ("cells_per_crop", float("nan")),
        ("n_clusters", True),
        ("radius_min", "4"),
    ],
)
def test_bad_parameters_raise_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SimcepParams(**{field: value})


def test_parameters_round_trip_through_plain_dicts() -> None:
    params = SimcepParams(cells_per_crop=12, radius_min=3, radius_max=5, n_vertices=np.int64(9))
    data = params.to_dict()
    assert type(data["radius_min"]) is float and type(data["n_vertices"]) is int  # YAML/JSON-safe
    assert SimcepParams.from_dict(data) == params
    assert SimcepParams.from_dict({"n_clusters": 4}) == SimcepParams(n_clusters=4)
    with pytest.raises(ValueError, match="radius_mean"):
        SimcepParams.from_dict({"radius_mean": 4})


@pytest.mark.parametrize(
    "masks, message",
    [
        ([], "empty"),
        ([np.zeros((16, 16, 3), np.int32)], "2-D"),
        ([np.zeros((16, 16), np.float64)], "integer"),
        ([np.zeros((16, 16), np.int32)] * 2, "no labelled object"),
    ],
)
def test_fit_rejects_bad_input(masks: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit(masks)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"n": 0}, "n must"), ({"size": 4}, "size"), ({"size": (32, 32, 3)}, "size"), ({"params": {}}, "params")],
)
def test_simulate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"params": SimcepParams(), "n": 1, "size": 32, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate(**arguments)


def test_render_image_is_a_deterministic_image_of_the_cells() -> None:
    labels = simulate(SimcepParams(cells_per_crop=20), 1, 96, seed=0)[0]
    image = render_simcep_image(labels, seed=1)
    assert image.shape == labels.shape and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(image, render_simcep_image(labels, seed=1))
    assert not np.array_equal(image, render_simcep_image(labels, seed=2))
    # Cells are bright on a dark background; the blur softens only their rims.
    inside, outside = image[labels > 0].mean(), image[labels == 0].mean()
    assert inside > outside + 0.25
    with pytest.raises(ValueError, match="integer"):
        render_simcep_image(labels.astype(float), seed=0)
