"""Building blocks of StyleGAN2: equalised learning rate, FIR resampling, modulated convolution.

References
----------
Karras, Laine, Aittala, Hellsten, Lehtinen, Aila (2020), "Analyzing and Improving the Image
Quality of StyleGAN" (StyleGAN2), CVPR:

- Sec. 2.2 and Fig. 2: weight modulation ``w'_ijk = s_i w_ijk`` and demodulation
  ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)`` replacing AdaIN; per-sample weights are
  implemented as one grouped convolution. Noise is added after the convolution with a learned
  per-layer strength, before bias and activation.
- Appendix B: bilinear ([1, 3, 3, 1]) FIR filtering for up- and downsampling, as in
  Zhang (2019), "Making Convolutional Networks Shift-Invariant Again"; upsampling convolutions
  are transposed convolutions followed by the FIR filter.
- Equalised learning rate (Karras et al. 2018, ProGAN, Sec. 4.1), kept in StyleGAN2: weights are
  drawn from N(0, 1) and scaled at runtime by the He constant ``1 / sqrt(fan_in)``; the mapping
  network additionally uses a learning-rate multiplier of 0.01 (StyleGAN, Karras et al. 2019,
  Appendix C).

All layers are plain PyTorch (no custom kernels) and accept any floating dtype; parameters stay
float32 and are cast to the activation dtype where needed so that ``torch.autocast`` and
bf16/fp16 activations keep their dtype through the network. Convolutions go through
:func:`conv2d` / :func:`conv_transpose2d`, which only differ from ``torch.nn.functional`` in how
their gradients are differentiated (R1 and path-length regularisation need second derivatives;
see :class:`_Convolution`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["linear", "lrelu"]
NoiseMode = Literal["random", "const", "none"]

FIR_TAPS: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)
"""Binomial (bilinear) resampling filter of StyleGAN2, Appendix B."""

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
"""Leaky ReLU output is scaled by sqrt(2) so that unit-variance input keeps roughly unit variance."""

_DEMOD_EPS = 1e-8


class _Convolution(torch.autograd.Function):
    """2-D (transposed) convolution whose gradients are again cheap convolutions.

    PyTorch's own double backward of a convolution obtains the derivative of the input gradient
    with respect to the weight by convolving with the activations as the kernel, a kernel as
    large as the feature map; on GPU this made the R1 and path-length passes (which
    differentiate gradients) some 30 times slower than the forward pass. Here the input gradient
    is written as the adjoint convolution and the weight gradient as :class:`_ConvWeightGrad`,
    so every further derivative is an ordinary convolution or weight gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, transposed, stride, padding, groups, output_padding):  # type: ignore[override]
        if transposed:
            y = F.conv_transpose2d(x, weight, None, stride, padding, output_padding, groups)
        else:
            y = F.conv2d(x, weight, None, stride, padding, 1, groups)
        # Keep the operands in the dtype autocast chose, so the backward convolutions match it.
        ctx.save_for_backward(x.to(y.dtype), weight.to(y.dtype))
        ctx.config = (transposed, stride, padding, groups, output_padding)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        transposed, stride, padding, groups, output_padding = ctx.config
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _adjoint_convolution(grad, weight, x.shape, transposed, stride, padding, groups)
        if ctx.needs_input_grad[1]:
            grad_weight = _ConvWeightGrad.apply(grad, x, weight, *ctx.config)
        return grad_x, grad_weight, None, None, None, None, None


class _ConvWeightGrad(torch.autograd.Function):
    """Weight gradient of :class:`_Convolution`; bilinear in (output gradient, input)."""

    @staticmethod
    def forward(ctx, grad, x, weight, transposed, stride, padding, groups, output_padding):  # type: ignore[override]
        ctx.save_for_backward(grad, x)
        ctx.config = (transposed, stride, padding, groups, output_padding)
        stride2, padding2, dilation2, mask = [stride] * 2, [padding] * 2, [1, 1], [False, True, False]
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride2, padding2, dilation2, transposed, list(output_padding), groups, mask
        )[1]

    @staticmethod
    def backward(ctx, grad_grad_weight):  # type: ignore[override]
        grad, x = ctx.saved_tensors
        transposed, stride, padding, groups, output_padding = ctx.config
        # <ggW, dW(g, x)> = <g, conv(x, ggW)> = <adjoint(g; ggW), x>
        d_grad = _Convolution.apply(x, grad_grad_weight, transposed, stride, padding, groups, output_padding)
        d_x = _adjoint_convolution(grad, grad_grad_weight, x.shape, transposed, stride, padding, groups)
        return d_grad, d_x, None, None, None, None, None, None


def _adjoint_convolution(
    grad: Tensor, weight: Tensor, input_shape: torch.Size, transposed: bool, stride: int, padding: int, groups: int
) -> Tensor:
    """Input gradient of a (transposed) convolution: the other kind of convolution, same weight."""
    if transposed:
        return _Convolution.apply(grad, weight, False, stride, padding, groups, (0, 0))
    # Output padding restores the rows/columns that a strided forward convolution dropped.
    output_padding = tuple(
        input_shape[i] - ((grad.shape[i] - 1) * stride - 2 * padding + weight.shape[i]) for i in (2, 3)
    )
    return _Convolution.apply(grad, weight, True, stride, padding, groups, output_padding)


def conv2d(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, groups: int = 1) -> Tensor:
    """``F.conv2d`` (no bias, no dilation) with cheap higher-order gradients, see :class:`_Convolution`."""
    return _Convolution.apply(x, weight, False, stride, padding, groups, (0, 0))


def conv_transpose2d(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, groups: int = 1) -> Tensor:
    """``F.conv_transpose2d`` (no bias, no output padding) with cheap higher-order gradients."""
    return _Convolution.apply(x, weight, True, stride, padding, groups, (0, 0))


def make_fir_kernel(taps: Sequence[float] = FIR_TAPS) -> Tensor:
    """Normalised, symmetric 1-D FIR kernel; the 2-D filter is its outer product (separable).

    Parameters
    ----------
    taps
        Filter taps, at least two, symmetric (the padding arithmetic in this module assumes a
        filter centred between its middle taps or on its middle tap).

    Returns
    -------
    Tensor
        ``(K,)`` float32, summing to 1.
    """
    kernel = torch.as_tensor(taps, dtype=torch.float32)
    if kernel.ndim != 1 or kernel.numel() < 2:
        raise ValueError(f"taps must be a 1-D sequence of at least two values, got {taps!r}")
    if not torch.equal(kernel, kernel.flip(0)):
        raise ValueError(f"taps must be symmetric, got {taps!r}")
    return kernel / kernel.sum()


def _split_padding(total: int) -> tuple[int, int]:
    """Split a total padding into (before, after), the extra pixel going before."""
    return (total + 1) // 2, total // 2


def fir_filter2d(
    x: Tensor,
    kernel: Tensor,
    padding: tuple[int, int],
    gain: float = 1.0,
    down: int = 1,
) -> Tensor:
    """Depthwise FIR filter (outer product of a 1-D kernel) with zero padding and optional subsampling.

    Parameters
    ----------
    x
        ``(N, C, H, W)`` images, any floating dtype.
    kernel
        ``(K,)`` 1-D kernel from :func:`make_fir_kernel`; the 2-D filter is ``outer(kernel, kernel)``.
    padding
        Zero padding (before, after) applied on both axes.
    gain
        Overall multiplier of the 2-D filter (4 for x2 upsampling of zero-inserted images).
    down
        Stride of the filter: 2 keeps every second output sample (downsampling).

    Returns
    -------
    Tensor
        ``(N, C, H', W')`` with ``H' = (H + sum(padding) - K) // down + 1``, dtype of ``x``.
    """
    channels = x.shape[1]
    k = kernel.to(dtype=x.dtype, device=x.device)
    # One depthwise conv with the outer product: 1xK and Kx1 passes are much slower in oneDNN (CPU)
    # and no faster on GPU for K = 4.
    weight = (torch.outer(k, k) * gain).expand(channels, 1, -1, -1).contiguous()
    x = F.pad(x, (padding[0], padding[1], padding[0], padding[1]))
    return conv2d(x, weight, stride=down, groups=channels)


def upsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """x2 upsampling: insert zeros between pixels, then FIR-filter with gain 4.

    Zero insertion keeps one sample in four, hence the gain of 4 that restores the mean.
    With ``K`` taps the padding ``(K // 2, (K - 1) // 2)`` centres output pixel ``2i`` at input
    position ``i + 1/4`` and ``2i + 1`` at ``i + 3/4`` (pixel-centre convention).

    Parameters
    ----------
    x
        ``(N, C, H, W)``.
    kernel
        ``(K,)`` 1-D kernel from :func:`make_fir_kernel`.

    Returns
    -------
    Tensor
        ``(N, C, 2H, 2W)``, dtype of ``x``.
    """
    n, c, h, w = x.shape
    zeros_inserted = F.pad(x.reshape(n, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1)).reshape(n, c, 2 * h, 2 * w)
    return fir_filter2d(zeros_inserted, kernel, _split_padding(kernel.numel() - 1), gain=4.0)


def downsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """x2 downsampling: FIR low-pass filter, then keep every second pixel (stride 2).

    Parameters
    ----------
    x
        ``(N, C, H, W)`` with even ``H`` and ``W``.
    kernel
        ``(K,)`` 1-D kernel from :func:`make_fir_kernel`.

    Returns
    -------
    Tensor
        ``(N, C, H/2, W/2)``, dtype of ``x``.
    """
    return fir_filter2d(x, kernel, _split_padding(kernel.numel() - 2), down=2)


def bias_act(
    x: Tensor,
    bias: Tensor | None,
    activation: Activation = "linear",
    clamp: float | None = None,
) -> Tensor:
    """Add a per-channel bias, apply the activation, optionally clamp.

    Parameters
    ----------
    x
        ``(N, C, ...)``; the bias broadcasts along dimension 1.
    bias
        ``(C,)`` or None.
    activation
        ``"linear"`` or ``"lrelu"`` (leaky ReLU with slope 0.2, multiplied by sqrt(2)).
    clamp
        If given, clamp the result to ``[-clamp, clamp]``; keeps fp16 activations finite.

    Returns
    -------
    Tensor
        Same shape and dtype as ``x``.
    """
    if bias is not None:
        # Cast the float32 parameter so that bf16/fp16 activations are not promoted to float32.
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    elif activation != "linear":
        raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalised learning rate.

    The stored weight is ``N(0, 1) / lr_multiplier`` and is multiplied at runtime by
    ``weight_gain = lr_multiplier / sqrt(in_features)``, so the effective initial weight is
    ``N(0, 1 / in_features)`` while optimiser steps on the effective weight are scaled by
    ``lr_multiplier / sqrt(in_features)``: every layer learns at the same speed, and
    ``lr_multiplier`` slows a whole network down (0.01 for the mapping network).

    Parameters
    ----------
    in_features, out_features
        Input and output widths.
    bias
        Whether to learn a bias.
    bias_init
        Initial effective bias (1 for style affines, so that styles start around 1).
    lr_multiplier
        Learning-rate multiplier for both weight and bias.
    activation
        ``"linear"`` or ``"lrelu"``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: Activation = "linear",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation: Activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_features)`` -> ``(N, out_features)``, dtype of ``x`` (or autocast's)."""
        weight = (self.weight * self.weight_gain).to(x.dtype)
        bias = None if self.bias is None else self.bias * self.bias_gain
        return bias_act(F.linear(x, weight), bias, self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class EqualizedConv2d(nn.Module):
    """2-D convolution with equalised learning rate and optional FIR x2 downsampling.

    With ``down=2`` the input is FIR-filtered (padding chosen so that the output is exactly half
    the size) and the convolution runs with stride 2: this is the same linear operator as
    convolving at full resolution and then calling :func:`downsample2d`, at a quarter of the cost.

    Parameters
    ----------
    in_channels, out_channels, kernel_size
        Convolution shape; odd ``kernel_size`` (``"same"`` padding).
    bias
        Whether to learn a bias.
    activation
        ``"linear"`` or ``"lrelu"``.
    down
        1 or 2.
    clamp
        Optional clamp of the output (fp16 safety).
    fir_taps
        Resampling filter taps.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Activation = "linear",
        down: Literal[1, 2] = 1,
        clamp: float | None = None,
        fir_taps: Sequence[float] = FIR_TAPS,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.activation: Activation = activation
        self.down = down
        self.clamp = clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("fir", make_fir_kernel(fir_taps), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> ``(N, out_channels, H / down, W / down)``."""
        weight = (self.weight * self.weight_gain).to(x.dtype)
        kernel_size = weight.shape[-1]
        if self.down == 2:
            # Combined FIR+conv support is K + k - 1 taps; pad so that stride 2 halves the size.
            x = fir_filter2d(x, self.fir, _split_padding(self.fir.numel() + kernel_size - 3))
            x = conv2d(x, weight, stride=2)
        else:
            x = conv2d(x, weight, padding=kernel_size // 2)
        return bias_act(x, self.bias, self.activation, self.clamp)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution with optional demodulation and x2 upsampling (StyleGAN2 Sec. 2.2).

    For sample ``n`` with style ``s[n]`` (one scale per input channel) the effective weight is
    ``w'[n, o, i] = w[o, i] / sqrt(fan_in) * s[n, i]``, and with demodulation
    ``w''[n, o] = w'[n, o] / sqrt(sum_{i,ky,kx} w'[n, o, i, ky, kx]^2 + 1e-8)``.
    Two evaluations of the same operator (attribute ``grouped``, see :func:`set_modulation`):

    - grouped (the default): per-sample weights applied with one grouped convolution whose batch
      is folded into the channel axis (groups = N), as proposed in the paper;
    - batched: scale the input channels by ``s[n]``, convolve the whole batch with the shared
      weight, and scale the output channels by the demodulation coefficients. It trades the
      grouped convolution for an ordinary batched one, which some convolution libraries run much
      faster (StyleGAN2-ADA trains this way); which pays is a matter of measuring on the hardware.

    With ``up=2`` the layer computes a stride-2 transposed convolution followed by the FIR filter
    (gain 4): the same operator as ``conv(upsample2d(x))`` but with the convolution evaluated at
    the low resolution.

    Parameters
    ----------
    in_channels, out_channels, kernel_size
        Convolution shape; odd ``kernel_size``.
    demodulate
        Normalise each output channel of the modulated weight to unit L2 norm (off for toRGB).
    up
        1 or 2.
    fir_taps
        Resampling filter taps.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        demodulate: bool = True,
        up: Literal[1, 2] = 1,
        fir_taps: Sequence[float] = FIR_TAPS,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if up not in (1, 2):
            raise ValueError(f"up must be 1 or 2, got {up}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.demodulate = demodulate
        self.up = up
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("fir", make_fir_kernel(fir_taps), persistent=False)
        self.grouped = True

    def modulated_weight(self, styles: Tensor) -> Tensor:
        """Per-sample (de)modulated weights.

        Parameters
        ----------
        styles
            ``(N, in_channels)`` per-sample input-channel scales.

        Returns
        -------
        Tensor
            ``(N, out_channels, in_channels, k, k)``, float32 unless ``styles`` is wider.
        """
        weight = self.weight.unsqueeze(0) * self.weight_gain * styles.reshape(styles.shape[0], 1, -1, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + _DEMOD_EPS)
        return weight

    def forward(self, x: Tensor, styles: Tensor) -> Tensor:
        """Apply the per-sample convolution.

        Parameters
        ----------
        x
            ``(N, in_channels, H, W)``.
        styles
            ``(N, in_channels)``.

        Returns
        -------
        Tensor
            ``(N, out_channels, H * up, W * up)``, dtype of ``x`` (or autocast's).
        """
        if not self.grouped:
            return self._batched_forward(x, styles)
        n, _, h, w = x.shape
        weight = self.modulated_weight(styles).to(x.dtype)
        y = self._convolve(x.reshape(1, n * self.in_channels, h, w), weight.flatten(0, 1), groups=n)
        return y.reshape(n, self.out_channels, *y.shape[2:])

    def _batched_forward(self, x: Tensor, styles: Tensor) -> Tensor:
        """Modulate the input, convolve with the shared weight, demodulate the output."""
        n = x.shape[0]
        y = self._convolve(x * styles.to(x.dtype).reshape(n, -1, 1, 1), (self.weight * self.weight_gain).to(x.dtype))
        if self.demodulate:
            scaled = self.weight.unsqueeze(0) * self.weight_gain * styles.reshape(n, 1, -1, 1, 1)
            coefficients = torch.rsqrt(scaled.square().sum(dim=(2, 3, 4)) + _DEMOD_EPS)
            y = y * coefficients.to(y.dtype).reshape(n, -1, 1, 1)
        return y

    def _convolve(self, x: Tensor, weight: Tensor, groups: int = 1) -> Tensor:
        """``x`` ``(B, groups * in, H, W)`` with ``weight`` ``(groups * out, in, k, k)``, upsampled if ``up == 2``."""
        k = weight.shape[-1]
        if self.up == 1:
            return conv2d(x, weight, padding=k // 2, groups=groups)
        # conv_transpose2d is the adjoint of cross-correlation: swapping in/out channels and
        # flipping the kernel turns it into "zero-insert, then correlate with weight".
        transposed = (weight.reshape(groups, self.out_channels, self.in_channels, k, k).transpose(1, 2)
                      .reshape(groups * self.in_channels, self.out_channels, k, k).flip(2, 3))
        y = conv_transpose2d(x, transposed, stride=2, groups=groups)
        # Transposed output is 2H + k - 2; trim/pad to 2H so pixels align with conv(upsample2d(x)).
        return fir_filter2d(y, self.fir, _split_padding(self.fir.numel() - k + 1), gain=4.0)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.weight.shape[-1]}, demodulate={self.demodulate}, up={self.up}"
        )


def set_modulation(module: nn.Module, grouped: bool) -> None:
    """Evaluate every :class:`ModulatedConv2d` in ``module`` grouped (True) or batched (False).

    Both compute the same function with the same weights; checkpoints are unaffected.
    """
    for layer in module.modules():
        if isinstance(layer, ModulatedConv2d):
            layer.grouped = grouped


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise with a learned per-layer strength (StyleGAN2 Fig. 2c).

    The same single-channel noise image is broadcast over all feature channels. A fixed noise
    image is kept as a buffer for ``noise_mode="const"`` (reproducible rendering).

    Parameters
    ----------
    resolution
        Spatial size of the feature maps this layer receives.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("const_noise", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Tensor, noise_mode: NoiseMode = "random") -> Tensor:
        """``(N, C, H, W)`` -> same shape and dtype, with ``strength * noise`` added."""
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.const_noise.to(x.dtype)
        else:
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        return x + noise * self.strength.to(x.dtype)
