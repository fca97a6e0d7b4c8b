"""Folds are disjoint and cover every image; crops count, rotate and relabel as specified."""

import numpy as np
import pytest
from conftest import disk_labels

from cellsynth.crops import (
    add_rotations,
    crop_origins,
    crops_from_images,
    extract_crops,
    fold_of_group,
    group_seed,
    heldout_groups,
    make_folds,
    rescale_sample,
    subset_group,
    training_groups,
    training_subset,
)
from cellsynth.io import AnnotatedImage


@pytest.mark.parametrize("n, k", [(10, 3), (10, 5), (7, 7), (23, 4)])
def test_folds_are_disjoint_and_each_image_is_tested_once(n, k):
    names = [f"im{i}" for i in range(n)]
    folds = make_folds(names, k=k, seed=3)
    assert len(folds) == k
    for fold in folds:
        train, val, test = set(fold.train), set(fold.val), set(fold.test)
        assert train and val and test
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(names)
    tested = [n for f in folds for n in f.test]
    assert sorted(tested) == sorted(names)
    assert sorted(n for f in folds for n in f.val) == sorted(names)


def test_folds_are_seeded():
    names = [f"im{i}" for i in range(12)]
    assert make_folds(names, 4, seed=1) == make_folds(names, 4, seed=1)
    assert make_folds(names, 4, seed=1) != make_folds(names, 4, seed=2)


@pytest.mark.parametrize("k, n, message", [(2, 10, "folds.k must be >= 3"), (5, 4, "at least 5 images")])
def test_bad_fold_settings_are_named(k, n, message):
    with pytest.raises(ValueError, match=message):
        make_folds([f"im{i}" for i in range(n)], k=k, seed=0)


@pytest.mark.parametrize("n, k", [(40, 3), (10, 2), (23, 4)])
def test_validation_from_the_training_images_leaves_more_to_train_on(n, k):
    """val_fraction: each image is still tested once, validation comes out of the fold's own non-test
    images, and with 3 folds of 40 images 21 train instead of 13."""
    names = [f"im{i}" for i in range(n)]
    folds = make_folds(names, k=k, seed=3, val_fraction=0.2)
    assert sorted(n for f in folds for n in f.test) == sorted(names)
    for fold in folds:
        train, val, test = set(fold.train), set(fold.val), set(fold.test)
        assert not (train & val or train & test or val & test) and train | val | test == set(names)
        assert len(val) == max(1, round(0.2 * (n - len(test))))
    if (n, k) == (40, 3):
        assert min(len(f.train) for f in folds) == 21
        assert max(len(f.train) for f in make_folds(names, k=3, seed=3)) == 14
    assert folds == make_folds(names, k=k, seed=3, val_fraction=0.2)


@pytest.mark.parametrize("k, n, val_fraction, message", [
    (1, 10, 0.2, "folds.k must be >= 2"), (3, 10, 1.0, "val_fraction must be in"),
    (3, 10, 0.0, "val_fraction must be in"), (3, 3, 0.9, "leaves fold 0 no training image"),
])
def test_bad_validation_fractions_are_named(k, n, val_fraction, message):
    with pytest.raises(ValueError, match=message):
        make_folds([f"im{i}" for i in range(n)], k=k, seed=0, val_fraction=val_fraction)


def test_training_groups_hold_only_training_images():
    folds = make_folds([f"im{i}" for i in range(9)], 3, seed=0)
    groups = training_groups(folds, [f"im{i}" for i in range(9)], "folds")
    assert list(groups) == ["fold_0", "fold_1", "fold_2"]
    for fold, names in zip(folds, groups.values()):
        assert set(names) == set(fold.train)
    assert training_groups(folds, ["a", "b"], "all") == {"all": ("a", "b")}
    with pytest.raises(ValueError, match="training_scope"):
        training_groups(folds, [], "everything")


def test_crop_origins_cover_the_image_flush_with_the_end():
    assert crop_origins(256, 64, 64) == [0, 64, 128, 192]
    assert crop_origins(100, 64, 32) == [0, 32, 36]
    assert crop_origins(50, 64, 32) == []


def test_extract_crops_counts_filters_and_relabels():
    # 4 disks in the top-left 64x64 quadrant, 1 disk in the top-right, none below
    centres = [(12, 12), (12, 44), (44, 12), (44, 44), (30, 100)]
    labels = disk_labels((128, 128), centres, 6) * 7  # ids 7, 14, ...: not sequential
    image = np.dstack([labels.astype(np.uint8)] * 2)
    images, crops = extract_crops(image, labels, size=64, stride=64, min_objects=3)
    assert crops.shape == (1, 64, 64) and images.shape == (1, 64, 64, 2)
    assert list(np.unique(crops[0])) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(images[0, ..., 0] > 0, crops[0] > 0)  # image crop travels with its mask


def test_extract_crops_drops_border_slivers():
    labels = disk_labels((64, 96), [(20, 20), (20, 44), (44, 20), (44, 66)], 8)
    _, crops = extract_crops(np.zeros((64, 96, 1), np.uint8), labels, size=64, stride=64, min_objects=1,
                             min_object_area=15)
    # crop at x=32..96 cuts the disk at x=20 to a sliver of < 15 px
    areas = np.bincount(crops[1].ravel())[1:]
    assert areas.min() >= 15


def test_add_rotations_quadruples_and_rotates_image_with_mask():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (3, 16, 16)).astype(np.int32)
    images = rng.integers(0, 255, (3, 16, 16, 2)).astype(np.uint8)
    rot_images, rot_labels = add_rotations(images, labels)
    assert rot_images.shape == (12, 16, 16, 2) and rot_labels.shape == (12, 16, 16)
    np.testing.assert_array_equal(rot_labels[3 + 1], np.rot90(labels[1]))
    np.testing.assert_array_equal(rot_images[9 + 2], np.rot90(images[2], 3))


def test_crops_from_images_records_sources_and_rejects_unusable_sets():
    labels = disk_labels((64, 64), [(16, 16), (16, 48), (48, 16), (48, 48)], 6)
    samples = [AnnotatedImage(f"s{i}", np.zeros((64, 64, 1), np.uint8), labels) for i in range(2)]
    out = crops_from_images(samples, size=32, stride=32, min_objects=1)
    assert out["labels"].shape == (2 * 4 * 4, 32, 32)
    assert list(out["source"]).count("s0") == 16
    with pytest.raises(ValueError, match="crops.size=128"):
        crops_from_images(samples, size=128, stride=64)


def test_heldout_groups_are_the_validation_images_of_each_fold():
    names = [f"im{i}" for i in range(9)]
    folds = make_folds(names, k=3, seed=0)
    groups = training_groups(folds, names, "folds", subset_fractions=[0.5])
    heldout = heldout_groups(groups, folds)
    for i, fold in enumerate(folds):
        assert heldout[f"fold_{i}"] == heldout[f"fold_{i}-subset_0.5"] == fold.val
        assert not set(heldout[f"fold_{i}"]) & set(fold.train)
    assert heldout_groups({"all": tuple(names)}, folds) == {"all": tuple(names)}


def test_subset_groups_hold_nested_shares_of_the_fold_training_images():
    names = [f"im{i}" for i in range(20)]
    folds = make_folds(names, k=4, seed=1)
    groups = training_groups(folds, names, "folds", subset_fractions=[0.625, 0.375], seed=3)
    assert sorted(groups) == sorted([f"fold_{i}" for i in range(4)] + [subset_group(i, f) for i in range(4)
                                                                        for f in (0.625, 0.375)])
    for i, fold in enumerate(folds):
        large, small = set(groups[f"fold_{i}-subset_0.625"]), set(groups[f"fold_{i}-subset_0.375"])
        assert len(fold.train) == 10 and len(large) == 7 and len(small) == 4
        assert small < large < set(fold.train)
        assert fold_of_group(f"fold_{i}-subset_0.625") == i
    assert fold_of_group("all") is None
    with pytest.raises(ValueError, match="fractions"):
        training_subset(names, 1.5, 0)


def test_each_group_draws_its_own_stable_seed():
    seeds = {group: group_seed(0, group) for group in ("fold_0", "fold_1", "fold_2", "fold_0-subset_0.25")}
    assert len(set(seeds.values())) == 4
    assert group_seed(0, "fold_1") == seeds["fold_1"]  # the same in every run and process
    assert group_seed(7, "all") == 7


def test_rescale_sample_shrinks_objects_and_packs_them_denser():
    labels = disk_labels((80, 120), [(20, 20), (20, 60), (60, 40), (60, 100)], 8)
    image = np.where(labels > 0, 200, 10).astype(np.uint16)[..., None]
    small = rescale_sample(AnnotatedImage("tile", image, labels), 0.5)
    assert small.name == "tile@0.5x" and small.labels.shape == (40, 60) and small.image.shape == (40, 60, 1)
    assert small.image.dtype == np.uint16 and small.labels.dtype == np.int32
    assert set(np.unique(small.labels)) == {0, 1, 2, 3, 4}  # every disk survives, numbered 1..4
    area, small_area = np.bincount(labels.ravel())[1:], np.bincount(small.labels.ravel())[1:]
    assert np.allclose(small_area / area, 0.25, atol=0.05)
    inside, outside = small.image[small.labels > 0], small.image[small.labels == 0]
    assert inside.mean() > 150 and outside.mean() < 60  # image and labels stay aligned (edges blend)
    large = rescale_sample(AnnotatedImage("tile", image, labels), 1.5)
    assert large.labels.shape == (120, 180) and large.labels.max() == 4


@pytest.mark.parametrize("factor", [0.0, -1.0, 0.001])
def test_rescale_sample_rejects_factors_that_leave_no_image(factor):
    labels = disk_labels((40, 40), [(20, 20)], 5)
    with pytest.raises(ValueError, match="rescal"):
        rescale_sample(AnnotatedImage("tile", labels[..., None].astype(np.uint8), labels), factor)
