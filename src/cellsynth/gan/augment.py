"""Adaptive discriminator augmentation (ADA): differentiable augmentations and the p controller.

References
----------
Karras, Aittala, Hellsten, Laine, Lehtinen, Aila (2020), "Training Generative Adversarial
Networks with Limited Data" (StyleGAN2-ADA), NeurIPS:

- Sec. 2: every image shown to the discriminator, real or generated, is augmented with the same
  stochastic, differentiable pipeline, each transform applied with probability ``p < 1`` so that
  the augmentations do not leak into the generated distribution.
- Sec. 3: adaptive control of ``p`` with the overfitting heuristic
  ``r_t = E[sign(D(x_real))]``: every few minibatches ``p`` moves by
  ``sign(r_t - target) * batch * interval / (adjust_kimg * 1000)`` so that it could go from 0 to 1
  in ``adjust_kimg`` thousand images; target 0.6.
- Appendix B (Table 3): the transforms and their parameter distributions. Pixel blitting
  (x-flip, 90-degree rotation, integer translation up to 0.125 of the image size), general
  geometric (isotropic scale ``2^N(0, 0.2^2)``, rotation ``U(-pi, pi)`` applied before and after
  an anisotropic scale ``2^N(0, 0.2^2)``, each with probability ``1 - sqrt(1 - p)`` so the
  combined rotation has probability ``p``; fractional translation ``N(0, 0.125^2)`` of the
  size) and colour (brightness ``N(0, 0.2^2)``, contrast ``2^N(0, 0.5^2)``, luma flip, hue
  rotation ``U(-pi, pi)`` about the luma axis, saturation ``2^N(0, 1)``).

Departures from the paper, all deliberate:

- Blitting moves whole pixels (integer coordinates, exact copies) with symmetric reflection at
  the borders, so it never blurs; the geometric group is one affine matrix per sample applied
  with bilinear sampling and reflection padding (the paper additionally supersamples with
  wavelet filters to reduce aliasing; plain bilinear sampling keeps this module simple). The
  sampler is written with gathers instead of ``F.grid_sample`` because R1 on augmented reals
  needs a double backward pass, which ``grid_sample`` lacks on CUDA.
- ``vector_channels``: our images are Cellpose flow fields whose channels hold a vector field.
  Moving pixels without turning the vectors would produce flows that no longer point towards the
  cell centres, so the pipeline can also transform those channels as vectors (see
  :class:`AugmentPipe`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_VECTOR_EPS = 1e-8


def _rotation(theta: Tensor) -> Tensor:
    """``(N,)`` angles -> ``(N, 3, 3)`` homogeneous 2-D rotations (x right, y down)."""
    c, s = theta.cos(), theta.sin()
    zero, one = torch.zeros_like(theta), torch.ones_like(theta)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)


def _scaling(sx: Tensor, sy: Tensor) -> Tensor:
    """``(N,)`` scales -> ``(N, 3, 3)`` homogeneous 2-D scalings."""
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack([sx, zero, zero, zero, sy, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)


def _translation(tx: Tensor, ty: Tensor) -> Tensor:
    """``(N,)`` offsets in pixels -> ``(N, 3, 3)`` homogeneous 2-D translations."""
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([one, zero, tx, zero, one, ty, zero, zero, one], dim=1).reshape(-1, 3, 3)


def _reflect_coordinate(coord: Tensor, size: int) -> Tensor:
    """Fold pixel coordinates (pixel ``i`` centred at ``i``) into ``[0, size - 1]``.

    Reflection is about the image edges at -0.5 and ``size - 0.5`` (so index -1 reads pixel 0);
    the last half pixel on each side is clipped to the edge pixel.
    """
    folded = (coord + 0.5).remainder(2 * size)
    folded = torch.where(folded > size, 2 * size - folded, folded) - 0.5
    return folded.clamp(0, size - 1)


def _bilinear_sample(x: Tensor, source_x: Tensor, source_y: Tensor) -> Tensor:
    """Bilinear sampling with reflection padding, built from gathers.

    ``F.grid_sample`` would do the same, but its backward has no derivative on CUDA, and the R1
    penalty through the augmentations needs one (a double backward pass). Gathers are
    differentiable to any order. Integer coordinates give exact pixel copies.

    Parameters
    ----------
    x
        ``(N, C, H, W)`` images.
    source_x, source_y
        ``(N, H, W)`` float coordinates to read each output pixel from (pixel ``i`` at ``i``).

    Returns
    -------
    Tensor
        ``(N, C, H, W)``, dtype of ``x``.
    """
    n, c, h, w = x.shape
    source_x, source_y = _reflect_coordinate(source_x, w), _reflect_coordinate(source_y, h)
    x0, y0 = source_x.floor(), source_y.floor()
    fx, fy = (source_x - x0).unsqueeze(1).to(x.dtype), (source_y - y0).unsqueeze(1).to(x.dtype)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = x.reshape(n, c, h * w)

    def tap(iy: Tensor, ix: Tensor) -> Tensor:
        return flat.gather(2, (iy * w + ix).reshape(n, 1, h * w).expand(n, c, h * w)).reshape(n, c, h, w)

    top = tap(y0, x0) * (1 - fx) + tap(y0, x1) * fx
    bottom = tap(y1, x0) * (1 - fx) + tap(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


class AugmentPipe(nn.Module):
    """Stochastic, differentiable augmentation of discriminator inputs (ADA, Appendix B).

    Each transform is applied to each sample independently with probability ``p * strength``
    (the strength flags are usually 0 or 1). Groups run in the order blit -> geometric -> colour.
    Samples that draw no transform of a group are passed through that group bit-for-bit, so
    ``p = 0`` is exactly the identity.

    Parameters
    ----------
    p
        Initial augmentation probability; stored in the buffer ``p`` (set it with
        ``pipe.p.fill_(value)`` or ``pipe.p.copy_(tensor)``).
    xflip, rotate90, xint
        Strengths of the pixel-blitting transforms. ``rotate90`` needs square images.
    scale, rotate, aniso, xfrac
        Strengths of the geometric transforms.
    brightness, contrast, lumaflip, hue, saturation
        Strengths of the colour transforms. They assume images in [-1, 1] with 0 as mid-grey.
        Luma flip, hue and saturation act on an RGB luma axis and therefore only on 3-channel
        images; for any other channel count there is no luma axis and only brightness (same
        offset on every channel) and contrast (same scale on every channel) are applied.
    vector_channels
        Optional ``(x_channel, y_channel)``: indices of the channels holding the x and y
        components of a vector field in pixel axes (x to the right, y down), e.g. the Cellpose
        flow components. Flips, 90-degree rotations and the geometric transforms then multiply
        these vectors by the linear part ``A`` of the transform, rescaled to keep each vector's
        length: exact for flips and rotations (``x`` flip negates the x component), and for
        scalings it only turns directions, so unit-length flows stay unit length. Translations
        leave vectors unchanged. Colour transforms treat these channels like any other; leave
        them off for flow fields.
    xint_max, scale_std, rotate_max, aniso_std, xfrac_std, brightness_std, contrast_std, hue_max, saturation_std
        Parameter distributions, defaults from the paper (Appendix B): integer translation
        ``U(-xint_max, xint_max)`` of the size; log2 of isotropic/anisotropic scale
        ``N(0, std^2)``; rotation ``U(-pi, pi) * rotate_max``; fractional translation
        ``N(0, xfrac_std^2)`` of the size; brightness ``N(0, brightness_std^2)``; log2 of
        contrast ``N(0, contrast_std^2)``; hue rotation ``U(-pi, pi) * hue_max``; log2 of
        saturation ``N(0, saturation_std^2)``.
    """

    def __init__(
        self,
        p: float = 0.0,
        xflip: float = 0.0,
        rotate90: float = 0.0,
        xint: float = 0.0,
        scale: float = 0.0,
        rotate: float = 0.0,
        aniso: float = 0.0,
        xfrac: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        lumaflip: float = 0.0,
        hue: float = 0.0,
        saturation: float = 0.0,
        *,
        vector_channels: tuple[int, int] | None = None,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if vector_channels is not None and (len(vector_channels) != 2 or vector_channels[0] == vector_channels[1]):
            raise ValueError(f"vector_channels must be two distinct channel indices, got {vector_channels!r}")
        self.register_buffer("p", torch.tensor(float(p)))
        self.xflip, self.rotate90, self.xint = xflip, rotate90, xint
        self.scale, self.rotate, self.aniso, self.xfrac = scale, rotate, aniso, xfrac
        self.brightness, self.contrast = brightness, contrast
        self.lumaflip, self.hue, self.saturation = lumaflip, hue, saturation
        self.vector_channels = vector_channels
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std

    def forward(self, images: Tensor) -> Tensor:
        """Augment a batch.

        Parameters
        ----------
        images
            ``(N, C, H, W)`` floating images (any memory format).

        Returns
        -------
        Tensor
            ``(N, C, H, W)``, dtype of ``images``; differentiable with respect to ``images``.
        """
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if self.vector_channels is not None and max(self.vector_channels) >= images.shape[1]:
            raise ValueError(f"vector_channels {self.vector_channels} out of range for {images.shape[1]} channels")
        x = images
        # Coordinates and colour matrices need float32: autocast would run the matmuls in 16 bits.
        with torch.autocast(images.device.type, enabled=False):
            if self.xflip or self.rotate90 or self.xint:
                x = self._blit(x)
            if self.scale or self.rotate or self.aniso or self.xfrac:
                x = self._geometric(x)
            if self.brightness or self.contrast or (x.shape[1] == 3 and (self.lumaflip or self.hue or self.saturation)):
                x = self._colour(x)
        return x

    @staticmethod
    def _gate(n: int, probability: Tensor, device: torch.device) -> Tensor:
        """``(N,)`` bool: which samples get a transform, each with the given probability."""
        return torch.rand(n, device=device) < probability

    def _transform_vectors(self, x: Tensor, linear: Tensor) -> Tensor:
        """Multiply the vector channels by ``linear`` ``(N, 2, 2)``, keeping each vector's length."""
        if self.vector_channels is None:
            return x
        ix, iy = self.vector_channels
        vectors = torch.stack([x[:, ix], x[:, iy]], dim=1)  # (N, 2, H, W)
        turned = torch.einsum("nij,njhw->nihw", linear.to(x.dtype), vectors)
        # eps in both terms: ratio is exactly 1 for orthogonal maps and for zero vectors.
        ratio = torch.sqrt(
            (vectors.square().sum(1, keepdim=True) + _VECTOR_EPS) / (turned.square().sum(1, keepdim=True) + _VECTOR_EPS)
        )
        turned = turned * ratio
        channels = list(x.unbind(1))
        channels[ix], channels[iy] = turned[:, 0], turned[:, 1]
        return torch.stack(channels, dim=1)

    def _blit(self, x: Tensor) -> Tensor:
        """x-flip, 90-degree rotation and integer translation by exact pixel indexing."""
        n, _, h, w = x.shape
        device = x.device
        if self.rotate90 and h != w:
            raise ValueError(f"rotate90 needs square images, got {h}x{w}")
        flip = self._gate(n, self.p * self.xflip, device) & (torch.rand(n, device=device) < 0.5)
        quarter = torch.randint(0, 4, (n,), device=device) * self._gate(n, self.p * self.rotate90, device)
        shift_on = self._gate(n, self.p * self.xint, device)
        size = torch.tensor([w, h], device=device)
        shift = torch.round((torch.rand(n, 2, device=device) * 2 - 1) * self.xint_max * size)
        shift = torch.where(shift_on[:, None], shift, torch.zeros_like(shift)).long()

        # Doubled, centred output coordinates: odd/even integers, so inverse maps stay exact.
        u = (2 * torch.arange(w, device=device) + 1 - w).view(1, 1, w)
        v = (2 * torch.arange(h, device=device) + 1 - h).view(1, h, 1)
        # Forward map is translate . rotate . flip; undo it in reverse order.
        u = u - 2 * shift[:, 0].view(n, 1, 1)
        v = v - 2 * shift[:, 1].view(n, 1, 1)
        cos = torch.tensor([1, 0, -1, 0], device=device)[quarter].view(n, 1, 1)
        sin = torch.tensor([0, 1, 0, -1], device=device)[quarter].view(n, 1, 1)
        u, v = cos * u + sin * v, -sin * u + cos * v
        u = torch.where(flip.view(n, 1, 1), -u, u)
        # Back to pixel indices: exact integers, so the bilinear sampler copies pixels.
        out = _bilinear_sample(x, ((u + w - 1) // 2).float(), ((v + h - 1) // 2).float())

        # Linear part of the forward map, rotation @ flip, for the vector channels.
        sign = torch.where(flip, -1, 1).view(n, 1, 1)
        linear = torch.cat([torch.cat([cos * sign, -sin], dim=2), torch.cat([sin * sign, cos], dim=2)], dim=1)
        return self._transform_vectors(out, linear.float())

    def _geometric(self, x: Tensor) -> Tensor:
        """Isotropic scale, rotation, anisotropic scale, rotation, fractional translation."""
        n, _, h, w = x.shape
        device = x.device
        one = torch.ones(n, device=device)
        # Two rotations share the budget so that "some rotation" happens with probability p * rotate.
        p_rot = 1 - torch.sqrt(1 - (self.p * self.rotate).clamp(0, 1))

        scale_on = self._gate(n, self.p * self.scale, device)
        s = torch.where(scale_on, torch.exp2(torch.randn(n, device=device) * self.scale_std), one)
        pre_on = self._gate(n, p_rot, device)
        theta_pre = torch.where(pre_on, (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max, 0 * one)
        aniso_on = self._gate(n, self.p * self.aniso, device)
        a = torch.where(aniso_on, torch.exp2(torch.randn(n, device=device) * self.aniso_std), one)
        post_on = self._gate(n, p_rot, device)
        theta_post = torch.where(post_on, (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max, 0 * one)
        frac_on = self._gate(n, self.p * self.xfrac, device)
        t = torch.randn(n, 2, device=device) * self.xfrac_std * torch.tensor([w, h], device=device)
        t = torch.where(frac_on[:, None], t, torch.zeros_like(t))

        # Forward map (input -> output) in centred pixel coordinates, applied right to left.
        matrix = (
            _translation(t[:, 0], t[:, 1])
            @ _rotation(theta_post)
            @ _scaling(a, 1 / a)
            @ _rotation(theta_pre)
            @ _scaling(s, s)
        )
        inverse = torch.linalg.inv_ex(matrix).inverse  # inv_ex: no host sync for error checks
        xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2
        ys = torch.arange(h, device=device, dtype=torch.float32) + 0.5 - h / 2
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).reshape(1, h * w, 3)
        source = (points @ inverse.transpose(1, 2)).reshape(n, h, w, 3)  # centred pixel coordinates
        # Sample in float32: bf16/fp16 coordinates would be off by a sizeable fraction of a pixel.
        warped = _bilinear_sample(x.float(), source[..., 0] + (w - 1) / 2, source[..., 1] + (h - 1) / 2)
        warped = self._transform_vectors(warped, matrix[:, :2, :2]).to(x.dtype)
        moved = scale_on | pre_on | aniso_on | post_on | frac_on
        return torch.where(moved.view(n, 1, 1, 1), warped, x)

    def _colour(self, x: Tensor) -> Tensor:
        """Brightness, contrast, luma flip, hue rotation, saturation as one affine colour map."""
        n, c = x.shape[:2]
        device = x.device
        one = torch.ones(n, device=device)
        bright_on = self._gate(n, self.p * self.brightness, device)
        b = torch.where(bright_on, torch.randn(n, device=device) * self.brightness_std, 0 * one)
        contrast_on = self._gate(n, self.p * self.contrast, device)
        k = torch.where(contrast_on, torch.exp2(torch.randn(n, device=device) * self.contrast_std), one)
        changed = bright_on | contrast_on
        # Brightness then contrast: x -> k (x + b), identical for every channel.
        linear = k.view(n, 1, 1) * torch.eye(c, device=device)
        offset = (k * b).view(n, 1).expand(n, c)

        if c == 3 and (self.lumaflip or self.hue or self.saturation):
            luma = torch.full((3, 1), 1 / math.sqrt(3), device=device)
            along = luma @ luma.T  # projector onto the luma axis
            eye = torch.eye(3, device=device)
            flip_on = self._gate(n, self.p * self.lumaflip, device) & (torch.rand(n, device=device) < 0.5)
            flip = eye - 2 * along * flip_on.float().view(n, 1, 1)
            hue_on = self._gate(n, self.p * self.hue, device)
            theta = torch.where(hue_on, (torch.rand(n, device=device) * 2 - 1) * math.pi * self.hue_max, 0 * one)
            cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=device) / math.sqrt(3)
            # Rodrigues' formula: rotation by theta about the unit luma axis.
            hue = (
                theta.cos().view(n, 1, 1) * eye
                + theta.sin().view(n, 1, 1) * cross
                + (1 - theta.cos()).view(n, 1, 1) * along
            )
            sat_on = self._gate(n, self.p * self.saturation, device)
            s = torch.where(sat_on, torch.exp2(torch.randn(n, device=device) * self.saturation_std), one)
            saturate = along + (eye - along) * s.view(n, 1, 1)
            chroma = saturate @ hue @ flip
            linear = chroma @ linear
            offset = (chroma @ offset.unsqueeze(-1)).squeeze(-1)
            changed = changed | flip_on | hue_on | sat_on

        coloured = torch.einsum("nij,njhw->nihw", linear, x.float()) + offset.view(n, c, 1, 1)
        return torch.where(changed.view(n, 1, 1, 1), coloured.to(x.dtype), x)


class AdaptiveAugmentController:
    """Adjust the augmentation probability from the discriminator's outputs on reals (ADA Sec. 3).

    Feed the real-image logits of every discriminator step to :meth:`observe`; after every
    ``interval`` calls it computes ``r_t = mean(sign(D(x_real)))`` over those steps and moves
    ``p`` by ``sign(r_t - target) * batch_size * interval / (adjust_kimg * 1000)``, clamped to
    [0, max_p]. ``r_t > target`` means the discriminator is overconfident on reals (overfitting), so
    ``p`` increases. Copy :attr:`p` into :attr:`AugmentPipe.p` after each adjustment.

    Attributes
    ----------
    p : float
        Current augmentation probability.
    rt : float or None
        ``r_t`` of the last adjustment (None before the first), for logging.

    Parameters
    ----------
    target
        Target value of ``r_t`` (0.6 in the paper).
    adjust_kimg
        Thousands of images over which ``p`` could travel from 0 to 1 (500 in the paper).
    batch_size
        Images per discriminator step.
    interval
        Discriminator steps between adjustments (4 in the paper's implementation).
    p
        Initial probability.
    max_p
        Upper bound of ``p``. The paper lets ``p`` reach 1, and finds that its geometric
        augmentations start to leak into the generator above ``p ~ 0.8`` (Fig. 3); on small
        mask sets a lower cap keeps the generated layouts free of them.
    """

    def __init__(
        self,
        *,
        target: float = 0.6,
        adjust_kimg: float = 500.0,
        batch_size: int,
        interval: int = 4,
        p: float = 0.0,
        max_p: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if interval < 1:
            raise ValueError(f"interval must be positive, got {interval}")
        if adjust_kimg <= 0:
            raise ValueError(f"adjust_kimg must be positive, got {adjust_kimg}")
        if not 0.0 <= max_p <= 1.0:
            raise ValueError(f"max_p must be in [0, 1], got {max_p}")
        if not 0.0 <= p <= max_p:
            raise ValueError(f"p must be in [0, max_p={max_p}], got {p}")
        self.target = target
        self.interval = interval
        self.step_size = batch_size * interval / (adjust_kimg * 1000)
        self.p = p
        self.max_p = max_p
        self.rt: float | None = None
        self._sign_sum: Tensor | None = None
        self._count = 0
        self._steps = 0

    def observe(self, real_logits: Tensor) -> bool:
        """Accumulate one step's ``sign(D(x_real))``; adjust ``p`` every ``interval`` steps.

        Parameters
        ----------
        real_logits
            ``(N, 1)`` or ``(N,)`` discriminator outputs on (augmented) real images.

        Returns
        -------
        bool
            True when this call adjusted :attr:`p` (and set :attr:`rt`).
        """
        signs = real_logits.detach().float().sign().sum()
        # Summed on the logits' device; read back once per interval, not once per step.
        self._sign_sum = signs if self._sign_sum is None else self._sign_sum + signs
        self._count += real_logits.numel()
        self._steps += 1
        if self._steps < self.interval:
            return False
        self.rt = float(self._sign_sum) / self._count
        direction = math.copysign(1.0, self.rt - self.target) if self.rt != self.target else 0.0
        self.p = min(max(self.p + direction * self.step_size, 0.0), self.max_p)
        self._sign_sum, self._count, self._steps = None, 0, 0
        return True
