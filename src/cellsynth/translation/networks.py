"""pix2pix networks (Isola et al. 2017, Sec. 3.2 and Appendix 6.1): U-Net generator, PatchGAN discriminator.

Notation of the paper: ``Ck`` is a 4x4 convolution with ``k`` filters, stride 2 in the
encoder and the discriminator's first layers, followed by normalisation and a
(leaky) ReLU; ``CDk`` adds 50 % dropout. The generator's encoder is
``C64-C128-C256-C512-C512-C512-C512-C512``, its decoder mirrors it with skip
connections and ends in a convolution to the output channels and ``tanh``. The
70x70 discriminator is ``C64-C128-C256-C512`` then a 1-channel convolution,
one logit per overlapping patch.

The decoder's ``upsample="transposed"`` is the paper's 4x4 stride-2 transposed convolution.
Its kernel overlaps unevenly across output pixels, which paints a checkerboard texture until the
network learns to cancel it (Odena, Dumoulin & Olah 2016, "Deconvolution and checkerboard
artifacts", Distill); ``"resize"`` upsamples by nearest neighbour and then convolves (3x3), which
weighs every output pixel alike and so cannot make that pattern.

Normalisation uses the statistics of the current batch in training *and* at
inference (``track_running_stats=False``), as the paper applies batch
normalisation "using the statistics of the test batch"; with batch size 1 this is
instance normalisation. Dropout stays active at inference: it is the generator's
only source of noise (Sec. 2.1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellsynth.training.config import check_positive_int

Norm = Literal["batch", "instance"]
NORMS: tuple[str, ...] = ("batch", "instance")
Upsample = Literal["transposed", "resize"]
UPSAMPLES: tuple[str, ...] = ("transposed", "resize")
MIN_RESOLUTION = 32
# Encoder/discriminator filter counts grow as base * 2^i up to base * 8 (512 for base 64).
_MAX_FILTER_MULTIPLIER = 8


def check_resolution(size: int, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``size`` is a power of two >= 32."""
    if int(size) != size or size < MIN_RESOLUTION or int(size) & (int(size) - 1):
        raise ValueError(f"{name} must be a power of two >= {MIN_RESOLUTION}, got {size}")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    return nn.InstanceNorm2d(channels, affine=True)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def init_weights(module: nn.Module) -> None:
    """Paper's initialisation: convolution weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.InstanceNorm2d)) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class InferenceDropout(nn.Module):
    """Dropout that is active in ``eval()`` too (the generator's noise, Isola et al. Sec. 2.1)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=True) if self.p > 0 else x


class UNetGenerator(nn.Module):
    """U-Net generator with skip connections between mirrored encoder and decoder layers.

    Parameters
    ----------
    in_channels
        Channels of the mask representation (:func:`cellsynth.translation.masks.mask_channels`).
    out_channels
        Channels of the microscopy image.
    base_filters
        Filters of the first encoder layer (64 in the paper).
    depth
        Number of stride-2 encoder layers (8 in the paper); limited to ``log2(resolution)``
        so the innermost layer is at most reduced to 1x1.
    dropout
        Dropout probability of the three innermost decoder layers (0.5 in the paper; 0 disables
        the noise).
    resolution
        Side of the training images, a power of two >= 32. The network is fully convolutional:
        it translates any square power-of-two input that is a multiple of ``2**depth``.
    norm
        ``"batch"`` (paper) or ``"instance"``.
    upsample
        ``"transposed"`` (paper) or ``"resize"`` (nearest-neighbour upsampling, then a 3x3
        convolution: no checkerboard texture).

    Notes
    -----
    The first encoder layer has no normalisation (paper), nor has the innermost one: its
    output is 1x1 at the full depth, where batch statistics over a batch of one would zero it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_filters: int = 64,
        depth: int = 8,
        dropout: float = 0.5,
        resolution: int = 256,
        norm: Norm = "batch",
        upsample: Upsample = "transposed",
    ):
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {upsample!r}")
        for value, name in ((in_channels, "in_channels"), (out_channels, "out_channels"),
                            (base_filters, "base_filters"), (depth, "depth")):
            check_positive_int(value, name)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_resolution(resolution, "resolution")
        _check_norm(norm)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depth = min(depth, int(math.log2(resolution)))
        filters = [base_filters * min(2**i, _MAX_FILTER_MULTIPLIER) for i in range(self.depth)]

        self.encoder = nn.ModuleList()
        previous = in_channels
        for i, channels in enumerate(filters):
            normalised = 0 < i < self.depth - 1
            layers: list[nn.Module] = [nn.Conv2d(previous, channels, 4, 2, 1, bias=not normalised)]
            if normalised:
                layers.append(_norm_layer(norm, channels))
            layers.append(nn.LeakyReLU(0.2))
            self.encoder.append(nn.Sequential(*layers))
            previous = channels

        # Decoder layer i upsamples to encoder level i's resolution and filters; its output is then
        # concatenated with encoder level i (the skip connection). Innermost first.
        self.decoder = nn.ModuleList()
        for n, i in enumerate(range(self.depth - 2, -1, -1)):
            layers = [upsampling_layer(upsample, previous, filters[i], bias=False), _norm_layer(norm, filters[i])]
            if n < 3:
                layers.append(InferenceDropout(dropout))
            layers.append(nn.ReLU())
            self.decoder.append(nn.Sequential(*layers))
            previous = 2 * filters[i]
        self.output = nn.Sequential(upsampling_layer(upsample, previous, out_channels, bias=True), nn.Tanh())
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, S, S)`` float in [-1, 1] -> ``(N, out_channels, S, S)`` in [-1, 1]."""
        _check_input(x, self.in_channels, "input")
        if x.shape[-1] % 2**self.depth:
            raise ValueError(f"input size {x.shape[-1]} is not a multiple of 2**depth = {2**self.depth}")
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        for layer, skip in zip(self.decoder, reversed(skips[:-1])):
            x = torch.cat([layer(x), skip], dim=1)
        return self.output(x)


def upsampling_layer(kind: str, in_channels: int, out_channels: int, bias: bool) -> nn.Module:
    """A layer that doubles the resolution: the paper's transposed convolution, or resize-convolution."""
    if kind == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=bias, padding_mode="reflect"))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: one real/fake logit per overlapping image patch.

    Parameters
    ----------
    in_channels
        Mask-representation channels plus image channels (the discriminator is conditional:
        it sees the mask and the image concatenated).
    base_filters
        Filters of the first layer (64 in the paper).
    n_layers
        Stride-2 layers after the first; 3 gives the paper's 70x70 receptive field
        (a 256x256 input yields 30x30 logits).
    norm
        ``"batch"`` (paper) or ``"instance"``.
    """

    def __init__(self, in_channels: int, base_filters: int = 64, n_layers: int = 3, norm: Norm = "batch"):
        super().__init__()
        for value, name in ((in_channels, "in_channels"), (base_filters, "base_filters"), (n_layers, "n_layers")):
            check_positive_int(value, name)
        _check_norm(norm)
        self.in_channels = in_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_filters, 4, 2, 1), nn.LeakyReLU(0.2)]
        previous = base_filters
        for i in range(1, n_layers + 1):
            channels = base_filters * min(2**i, _MAX_FILTER_MULTIPLIER)
            stride = 2 if i < n_layers else 1  # the last Ck layer keeps the resolution (C512 in the paper)
            layers += [nn.Conv2d(previous, channels, 4, stride, 1, bias=False), _norm_layer(norm, channels),
                       nn.LeakyReLU(0.2)]
            previous = channels
        layers.append(nn.Conv2d(previous, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, S, S)`` -> ``(N, 1, P, P)`` logits (``P = 30`` for ``S = 256``, 3 layers)."""
        _check_input(x, self.in_channels, "input")
        return self.net(x)


def _check_input(x: Tensor, channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels or x.shape[2] != x.shape[3]:
        raise ValueError(f"{name} must be (N, {channels}, S, S), got {tuple(x.shape)}")
    check_resolution(x.shape[-1], f"{name} size")
