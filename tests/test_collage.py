"""The collage painter: real objects' pixels pasted onto masks (cellsynth.collage), and its place beside pix2pix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import ellipse

from cellsynth.collage import ObjectBank, build_object_bank, paint_collage, shape_warp
from cellsynth.datasets import TorchDataset
from cellsynth.image_painter import CollagePainter, ImagePainter, collage_model
from cellsynth.pipelines.image_translation.nodes import train_group_pix2pix


def nuclei_crops(n: int = 6, size: int = 48, seed: int = 0, channels: int = 1,
                 dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """``(n, size, size, channels)`` fluorescence-like crops (dim noisy background, bright textured
    ellipses of differing brightness) with their ``(n, size, size)`` int32 masks."""
    rng = np.random.default_rng(seed)
    scale = 1 if dtype == np.uint8 else 200
    images = np.empty((n, size, size, channels), np.float64)
    labels = np.zeros((n, size, size), np.int32)
    for i in range(n):
        image = 20 + rng.normal(0, 2, (size, size))
        for label in range(1, 5):
            r, c = rng.integers(8, size - 8, 2)
            rr, cc = ellipse(r, c, rng.integers(3, 7), rng.integers(3, 7), (size, size),
                             rotation=rng.uniform(0, np.pi))
            free = labels[i, rr, cc] == 0
            labels[i, rr[free], cc[free]] = label
            image[rr[free], cc[free]] = rng.uniform(120, 220) + rng.normal(0, 8, free.sum())
        images[i] = ndimage.gaussian_filter(image, 0.8)[..., None] * np.linspace(1, 0.6, channels)
    return np.clip(images * scale, 0, np.iinfo(dtype).max).astype(dtype), labels


def test_collage_paints_bright_objects_exactly_where_the_masks_have_them():
    images, labels = nuclei_crops()
    bank = build_object_bank(images, labels)
    targets = nuclei_crops(4, seed=1)[1]  # other masks than the bank's
    painted = paint_collage(bank, targets, seed=3)

    assert painted.shape == (4, 48, 48, 1) and painted.dtype == np.uint8
    for image, mask in zip(painted[..., 0].astype(float), targets):
        inside = ndimage.binary_erosion(mask > 0, iterations=1)
        far = ~ndimage.binary_dilation(mask > 0, iterations=6)
        assert image[inside].mean() > 100 and abs(np.median(image[far]) - 20) < 5  # no ghost of the canvas' nuclei
        for label in np.unique(mask)[1:]:  # every object was painted, none left as background
            assert image[ndimage.binary_erosion(mask == label)].mean() > 60
    np.testing.assert_array_equal(paint_collage(bank, targets, seed=3), painted)  # seeded
    assert not np.array_equal(paint_collage(bank, targets, seed=4), painted)


def test_collage_outlines_follow_the_mask_whatever_shape_the_real_object_had():
    # the bank holds round nuclei only; the masks ask for long diagonal ones, whose boxes are square:
    # pixels resized into the box would paint a disc there, half outside the mask
    size = 48
    images = np.full((3, size, size, 1), 20, np.uint8)
    labels = np.zeros((3, size, size), np.int32)
    for i, (r, c) in enumerate([(24, 24), (20, 26), (26, 22)]):
        rr, cc = ellipse(r, c, 8, 8, (size, size))
        labels[i, rr, cc], images[i, rr, cc] = 1, 180
    bank = build_object_bank(images, labels)
    targets = np.zeros((2, size, size), np.int32)
    for i, rotation in enumerate([np.pi / 4, -np.pi / 4]):
        rr, cc = ellipse(24, 24, 4, 14, (size, size), rotation=rotation)
        targets[i, rr, cc] = 1

    painted = paint_collage(bank, targets, seed=0)[..., 0]
    for image, mask in zip(painted, targets):
        bright = image > 100
        iou = (bright & (mask > 0)).sum() / (bright | (mask > 0)).sum()
        assert iou > 0.85, iou


def test_shape_warp_maps_outline_onto_outline_and_rejects_empty_masks():
    source = np.zeros((30, 30), bool)
    source[ellipse(15, 15, 10, 10)] = True
    target = np.zeros((20, 40), bool)
    target[ellipse(10, 20, 5, 15)] = True
    rows, cols = shape_warp(source, target)
    sampled = ndimage.map_coordinates(source.astype(float), [rows, cols], order=1) > 0.5
    assert (sampled == target).mean() > 0.97
    with pytest.raises(ValueError, match="holding an object"):
        shape_warp(source, np.zeros((5, 5), bool))


def test_collage_takes_a_crops_objects_from_the_image_its_background_came_from():
    smooth, smooth_labels = nuclei_crops(4, seed=2)
    grainy, grainy_labels = nuclei_crops(4, seed=3)
    noise = np.random.default_rng(0).normal(0, 80, grainy.shape)
    grainy = np.where(grainy_labels[..., None] > 0, np.clip(grainy + noise, 0, 255), grainy).astype(np.uint8)
    images, labels = np.concatenate([smooth, grainy]), np.concatenate([smooth_labels, grainy_labels])
    bank = build_object_bank(images, labels, sources=np.array(["a.png"] * 4 + ["b.png"] * 4), margin=2)
    targets = nuclei_crops(12, seed=4)[1]
    kinds = []
    for image, mask in zip(paint_collage(bank, targets, seed=0, candidates=2)[..., 0].astype(float), targets):
        cores = [ndimage.binary_erosion(mask == label, iterations=2) for label in np.unique(mask)[1:]]
        kinds.append({bool(np.std(image[core]) > 25) for core in cores if core.sum() >= 10})
    # every painted crop's nuclei are all smooth (one image) or all grainy (the other), and both occur
    assert all(len(kind) == 1 for kind in kinds) and set.union(*kinds) == {False, True}
    with pytest.raises(ValueError, match="sources"):
        build_object_bank(images, labels, sources=np.array(["a.png"]))


def test_collage_keeps_dtype_channels_and_range_of_16_bit_multichannel_images():
    images, labels = nuclei_crops(channels=3, dtype=np.uint16)
    painted = paint_collage(build_object_bank(images, labels), labels[:2], seed=0)
    assert painted.shape == (2, 48, 48, 3) and painted.dtype == np.uint16
    assert painted.max() <= images.max() and painted.min() >= images.min()
    # the channels keep their ratio (the dimmest at 0.6 of the brightest), object by object
    inside = labels[:2] > 0
    ratio = painted[..., 2][inside].astype(float).mean() / painted[..., 0][inside].astype(float).mean()
    assert ratio == pytest.approx(0.6, abs=0.05)


def test_collage_rejects_bad_input_naming_the_problem():
    images, labels = nuclei_crops(2)
    with pytest.raises(ValueError, match="labels"):
        build_object_bank(images, labels[:1])
    with pytest.raises(ValueError, match="uint8/uint16"):
        build_object_bank(images.astype(np.float32), labels)
    with pytest.raises(ValueError, match="no object"):
        build_object_bank(images, np.zeros_like(labels))
    crowded = np.zeros((1, 100, 100), np.int32)
    crowded[0, 1:-1, 1:-1] = 1  # 4 % background: nothing to paint on
    with pytest.raises(ValueError, match="no background"):
        build_object_bank(np.zeros((1, 100, 100, 1), np.uint8), crowded)
    bank = build_object_bank(images, labels)
    with pytest.raises(ValueError, match="masks of"):
        paint_collage(bank, np.zeros((1, 32, 32), np.int32))
    with pytest.raises(ValueError, match="integer"):
        paint_collage(bank, labels.astype(np.float32))
    with pytest.raises(ValueError, match="candidates"):
        paint_collage(bank, labels, candidates=0)
    stored_before_outlines = {k: v for k, v in bank.to_dict().items() if k != "patch_masks"}
    with pytest.raises(ValueError, match="build it again"):
        ObjectBank.from_dict(stored_before_outlines)


def test_collage_painter_is_stored_like_a_pix2pix_model_and_paints_after_loading(tmp_path: Path):
    images, labels = nuclei_crops()
    dataset = TorchDataset(filepath=str(tmp_path / "fold_0.pt"))
    dataset.save(train_group_pix2pix({"fold_0": {"images": images, "labels": labels}},
                                     {"painter": "collage", "collage": {"margin": 4, "candidates": 3},
                                      "training": {"seed": 0}}, group="fold_0"))
    painter = ImagePainter.from_model(dataset.load())
    assert isinstance(painter, CollagePainter) and painter.candidates == 3
    assert painter.normalizer.dtype == np.uint8
    painted = painter.paint(labels[:2], seed=1)
    np.testing.assert_array_equal(painted, paint_collage(painter.bank, labels[:2], seed=1, candidates=3))
    assert ImagePainter.from_model(collage_model(labels, images)).bank.margin == 6

    with pytest.raises(ValueError, match="image_translation.painter"):
        train_group_pix2pix({"fold_0": {"images": images, "labels": labels}}, {"painter": "pix3pix"}, group="fold_0")
