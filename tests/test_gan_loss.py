"""StyleGAN2 loss: logistic terms, lazy R1 and path length checked numerically on linear networks."""

import math

import pytest
import torch
from torch import nn

from cellsynth.gan import (
    AugmentPipe,
    Discriminator,
    Generator,
    StyleGAN2Loss,
    auto_r1_gamma,
    ema_beta,
    set_modulation,
)

SHAPE = (2, 4, 4)  # (C, H, W) of the toy networks' images


pytestmark = pytest.mark.usefixtures("single_thread")


class LinearGenerator(nn.Module):
    """``images = A @ flatten(ws)``; the mapping broadcasts ``gain * z`` (gain 1) to every layer."""

    def __init__(self, z_dim: int = 3, num_ws: int = 4) -> None:
        super().__init__()
        self.z_dim, self.num_ws = z_dim, num_ws
        self.gain = nn.Parameter(torch.ones([]))
        self.matrix = nn.Parameter(torch.randn(math.prod(SHAPE), num_ws * z_dim))

    def mapping(self, z: torch.Tensor, update_w_avg: bool = False) -> torch.Tensor:
        return (self.gain * z).unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return (ws.flatten(1) @ self.matrix.T).view(-1, *SHAPE)


class LinearDiscriminator(nn.Module):
    """``D(x) = <v, x> + c``: its input gradient is ``v`` for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(math.prod(SHAPE)))
        self.c = nn.Parameter(torch.randn([]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1) @ self.v + self.c).unsqueeze(1)


class QuadraticDiscriminator(nn.Module):
    """``D(x) = a |x|^2``: its input gradient is ``2 a x``, different per image."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.a * images.flatten(1).square().sum(1, keepdim=True)


def test_logistic_losses_match_softplus_formulas():
    torch.manual_seed(0)
    generator, discriminator = LinearGenerator(), LinearDiscriminator()
    loss = StyleGAN2Loss(generator, discriminator, style_mixing_prob=0.0)
    z, real = torch.randn(5, 3), torch.randn(5, *SHAPE)
    fake_logits = discriminator(generator.synthesis(generator.mapping(z)))
    real_logits = discriminator(real)
    assert torch.allclose(loss.g_main(z), torch.log1p(torch.exp(-fake_logits)).mean())
    d_loss, returned_logits = loss.d_main(real, z)
    expected = torch.log1p(torch.exp(fake_logits)).mean() + torch.log1p(torch.exp(-real_logits)).mean()
    assert torch.allclose(d_loss, expected)
    assert torch.allclose(returned_logits, real_logits)


def test_relativistic_losses_pair_fakes_with_reals_and_penalise_both():
    """RpGAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024): D and G see the logit difference of
    paired fakes and reals; the gradient penalty covers reals (R1) and fakes (R2)."""
    torch.manual_seed(0)
    generator = LinearGenerator()
    quadratic = QuadraticDiscriminator(0.3)
    loss = StyleGAN2Loss(generator, quadratic, style_mixing_prob=0.0, relativistic=True, r1_gamma=2.0, r1_interval=4)
    z, real = torch.randn(5, 3), torch.randn(5, *SHAPE)
    fake = generator.synthesis(generator.mapping(z))
    difference = quadratic(fake) - quadratic(real)
    assert torch.allclose(loss.g_main(z, real), torch.nn.functional.softplus(-difference).mean())
    assert torch.allclose(loss.d_main(real, z).loss, torch.nn.functional.softplus(difference).mean())
    per_image = [(2 * 0.3 * x).flatten(1).square().sum(1).mean() for x in (real, fake)]
    assert torch.allclose(loss.d_reg(real, z), 2.0 / 2 * 4 * (per_image[0] + per_image[1]))
    with pytest.raises(ValueError, match="needs real images"):
        loss.g_main(z)
    with pytest.raises(ValueError, match="needs latents"):
        loss.d_reg(real)


def test_mode_seeking_penalises_generators_that_ignore_z():
    from cellsynth.gan.loss import mode_seeking_penalty

    z = torch.randn(8, 3)
    same = torch.ones(8, *SHAPE).requires_grad_(True)
    spread = z[:, :1, None, None].expand(8, *SHAPE)  # images that follow z
    assert mode_seeking_penalty(same, z) > 1e4 > mode_seeking_penalty(spread, z)
    torch.manual_seed(0)
    generator, discriminator = LinearGenerator(), LinearDiscriminator()
    plain = StyleGAN2Loss(generator, discriminator, style_mixing_prob=0.0)
    seeking = StyleGAN2Loss(generator, discriminator, style_mixing_prob=0.0, mode_seeking=0.5)
    images = generator.synthesis(generator.mapping(z))
    expected = plain.g_main(z) + 0.5 * mode_seeking_penalty(images, z)
    assert torch.allclose(seeking.g_main(z), expected)


def test_d_main_does_not_backpropagate_into_the_generator():
    torch.manual_seed(0)
    generator, discriminator = LinearGenerator(), LinearDiscriminator()
    d_loss, _ = StyleGAN2Loss(generator, discriminator).d_main(torch.randn(4, *SHAPE), torch.randn(4, 3))
    d_loss.backward()
    assert generator.matrix.grad is None and discriminator.v.grad is not None


def test_r1_equals_hand_computed_squared_gradient_norm():
    torch.manual_seed(0)
    real = torch.randn(6, *SHAPE)
    linear = LinearDiscriminator()
    loss = StyleGAN2Loss(LinearGenerator(), linear, r1_gamma=0.5, r1_interval=16)
    expected = 0.5 / 2 * 16 * linear.v.detach().square().sum()
    assert torch.allclose(loss.d_reg(real), expected)

    quadratic = StyleGAN2Loss(LinearGenerator(), QuadraticDiscriminator(0.3), r1_gamma=2.0, r1_interval=4)
    per_image = (2 * 0.3 * real).flatten(1).square().sum(1)
    assert torch.allclose(quadratic.d_reg(real), 2.0 / 2 * 4 * per_image.mean())


def test_r1_gradient_reaches_discriminator_weights():
    torch.manual_seed(0)
    linear = LinearDiscriminator()
    StyleGAN2Loss(LinearGenerator(), linear).d_reg(torch.randn(3, *SHAPE)).backward()
    # d/dv (gamma/2 * k * |v|^2) = gamma * k * v
    assert torch.allclose(linear.v.grad, 10.0 * 16 * linear.v.detach())


def test_path_length_penalty_for_a_linear_generator():
    torch.manual_seed(0)
    generator = LinearGenerator()
    loss = StyleGAN2Loss(
        generator, LinearDiscriminator(), style_mixing_prob=0.0, pl_weight=2.0, pl_decay=0.01, pl_batch_shrink=2
    )
    z = torch.randn(6, 3)
    pl_mean = torch.tensor(0.0)
    for seed in (1, 2):
        # With style mixing off the image noise y is the loss's only random draw.
        torch.manual_seed(seed)
        penalty = loss.g_reg(z)
        torch.manual_seed(seed)
        y = torch.randn(3, *SHAPE) / math.sqrt(SHAPE[1] * SHAPE[2])
        # For images = A w the vector-Jacobian product J^T y is A^T y, split per layer.
        grads = (y.flatten(1) @ generator.matrix.detach()).view(3, generator.num_ws, generator.z_dim)
        lengths = grads.square().sum(2).mean(1).sqrt()
        pl_mean = pl_mean + 0.01 * (lengths.mean() - pl_mean)
        assert torch.allclose(loss.pl_mean, pl_mean)
        assert torch.allclose(penalty, 2.0 * 4 * (lengths - pl_mean).square().mean())
    penalty.backward()
    assert generator.matrix.grad is not None and generator.matrix.grad.abs().sum() > 0


def test_style_mixing_splices_two_latents_at_a_crossover():
    torch.manual_seed(0)
    generator = LinearGenerator(num_ws=6)
    z = torch.randn(32, 3)
    _, ws = StyleGAN2Loss(generator, LinearDiscriminator(), style_mixing_prob=1.0).generate(z)
    for n in range(32):
        from_first = (ws[n] == z[n]).all(dim=1)
        crossover = int(from_first.sum())
        assert 1 <= crossover < 6
        assert from_first[:crossover].all() and not from_first[crossover:].any()
        assert (ws[n, crossover:] == ws[n, crossover]).all()
    _, unmixed = StyleGAN2Loss(generator, LinearDiscriminator(), style_mixing_prob=0.0).generate(z)
    assert torch.equal(unmixed, generator.mapping(z))


def test_all_phases_train_real_networks_with_augmentation():
    torch.manual_seed(0)
    generator = Generator(16, 16, 32, 3, channel_base=128, channel_max=8, mapping_layers=2)
    discriminator = Discriminator(32, 3, channel_base=128, channel_max=8)
    pipe = AugmentPipe(p=0.5, xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, vector_channels=(1, 2))
    loss = StyleGAN2Loss(generator, discriminator, pipe)
    z, real = torch.randn(4, 16), torch.randn(4, 3, 32, 32)
    terms = [loss.g_main(z), loss.g_reg(z), loss.d_main(real, z).loss, loss.d_reg(real)]
    for term in terms:
        assert term.shape == () and term.dtype == torch.float32 and torch.isfinite(term)
    sum(terms).backward()
    for network in (generator, discriminator):
        assert all(p.grad is not None for p in network.parameters())
    assert generator.mapping.w_avg.abs().sum() > 0  # g_main tracks w_avg
    assert set(loss.state_dict()) == {"pl_mean"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(loss.g_main(z)) and torch.isfinite(loss.d_reg(real))


def test_compiled_networks_serve_the_main_phases_and_the_penalties_stay_eager():
    torch.manual_seed(0)
    generator = Generator(16, 16, 32, 3, channel_base=128, channel_max=8, mapping_layers=2)
    discriminator = Discriminator(32, 3, channel_base=128, channel_max=8)
    compiled: list[nn.Module] = []

    def compile_network(network: nn.Module) -> nn.Module:
        compiled.append(network)
        # aot_eager traces like inductor (and, like it, refuses double backward) without generating code
        return torch.compile(network, backend="aot_eager", dynamic=False)

    eager = StyleGAN2Loss(generator, discriminator, style_mixing_prob=0.0)
    loss = StyleGAN2Loss(generator, discriminator, style_mixing_prob=0.0, compile_network=compile_network)
    assert compiled == [generator.mapping, generator.synthesis, discriminator]
    z, real = torch.randn(4, 16), torch.randn(4, 3, 32, 32)

    def seeded(phase):
        torch.manual_seed(1)
        return phase()

    for phase in ("g_main", "d_main"):
        expected = seeded(lambda: getattr(eager, phase)(*((z,) if phase == "g_main" else (real, z))))
        actual = seeded(lambda: getattr(loss, phase)(*((z,) if phase == "g_main" else (real, z))))
        expected, actual = (v if phase == "g_main" else v.loss for v in (expected, actual))
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    # R1 and path length need a double backward pass, which a compiled graph would refuse
    torch.testing.assert_close(seeded(lambda: loss.d_reg(real)), seeded(lambda: eager.d_reg(real)))
    loss.g_reg(z).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.synthesis.parameters())


def test_path_length_penalty_and_its_gradient_do_not_depend_on_how_modulation_is_evaluated():
    torch.manual_seed(0)
    generator = Generator(16, 16, 32, 3, channel_base=128, channel_max=8, mapping_layers=2)
    z = torch.randn(4, 16)
    results = []
    for grouped in (True, False):
        set_modulation(generator, grouped)
        generator.zero_grad()
        torch.manual_seed(1)
        penalty = StyleGAN2Loss(generator, LinearDiscriminator().requires_grad_(False)).g_reg(z)
        penalty.backward()  # a double backward pass through the modulated convolutions
        results.append((penalty.detach(), [p.grad.clone() for p in generator.synthesis.parameters()
                                           if p.grad is not None]))
    (penalty_a, grads_a), (penalty_b, grads_b) = results
    torch.testing.assert_close(penalty_b, penalty_a, rtol=1e-4, atol=1e-6)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_auto_gamma_and_ema_beta():
    assert auto_r1_gamma(256, 64) == pytest.approx(0.0002 * 256**2 / 64)
    assert ema_beta(32, cur_nimg=10**7) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(32, ema_kimg=20, ema_rampup=None, cur_nimg=0) == pytest.approx(0.5 ** (32 / 20_000))
    assert ema_beta(32, cur_nimg=1000) == pytest.approx(0.5 ** (32 / 50))  # ramp-up: 5 % of 1000 images
    assert ema_beta(32, cur_nimg=0) == 0.0


def test_discriminator_blur_keeps_constants_and_fades_out():
    from cellsynth.gan.loss import blur_sigma_at, gaussian_blur

    constant = torch.full((2, 3, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)
    impulse = torch.zeros(1, 1, 17, 17)
    impulse[0, 0, 8, 8] = 1.0
    blurred = gaussian_blur(impulse, 1.5)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)  # mass kept away from the borders
    rows = torch.arange(17.0) - 8
    spread = (blurred[0, 0].sum(1) * rows**2).sum().sqrt()
    assert spread.item() == pytest.approx(1.5, abs=0.05)  # the standard deviation asked for
    assert [blur_sigma_at(2.0, 100, n) for n in (0, 50_000, 100_000, 300_000)] == [2.0, 1.0, 0.0, 0.0]
    assert blur_sigma_at(2.0, 0, 10**9) == 2.0  # no fade: constant


def test_blurred_discriminator_input_reaches_r1_and_the_logits():
    torch.manual_seed(0)
    generator = Generator(16, 16, 32, 3, channel_base=128, channel_max=8, mapping_layers=2)
    discriminator = Discriminator(32, 3, channel_base=128, channel_max=8)
    loss = StyleGAN2Loss(generator, discriminator, r1_gamma=1.0)
    real = torch.randn(4, 3, 32, 32)
    sharp = loss.discriminate(real)
    loss.blur_sigma = 1.0
    assert not torch.allclose(sharp, loss.discriminate(real))
    penalty = loss.d_reg(real)
    penalty.backward()
    assert torch.isfinite(penalty) and discriminator.fromrgb.weight.grad.abs().sum() > 0
