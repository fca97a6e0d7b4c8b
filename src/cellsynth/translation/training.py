"""pix2pix training and inference (Isola et al. 2017): masks -> microscopy images.

The objective is the conditional GAN loss plus ``lambda_l1`` times the L1 distance to the
real image (Eq. 4, lambda = 100); the discriminator sees the mask representation and the
image concatenated and its loss is halved (Sec. 3.3). Adam with lr 2e-4 and betas
(0.5, 0.999), the learning rate constant and then decayed linearly to 0 over the last
``decay_epochs``. Training pairs are jittered as in Appendix 6.2 (upscaled by 286/256,
randomly cropped back) and flipped.

One call of :func:`train_pix2pix` trains from scratch or resumes from the newest checkpoint
of its :class:`~cellsynth.training.CheckpointStore` (continuing the epoch count), and
checkpoints every ``checkpoint_every`` epochs. Gradients are averaged over processes by
:meth:`~cellsynth.training.Runtime.all_reduce_mean_`, so one code path serves 1 CPU, 1 GPU
and ``torchrun`` with N GPUs, as in :mod:`cellsynth.gan.training`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cellsynth.training import (
    CheckpointStore,
    Runtime,
    capture_rng_state,
    resume_from_latest,
)
from cellsynth.training.config import config_from_params
from cellsynth.translation.codes import code_bank, paint_codes, region_code_tables
from cellsynth.translation.masks import (
    FLIP_SIGN_CHANNELS,
    INTERPOLATION,
    REPRESENTATIONS,
    mask_channels,
    masks_to_input,
)
from cellsynth.translation.networks import (
    NORMS,
    UPSAMPLES,
    PatchDiscriminator,
    UNetGenerator,
    check_resolution,
)
from cellsynth.translation.normalization import DTYPES, ChannelNormalizer

logger = logging.getLogger(__name__)

GanLoss = Literal["bce", "lsgan"]
LogCallback = Callable[[dict[str, float], int], None]
# Appendix 6.2: images resized to 286x286, then randomly cropped back to 256x256.
JITTER_SCALE = 286 / 256


@dataclass
class Pix2PixConfig:
    """pix2pix settings; the defaults are the paper's (Isola et al. 2017, Sec. 3.3 and Appendix 6).

    ``batch`` is the total over all processes. The learning rate is constant for
    ``epochs - decay_epochs`` epochs, then decays linearly towards 0.
    """

    epochs: int = 200
    decay_epochs: int = 100
    batch: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_l1: float = 100.0
    gan_loss: GanLoss = "bce"
    jitter: bool = True
    flips: bool = True
    g_filters: int = 64
    d_filters: int = 64
    g_depth: int = 8
    d_layers: int = 3
    dropout: float = 0.5
    norm: str = "batch"
    upsample: str = "transposed"  # the paper's; "resize" paints no checkerboard (translation.networks)
    representation: str = "label"  # the paper's choice: the raw labelled mask, ids permuted per sample
    intensity_codes: bool = False  # also condition on each region's mean intensity (translation.codes)
    checkpoint_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):  # wrong types (e.g. a quoted number in YAML) fail here with the key's name
            value, kind = getattr(self, f.name), {"int": int, "float": (int, float), "bool": bool}.get(str(f.type))
            if kind is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
                raise ValueError(f"image_translation.{f.name} must be of type {f.type}, got {value!r}")
        for name in ("epochs", "batch", "g_filters", "d_filters", "g_depth", "d_layers", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"image_translation.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.decay_epochs <= self.epochs:
            raise ValueError(f"image_translation.decay_epochs must be an integer in [0, epochs={self.epochs}], "
                             f"got {self.decay_epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"image_translation.lr must be > 0, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"image_translation.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.lambda_l1 >= 0:
            raise ValueError(f"image_translation.lambda_l1 must be >= 0, got {self.lambda_l1}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"image_translation.dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("gan_loss", ("bce", "lsgan")), ("norm", NORMS), ("upsample", UPSAMPLES),
                              ("representation", REPRESENTATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"image_translation.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Pix2PixConfig:
        """Build from a parameters dict, naming any key that is not a setting."""
        return config_from_params(cls, params, "image_translation")


@dataclass
class Pix2PixResult:
    """What :func:`train_pix2pix` returns.

    Attributes
    ----------
    generator
        The trained generator on CPU, in eval mode (its dropout noise stays active).
    normalizer
        :meth:`ChannelNormalizer.to_dict` of the training images.
    architecture
        Keyword arguments that rebuild the generator (:func:`build_unet_generator`).
    representation
        The mask representation the generator takes (:mod:`cellsynth.translation.masks`).
    history
        One dict per epoch: ``epoch``, ``lr``, ``G_gan``, ``G_l1``, ``D_loss`` (means over the epoch).
    codes
        :meth:`CodeBank.to_dict` of the training crops' region codes when trained with ``intensity_codes``
        (:func:`translate` then needs codes for every mask), else ``None``.
    """

    generator: UNetGenerator
    normalizer: dict[str, Any]
    architecture: dict[str, Any]
    representation: str
    history: list[dict[str, float]] = field(default_factory=list)
    codes: dict[str, Any] | None = None


def build_unet_generator(architecture: dict[str, Any]) -> UNetGenerator:
    """A generator from the ``architecture`` dict stored with every trained model."""
    return UNetGenerator(**architecture)


def train_pix2pix(
    labels: np.ndarray,
    images: np.ndarray,
    config: Pix2PixConfig,
    checkpoints: CheckpointStore,
    runtime: Runtime,
    *,
    log_metrics: LogCallback | None = None,
    progress: bool = True,
) -> Pix2PixResult:
    """Train a pix2pix generator to turn instance masks into images.

    Parameters
    ----------
    labels
        ``(N, S, S)`` integer instance masks, 0 = background, ``S`` a power of two >= 32.
    images
        ``(N, S, S, C)`` uint8 or uint16 images paired with ``labels``.
    config
        Training settings.
    checkpoints
        Where checkpoints go; a run finding one there resumes from it.
    runtime
        Device, precision and process group (:func:`cellsynth.training.start_runtime`).
    log_metrics
        Called on the main process with ``(metrics, epoch)`` after every epoch.
    progress
        Show a progress bar (main process only).

    Returns
    -------
    Pix2PixResult
        The generator after ``config.epochs`` epochs, the normaliser, the architecture and the history.
    """
    _check_pairs(labels, images)
    if len(labels) < runtime.world_size:
        raise ValueError(f"{len(labels)} training pairs cannot be shared by {runtime.world_size} processes")
    if config.batch % runtime.world_size:
        raise ValueError(f"image_translation.batch ({config.batch}) must be divisible by the number of processes "
                         f"({runtime.world_size})")
    normalizer = ChannelNormalizer.fit(images)
    run = _build_run(config, resolution=images.shape[1], channels=images.shape[3], runtime=runtime)
    targets = normalizer.forward(images).transpose(0, 3, 1, 2).copy()
    code_tables = region_code_tables(labels, targets) if config.intensity_codes else None
    data = _TrainingData(
        labels=labels,
        targets=torch.from_numpy(targets).to(runtime.device),
        # Flow and boundary inputs are deterministic and computed once; label inputs are re-permuted every batch.
        fixed_inputs=(None if config.representation == "label" else
                      torch.from_numpy(masks_to_input(labels, config.representation)).to(runtime.device)),
        mask_rng=np.random.default_rng(config.seed + runtime.rank),
        code_tables=code_tables)
    state = resume_from_latest(
        checkpoints, runtime,
        {"G": run.generator, "D": run.discriminator, "G_opt": run.g_opt, "D_opt": run.d_opt, "G_sched": run.g_sched,
         "D_sched": run.d_sched},
        {"architecture": run.architecture, "representation": config.representation},
        seed=lambda state: config.seed + runtime.rank + state["epoch"])
    epoch, history = 0, []
    if state is not None:
        epoch, history = state["epoch"], state["history"]
        if runtime.is_main:
            data.mask_rng.bit_generator.state = state["mask_rng"]
        else:
            data.mask_rng = np.random.default_rng([config.seed + runtime.rank, epoch])
        logger.info("Resuming pix2pix training from %s at epoch %d", checkpoints.paths()[-1], epoch)
    for net in (run.generator, run.discriminator):
        runtime.broadcast_module_(net)

    bar = tqdm(total=config.epochs, initial=min(epoch, config.epochs), unit="epoch", desc="pix2pix",
               disable=not (progress and runtime.is_main))
    while epoch < config.epochs:
        record = _train_epoch(run, data, epoch, config, runtime)
        epoch += 1
        bar.update(1)
        if runtime.is_main:
            history.append(record)
            bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("G_l1", "D_loss")})
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                checkpoints.save(epoch, {
                    "G": run.generator.state_dict(), "D": run.discriminator.state_dict(),
                    "G_opt": run.g_opt.state_dict(), "D_opt": run.d_opt.state_dict(),
                    "G_sched": run.g_sched.state_dict(), "D_sched": run.d_sched.state_dict(),
                    "epoch": epoch, "history": history, "rng": capture_rng_state(),
                    "mask_rng": data.mask_rng.bit_generator.state, "normalizer": normalizer.to_dict(),
                    "architecture": run.architecture, "representation": config.representation,
                    "config": asdict(config),
                })
            if log_metrics is not None:
                log_metrics({k: v for k, v in record.items() if k != "epoch"}, epoch)
        runtime.barrier()
    bar.close()
    result = build_unet_generator(run.architecture)
    result.load_state_dict({k: v.detach().cpu() for k, v in run.generator.state_dict().items()})
    return Pix2PixResult(result.eval().requires_grad_(False), normalizer.to_dict(), run.architecture,
                         config.representation, history,
                         None if code_tables is None else code_bank(labels, code_tables).to_dict())


@dataclass
class _Run:
    """The networks, optimisers and learning-rate schedules of one training run."""

    generator: UNetGenerator
    discriminator: PatchDiscriminator
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    g_sched: torch.optim.lr_scheduler.LambdaLR
    d_sched: torch.optim.lr_scheduler.LambdaLR
    architecture: dict[str, Any]
    memory_format: torch.memory_format
    step_networks: tuple[nn.Module, nn.Module]  # the compiled versions (sharing the weights) when runtime.compile


@dataclass
class _TrainingData:
    """Training pairs on the device: masks (label masks are permuted anew each batch), normalised targets,
    and each crop's region codes when the generator takes them."""

    labels: np.ndarray
    targets: Tensor
    fixed_inputs: Tensor | None
    mask_rng: np.random.Generator
    code_tables: list[np.ndarray] | None = None


def _build_run(config: Pix2PixConfig, *, resolution: int, channels: int, runtime: Runtime) -> _Run:
    architecture = {
        "in_channels": mask_channels(config.representation) + (channels if config.intensity_codes else 0),
        "out_channels": channels,
        "base_filters": config.g_filters, "depth": config.g_depth, "dropout": config.dropout,
        "resolution": resolution, "norm": config.norm, "upsample": config.upsample,
    }
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    generator = build_unet_generator(architecture).to(runtime.device, memory_format=memory_format)
    discriminator = PatchDiscriminator(architecture["in_channels"] + channels, config.d_filters, config.d_layers,
                                       config.norm).to(runtime.device, memory_format=memory_format)
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    schedule = _lr_factor(config.epochs, config.decay_epochs)
    return _Run(generator, discriminator, g_opt, d_opt, torch.optim.lr_scheduler.LambdaLR(g_opt, schedule),
                torch.optim.lr_scheduler.LambdaLR(d_opt, schedule), architecture, memory_format,
                (runtime.compiled(generator), runtime.compiled(discriminator)))


def _train_epoch(run: _Run, data: _TrainingData, epoch: int, config: Pix2PixConfig, runtime: Runtime
                 ) -> dict[str, float]:
    """One epoch (0-based ``epoch``) of D and G updates, then the schedules' step; returns its mean losses.

    An incomplete last batch is dropped (a different one each epoch): BatchNorm statistics need full batches.
    Every process draws the same epoch order (seeded by the epoch) and takes its share of each batch.
    """
    device = runtime.device
    order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
    running: dict[str, list[float]] = {}
    for step in range(max(1, len(data.labels) // config.batch)):
        index = order[step * config.batch:(step + 1) * config.batch][runtime.rank::runtime.world_size]
        if data.fixed_inputs is None:
            condition = torch.from_numpy(masks_to_input(data.labels[index.numpy()], "label", data.mask_rng)).to(device)
        else:
            condition = data.fixed_inputs[index.to(device)]
        if data.code_tables is not None:
            chosen = index.tolist()
            codes = paint_codes(data.labels[chosen], [data.code_tables[i] for i in chosen])
            condition = torch.cat([condition, torch.from_numpy(codes).to(device)], 1)
        condition, real = _augment(condition, data.targets[index.to(device)], config)
        condition = condition.contiguous(memory_format=run.memory_format)
        real = real.contiguous(memory_format=run.memory_format)
        for key, value in _training_step(condition, real, *run.step_networks, run.g_opt, run.d_opt, runtime,
                                         config).items():
            running.setdefault(key, []).append(value)
    record = {"epoch": float(epoch + 1), "lr": run.g_opt.param_groups[0]["lr"],
              **{k: float(np.mean(v)) for k, v in running.items()}}
    run.g_sched.step()
    run.d_sched.step()
    return record


@torch.no_grad()
def translate(
    generator: UNetGenerator,
    labels: np.ndarray,
    normalizer: ChannelNormalizer | dict[str, Any],
    representation: str,
    batch: int = 16,
    device: str | torch.device = "cpu",
    seed: int = 0,
    code_tables: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Images for instance masks, deterministic for a seed.

    Parameters
    ----------
    generator
        A trained generator (moved to ``device``, set to eval mode; its dropout noise stays active).
    labels
        ``(N, S, S)`` integer instance masks; ``S`` a power of two >= 32 and a multiple of
        ``2**generator.depth`` (the generator is fully convolutional).
    normalizer
        The training images' :class:`ChannelNormalizer` or its dict.
    representation
        The mask representation the generator was trained with.
    batch
        Masks per forward pass. Batch normalisation uses the statistics of each batch (as in the
        paper), so the output depends on ``batch`` as well as ``seed``.
    device
        Where to compute.
    seed
        Seeds the dropout noise and the ``"label"`` id permutation (the global RNG is left untouched).
    code_tables
        One region-code table per mask (:mod:`cellsynth.translation.codes`), for a generator trained with
        ``intensity_codes``; ``None`` for one trained without.

    Returns
    -------
    np.ndarray
        ``(N, S, S, C)`` images of the normaliser's dtype (uint8 or uint16).
    """
    if isinstance(normalizer, dict):
        normalizer = ChannelNormalizer.from_dict(normalizer)
    if labels.ndim != 3 or labels.shape[1] != labels.shape[2] or len(labels) == 0:
        raise ValueError(f"labels must be non-empty square (N, S, S) masks, got shape {labels.shape}")
    check_resolution(labels.shape[1], "labels size")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    code_channels = 0 if code_tables is None else normalizer.channels
    if (mask_channels(representation) + code_channels != generator.in_channels
            or normalizer.channels != generator.out_channels):
        raise ValueError(f"the generator maps {generator.in_channels} to {generator.out_channels} channels, but "
                         f"representation {representation!r} has {mask_channels(representation)}, the region codes "
                         f"{code_channels} and the normaliser {normalizer.channels} (a generator trained with "
                         "intensity_codes needs code tables, one trained without takes none)")
    device = torch.device(device)
    generator = generator.to(device).eval()
    inputs = masks_to_input(labels, representation, np.random.default_rng(seed))
    if code_tables is not None:
        inputs = np.concatenate([inputs, paint_codes(labels, code_tables)], 1)
    outputs = []
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(inputs), batch):
            x = torch.from_numpy(inputs[start:start + batch]).to(device)
            outputs.append(generator(x).float().cpu().numpy())
    return normalizer.inverse(np.concatenate(outputs).transpose(0, 2, 3, 1))


def _check_pairs(labels: np.ndarray, images: np.ndarray) -> None:
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be (N, H, W) integers, got {labels.dtype} {labels.shape}")
    if images.ndim != 4 or images.dtype.name not in DTYPES:
        raise ValueError(f"images must be (N, H, W, C) uint8 or uint16, got {images.dtype} {images.shape}")
    if images.shape[:3] != labels.shape:
        raise ValueError(f"labels {labels.shape} and images {images.shape} do not pair up (N, H, W)")
    if len(labels) == 0:
        raise ValueError("pix2pix training set is empty")
    if labels.shape[1] != labels.shape[2]:
        raise ValueError(f"pix2pix training pairs must be square, got {labels.shape[1]}x{labels.shape[2]}")
    check_resolution(labels.shape[1], "training image size")


def _lr_factor(epochs: int, decay_epochs: int) -> Callable[[int], float]:
    """Learning-rate multiplier of epoch ``e`` (0-based): 1, then linear towards 0 over the last ``decay_epochs``."""
    constant = epochs - decay_epochs

    def factor(e: int) -> float:
        return 1.0 - max(0, e + 1 - constant) / (decay_epochs + 1)

    return factor


def _augment(condition: Tensor, real: Tensor, config: Pix2PixConfig) -> tuple[Tensor, Tensor]:
    """Random jitter (upscale by 286/256, crop back) and flips, the same for each mask and its image."""
    size, n = real.shape[-1], len(real)
    if config.jitter:
        grown = round(size * JITTER_SCALE)
        mode = INTERPOLATION[config.representation]
        condition = F.interpolate(condition, size=(grown, grown), mode=mode,
                                  **({} if mode == "nearest" else {"align_corners": False}))
        real = F.interpolate(real, size=(grown, grown), mode="bilinear", align_corners=False)
        offsets = torch.randint(grown - size + 1, (n, 2)).tolist()
        condition = torch.stack([c[:, y:y + size, x:x + size] for c, (y, x) in zip(condition, offsets)])
        real = torch.stack([r[:, y:y + size, x:x + size] for r, (y, x) in zip(real, offsets)])
    if config.flips:
        chosen = (torch.rand(n, 2) < 0.5).to(real.device)
        for axis, dim in enumerate((-1, -2)):
            flipped = condition.flip(dim)
            sign_channel = FLIP_SIGN_CHANNELS[config.representation][axis]
            if sign_channel is not None:  # a mirrored flow field points the other way along the mirrored axis
                flipped[:, sign_channel] = -flipped[:, sign_channel]
            where = chosen[:, axis].view(-1, 1, 1, 1)
            condition = torch.where(where, flipped, condition)
            real = torch.where(where, real.flip(dim), real)
    return condition, real


def _gan_loss(logits: Tensor, target_real: bool, kind: str) -> Tensor:
    """Patch-averaged GAN loss: logistic (the paper) or least squares (LSGAN)."""
    logits = logits.float()
    target = torch.full_like(logits, 1.0 if target_real else 0.0)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def _training_step(
    condition: Tensor,
    real: Tensor,
    generator: nn.Module,
    discriminator: nn.Module,
    g_opt: torch.optim.Optimizer,
    d_opt: torch.optim.Optimizer,
    runtime: Runtime,
    config: Pix2PixConfig,
) -> dict[str, float]:
    """One discriminator then one generator update on a batch; returns the losses.

    ``generator`` and ``discriminator`` may be the compiled versions (:meth:`Runtime.compiled`).
    """
    with runtime.autocast():
        fake = generator(condition)

    discriminator.requires_grad_(True)
    d_opt.zero_grad(set_to_none=True)
    with runtime.autocast():
        d_real = _gan_loss(discriminator(torch.cat([condition, real], 1)), True, config.gan_loss)
        d_fake = _gan_loss(discriminator(torch.cat([condition, fake.detach()], 1)), False, config.gan_loss)
        d_loss = 0.5 * (d_real + d_fake)  # halved to slow D relative to G (Sec. 3.3)
    d_loss.backward()
    _optimizer_step(discriminator, d_opt, runtime)

    discriminator.requires_grad_(False)  # G's update must not accumulate gradients in D
    g_opt.zero_grad(set_to_none=True)
    with runtime.autocast():
        g_gan = _gan_loss(discriminator(torch.cat([condition, fake], 1)), True, config.gan_loss)
        g_l1 = F.l1_loss(fake.float(), real)
        g_loss = g_gan + config.lambda_l1 * g_l1
    g_loss.backward()
    _optimizer_step(generator, g_opt, runtime)
    return {"G_gan": float(g_gan.detach()), "G_l1": float(g_l1.detach()), "D_loss": float(d_loss.detach())}


def _optimizer_step(net: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime) -> None:
    """Average the gradients over processes, then step."""
    runtime.all_reduce_mean_([p.grad for p in net.parameters() if p.grad is not None])
    optimizer.step()
