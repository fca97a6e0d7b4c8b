"""Object scale of masks: measured without the cut edge objects, and generated masks zoomed to the real scale."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from cellsynth.mask_scale import largest_object_areas, match_object_scale, median_object_area, rescale_masks


def discs(n: int, radius: float, size: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, size, size)`` int32 masks of non-overlapping discs of ``radius`` on a jittered grid."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.int32)
    step = int(2 * radius + 4)
    for mask in masks:
        label = 0
        for r in range(step // 2, size, step):
            for c in range(step // 2, size, step):
                label += 1
                rr, cc = disk((r + rng.integers(-1, 2), c + rng.integers(-1, 2)), radius, shape=(size, size))
                mask[rr, cc] = label
    return masks


def test_the_median_area_leaves_out_objects_cut_by_the_crop_edge():
    masks = discs(2, 5)
    inner = [np.pi * 25] * 2
    assert median_object_area(masks) == pytest.approx(np.median(inner), rel=0.15)
    edge_only = np.zeros((1, 16, 16), np.int32)
    edge_only[0, :3, :3] = 1
    assert median_object_area(edge_only) == 9.0  # nothing else to measure
    with pytest.raises(ValueError, match="no object"):
        median_object_area(np.zeros((2, 8, 8), np.int32))
    with pytest.raises(ValueError, match="integer"):
        median_object_area(masks.astype(float))


@pytest.mark.parametrize("factor", [1.5, 0.6])
def test_rescaled_masks_keep_their_size_and_scale_their_objects(factor: float):
    masks = discs(6, 5)
    out = rescale_masks(masks, factor)
    assert out.shape == masks.shape and out.dtype == masks.dtype
    assert median_object_area(out) == pytest.approx(median_object_area(masks) * factor**2, rel=0.2)
    for mask in out:  # labels renumbered 1..n; shrunk masks are filled from the mosaic, not left empty
        ids = np.unique(mask)[1:]
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
        assert (mask > 0).mean() > 0.2
    with pytest.raises(ValueError, match="factor"):
        rescale_masks(masks, 0)


def test_generated_masks_are_brought_to_the_scale_of_the_reference():
    small, large = discs(8, 4, seed=1), discs(8, 7, seed=2)
    out, factor = match_object_scale(small, large)
    assert factor == pytest.approx(7 / 4, rel=0.1)
    assert median_object_area(out) == pytest.approx(median_object_area(large), rel=0.25)
    same, factor = match_object_scale(large, discs(8, 7, seed=3))
    assert factor == 1.0 and same is large


def test_largest_object_areas_counts_each_masks_biggest_object():
    masks = np.zeros((3, 8, 8), np.int32)
    masks[0, 1:3, 1:3], masks[0, 4:8, 4:7] = 1, 2  # 4 and 12 px
    masks[1, 0:5, 0:5] = 7  # 25 px, whatever its label
    assert largest_object_areas(masks).tolist() == [12, 25, 0]
    with pytest.raises(ValueError, match="integer labels"):
        largest_object_areas(masks.astype(float))
