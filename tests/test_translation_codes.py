"""Region intensity codes: each region's mean intensity as a second input to pix2pix, drawn from real crops."""

from __future__ import annotations

import numpy as np
import pytest

from cellsynth import quality
from cellsynth.image_painter import ImagePainter, trained_model
from cellsynth.phantom import demo_dataset
from cellsynth.training import CheckpointStore, start_runtime
from cellsynth.translation import ChannelNormalizer, Pix2PixConfig, train_pix2pix, translate
from cellsynth.translation.codes import CodeBank, code_bank, paint_codes, region_code_tables, sample_code_tables

pytestmark = pytest.mark.usefixtures("single_thread")


def test_each_region_is_coded_by_its_mean_intensity_per_channel():
    labels = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [3, 3, 0, 0], [3, 3, 0, 0]]])
    images = np.stack([np.where(labels[0] == 1, 0.5, np.where(labels[0] == 3, -0.5, -1.0)),
                       np.arange(16, dtype=float).reshape(4, 4) / 16])[None]
    (table,) = region_code_tables(labels, images)
    assert table.shape == (4, 2) and table.dtype == np.float32
    assert table[:, 0].tolist() == [-1.0, 0.5, 0.0, -0.5]  # id 2 is absent: a zero row
    assert table[1, 1] == pytest.approx(np.mean([2, 3, 6, 7]) / 16)
    assert paint_codes(labels, [table])[0, 0].tolist() == images[0, 0].tolist()
    (crowded,) = region_code_tables(np.ones((1, 4, 4), np.int64), images)  # no background: the image's mean
    assert crowded[0].tolist() == pytest.approx(images[0].reshape(2, -1).mean(1).tolist())


def test_drawn_codes_come_from_one_real_crop():
    labels = np.array([np.pad(np.ones((2, 2), np.int64), 1), np.pad(np.arange(1, 5).reshape(2, 2), 1)])
    images = np.stack([np.full((1, 4, 4), 0.1) + 0.01 * labels[0], np.full((1, 4, 4), 0.9) + 0.01 * labels[1]])
    bank = code_bank(labels, region_code_tables(labels, images))
    assert bank.offsets.tolist() == [0, 1, 5] and CodeBank.from_dict(bank.to_dict()).objects.tolist() == (
        bank.objects.tolist())
    masks = np.stack([np.pad(np.arange(1, 10).reshape(3, 3), 1)] * 20)
    for table in sample_code_tables(masks, bank, np.random.default_rng(0)):
        bright = table[0, 0] > 0.5  # the background says which crop was drawn; its objects come from it too
        assert ((table[1:, 0] > 0.5) == bright).all() and len(table) == 10
    assert len({round(float(t[0, 0]), 2) for t in sample_code_tables(masks, bank, np.random.default_rng(1))}) == 2


def test_a_generator_trained_with_codes_paints_brighter_nuclei_for_brighter_codes(tmp_path):
    labels, images = [], []
    for image, mask in demo_dataset(n_images=3, size=128):
        for y in range(0, 128, 32):
            for x in range(0, 128, 32):
                labels.append(mask[y:y + 32, x:x + 32])
                images.append(image[y:y + 32, x:x + 32])
    labels, images = np.stack(labels), np.stack(images)
    config = Pix2PixConfig(epochs=8, decay_epochs=3, batch=2, g_filters=8, d_filters=8, intensity_codes=True,
                           checkpoint_every=100, seed=0)
    store = CheckpointStore(tmp_path)
    result = train_pix2pix(labels[:32], images[:32], config, store, start_runtime("cpu", "fp32", seed=0),
                           progress=False)
    assert result.architecture["in_channels"] == 1 + 3 and result.codes is not None
    painter = ImagePainter.from_model(trained_model(result, store))
    assert painter.codes is not None and painter.codes.channels == 3

    held_out = labels[32:48]
    normalizer = ChannelNormalizer.from_dict(result.normalizer)

    def nuclei_brightness(object_code: float) -> float:
        tables = [np.full((int(m.max()) + 1, 3), object_code, np.float32) for m in held_out]
        for table in tables:
            table[0] = -0.9
        painted = translate(result.generator, held_out, normalizer, "label", seed=0, code_tables=tables)
        return float(painted[held_out > 0].mean())

    assert nuclei_brightness(0.6) > nuclei_brightness(-0.6) + 20  # on the 0..255 scale
    with pytest.raises(ValueError, match="intensity_codes needs code tables"):
        translate(result.generator, held_out, normalizer, "label")
    # drawn codes: the painter's images differ with the seed (codes and dropout), and are reproducible
    first, again, other = (painter.paint(held_out, seed=s) for s in (0, 0, 1))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_object_brightness_spread_over_the_set_and_within_images():
    labels = np.array([[[1, 1, 0, 2], [1, 1, 0, 2]], [[0, 3, 3, 0], [0, 3, 3, 0]]])
    images = np.zeros((2, 2, 4, 2))
    images[0][labels[0] == 1], images[0][labels[0] == 2], images[1][labels[1] == 3] = 0.2, 0.6, 1.0
    spread = quality.object_brightness(labels, images)
    assert spread["brightness_spread"] == pytest.approx(np.std([0.2, 0.6, 1.0]))
    assert spread["within_image_spread"] == pytest.approx(0.2)  # only the first image holds two objects
    with pytest.raises(ValueError, match="pair up"):
        quality.object_brightness(labels[:1], images)


def test_mask_agreement_is_one_where_images_show_their_masks_and_falls_with_shifted_outlines():
    labels = np.zeros((2, 32, 32), np.int32)
    labels[:, 8:20, 10:24] = 1
    bright = np.where(labels[..., None] > 0, 0.8, -0.8)
    assert quality.mask_agreement(labels, bright) == pytest.approx(1.0)
    assert quality.mask_agreement(labels, -bright) == pytest.approx(1.0)  # dark nuclei on a bright background
    shifted = np.roll(bright, 4, axis=2)
    assert quality.mask_agreement(labels, shifted) == pytest.approx(10 * 12 / (18 * 12))
    assert np.isnan(quality.mask_agreement(np.zeros_like(labels), bright))  # nothing to agree on
    with pytest.raises(ValueError, match="pair up"):
        quality.mask_agreement(labels[:1], bright)
