"""Where and how a training job runs: device, mixed precision, torch.distributed.

The same code path serves one CPU, one GPU, N GPUs and several nodes: ``torchrun``
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, and :func:`start_runtime`
joins the process group when ``WORLD_SIZE > 1``. Without torchrun it is a
single process of world size 1.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    """One process of a (possibly distributed) training job.

    Attributes
    ----------
    device
        Where this process computes.
    rank, world_size
        Position in the job and number of processes (1 without torchrun).
    amp_dtype
        ``torch.bfloat16`` / ``torch.float16`` for autocast, or ``None`` for fp32.
    channels_last
        Whether convolution inputs should use ``torch.channels_last`` (pays on CUDA tensor cores).
    compile
        Whether :meth:`compiled` hands out ``torch.compile``-d modules.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, logs and outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed-precision region (a no-op in fp32)."""
        if self.amp_dtype is None:
            yield
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
                yield

    def compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        """``torch.compile(module)`` (TorchInductor) when this runtime compiles, else ``module`` itself.

        The compiled module shares the parameters and buffers of ``module``, so optimisers,
        checkpoints and the EMA keep using ``module``. Shapes are static: a training loop calls
        its networks with a fixed batch, and a recompilation per new shape is cheaper than
        dynamic-shape kernels there. Compiled graphs do not support double backward, so
        gradient penalties (R1, path length) must call ``module`` itself.
        """
        return torch.compile(module, dynamic=False) if self.compile else module

    def all_reduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors over all processes, in place (gradients, statistics)."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def broadcast_module_(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's parameters and buffers."""
        if self.distributed:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def start_runtime(
    device: str = "auto", precision: str = "auto", seed: int = 0, allow_tf32: bool = True, compile: bool = False
) -> Runtime:
    """Set up this process: join torchrun's process group, pick the device and precision, seed.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        Under torchrun each process takes the GPU ``LOCAL_RANK``.
    precision
        ``"auto"`` (bf16 on GPUs that support it, else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"``.
    seed
        Base seed; each rank gets ``seed + rank`` so processes draw different batches.
    allow_tf32
        Use TF32 tensor cores for fp32 matmuls and convolutions on Ampere and newer.
    compile
        Run the training steps' forward and backward passes through ``torch.compile``
        (:meth:`Runtime.compiled`); the first steps then take the compilation time (tens of
        seconds to minutes), the rest run faster.
    """
    if not isinstance(compile, bool):
        raise ValueError(f"runtime.compile must be true or false, got {compile!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch_device = resolve_device(device, local_rank if world_size > 1 else None)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        torch.backends.cudnn.benchmark = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision == "auto":
        amp_dtype = torch.bfloat16 if torch_device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    seed_everything(seed + rank)
    return Runtime(torch_device, rank, world_size, amp_dtype, channels_last=torch_device.type == "cuda",
                   compile=compile)


def resolve_device(device: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """The device a setting names, checked.

    Parameters
    ----------
    device
        ``"auto"`` or None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device.
    local_rank
        Under torchrun, the GPU of this process (it overrides ``N``).

    Returns
    -------
    torch.device
        CPU, or CUDA with an index.
    """
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available")
        resolved = torch.device("cuda", local_rank if local_rank is not None else (resolved.index or 0))
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
