"""StyleGAN2 layers and networks: equalised lr, FIR resampling, modulated conv, G/D behaviour."""

import math

import pytest
import torch
import torch.nn.functional as F

from cellsynth.gan import (
    Discriminator,
    EqualizedConv2d,
    EqualizedLinear,
    Generator,
    ModulatedConv2d,
    set_modulation,
)
from cellsynth.gan.layers import (
    NoiseInjection,
    conv2d,
    conv_transpose2d,
    downsample2d,
    make_fir_kernel,
    upsample2d,
)
from cellsynth.gan.networks import MinibatchStdDev

TINY = dict(channel_base=256, channel_max=16)


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_generator(resolution: int = 32, channels: int = 3) -> Generator:
    return Generator(z_dim=16, w_dim=16, img_resolution=resolution, img_channels=channels, mapping_layers=2, **TINY)


@pytest.mark.parametrize("fan_in", [8, 128, 2048])
@pytest.mark.parametrize("lr_multiplier", [1.0, 0.01])
def test_equalized_linear_keeps_unit_variance_and_scales_by_he_constant(fan_in, lr_multiplier):
    torch.manual_seed(0)
    layer = EqualizedLinear(fan_in, 512, bias=False, lr_multiplier=lr_multiplier)
    assert layer.weight_gain == pytest.approx(lr_multiplier / math.sqrt(fan_in))
    x = torch.randn(256, fan_in)
    y = layer(x)
    assert torch.allclose(y, x @ (layer.weight * layer.weight_gain).T)
    assert y.std().item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("in_channels", [2, 64])
def test_equalized_conv_keeps_unit_variance_and_scales_by_he_constant(in_channels):
    torch.manual_seed(0)
    conv = EqualizedConv2d(in_channels, 64, 3, bias=False)
    assert conv.weight_gain == pytest.approx(1 / math.sqrt(in_channels * 9))
    y = conv(torch.randn(8, in_channels, 12, 12))[..., 1:-1, 1:-1]  # borders see zero padding
    assert y.std().item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    "transposed, stride, padding, groups, size", [(False, 1, 1, 1, 4), (False, 2, 0, 2, 5), (True, 2, 0, 2, 3)]
)
def test_convolution_first_and_second_derivatives(transposed, stride, padding, groups, size):
    # R1 and path-length regularisation differentiate gradients: check both orders numerically.
    torch.manual_seed(0)
    x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    op = conv_transpose2d if transposed else conv2d
    reference = F.conv_transpose2d if transposed else F.conv2d
    expected = reference(x, weight, None, stride, padding, groups=groups)
    assert torch.allclose(op(x, weight, stride, padding, groups), expected)
    function = lambda a, b: op(a, b, stride, padding, groups)  # noqa: E731
    assert torch.autograd.gradcheck(function, (x, weight))
    assert torch.autograd.gradgradcheck(function, (x, weight))


def test_fir_resampling_has_unit_gain_and_right_shapes():
    kernel = make_fir_kernel()
    assert torch.allclose(kernel, torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8)
    ones = torch.full((2, 3, 8, 8), 2.5)
    up = upsample2d(ones, kernel)
    down = downsample2d(ones, kernel)
    assert up.shape == (2, 3, 16, 16) and down.shape == (2, 3, 4, 4)
    # Away from the borders (which see zero padding) the constant is preserved.
    assert torch.allclose(up[..., 1:-1, 1:-1], torch.tensor(2.5))
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(2.5))
    with pytest.raises(ValueError, match="symmetric"):
        make_fir_kernel((1, 2, 3))


def test_upsample_is_bilinear_interpolation_at_quarter_pixels():
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 6, 6)
    up = upsample2d(ramp, make_fir_kernel())
    # Output pixel j sits at input coordinate (j + 0.5) / 2 - 0.5, where the ramp equals that value.
    expected = (torch.arange(12.0) + 0.5) / 2 - 0.5
    assert torch.allclose(up[0, 0, 4, 2:-2], expected[2:-2])


def hand_modulated_weight(conv: ModulatedConv2d, style: torch.Tensor) -> torch.Tensor:
    """``(O, I, k, k)`` weight for one sample, written out from StyleGAN2 Eqs. 1 and 3."""
    fan_in = conv.weight[0].numel()
    weight = conv.weight / math.sqrt(fan_in) * style.view(1, -1, 1, 1)
    if conv.demodulate:
        weight = weight / torch.sqrt((weight**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return weight


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_conv_with_hand_made_weight(demodulate, grouped):
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 5, 3, demodulate=demodulate)
    conv.grouped = grouped
    x, styles = torch.randn(4, 3, 8, 8), torch.randn(4, 3)
    expected = torch.cat([F.conv2d(x[n : n + 1], hand_modulated_weight(conv, styles[n]), padding=1) for n in range(4)])
    assert torch.allclose(conv(x, styles), expected, atol=1e-5)


@pytest.mark.parametrize("grouped", [True, False])
def test_upsampling_modulated_conv_equals_upsample_then_conv(grouped):
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 5, 3, up=2)
    conv.grouped = grouped
    x, styles, kernel = torch.randn(2, 3, 8, 8), torch.randn(2, 3), make_fir_kernel()
    y = conv(x, styles)
    assert y.shape == (2, 5, 16, 16)
    explicit = torch.cat(
        [
            F.conv2d(upsample2d(x[n : n + 1], kernel), hand_modulated_weight(conv, styles[n]), padding=1)
            for n in range(2)
        ]
    )
    # Same operator; only the outermost two pixels differ (where the explicit path truncates).
    assert torch.allclose(y[..., 2:-2, 2:-2], explicit[..., 2:-2, 2:-2], atol=1e-5)


def test_batched_modulation_computes_the_same_generator():
    torch.manual_seed(0)
    generator, z = tiny_generator(), torch.randn(3, 16)
    grouped = generator(z, noise_mode="const")
    set_modulation(generator, grouped=False)
    assert not any(layer.grouped for layer in generator.modules() if isinstance(layer, ModulatedConv2d))
    torch.testing.assert_close(generator(z, noise_mode="const"), grouped, rtol=1e-4, atol=1e-4)


def test_noise_injection_modes():
    noise = NoiseInjection(8)
    noise.strength.data.fill_(0.5)
    x = torch.zeros(2, 4, 8, 8)
    assert torch.equal(noise(x, "none"), x)
    const = noise(x, "const")
    assert torch.equal(const, noise(x, "const")) and torch.equal(const[0], const[1])
    assert torch.equal(const[:, 0], const[:, 3])  # one noise image broadcast over channels
    assert not torch.equal(noise(x, "random"), noise(x, "random"))


@pytest.mark.parametrize("resolution, channels", [(32, 1), (32, 3), (64, 2)])
def test_generator_and_discriminator_shapes(resolution, channels):
    torch.manual_seed(0)
    generator = tiny_generator(resolution, channels)
    discriminator = Discriminator(resolution, channels, **TINY)
    assert generator.num_ws == 2 * int(math.log2(resolution)) - 2
    z = torch.randn(4, 16)
    ws = generator.mapping(z)
    assert ws.shape == (4, generator.num_ws, 16)
    images = generator(z)
    assert images.shape == (4, channels, resolution, resolution)
    assert discriminator(images).shape == (4, 1)


def test_channel_counts_follow_channel_base_over_resolution():
    generator = tiny_generator(64, 3)
    widths = [block.torgb.conv.in_channels for block in generator.synthesis.blocks]
    assert widths == [min(256 // r, 16) for r in (4, 8, 16, 32, 64)]
    discriminator = Discriminator(64, 3, **TINY)
    assert discriminator.fromrgb.weight.shape[0] == 4
    assert [block.conv1.weight.shape[0] for block in discriminator.blocks] == [8, 16, 16, 16]


@pytest.mark.parametrize("resolution", [16, 48, 1024])
def test_invalid_resolution_is_rejected(resolution):
    with pytest.raises(ValueError, match="img_resolution"):
        tiny_generator(resolution)
    with pytest.raises(ValueError, match="img_resolution"):
        Discriminator(resolution, 3, **TINY)


def test_truncation_to_w_avg_gives_one_image_for_all_latents():
    torch.manual_seed(0)
    generator = tiny_generator()
    for module in generator.modules():
        if isinstance(module, NoiseInjection):
            module.strength.data.fill_(0.5)  # make the noise matter
    generator.mapping(torch.randn(64, 16), update_w_avg=True)
    assert generator.mapping.w_avg.abs().sum() > 0
    images = generator(torch.randn(3, 16), truncation_psi=0, noise_mode="const")
    assert torch.allclose(images[0], images[1]) and torch.allclose(images[0], images[2])
    assert not torch.allclose(generator(torch.randn(2, 16), noise_mode="const")[0], images[0])


def test_truncation_cutoff_and_w_avg_update():
    torch.manual_seed(0)
    mapping = tiny_generator().mapping
    z = torch.randn(2, 16)
    mapping.w_avg.fill_(3.0)
    plain = mapping(z)
    assert torch.equal(mapping.w_avg, torch.full((16,), 3.0))  # not updated unless asked
    cut = mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], 3.0 + 0.5 * (plain[:, :3] - 3.0))
    assert torch.equal(cut[:, 3:], plain[:, 3:])


def test_style_mixing_through_mapping_and_synthesis():
    torch.manual_seed(0)
    generator = tiny_generator()
    ws_a, ws_b = generator.mapping(torch.randn(2, 16)), generator.mapping(torch.randn(2, 16))
    mixed = torch.cat([ws_a[:, :4], ws_b[:, 4:]], dim=1)
    image_a = generator.synthesis(ws_a, noise_mode="const")
    image_mixed = generator.synthesis(mixed, noise_mode="const")
    assert image_mixed.shape == image_a.shape
    assert not torch.allclose(image_mixed, image_a)
    assert not torch.allclose(image_mixed, generator.synthesis(ws_b, noise_mode="const"))


def test_minibatch_stddev_is_zero_for_identical_samples():
    x = torch.randn(1, 8, 4, 4).repeat(4, 1, 1, 1)
    y = MinibatchStdDev(group_size=4, num_channels=2)(x)
    assert y.shape == (4, 10, 4, 4)
    assert torch.equal(y[:, :8], x)
    assert y[:, 8:].abs().max() < 1e-3
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdDev(4)(torch.randn(6, 8, 4, 4))


def test_networks_run_under_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    generator = tiny_generator()
    discriminator = Discriminator(32, 3, **TINY)
    z = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = generator(z)
        logits = discriminator(images)
    assert images.dtype == torch.bfloat16 and torch.isfinite(images).all()
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    reference = generator(z)  # float32; noise strengths start at 0, so no randomness
    assert (images.float() - reference).norm() < 0.05 * reference.norm()
    real = torch.randn(4, 3, 32, 32)
    channels_last = discriminator(real.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(channels_last, discriminator(real), atol=1e-5)
