"""StyleGAN2 generator (skip architecture) and discriminator (residual architecture).

References
----------
Karras et al. (2020), "Analyzing and Improving the Image Quality of StyleGAN" (StyleGAN2):

- Sec. 2 and Fig. 2d: synthesis network from a learned 4x4 constant, two modulated 3x3
  convolutions per resolution (the first one upsampling), noise and bias after each.
- Sec. 4.1 and Fig. 7: the generator uses *skip* connections (each resolution's toRGB output is
  added to the upsampled RGB image of the previous one); the discriminator is *residual*
  (fromRGB at the input resolution, blocks of two 3x3 convolutions plus a downsampling 1x1 skip,
  summed and scaled by 1/sqrt(2)).
- Appendix B: minibatch standard deviation (Karras et al. 2018, ProGAN, Sec. 3) before the final
  discriminator convolution, feature maps ``min(channel_base / resolution, channel_max)``.

Karras et al. (2019), "A Style-Based Generator Architecture for GANs" (StyleGAN):

- Sec. 2: mapping network ``z -> w`` of fully connected layers with z normalised to unit second
  moment, lr multiplier 0.01 (Appendix C).
- Sec. 3.1: style mixing needs one ``w`` per layer, so :meth:`MappingNetwork.forward` returns
  ``(N, num_ws, w_dim)`` and :meth:`SynthesisNetwork.forward` consumes it.
- Sec. 5.2 / Appendix B: truncation trick ``w' = w_avg + psi (w - w_avg)`` with the running
  average ``w_avg`` tracked during training.

With ``L = log2(img_resolution)`` the synthesis network consumes ``num_ws = 2 L - 2`` latents:
the toRGB of one resolution shares its ``w`` with the first convolution of the next.

Mixed precision: the networks run under ``torch.autocast``. bf16 is the safe choice; in fp16 the
low-resolution generator layers overflow (the paper's implementation keeps them in fp32 and
clamps the others at ``conv_clamp=256``), so fp16 needs ``conv_clamp`` and a gradient scaler and
may still produce non-finite generator gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cellsynth.gan.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    ModulatedConv2d,
    NoiseInjection,
    NoiseMode,
    bias_act,
    make_fir_kernel,
    upsample2d,
)
from cellsynth.training.config import check_positive_int

MIN_RESOLUTION = 32
MAX_RESOLUTION = 512


def _check_architecture(img_resolution: int, img_channels: int, channel_base: int, channel_max: int) -> None:
    """Validate the constructor arguments shared by the generator and the discriminator."""
    if (
        not isinstance(img_resolution, int)
        or img_resolution < MIN_RESOLUTION
        or img_resolution > MAX_RESOLUTION
        or img_resolution & (img_resolution - 1)
    ):
        raise ValueError(
            f"img_resolution must be a power of two in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {img_resolution!r}"
        )
    check_positive_int(img_channels, "img_channels")
    check_positive_int(channel_base, "channel_base")
    check_positive_int(channel_max, "channel_max")
    if channel_base < img_resolution:
        raise ValueError(
            f"channel_base must be at least img_resolution ({img_resolution}) so that every "
            f"resolution has a channel, got {channel_base}"
        )


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution, ``min(channel_base // resolution, channel_max)``."""
    return min(channel_base // resolution, channel_max)


class MappingNetwork(nn.Module):
    """Mapping ``z -> w`` with running average of ``w`` for the truncation trick.

    Parameters
    ----------
    z_dim, w_dim
        Latent widths.
    num_ws
        Number of per-layer latents the output is broadcast to.
    num_layers
        Fully connected layers (8 in StyleGAN2; 2 in StyleGAN2-ADA's small-data configs).
    lr_multiplier
        Learning-rate multiplier of every layer.
    w_avg_beta
        Decay of the running average ``w_avg`` (updated only when asked, see :meth:`forward`).
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        check_positive_int(z_dim, "z_dim")
        check_positive_int(w_dim, "w_dim")
        check_positive_int(num_ws, "num_ws")
        check_positive_int(num_layers, "num_layers")
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.w_avg_beta = w_avg_beta
        widths = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *(
                EqualizedLinear(i, o, lr_multiplier=lr_multiplier, activation="lrelu")
                for i, o in zip(widths[:-1], widths[1:])
            )
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> Tensor:
        """Map latents to per-layer styles.

        Parameters
        ----------
        z
            ``(N, z_dim)`` float latents, normally N(0, I).
        truncation_psi
            1 disables truncation; 0 maps every ``z`` to ``w_avg``.
        truncation_cutoff
            Truncate only the first ``truncation_cutoff`` of the ``num_ws`` latents (None: all).
        update_w_avg
            Move ``w_avg`` towards the batch mean of ``w`` (training-time generator steps).

        Returns
        -------
        Tensor
            ``(N, num_ws, w_dim)``; every row along dim 1 is the same ``w``.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        # Normalise to unit second moment: the network sees z on the hypersphere (StyleGAN Sec. 2).
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.layers(x)
        if update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            truncated = self.w_avg.to(ws.dtype).lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Style affine, modulated 3x3 convolution, noise, bias and leaky ReLU (StyleGAN2 Fig. 2d).

    Parameters
    ----------
    in_channels, out_channels
        Feature maps in and out.
    w_dim
        Width of the per-layer latent.
    resolution
        Output resolution (for the constant noise buffer).
    up
        1, or 2 for the first layer of a block.
    conv_clamp
        Optional clamp after the activation (fp16 safety).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        # bias_init=1: styles start near 1 so modulation initially leaves the weights alone.
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, demodulate=True, up=up)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_clamp = conv_clamp

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "random") -> Tensor:
        """``(N, in_channels, H, W)``, ``(N, w_dim)`` -> ``(N, out_channels, H * up, W * up)``."""
        x = self.noise(self.conv(x, self.affine(w)), noise_mode)
        return bias_act(x, self.bias, "lrelu", self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Style-modulated 1x1 projection to image channels, no demodulation, linear output."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.conv_clamp = conv_clamp

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """``(N, in_channels, H, W)``, ``(N, w_dim)`` -> ``(N, img_channels, H, W)``."""
        return bias_act(self.conv(x, self.affine(w)), self.bias, "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [upsampling conv,] conv, toRGB, RGB skip sum.

    The 4x4 block starts from a learned constant and has a single convolution; every other
    block upsamples the features with its first convolution and adds its toRGB output to the
    FIR-upsampled image of the previous block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.convs = nn.ModuleList([SynthesisLayer(out_channels, out_channels, w_dim, 4, conv_clamp=conv_clamp)])
        else:
            self.convs = nn.ModuleList(
                [
                    SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp),
                    SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp),
                ]
            )
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp)
        self.register_buffer("fir", make_fir_kernel(), persistent=False)

    @property
    def num_conv(self) -> int:
        """Latents consumed by the convolutions (toRGB reuses the next one)."""
        return len(self.convs)

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise_mode: NoiseMode,
    ) -> tuple[Tensor, Tensor]:
        """Run the block.

        Parameters
        ----------
        x
            ``(N, in_channels, H/2, W/2)`` features, None for the 4x4 block.
        img
            ``(N, img_channels, H/2, W/2)`` image so far, None for the 4x4 block.
        ws
            ``(N, num_conv + 1, w_dim)`` latents for the convolutions and toRGB.
        noise_mode
            See :class:`~cellsynth.gan.layers.NoiseInjection`.

        Returns
        -------
        tuple of Tensor
            Features ``(N, out_channels, H, W)`` and image ``(N, img_channels, H, W)``.
        """
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for index, layer in enumerate(self.convs):
            x = layer(x, ws[:, index], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.fir).to(y.dtype) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """Skip-architecture synthesis network ``ws -> image``.

    Parameters
    ----------
    w_dim
        Width of each per-layer latent.
    img_resolution
        Output resolution, power of two in [32, 512].
    img_channels
        Output channels (3 for Cellpose flow fields).
    channel_base, channel_max
        Feature maps at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    conv_clamp
        Optional clamp of every layer's output (e.g. 256 when running in fp16).
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        _check_architecture(img_resolution, img_channels, channel_base, channel_max)
        check_positive_int(w_dim, "w_dim")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.blocks = nn.ModuleList()
        in_channels = 0
        for resolution in resolutions:
            out_channels = channels_at(resolution, channel_base, channel_max)
            self.blocks.append(SynthesisBlock(in_channels, out_channels, w_dim, resolution, img_channels, conv_clamp))
            in_channels = out_channels
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: Tensor, noise_mode: NoiseMode = "random") -> Tensor:
        """Render images.

        Parameters
        ----------
        ws
            ``(N, num_ws, w_dim)`` per-layer latents.
        noise_mode
            ``"random"`` (fresh noise), ``"const"`` (fixed buffers) or ``"none"``.

        Returns
        -------
        Tensor
            ``(N, img_channels, img_resolution, img_resolution)``; float32, or the autocast dtype.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        x = img = None
        first_w = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, first_w : first_w + block.num_conv + 1], noise_mode)
            first_w += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: mapping network followed by the skip synthesis network.

    Parameters
    ----------
    z_dim, w_dim
        Latent widths (512 in the papers).
    img_resolution
        Output resolution, power of two in [32, 512].
    img_channels
        Output channels.
    channel_base, channel_max
        Feature maps at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    mapping_layers
        Depth of the mapping network.
    conv_clamp
        Optional clamp of synthesis layer outputs (fp16 safety).
    """

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp)
        self.mapping = MappingNetwork(z_dim, w_dim, self.synthesis.num_ws, num_layers=mapping_layers)
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_ws = self.synthesis.num_ws

    def forward(
        self,
        z: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "random",
    ) -> Tensor:
        """``(N, z_dim)`` latents -> ``(N, img_channels, img_resolution, img_resolution)`` images.

        For style mixing call ``mapping`` twice and splice the ``(N, num_ws, w_dim)`` outputs
        along dim 1 before ``synthesis``.
        """
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


class MinibatchStdDev(nn.Module):
    """Append the group-wise feature standard deviation as extra channels (ProGAN Sec. 3).

    The batch is split into groups of ``group_size`` samples (sample ``n`` belongs to group
    ``n % (N / group_size)``); for each group and each of ``num_channels`` channel slices, the
    standard deviation over the group is averaged over features and pixels and appended as a
    constant map, letting the discriminator see batch-level variety.

    Parameters
    ----------
    group_size
        Samples per group; ``min(group_size, N)`` must divide the batch size ``N``.
    num_channels
        Number of appended channels; must divide the input channel count.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        check_positive_int(group_size, "mbstd_group_size")
        check_positive_int(num_channels, "mbstd_num_channels")
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C + num_channels, H, W)``, dtype of ``x``."""
        n, c, h, w = x.shape
        group = min(self.group_size, n)
        if n % group:
            raise ValueError(f"batch size {n} is not divisible by the minibatch-stddev group size {group}")
        # Statistics in float32: a variance of bf16/fp16 values loses most of its precision.
        y = x.float().reshape(group, n // group, self.num_channels, c // self.num_channels, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (N / group, num_channels)
        y = y.reshape(-1, self.num_channels, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsampling) plus a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu", clamp=conv_clamp)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=2, clamp=conv_clamp)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> ``(N, out_channels, H/2, W/2)``."""
        # 1/sqrt(2) keeps the variance of the sum of two roughly independent paths unchanged.
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator returning one logit per image.

    Parameters
    ----------
    img_resolution
        Input resolution, power of two in [32, 512].
    img_channels
        Input channels.
    channel_base, channel_max
        Feature maps at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    mbstd_group_size, mbstd_num_channels
        Minibatch standard deviation settings, see :class:`MinibatchStdDev`.
    conv_clamp
        Optional clamp of convolution outputs (fp16 safety).
    """

    def __init__(
        self,
        img_resolution: int = 256,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        _check_architecture(img_resolution, img_channels, channel_base, channel_max)
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        top_channels = channels_at(img_resolution, channel_base, channel_max)
        self.fromrgb = EqualizedConv2d(img_channels, top_channels, 1, activation="lrelu", clamp=conv_clamp)
        self.blocks = nn.Sequential(
            *(
                DiscriminatorBlock(
                    channels_at(resolution, channel_base, channel_max),
                    channels_at(resolution // 2, channel_base, channel_max),
                    conv_clamp,
                )
                for resolution in (2**i for i in range(int(math.log2(img_resolution)), 2, -1))
            )
        )
        last_channels = channels_at(4, channel_base, channel_max)
        if last_channels % mbstd_num_channels:
            raise ValueError(
                f"mbstd_num_channels ({mbstd_num_channels}) must divide the 4x4 channel count ({last_channels})"
            )
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_channels)
        self.conv = EqualizedConv2d(
            last_channels + mbstd_num_channels, last_channels, 3, activation="lrelu", clamp=conv_clamp
        )
        self.fc = EqualizedLinear(last_channels * 16, last_channels, activation="lrelu")
        self.out = EqualizedLinear(last_channels, 1)

    def forward(self, img: Tensor) -> Tensor:
        """Score images.

        Parameters
        ----------
        img
            ``(N, img_channels, img_resolution, img_resolution)``, any memory format.

        Returns
        -------
        Tensor
            ``(N, 1)`` logits (real > 0); float32, or the autocast dtype.
        """
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(
                f"img must have shape (N, {self.img_channels}, {self.img_resolution}, {self.img_resolution}), "
                f"got {tuple(img.shape)}"
            )
        x = self.blocks(self.fromrgb(img))
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))
