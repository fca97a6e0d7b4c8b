"""pix2pix: network shapes, intensity normalisation, mask inputs, learning, exact resume, settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellsynth.phantom import demo_dataset
from cellsynth.training import CheckpointStore, start_runtime
from cellsynth.translation import (
    ChannelNormalizer,
    PatchDiscriminator,
    Pix2PixConfig,
    UNetGenerator,
    build_unet_generator,
    mask_channels,
    masks_to_input,
    permute_labels,
    train_pix2pix,
    translate,
)
from cellsynth.translation.networks import upsampling_layer

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"batch": 2, "g_filters": 4, "d_filters": 4, "checkpoint_every": 1, "seed": 0}


def _crops(n_images: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Phantom tissue cut into ``size`` crops: ``(N, size, size)`` labels, ``(N, size, size, 3)`` uint8 images."""
    labels, images = [], []
    for image, mask in demo_dataset(n_images=n_images, size=128):
        for y in range(0, 128, size):
            for x in range(0, 128, size):
                labels.append(mask[y:y + size, x:x + size])
                images.append(image[y:y + size, x:x + size])
    return np.stack(labels), np.stack(images)


@pytest.mark.parametrize("in_channels, out_channels, size, upsample",
                         [(1, 1, 32, "transposed"), (3, 3, 64, "transposed"), (2, 4, 32, "resize")])
def test_generator_maps_masks_to_images_of_the_same_size(in_channels, out_channels, size, upsample):
    generator = UNetGenerator(in_channels, out_channels, base_filters=4, resolution=size, upsample=upsample)
    assert generator.depth == int(np.log2(size))  # depth 8 limited so the bottleneck is 1x1
    out = generator(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, out_channels, size, size)
    assert out.abs().max() <= 1.0  # tanh


def test_generator_keeps_dropout_noise_in_eval_mode():
    generator = UNetGenerator(1, 1, base_filters=4, resolution=32).eval()
    x = torch.randn(1, 1, 32, 32)
    assert not torch.equal(generator(x), generator(x))
    quiet = UNetGenerator(1, 1, base_filters=4, resolution=32, dropout=0.0).eval()
    assert torch.equal(quiet(x), quiet(x))


@pytest.mark.parametrize("upsample, checkerboard", [("transposed", True), ("resize", False)])
def test_only_the_transposed_decoder_paints_a_checkerboard_on_flat_input(upsample, checkerboard):
    """Odena et al. 2016: a 4x4 stride-2 transposed convolution weighs the four output phases with
    different kernel taps, so even a constant input comes out as a 2x2-periodic pattern."""
    torch.manual_seed(0)
    layer = upsampling_layer(upsample, 8, 1, bias=False)
    out = layer(torch.ones(1, 8, 8, 8))[0, 0, 2:-2, 2:-2]  # away from the borders
    phases = torch.stack([out[i::2, j::2].mean() for i in (0, 1) for j in (0, 1)])
    assert bool(phases.std() > 1e-3 * phases.abs().mean()) is checkerboard


def test_patch_discriminator_has_70px_patches():
    discriminator = PatchDiscriminator(4, base_filters=4)
    assert discriminator(torch.randn(1, 4, 256, 256)).shape == (1, 1, 30, 30)  # 70x70 receptive field, stride 8
    assert discriminator(torch.randn(2, 4, 32, 32)).shape == (2, 1, 2, 2)


def test_weights_are_initialised_from_a_narrow_normal():
    weights = torch.cat([m.weight.detach().flatten() for m in UNetGenerator(3, 3, resolution=64).modules()
                         if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(float(weights.mean())) < 1e-3 and float(weights.std()) == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("kwargs, name", [
    ({"in_channels": 0, "out_channels": 1}, "in_channels"),
    ({"in_channels": 1, "out_channels": 1, "resolution": 48}, "resolution"),
    ({"in_channels": 1, "out_channels": 1, "resolution": 16}, "resolution"),
    ({"in_channels": 1, "out_channels": 1, "dropout": 1.0}, "dropout"),
    ({"in_channels": 1, "out_channels": 1, "norm": "layer"}, "norm"),
    ({"in_channels": 1, "out_channels": 1, "upsample": "bilinear"}, "upsample"),
])
def test_generator_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        UNetGenerator(**kwargs)


def test_networks_reject_bad_inputs():
    generator = UNetGenerator(2, 1, base_filters=4, resolution=32)
    with pytest.raises(ValueError, match="input"):
        generator(torch.randn(1, 3, 32, 32))  # wrong channels
    with pytest.raises(ValueError, match="input size"):
        generator(torch.randn(1, 2, 48, 48))
    with pytest.raises(ValueError, match="input"):
        PatchDiscriminator(3, 4)(torch.randn(1, 3, 32, 64))


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint16, 1), (np.uint16, 4)])
def test_normalizer_round_trips_without_clipping(dtype, channels):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    images = rng.integers(0, top, (3, 16, 16, channels), endpoint=True).astype(dtype)
    images[0, 0, 0] = 0
    images[0, 0, 1] = top  # the full dtype range occurs
    if channels == 4:
        images[..., 1] = images[..., 1] // 64 + 1000  # a faint channel: its own narrow range
    normalizer = ChannelNormalizer.fit(images)
    scaled = normalizer.forward(images)
    assert scaled.dtype == np.float32 and scaled.min() == -1.0 and scaled.max() == 1.0
    restored = ChannelNormalizer.from_dict(normalizer.to_dict()).inverse(scaled)
    assert restored.dtype == dtype
    np.testing.assert_array_equal(restored, images)
    if channels == 4:
        assert scaled[..., 1].min() == -1.0 and scaled[..., 1].max() == 1.0  # per-channel, not global


def test_normalizer_handles_constant_channels_and_rejects_other_dtypes():
    images = np.full((1, 8, 8, 2), 7, np.uint8)
    normalizer = ChannelNormalizer.fit(images)
    np.testing.assert_array_equal(normalizer.inverse(normalizer.forward(images)), images)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        ChannelNormalizer.fit(images.astype(np.float32))


def test_label_permutation_changes_ids_but_keeps_the_partition():
    labels, _ = _crops(1, size=64)
    mask = labels[0]
    permuted = permute_labels(mask, np.random.default_rng(1))
    ids = np.unique(mask[mask > 0])
    assert len(ids) > 3
    assert not np.array_equal(permuted, mask)
    assert np.array_equal(permuted == 0, mask == 0)
    assert sorted(np.unique(permuted[permuted > 0])) == list(range(1, len(ids) + 1))
    for old in ids:  # each object maps onto exactly one new id and no other object shares it
        new = np.unique(permuted[mask == old])
        assert len(new) == 1 and np.array_equal(mask[permuted == new[0]], np.full((mask == old).sum(), old))
    first = masks_to_input(labels, "label", np.random.default_rng(1))
    again = masks_to_input(labels, "label", np.random.default_rng(1))
    other = masks_to_input(labels, "label", np.random.default_rng(2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() == -1.0 and first.max() == 1.0


@pytest.mark.parametrize("representation", ["label", "flows", "boundary"])
def test_mask_inputs_have_the_announced_channels_and_range(representation):
    labels, _ = _crops(1)
    x = masks_to_input(labels[:3], representation, np.random.default_rng(0))
    assert x.shape == (3, mask_channels(representation), 32, 32) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.array_equal(x[:, 0] > -1, labels[:3] > 0)  # channel 0 marks the objects in every representation


def test_generator_learns_masks_to_images(tmp_path):
    labels, images = _crops(3)
    train, held_out = slice(0, 32), slice(32, 48)  # held out: the crops of the third phantom image
    config = Pix2PixConfig(epochs=8, decay_epochs=3, batch=2, g_filters=8, d_filters=8, representation="boundary",
                           checkpoint_every=100, seed=0)
    runtime = start_runtime("cpu", "fp32", seed=0)
    untrained = UNetGenerator(2, 3, base_filters=8, resolution=32)
    normalizer = ChannelNormalizer.fit(images[train])

    def l1(generator: UNetGenerator) -> float:
        fake = translate(generator, labels[held_out], normalizer, "boundary", seed=0)
        return float(np.abs(fake.astype(float) - images[held_out]).mean())

    result = train_pix2pix(labels[train], images[train], config, CheckpointStore(tmp_path), runtime, progress=False)
    assert result.normalizer == normalizer.to_dict()
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.history[-1]["lr"] < result.history[0]["lr"] == 2e-4  # linear decay over the last epochs
    trained_l1, untrained_l1 = l1(result.generator), l1(untrained)
    assert trained_l1 < 0.6 * untrained_l1  # measured ~0.4 for seeds 0 and 1
    rebuilt = build_unet_generator(result.architecture)
    rebuilt.load_state_dict(result.generator.state_dict())
    assert np.array_equal(translate(rebuilt, labels[:2], result.normalizer, "boundary", seed=3),
                          translate(result.generator, labels[:2], result.normalizer, "boundary", seed=3))


class _Interrupted(Exception):
    pass


def _train(labels, images, directory, stop_after: int | None = None, **overrides):
    def log_metrics(metrics: dict[str, float], epoch: int) -> None:
        if epoch == stop_after:
            raise _Interrupted

    config = Pix2PixConfig(**{**TINY, "epochs": 3, "decay_epochs": 2, **overrides})
    return train_pix2pix(labels, images, config, CheckpointStore(directory), start_runtime("cpu", "fp32", seed=0),
                         log_metrics=log_metrics, progress=False)


@pytest.mark.parametrize("representation", ["label", "flows"])
def test_resume_continues_bit_identically(tmp_path, representation):
    labels, images = _crops(1)
    labels, images = labels[:4], images[:4]
    straight = _train(labels, images, tmp_path / "straight", representation=representation)
    with pytest.raises(_Interrupted):
        _train(labels, images, tmp_path / "resumed", stop_after=1, representation=representation)
    assert [p.name for p in CheckpointStore(tmp_path / "resumed").paths()] == ["checkpoint-000001.pt"]
    resumed = _train(labels, images, tmp_path / "resumed", representation=representation)
    assert resumed.history == straight.history
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[key]), f"G.{key} differs after resume"
    final = CheckpointStore(tmp_path / "resumed").latest()
    for key, value in CheckpointStore(tmp_path / "straight").latest()["D"].items():
        assert torch.equal(value, final["D"][key]), f"D.{key} differs after resume"
    assert final["epoch"] == 3 and final["normalizer"] == straight.normalizer


def test_resume_refuses_another_architecture(tmp_path):
    labels, images = _crops(1)
    _train(labels[:2], images[:2], tmp_path, epochs=1, decay_epochs=0)
    with pytest.raises(ValueError, match="another architecture"):
        _train(labels[:2], images[:2], tmp_path, epochs=2, decay_epochs=0, g_filters=8)


@pytest.mark.parametrize("params, key", [
    ({"epochs": 0}, "image_translation.epochs"),
    ({"epochs": 10, "decay_epochs": 11}, "image_translation.decay_epochs"),
    ({"lr": 0.0}, "image_translation.lr"),
    ({"beta1": 1.0}, "image_translation.beta1"),
    ({"lambda_l1": -1}, "image_translation.lambda_l1"),
    ({"gan_loss": "hinge"}, "image_translation.gan_loss"),
    ({"representation": "rgb"}, "image_translation.representation"),
    ({"norm": "group"}, "image_translation.norm"),
    ({"upsample": "pixelshuffle"}, "image_translation.upsample"),
    ({"checkpoint_every": 0}, "image_translation.checkpoint_every"),
    ({"dropout": 1.5}, "image_translation.dropout"),
    ({"epochs": "10"}, "image_translation.epochs"),
    ({"batch": 2.5}, "image_translation.batch"),
    ({"jitter": "yes"}, "image_translation.jitter"),
    ({"epoch": 5}, "epoch"),
])
def test_bad_settings_are_named(params, key):
    with pytest.raises(ValueError, match=key):
        Pix2PixConfig.from_params(params)


def test_mismatched_or_malformed_training_data_is_rejected(tmp_path):
    labels, images = _crops(1)
    config = Pix2PixConfig(**TINY, epochs=1, decay_epochs=0)
    runtime = start_runtime("cpu", "fp32", seed=0)
    for bad_labels, bad_images, message in [
        (labels[:3], images[:4], "pair"),
        (labels[:, :16], images[:, :16], "pair"),
        (labels[:, :24, :24], images[:, :24, :24], "power of two"),
        (labels, images.astype(np.float32), "uint8 or uint16"),
        (labels.astype(np.float32), images, "integers"),
    ]:
        with pytest.raises(ValueError, match=message):
            train_pix2pix(bad_labels, bad_images, config, CheckpointStore(tmp_path), runtime, progress=False)
    assert not CheckpointStore(tmp_path).paths()


def test_lsgan_and_16bit_multichannel_training_runs(tmp_path):
    labels, _ = _crops(1)
    rng = np.random.default_rng(0)
    images = ((labels[:4, :, :, None] > 0) * 30000 + rng.integers(0, 2000, (4, 32, 32, 2))).astype(np.uint16)
    result = _train(labels[:4], images, tmp_path, epochs=1, decay_epochs=0, gan_loss="lsgan", jitter=False)
    fake = translate(result.generator, labels[:3], result.normalizer, result.representation, batch=2, seed=0)
    assert fake.shape == (3, 32, 32, 2) and fake.dtype == np.uint16
