"""ADA: identity at p=0, every transform active at p=1, differentiable, flow vectors turned, p controller."""

import math

import pytest
import torch
import torch.nn.functional as F

from cellsynth.gan import AdaptiveAugmentController, AugmentPipe
from cellsynth.gan.augment import _bilinear_sample

TRANSFORMS = [
    "xflip",
    "rotate90",
    "xint",
    "scale",
    "rotate",
    "aniso",
    "xfrac",
    "brightness",
    "contrast",
    "lumaflip",
    "hue",
    "saturation",
]
ALL_ON = {name: 1.0 for name in TRANSFORMS}


pytestmark = pytest.mark.usefixtures("single_thread")


def radial_field(n: int, size: int) -> torch.Tensor:
    """``(n, 3, size, size)``: channel 0 an asymmetric pattern, channels 1-2 the vector (x, y) from the centre."""
    centred = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    y, x = torch.meshgrid(centred, centred, indexing="ij")
    pattern = torch.sin(0.7 * x + 0.3) * torch.cos(0.4 * y - 0.2) + 0.05 * x
    return torch.stack([pattern, x, y]).unsqueeze(0).repeat(n, 1, 1, 1)


@pytest.mark.parametrize("vector_channels", [None, (1, 2)])
def test_p_zero_is_exactly_the_identity(vector_channels):
    torch.manual_seed(0)
    pipe = AugmentPipe(p=0.0, **ALL_ON, vector_channels=vector_channels)
    images = torch.randn(8, 3, 16, 16)
    assert torch.equal(pipe(images), images)


def test_p_is_a_settable_buffer():
    pipe = AugmentPipe(p=0.3, xflip=1)
    assert "p" in pipe.state_dict()
    pipe.p.fill_(0.0)
    images = torch.randn(4, 3, 8, 8)
    assert torch.equal(pipe(images), images)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_changes_images_at_p_one(name):
    torch.manual_seed(0)
    images = torch.randn(16, 3, 16, 16)
    out = AugmentPipe(p=1.0, **{name: 1.0})(images)
    assert out.shape == images.shape
    assert not torch.equal(out, images)


def test_all_samples_change_at_p_one_and_gradients_reach_the_input():
    torch.manual_seed(0)
    images = torch.randn(8, 3, 16, 16, requires_grad=True)
    out = AugmentPipe(p=1.0, **ALL_ON)(images)
    assert all(not torch.allclose(out[n], images[n]) for n in range(8))
    (out * torch.randn_like(out)).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert (images.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_non_rgb_images_get_brightness_and_contrast_only():
    torch.manual_seed(0)
    images = torch.randn(8, 2, 8, 8)
    assert torch.equal(AugmentPipe(p=1.0, lumaflip=1, hue=1, saturation=1)(images), images)
    out = AugmentPipe(p=1.0, brightness=1, contrast=1)(images)
    # x -> k (x + b) per sample: one affine map, the same for every channel and pixel.
    x, y = images.flatten(1), out.flatten(1)
    k = (y[:, 1] - y[:, 0]) / (x[:, 1] - x[:, 0])
    offset = y[:, 0] - k * x[:, 0]
    assert torch.allclose(y, k[:, None] * x + offset[:, None], atol=1e-4)
    assert not torch.allclose(k, torch.ones(8))


def test_sampler_matches_grid_sample_with_reflection_and_has_a_second_derivative():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 9, 12, requires_grad=True)
    source_x, source_y = torch.rand(2, 9, 12) * 30 - 10, torch.rand(2, 9, 12) * 30 - 10
    grid = torch.stack([(source_x + 0.5) / 6 - 1, (source_y + 0.5) / 4.5 - 1], dim=-1)
    expected = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    sampled = _bilinear_sample(images, source_x, source_y)
    assert torch.allclose(sampled, expected, atol=1e-4)
    # R1 through the augmentations differentiates the sampler's backward pass once more.
    weight = torch.randn(3, requires_grad=True)
    (grad,) = torch.autograd.grad((sampled * weight.view(1, 3, 1, 1)).sum(), images, create_graph=True)
    grad.square().sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_blitting_is_exact_pixel_permutation():
    torch.manual_seed(0)
    images = torch.randn(16, 3, 8, 8)
    out = AugmentPipe(p=1.0, xflip=1, rotate90=1)(images)
    for n in range(16):
        candidates = [torch.rot90(im, k, dims=(1, 2)) for im in (images[n], images[n].flip(2)) for k in range(4)]
        assert any(torch.equal(out[n], c) for c in candidates)


def test_xflip_negates_the_x_component_of_flow_vectors():
    torch.manual_seed(0)
    flows = torch.randn(16, 3, 8, 8)
    out = AugmentPipe(p=1.0, xflip=1, vector_channels=(1, 2))(flows)
    flipped = [n for n in range(16) if torch.equal(out[n, 0], flows[n, 0].flip(-1))]
    kept = [n for n in range(16) if torch.equal(out[n], flows[n])]
    assert flipped and kept and len(flipped) + len(kept) == 16
    for n in flipped:
        assert torch.equal(out[n, 1], -flows[n, 1].flip(-1))
        assert torch.equal(out[n, 2], flows[n, 2].flip(-1))


def test_flips_and_rotations_keep_a_radial_flow_radial():
    # The field v(p) = p is invariant under any rotation or flip about the centre if, and only if,
    # pixels move and vectors turn consistently (same matrix, same axis conventions).
    torch.manual_seed(0)
    field = radial_field(8, 16)
    blitted = AugmentPipe(p=1.0, xflip=1, rotate90=1, vector_channels=(1, 2))(field)
    assert not torch.equal(blitted[:, 0], field[:, 0])
    assert torch.equal(blitted[:, 1:], field[:, 1:])

    rotated = AugmentPipe(p=1.0, rotate=1, vector_channels=(1, 2))(field)
    centred = torch.arange(16.0) + 0.5 - 8
    inside = centred.view(-1, 1) ** 2 + centred.view(1, -1) ** 2 < 7**2  # sampled from within the image
    assert not torch.allclose(rotated[:, 0], field[:, 0])
    assert torch.allclose(rotated[:, 1:, inside], field[:, 1:, inside], atol=1e-4)
    unturned = AugmentPipe(p=1.0, rotate=1)(field)
    assert not torch.allclose(unturned[:, 1:, inside], field[:, 1:, inside], atol=1e-1)


def test_geometric_transforms_keep_flow_vector_lengths():
    torch.manual_seed(0)
    flows = torch.randn(8, 3, 16, 16)
    torch.manual_seed(1)
    out = AugmentPipe(p=1.0, scale=1, aniso=1, vector_channels=(1, 2))(flows)
    # Same random draws without vector handling: only the direction of each (x, y) vector may differ.
    torch.manual_seed(1)
    plain = AugmentPipe(p=1.0, scale=1, aniso=1)(flows)
    assert torch.allclose(out[:, 0], plain[:, 0])
    assert torch.allclose(out[:, 1:].norm(dim=1), plain[:, 1:].norm(dim=1), atol=1e-4)
    assert not torch.allclose(out[:, 1:], plain[:, 1:])


def test_controller_moves_p_by_the_ada_step_and_clamps():
    batch, interval, kimg = 64, 4, 500
    step = batch * interval / (kimg * 1000)
    controller = AdaptiveAugmentController(target=0.6, adjust_kimg=kimg, batch_size=batch, interval=interval)
    overfit, underfit = torch.ones(batch, 1), -torch.ones(batch, 1)

    assert [controller.observe(overfit) for _ in range(interval)] == [False, False, False, True]
    assert controller.rt == 1.0
    assert controller.p == pytest.approx(step)
    for _ in range(interval):
        controller.observe(overfit)
    assert controller.p == pytest.approx(2 * step)

    for _ in range(3 * interval):
        controller.observe(underfit)
    assert controller.rt == -1.0
    assert controller.p == 0.0

    mixed = torch.cat([torch.ones(batch // 2, 1), -torch.ones(batch // 2, 1)])  # r_t = 0 < target
    controller.p = 0.5
    for _ in range(interval):
        controller.observe(mixed)
    assert controller.rt == 0.0
    assert controller.p == pytest.approx(0.5 - step)


def test_controller_clamps_at_one():
    controller = AdaptiveAugmentController(batch_size=32, interval=1, adjust_kimg=0.01, p=0.95)
    controller.observe(torch.ones(32))
    assert controller.p == 1.0
    assert math.isclose(controller.step_size, 32 / 10)


def test_controller_stops_at_max_p_and_rejects_a_start_above_it():
    controller = AdaptiveAugmentController(batch_size=32, interval=1, adjust_kimg=0.1, p=0.4, max_p=0.5)
    for _ in range(5):
        controller.observe(torch.ones(32))  # overfitting: p would climb past 1 without the cap
    assert controller.p == 0.5
    controller.observe(-torch.ones(32))
    assert controller.p == pytest.approx(0.5 - controller.step_size)
    with pytest.raises(ValueError, match="max_p"):
        AdaptiveAugmentController(batch_size=32, p=0.6, max_p=0.5)
    with pytest.raises(ValueError, match="max_p"):
        AdaptiveAugmentController(batch_size=32, max_p=1.5)
