"""StyleGAN2 training objective: logistic loss, lazy R1, path-length regularisation, style mixing.

References
----------
Goodfellow et al. (2014): non-saturating logistic loss, ``L_G = softplus(-D(G(z)))`` and
``L_D = softplus(D(G(z))) + softplus(-D(x))``.

Mescheder, Geiger, Nowozin (2018), "Which Training Methods for GANs do actually Converge?":
R1 penalty ``gamma / 2 * ||grad_x D(x)||^2`` on real images.

Karras et al. (2020), "Analyzing and Improving the Image Quality of StyleGAN" (StyleGAN2):

- Sec. 3.1 (lazy regularisation): regularisers are evaluated only every ``k`` minibatches
  (16 for R1, 4 for path length in the reference configuration) and their weight is multiplied
  by ``k`` so the average regularisation strength is unchanged. The training loop decides when
  to call :meth:`StyleGAN2Loss.d_reg` / :meth:`StyleGAN2Loss.g_reg`; the multiplication happens
  here. (The paper's implementation also rescales the Adam learning rate and betas of lazily
  regularised networks by ``k / (k + 1)``; that belongs to the optimiser set-up.)
- Sec. 3.2 (path-length regularisation): ``E[(||J_w^T y||_2 - a)^2]`` with ``y`` a Gaussian
  image, ``a`` an exponential moving average of the lengths. Here ``y`` has i.i.d.
  ``N(0, 1 / (H W))`` pixels (normalising by the pixel count makes lengths independent of the
  resolution), the Jacobian is taken with respect to the per-layer latents ``(N, num_ws, w_dim)``
  and the length is ``sqrt(mean over layers of the squared norm over w_dim)``; the penalty runs on
  a batch shrunk by ``pl_batch_shrink`` to save time.

Karras et al. (2019), "A Style-Based Generator Architecture for GANs", Sec. 3.1: style mixing,
a fraction of generated images use a second latent from a random crossover layer on.

Karras et al. (2021), "Alias-Free Generative Adversarial Networks" (StyleGAN3), Appendix D: the
images the discriminator sees, real and generated, are blurred with a Gaussian whose sigma fades
from ``blur_sigma`` to 0 (:func:`blur_sigma_at`), so that early in training it judges shapes and
layout rather than fine detail. Encoded masks need this more than photographs do: their
probability channel is exactly 0 or 1 and their flows are unit vectors, a pixel-value statistic
that a discriminator picks up long before the generator can match it.

Karras et al. (2020), "Training GANs with Limited Data" (StyleGAN2-ADA), Appendix D/E:
the ``auto`` configuration's ``gamma = 0.0002 * resolution^2 / batch`` and the generator
exponential moving average with a half-life of ``10 * batch / 32`` kimg, ramped up over the
first 5 % of training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellsynth.gan.augment import AugmentPipe
from cellsynth.gan.layers import conv2d
from cellsynth.gan.networks import Generator


class DiscriminatorMainLoss(NamedTuple):
    """Result of :meth:`StyleGAN2Loss.d_main`."""

    loss: Tensor
    """Scalar float32 loss to back-propagate into the discriminator."""
    real_logits: Tensor
    """``(N, 1)`` detached float32 logits on real images, for the ADA controller and logging."""


class StyleGAN2Loss(nn.Module):
    """Loss terms for the four StyleGAN2 training phases (G main, G reg, D main, D reg).

    Each phase method returns a scalar float32 tensor ready for ``backward()``; the training
    loop owns the optimisers, the lazy-regularisation schedule and mixed precision. The networks
    are held by reference and are not submodules: :meth:`state_dict` contains only ``pl_mean``.

    Parameters
    ----------
    generator
        Anything with ``z_dim``, ``num_ws``, ``mapping(z, update_w_avg=...) -> (N, num_ws, w_dim)``
        and ``synthesis(ws) -> (N, C, H, W)``, normally :class:`~cellsynth.gan.networks.Generator`.
    discriminator
        Module mapping ``(N, C, H, W)`` images to ``(N, 1)`` logits.
    augment_pipe
        Applied to every image the discriminator sees (reals and fakes) when given.
    r1_gamma
        R1 weight gamma (see :func:`auto_r1_gamma`).
    r1_interval
        Lazy R1 interval; the penalty is multiplied by it.
    style_mixing_prob
        Probability that a generated sample mixes two latents.
    pl_weight
        Path-length weight (2 in the paper's configuration).
    pl_decay
        Decay of the running mean ``pl_mean``.
    pl_batch_shrink
        Divisor of the batch for the path-length pass.
    pl_interval
        Lazy path-length interval; the penalty is multiplied by it.
    compile_network
        Applied once to the mapping, synthesis and discriminator networks to get the versions
        the main phases call, e.g. :meth:`cellsynth.training.Runtime.compiled`. The
        regularisation phases take a double backward pass, which compiled graphs do not
        support, so they always call the networks themselves.

    Attributes
    ----------
    blur_sigma
        Sigma (px) of the Gaussian blur of every image the discriminator sees, after the
        augmentations; 0 = none. The training loop sets it per step (:func:`blur_sigma_at`).
    mode_seeking
        Weight of :func:`mode_seeking_penalty` in the generator's loss; the training loop
        holds it at 0 until ``mode_seeking_kimg``.
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: nn.Module,
        augment_pipe: AugmentPipe | None = None,
        r1_gamma: float = 10.0,
        r1_interval: int = 16,
        style_mixing_prob: float = 0.9,
        pl_weight: float = 2.0,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        pl_interval: int = 4,
        compile_network: Callable[[nn.Module], nn.Module] | None = None,
        relativistic: bool = False,
        mode_seeking: float = 0.0,
    ) -> None:
        super().__init__()
        if r1_gamma < 0:
            raise ValueError(f"r1_gamma must be non-negative, got {r1_gamma}")
        if r1_interval < 1 or pl_interval < 1:
            raise ValueError(f"r1_interval and pl_interval must be positive, got {r1_interval}, {pl_interval}")
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        if pl_weight < 0 or not 0.0 <= pl_decay <= 1.0 or pl_batch_shrink < 1:
            raise ValueError(
                f"need pl_weight >= 0, pl_decay in [0, 1], pl_batch_shrink >= 1; "
                f"got {pl_weight}, {pl_decay}, {pl_batch_shrink}"
            )
        # A tuple keeps nn.Module from registering the networks as submodules.
        self._networks = (generator, discriminator, augment_pipe)
        main = compile_network or (lambda network: network)
        self._main_networks = (main(generator.mapping), main(generator.synthesis), main(discriminator))
        self.r1_gamma = r1_gamma
        self.r1_interval = r1_interval
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_decay = pl_decay
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_interval = pl_interval
        self.relativistic = relativistic
        self.mode_seeking = mode_seeking
        self.blur_sigma = 0.0
        self.register_buffer("pl_mean", torch.zeros([]))

    @property
    def generator(self) -> Generator:
        return self._networks[0]

    @property
    def discriminator(self) -> nn.Module:
        return self._networks[1]

    def generate(self, z: Tensor, update_w_avg: bool = False, main: bool = False) -> tuple[Tensor, Tensor]:
        """Generate images with style mixing.

        With probability ``style_mixing_prob`` a sample's latents from a random crossover layer
        ``1 <= k < num_ws`` on come from a second, independent ``z``.

        Parameters
        ----------
        z
            ``(N, z_dim)`` latents.
        update_w_avg
            Passed to the mapping network for the first latent.
        main
            Use the main phases' (possibly compiled) networks.

        Returns
        -------
        tuple of Tensor
            Images ``(N, C, H, W)`` and the per-layer latents ``(N, num_ws, w_dim)`` used.
        """
        mapping, synthesis = self._main_networks[:2] if main else (self.generator.mapping, self.generator.synthesis)
        ws = mapping(z, update_w_avg=update_w_avg)
        if self.style_mixing_prob > 0:
            n, num_ws = ws.shape[:2]
            crossover = torch.randint(1, num_ws, (n,), device=z.device)
            mixed = torch.rand(n, device=z.device) < self.style_mixing_prob
            crossover = torch.where(mixed, crossover, torch.full_like(crossover, num_ws))
            second = mapping(torch.randn_like(z))
            from_second = torch.arange(num_ws, device=z.device).view(1, -1, 1) >= crossover.view(-1, 1, 1)
            ws = torch.where(from_second, second, ws)
        return synthesis(ws), ws

    def discriminate(self, images: Tensor, main: bool = False) -> Tensor:
        """Augment (if configured) and score images; returns ``(N, 1)`` float32 logits.

        ``main`` selects the main phases' (possibly compiled) discriminator.
        """
        augment_pipe = self._networks[2]
        if augment_pipe is not None:
            images = augment_pipe(images)
        if self.blur_sigma > 0:
            images = gaussian_blur(images, self.blur_sigma)
        discriminator = self._main_networks[2] if main else self.discriminator
        return discriminator(images).float()

    def g_main(self, z: Tensor, real: Tensor | None = None) -> Tensor:
        """Generator loss; also updates the mapping's ``w_avg``.

        Logistic: ``mean(softplus(-D(G(z))))``. Relativistic: ``mean(softplus(D(x) - D(G(z))))``,
        each fake paired with a real image.

        Parameters
        ----------
        z
            ``(N, z_dim)`` latents.
        real
            ``(N, C, H, W)`` real images; needed by the relativistic objective only.

        Returns
        -------
        Tensor
            Scalar float32.
        """
        images, _ = self.generate(z, update_w_avg=True, main=True)
        fake_logits = self.discriminate(images, main=True)
        if not self.relativistic:
            loss = F.softplus(-fake_logits).mean()
        elif real is None:
            raise ValueError("the relativistic generator loss needs real images")
        else:
            loss = F.softplus(self.discriminate(real.detach(), main=True) - fake_logits).mean()
        if self.mode_seeking > 0 and len(z) >= 2:
            loss = loss + self.mode_seeking * mode_seeking_penalty(images, z)
        return loss

    def g_reg(self, z: Tensor) -> Tensor:
        """Lazy path-length penalty ``pl_weight * pl_interval * mean((|J_w^T y| - a)^2)``.

        Updates ``pl_mean`` (``a``) with the batch mean of the lengths before the penalty, as an
        exponential moving average with weight ``pl_decay``. Gradients flow into the generator
        through a double backward pass.

        Parameters
        ----------
        z
            ``(N, z_dim)`` latents; the first ``max(N // pl_batch_shrink, 1)`` are used.

        Returns
        -------
        Tensor
            Scalar float32.
        """
        z = z[: max(z.shape[0] // self.pl_batch_shrink, 1)]
        images, ws = self.generate(z)
        height, width = images.shape[2:]
        y = torch.randn(images.shape, device=images.device) / math.sqrt(height * width)
        (grads,) = torch.autograd.grad((images.float() * y).sum(), ws, create_graph=True)
        lengths = grads.float().square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean().detach(), self.pl_decay))
        penalty = (lengths - self.pl_mean).square().mean()
        return penalty * (self.pl_weight * self.pl_interval)

    def d_main(self, real: Tensor, z: Tensor) -> DiscriminatorMainLoss:
        """Discriminator loss: logistic ``mean(softplus(D(G(z)))) + mean(softplus(-D(x)))``, or
        relativistic ``mean(softplus(D(G(z)) - D(x)))`` with fakes and reals paired.

        Parameters
        ----------
        real
            ``(N, C, H, W)`` real images.
        z
            ``(M, z_dim)`` latents for the fakes (no gradient into the generator).

        Returns
        -------
        DiscriminatorMainLoss
            Scalar loss and the real logits.
        """
        with torch.no_grad():
            fake, _ = self.generate(z, main=True)
        fake_logits = self.discriminate(fake, main=True)
        real_logits = self.discriminate(real.detach(), main=True)
        if self.relativistic:
            loss = F.softplus(fake_logits - real_logits).mean()
        else:
            loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        return DiscriminatorMainLoss(loss, real_logits.detach())

    def d_reg(self, real: Tensor, z: Tensor | None = None) -> Tensor:
        """Lazy gradient penalty ``r1_gamma / 2 * r1_interval * mean(||grad_x D(x)||^2)`` on reals
        (R1), and with the relativistic objective the same on fakes ``G(z)`` (R2), added.

        The gradient is taken with respect to the images before augmentation, so the penalty
        covers the augmentation pipeline too (ADA Sec. 2 requires everything D sees to be
        augmented).

        Parameters
        ----------
        real
            ``(N, C, H, W)`` real images.
        z
            ``(M, z_dim)`` latents of the fakes; needed by the relativistic objective only.

        Returns
        -------
        Tensor
            Scalar float32.
        """
        images = [real.detach()]
        if self.relativistic:
            if z is None:
                raise ValueError("the relativistic objective's R2 penalty needs latents for fakes")
            with torch.no_grad():
                images.append(self.generate(z)[0].float())
        penalty = 0.0
        for batch in images:
            batch = batch.requires_grad_(True)
            (grads,) = torch.autograd.grad(self.discriminate(batch).sum(), batch, create_graph=True)
            penalty = penalty + grads.float().square().sum(dim=(1, 2, 3)).mean()
        return penalty * (self.r1_gamma / 2 * self.r1_interval)


def auto_r1_gamma(resolution: int, batch: int) -> float:
    """R1 weight of StyleGAN2-ADA's ``auto`` configuration, ``0.0002 * resolution^2 / batch``.

    Parameters
    ----------
    resolution
        Image resolution in pixels.
    batch
        Total batch size.

    Returns
    -------
    float
        gamma.
    """
    if resolution < 1 or batch < 1:
        raise ValueError(f"resolution and batch must be positive, got {resolution}, {batch}")
    return 0.0002 * resolution**2 / batch


def ema_beta(
    batch: int,
    ema_kimg: float | None = None,
    ema_rampup: float | None = 0.05,
    *,
    cur_nimg: int,
) -> float:
    """Decay for the generator's exponential moving average ``G_ema = beta G_ema + (1 - beta) G``.

    The half-life is ``ema_kimg`` thousand images, limited to ``ema_rampup * cur_nimg`` early
    in training so that ``G_ema`` does not drag along the random initialisation. Buffers
    (``w_avg``, constant noise) are copied, not averaged.

    Parameters
    ----------
    batch
        Images per training step.
    ema_kimg
        Half-life in thousands of images; None means ``batch * 10 / 32``.
    ema_rampup
        Ramp-up ratio; None disables the ramp-up.
    cur_nimg
        Images shown so far.

    Returns
    -------
    float
        beta in [0, 1).
    """
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    ema_nimg = (batch * 10 / 32 if ema_kimg is None else ema_kimg) * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def blur_sigma_at(initial_sigma: float, fade_kimg: float, cur_nimg: int) -> float:
    """The discriminator's input blur after ``cur_nimg`` images: ``initial_sigma`` fading linearly
    to 0 over ``fade_kimg`` thousand images (StyleGAN3); ``fade_kimg = 0`` keeps it constant."""
    if initial_sigma < 0 or fade_kimg < 0:
        raise ValueError(f"blur sigma and fade kimg must be >= 0, got {initial_sigma}, {fade_kimg}")
    if fade_kimg == 0:
        return initial_sigma
    return initial_sigma * max(1.0 - cur_nimg / (fade_kimg * 1000), 0.0)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` images, taps to 3 sigma, reflected borders.

    Linear in the images, with cheap second derivatives (R1 differentiates through it).
    """
    radius = max(1, min(math.ceil(3 * sigma), min(images.shape[2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = (taps / taps.sum()).to(images.dtype)
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)
    return conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)


def mode_seeking_penalty(images: Tensor, z: Tensor) -> Tensor:
    """Mode seeking (Mao et al. 2019, MSGAN): ``mean(1 / (d_I / d_z + eps))`` over pairs of samples,
    ``d`` the mean absolute difference of two images and of their latents; small when different
    latents give different images, so adding it to the generator loss works against mode collapse.

    The batch is paired with itself shifted by half (``i`` with ``i + N/2``).
    """
    half = len(z) // 2
    image_distance = (images[:half].float() - images[half : 2 * half].float()).abs().flatten(1).mean(1)
    latent_distance = (z[:half] - z[half : 2 * half]).abs().mean(1)
    return (1.0 / (image_distance / latent_distance + 1e-5)).mean()
