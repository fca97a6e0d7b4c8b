"""StyleGAN2-ADA training loop (Karras et al. 2020b, Sec. 2-3 and Appendix A-B).

One call of :func:`train_gan` trains from scratch, resumes from the newest
checkpoint in its :class:`~cellsynth.training.CheckpointStore` (continuing the
image count), or starts from another run's weights (``init_from``, transfer
learning). Every ``snapshot_kimg`` it checkpoints atomically, asks the caller's
``evaluate`` for quality metrics of ``G_ema`` and keeps the best snapshot.

The four phases per step follow the paper's ``auto`` configuration: generator
main loss, lazy path-length regularisation, discriminator main loss, lazy R1;
Adam with betas (0, 0.99), the lazy phases with the learning rate and betas
corrected by ``interval / (interval + 1)`` (StyleGAN2, Appendix B); an
exponential moving average ``G_ema`` with ramp-up; ADA adjusting ``p`` from the
sign of ``D`` on reals. Gradients are averaged over processes by hand (no DDP
wrapper), so one code path serves 1 CPU, 1 GPU and ``torchrun`` with N GPUs.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cellsynth.gan.augment import AdaptiveAugmentController, AugmentPipe
from cellsynth.gan.layers import set_modulation
from cellsynth.gan.loss import StyleGAN2Loss, auto_r1_gamma, blur_sigma_at, ema_beta
from cellsynth.gan.networks import Discriminator, Generator
from cellsynth.training import (
    CheckpointStore,
    Runtime,
    capture_rng_state,
    resume_from_latest,
)
from cellsynth.training import run_fingerprint as fingerprint
from cellsynth.training.config import config_from_params

logger = logging.getLogger(__name__)

AugmentMode = Literal["ada", "fixed", "none"]
Modulation = Literal["grouped", "batched"]
Objective = Literal["logistic", "relativistic"]
MetricsCallback = Callable[[Generator], dict[str, float]]
LogCallback = Callable[[dict[str, float], int], None]


@dataclass
class GANConfig:
    """StyleGAN2-ADA settings; the defaults are the paper's ``auto`` configuration where it has one.

    ``resolution`` and ``channels`` come from the data. ``batch`` is the total
    over all processes; ``r1_gamma=None`` means ``0.0002 * resolution^2 / batch``
    and ``ema_kimg=None`` means ``batch * 10 / 32``. ``modulation`` picks how the generator's
    modulated convolutions are evaluated during training (:class:`~cellsynth.gan.layers.ModulatedConv2d`):
    a speed setting that leaves the function and the checkpoints unchanged.
    """

    kimg: float = 25000.0
    batch: int = 32
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group_size: int = 4
    learning_rate: float = 0.0025
    d_learning_rate: float | None = None
    r1_gamma: float | None = None
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    style_mixing_prob: float = 0.9
    objective: Objective = "logistic"
    mode_seeking: float = 0.0
    mode_seeking_kimg: float = 0.0
    blur_sigma: float = 0.0
    blur_fade_kimg: float = 0.0
    ema_kimg: float | None = None
    ema_rampup: float | None = 0.05
    aug: AugmentMode = "ada"
    aug_p: float = 0.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    ada_max_p: float = 1.0
    vector_channels: tuple[int, int] | None = (1, 2)
    snapshot_kimg: float = 50.0
    conv_clamp: float | None = 256.0
    modulation: Modulation = "batched"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.aug not in ("ada", "fixed", "none"):
            raise ValueError(f"mask_gan.aug must be 'ada', 'fixed' or 'none', got {self.aug!r}")
        if self.objective not in ("logistic", "relativistic"):
            raise ValueError(f"mask_gan.objective must be 'logistic' or 'relativistic', got {self.objective!r}")
        if self.modulation not in ("grouped", "batched"):
            raise ValueError(f"mask_gan.modulation must be 'grouped' or 'batched', got {self.modulation!r}")
        for name in ("kimg", "snapshot_kimg", "learning_rate", "ada_kimg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"mask_gan.{name} must be > 0, got {getattr(self, name)}")
        if self.d_learning_rate is not None and self.d_learning_rate <= 0:
            raise ValueError(f"mask_gan.d_learning_rate must be > 0 (or null), got {self.d_learning_rate}")
        for name in ("blur_sigma", "blur_fade_kimg", "mode_seeking", "mode_seeking_kimg"):
            if getattr(self, name) < 0:
                raise ValueError(f"mask_gan.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch", "r1_interval", "pl_interval", "ada_interval", "mbstd_group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"mask_gan.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ada_max_p <= 1.0:
            raise ValueError(f"mask_gan.ada_max_p must be in [0, 1], got {self.ada_max_p}")
        if not 0.0 <= self.aug_p <= 1.0:
            raise ValueError(f"mask_gan.aug_p must be in [0, 1], got {self.aug_p}")
        if self.aug == "ada" and self.aug_p > self.ada_max_p:
            raise ValueError(f"mask_gan.aug_p ({self.aug_p}) must not exceed mask_gan.ada_max_p ({self.ada_max_p})")
        if self.vector_channels is not None:
            self.vector_channels = tuple(self.vector_channels)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GANConfig:
        """Build from a parameters dict, naming any key that is not a setting."""
        return config_from_params(cls, params, "mask_gan")


@dataclass
class GANNetworks:
    """The three networks of a run and the settings they were built with."""

    generator: Generator
    discriminator: Discriminator
    generator_ema: Generator
    architecture: dict[str, Any]


@dataclass
class GANTrainingResult:
    """What :func:`train_gan` returns.

    Attributes
    ----------
    generator_ema
        The best snapshot's ``G_ema`` (or the last one without ``evaluate``), on CPU, eval mode.
    architecture
        Keyword arguments that rebuild the generator (:func:`build_generator`).
    best
        ``{"kimg": ..., **metrics}`` of the selected snapshot.
    history
        One dict per snapshot: ``kimg``, losses, ``augment_p`` and the metrics.
    """

    generator_ema: Generator
    architecture: dict[str, Any]
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


# The settings that shape the generator besides the data's resolution and channels.
ARCHITECTURE_SETTINGS = ("z_dim", "w_dim", "channel_base", "channel_max", "mapping_layers", "conv_clamp")


def build_networks(config: GANConfig, resolution: int, channels: int) -> GANNetworks:
    """Generator, discriminator and ``G_ema`` (a copy of G) for images ``(channels, resolution, resolution)``."""
    architecture = {"img_resolution": resolution, "img_channels": channels,
                    **{key: getattr(config, key) for key in ARCHITECTURE_SETTINGS}}
    generator = build_generator(architecture)
    discriminator = Discriminator(
        img_resolution=resolution,
        img_channels=channels,
        channel_base=config.channel_base,
        channel_max=config.channel_max,
        mbstd_group_size=config.mbstd_group_size,
        conv_clamp=config.conv_clamp,
    )
    return GANNetworks(generator, discriminator, copy.deepcopy(generator).eval().requires_grad_(False), architecture)


def adopt_architecture(config: GANConfig, architecture: dict[str, Any]) -> GANConfig:
    """``config`` with the network shape of the weights a run starts from (``init_from``'s
    ``architecture``): widths and latent sizes in the settings are for training from scratch, so a
    shipped generator fine-tunes whatever they are. Resolution and channels still come from the data."""
    changes = {key: architecture[key] for key in ARCHITECTURE_SETTINGS
               if key in architecture and architecture[key] != getattr(config, key)}
    if changes:
        logger.info("mask_gan.init_from: the network keeps the shape of its starting weights %s", changes)
    return replace(config, **changes)


def build_generator(architecture: dict[str, Any]) -> Generator:
    """A generator from the ``architecture`` dict stored with every trained model."""
    return Generator(**architecture)


def snapshot_rank(metrics: dict[str, float]) -> tuple[bool, float, float]:
    """Sort key of snapshots: lowest FID first (standard or random-init), ties by the share of
    generated masks that pass the filters (``pass_rate``).

    A snapshot none of whose masks pass, or whose masks hold no objects at all, ranks last: a
    generator collapsed to empty fields decodes "consistently" and can even score a low
    random-init FID.
    """
    fid = next((v for k, v in metrics.items() if k.startswith("fid")), math.inf)
    unusable = metrics.get("pass_rate", 1.0) == 0 or metrics.get("objects_per_mask", 1.0) == 0
    return unusable, fid, -metrics.get("pass_rate", 0.0)


def gan_run_fingerprint(config: GANConfig, images: np.ndarray, init_from: dict[str, Any] | None = None) -> str:
    """Digest of the settings, training images and starting weights (``init_from``'s ``G_ema``),
    leaving out the length of training (``kimg``, ``snapshot_kimg``) so a finished run can be
    extended, and ``modulation``, which changes speed only."""
    start = () if init_from is None else (
        np.concatenate([v.detach().cpu().float().numpy().ravel() for v in init_from["G_ema"].values()]),)
    return fingerprint(config, images, *start, ignore=("kimg", "snapshot_kimg", "modulation"))


def images_to_tensor(images: np.ndarray) -> Tensor:
    """``(N, H, W, C)`` uint8 -> ``(N, C, H, W)`` uint8 tensor (kept uint8 until a batch is drawn)."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"GAN training images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"GAN training images must be square, got {images.shape[1]}x{images.shape[2]}")
    if len(images) == 0:
        raise ValueError("GAN training set is empty")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def to_unit_range(batch: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return batch.float() / 127.5 - 1.0


def from_unit_range(batch: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], the inverse of :func:`to_unit_range` up to rounding."""
    return ((batch.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def train_gan(
    images: np.ndarray,
    config: GANConfig,
    checkpoints: CheckpointStore,
    runtime: Runtime,
    *,
    evaluate: MetricsCallback | None = None,
    log_metrics: LogCallback | None = None,
    init_from: dict[str, Any] | None = None,
    progress: bool = True,
) -> GANTrainingResult:
    """Train StyleGAN2-ADA on ``images`` until ``config.kimg`` thousand images have been shown.

    Parameters
    ----------
    images
        ``(N, R, R, C)`` uint8 training images (encoded flow fields), ``R`` a power of two.
    config
        Training settings.
    checkpoints
        Where checkpoints go; a run finding one there resumes from it.
    runtime
        Device, precision and process group (:func:`cellsynth.training.start_runtime`).
    evaluate
        Called with ``G_ema`` on the main process at every snapshot; returns metrics such
        as ``{"fid_randinit": ..., "pass_rate": ...}`` used to pick the best snapshot (:func:`snapshot_rank`).
    log_metrics
        Called on the main process with ``(metrics, kimg_step)`` at every snapshot.
    init_from
        A checkpoint state of another run (transfer learning, e.g. :func:`load_initial_weights`): its
        G, D and ``G_ema`` weights are the starting point, its ``architecture`` replaces the widths of
        ``config`` (:func:`adopt_architecture`), and the schedules (blur, ``G_ema`` ramp-up) continue
        from its image count ``nimg``; its weights are ignored when resuming.
    progress
        Show a progress bar (main process only).
    """
    data = images_to_tensor(images).to(runtime.device)
    if config.batch % runtime.world_size:
        raise ValueError(f"mask_gan.batch ({config.batch}) must be divisible by the number of processes "
                         f"({runtime.world_size})")
    local_batch = config.batch // runtime.world_size
    if init_from is not None and "architecture" in init_from:
        config = adopt_architecture(config, init_from["architecture"])
    # 1. setup: networks, augmentation, loss and optimisers
    run = _setup(config, int(data.shape[2]), int(data.shape[1]), runtime)
    # 2. resume this run's last checkpoint, or start from init_from's weights
    position = _resume(run, checkpoints, init_from, config, runtime)

    total = int(config.kimg * 1000)
    snapshot_every = max(int(config.snapshot_kimg * 1000), config.batch)
    next_snapshot = (position.nimg // snapshot_every + 1) * snapshot_every
    bar = tqdm(total=total, initial=min(position.nimg, total), unit="img", desc="mask GAN",
               disable=not (progress and runtime.is_main))
    step = position.nimg // config.batch
    running: dict[str, list[float]] = {}
    while position.nimg < total:
        # 3. one step over the phases of lazy regularisation: G main, G path length, D main, D R1
        real = to_unit_range(data[torch.randint(len(data), (local_batch,), device=runtime.device)])
        real = real.contiguous(memory_format=run.memory_format)
        shown = position.nimg + position.schedule_offset
        run.loss.blur_sigma = blur_sigma_at(config.blur_sigma, config.blur_fade_kimg, shown)
        run.loss.mode_seeking = config.mode_seeking if shown >= config.mode_seeking_kimg * 1000 else 0.0
        losses = _training_step(step, real, local_batch, run.nets, run.loss, run.g_opt, run.d_opt, run.controller,
                                run.augment_pipe, runtime, config)
        for key, value in losses.items():
            running.setdefault(key, []).append(value)
        _update_ema(run.nets.generator_ema, run.nets.generator,
                    ema_beta(config.batch, config.ema_kimg, config.ema_rampup, cur_nimg=shown))
        position.nimg += config.batch
        step += 1
        bar.update(config.batch)
        # 4. snapshot: metrics, best G_ema, checkpoint
        if position.nimg >= next_snapshot or position.nimg >= total:
            next_snapshot += snapshot_every
            record = {"kimg": position.nimg / 1000, **{k: float(np.mean(v)) for k, v in running.items()},
                      "augment_p": _augment_p(run.controller, run.augment_pipe)}
            running = {}
            if runtime.is_main:
                _snapshot(record, run, position, config, checkpoints, evaluate, log_metrics)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("G_loss", "D_loss", "augment_p")
                                 or k.startswith("fid")})
            runtime.barrier()
    bar.close()
    # 5. finish: the best snapshot's G_ema
    best = position.best
    if best is None:  # resumed from a checkpoint that had already reached kimg on another process
        best = {"metrics": {"kimg": position.nimg / 1000}, "G_ema": run.nets.generator_ema.state_dict()}
    generator = build_generator(run.nets.architecture)
    generator.load_state_dict(best["G_ema"])
    return GANTrainingResult(generator.eval().requires_grad_(False), run.nets.architecture, dict(best["metrics"]),
                             position.history)


@dataclass
class _Run:
    """What one training run updates: networks, loss, optimisers and augmentation."""

    nets: GANNetworks
    loss: StyleGAN2Loss
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    controller: AdaptiveAugmentController | None
    augment_pipe: AugmentPipe | None
    memory_format: torch.memory_format


@dataclass
class _Progress:
    """Where a run stands: images shown, best snapshot, snapshot metrics, and the images its initial
    weights had seen (the schedules continue from there)."""

    nimg: int = 0
    best: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    schedule_offset: int = 0


def _setup(config: GANConfig, resolution: int, channels: int, runtime: Runtime) -> _Run:
    nets = build_networks(config, resolution, channels)
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    for net in (nets.generator, nets.discriminator, nets.generator_ema):
        net.to(runtime.device, memory_format=memory_format)
        set_modulation(net, grouped=config.modulation == "grouped")
    augment_pipe = _augment_pipe(config, channels).to(runtime.device) if config.aug != "none" else None
    controller = (AdaptiveAugmentController(target=config.ada_target, adjust_kimg=config.ada_kimg,
                                            batch_size=config.batch, interval=config.ada_interval, p=config.aug_p,
                                            max_p=config.ada_max_p)
                  if config.aug == "ada" else None)
    r1_gamma = auto_r1_gamma(resolution, config.batch) if config.r1_gamma is None else config.r1_gamma
    loss = StyleGAN2Loss(nets.generator, nets.discriminator, augment_pipe, r1_gamma=r1_gamma,
                         r1_interval=config.r1_interval, style_mixing_prob=config.style_mixing_prob,
                         pl_weight=config.pl_weight, pl_interval=config.pl_interval,
                         compile_network=runtime.compiled,
                         relativistic=config.objective == "relativistic",
                         mode_seeking=config.mode_seeking).to(runtime.device)
    g_opt = _lazy_adam(nets.generator, config.learning_rate, config.pl_interval if config.pl_weight > 0 else None)
    d_learning_rate = config.learning_rate if config.d_learning_rate is None else config.d_learning_rate
    d_opt = _lazy_adam(nets.discriminator, d_learning_rate, config.r1_interval if r1_gamma > 0 else None)
    return _Run(nets, loss, g_opt, d_opt, controller, augment_pipe, memory_format)


def _resume(run: _Run, checkpoints: CheckpointStore, init_from: dict[str, Any] | None, config: GANConfig,
            runtime: Runtime) -> _Progress:
    """Load the newest checkpoint of this run, or else the initial weights of another (schedules go on
    from the images they saw, as after a resume: a fine-tuned network is not a newly initialised one)."""
    nets = run.nets
    progress = _Progress()
    state = resume_from_latest(
        checkpoints, runtime,
        {"G": nets.generator, "D": nets.discriminator, "G_ema": nets.generator_ema, "G_opt": run.g_opt,
         "D_opt": run.d_opt, "loss": run.loss},
        {"architecture": nets.architecture}, seed=lambda state: config.seed + runtime.rank + state["nimg"])
    if state is not None:
        progress = _Progress(state["nimg"], state["best"], state["history"], state.get("schedule_offset", 0))
        if run.controller is not None:
            run.controller.p = state["augment_p"]
        if run.augment_pipe is not None:
            run.augment_pipe.p.fill_(state["augment_p"])
        logger.info("Resuming GAN training from %s at %.1f kimg", checkpoints.paths()[-1], progress.nimg / 1000)
    elif init_from is not None:
        if init_from.get("architecture", nets.architecture) != nets.architecture:
            raise ValueError(f"mask_gan.init_from holds a generator of another architecture "
                             f"({init_from['architecture']}) than this configuration's ({nets.architecture}); "
                             "choose matching settings or set mask_gan.init_from: null")
        nets.generator.load_state_dict(init_from["G"])
        nets.discriminator.load_state_dict(init_from["D"])
        nets.generator_ema.load_state_dict(init_from["G_ema"])
        progress.schedule_offset = int(init_from.get("nimg", 0))
        logger.info("Starting GAN training from the weights of another run (init_from, %.1f kimg)",
                    progress.schedule_offset / 1000)
    for net in (nets.generator, nets.discriminator, nets.generator_ema):
        runtime.broadcast_module_(net)
    return progress


def _snapshot(record: dict[str, float], run: _Run, progress: _Progress, config: GANConfig,
              checkpoints: CheckpointStore, evaluate: MetricsCallback | None, log_metrics: LogCallback | None) -> None:
    """Measure ``G_ema``, keep it if it is the best so far, log, and checkpoint (main process)."""
    nets = run.nets
    if evaluate is not None:
        record.update(evaluate(nets.generator_ema))
    progress.history.append(record)
    if progress.best is None or evaluate is None or snapshot_rank(record) < snapshot_rank(progress.best["metrics"]):
        progress.best = {"metrics": record, "G_ema": {k: v.detach().cpu().clone()
                                                      for k, v in nets.generator_ema.state_dict().items()}}
    if log_metrics is not None:
        log_metrics({k: v for k, v in record.items() if k != "kimg"}, int(round(record["kimg"] * 1000)))
    checkpoints.save(progress.nimg, {  # named by images shown: names must sort like progress
        "G": nets.generator.state_dict(), "D": nets.discriminator.state_dict(),
        "G_ema": nets.generator_ema.state_dict(), "G_opt": run.g_opt.state_dict(),
        "D_opt": run.d_opt.state_dict(), "loss": run.loss.state_dict(), "nimg": progress.nimg,
        "best": progress.best, "history": progress.history, "augment_p": _augment_p(run.controller, run.augment_pipe),
        "rng": capture_rng_state(), "config": asdict(config), "architecture": nets.architecture,
        "schedule_offset": progress.schedule_offset,
    })


def _training_step(
    step: int,
    real: Tensor,
    local_batch: int,
    nets: GANNetworks,
    loss: StyleGAN2Loss,
    g_opt: torch.optim.Optimizer,
    d_opt: torch.optim.Optimizer,
    controller: AdaptiveAugmentController | None,
    augment_pipe: AugmentPipe | None,
    runtime: Runtime,
    config: GANConfig,
) -> dict[str, float]:
    """One iteration over the four phases; returns the losses of this step."""
    device = runtime.device
    losses: dict[str, float] = {}

    def run_phase(net: nn.Module, optimizer: torch.optim.Optimizer, compute: Callable[[], Tensor], name: str) -> None:
        net.requires_grad_(True)
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            value = compute()
        value.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        runtime.all_reduce_mean_(grads)
        for g in grads:  # a diverging step must not poison the weights (StyleGAN2-ADA does the same)
            torch.nan_to_num_(g, nan=0.0, posinf=1e5, neginf=-1e5)
        optimizer.step()
        net.requires_grad_(False)
        losses[name] = float(value.detach())

    run_phase(nets.generator, g_opt,
              lambda: loss.g_main(torch.randn(local_batch, config.z_dim, device=device), real), "G_loss")
    if config.pl_weight > 0 and step % config.pl_interval == 0:
        run_phase(nets.generator, g_opt, lambda: loss.g_reg(torch.randn(local_batch, config.z_dim, device=device)),
                  "G_pl")

    # w_avg and the path-length mean are running statistics of each process's own samples: average them
    runtime.all_reduce_mean_(list(nets.generator.buffers()) + list(loss.buffers()))

    real_logits: list[Tensor] = []

    def d_main() -> Tensor:
        result = loss.d_main(real, torch.randn(local_batch, config.z_dim, device=device))
        real_logits.append(result.real_logits)
        return result.loss

    run_phase(nets.discriminator, d_opt, d_main, "D_loss")
    if controller is not None and augment_pipe is not None:
        if controller.observe(_gathered_logits(real_logits[0], runtime)):
            augment_pipe.p.fill_(controller.p)
    if loss.r1_gamma > 0 and step % config.r1_interval == 0:
        run_phase(nets.discriminator, d_opt,
                  lambda: loss.d_reg(real, torch.randn(local_batch, config.z_dim, device=device)), "D_r1")
    return losses


def _augment_p(controller: AdaptiveAugmentController | None, augment_pipe: AugmentPipe | None) -> float:
    """The augmentation probability, at the controller's full precision (the pipe's buffer is float32)."""
    if controller is not None:
        return controller.p
    return float(augment_pipe.p) if augment_pipe is not None else 0.0


def _gathered_logits(logits: Tensor, runtime: Runtime) -> Tensor:
    """The real logits of every process (ADA's r_t is a statistic of the whole batch)."""
    if not runtime.distributed:
        return logits
    gathered = [torch.empty_like(logits) for _ in range(runtime.world_size)]
    torch.distributed.all_gather(gathered, logits.contiguous())
    return torch.cat(gathered)


def _augment_pipe(config: GANConfig, channels: int) -> AugmentPipe:
    """ADA's ``bgc`` pipeline (blit, geometric, colour); colour only for non-vector images."""
    colour = 0.0 if config.vector_channels is not None else 1.0
    vector_channels = config.vector_channels if config.vector_channels is not None and channels >= 3 else None
    return AugmentPipe(p=config.aug_p, xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                       brightness=colour, contrast=colour, lumaflip=colour if channels == 3 else 0.0,
                       hue=colour if channels == 3 else 0.0, saturation=colour if channels == 3 else 0.0,
                       vector_channels=vector_channels)


def _lazy_adam(net: nn.Module, learning_rate: float, reg_interval: int | None) -> torch.optim.Adam:
    """Adam(0, 0.99) with lazy-regularisation correction of lr and betas (StyleGAN2, Appendix B)."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return torch.optim.Adam(net.parameters(), lr=learning_rate * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)


@torch.no_grad()
def _update_ema(ema: nn.Module, source: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * source`` for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), source.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), source.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def generate_images(
    generator: Generator,
    n: int,
    seed: int = 0,
    truncation_psi: float = 1.0,
    batch: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Draw ``n`` images from a generator, deterministically for a seed.

    Returns
    -------
    np.ndarray
        ``(n, R, R, C)`` uint8, the generator's [-1, 1] output mapped to [0, 255].
    """
    if n < 1:
        raise ValueError(f"number of images to generate must be >= 1, got {n}")
    generator = generator.to(device).eval()
    rng = torch.Generator().manual_seed(seed)
    out = []
    for start in tqdm(range(0, n, batch), desc="generate", unit="batch", disable=not progress):
        z = torch.randn(min(batch, n - start), generator.z_dim, generator=rng).to(device)
        out.append(from_unit_range(generator(z, truncation_psi=truncation_psi, noise_mode="const")).cpu())
    return torch.cat(out).permute(0, 2, 3, 1).numpy()
