"""Atomic training checkpoints and resume.

A checkpoint is one ``torch.save`` file named by the training progress
(``checkpoint-000123.pt``, in images shown or epochs, one unit per store), written to a
temporary file and renamed into place, so a killed process leaves either the
previous checkpoint or the new one, never a torn file. Resuming loads the
newest complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellsynth.io import write_atomically
from cellsynth.training.runtime import Runtime, seed_everything

_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


class CheckpointStore:
    """A folder of numbered checkpoints, keeping the newest ``keep``.

    Parameters
    ----------
    directory
        Folder of the checkpoints (created when needed).
    keep
        How many checkpoints to keep; older ones are deleted after a save.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, progress: int, state: dict[str, Any]) -> Path:
        """Write ``state`` as the checkpoint of ``progress`` atomically and prune old ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"checkpoint-{progress:06d}.pt"
        write_atomically(path, lambda stream: torch.save(state, stream), durable=True)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint's state, or ``None`` when there is none."""
        paths = self.paths()
        if not paths:
            return None
        return torch.load(paths[-1], map_location=map_location, weights_only=False)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA random states, for a bit-identical resume."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_fingerprint(config: Any, *arrays: np.ndarray, ignore: tuple[str, ...] = ()) -> str:
    """Short digest of a settings dataclass and the training arrays: runs that share it may resume each other.

    ``ignore`` names settings left out, typically the length of training, so a finished
    run can be extended by asking for more.
    """
    settings = {k: v for k, v in asdict(config).items() if k not in ignore}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:12]


def resume_from_latest(
    checkpoints: CheckpointStore,
    runtime: Runtime,
    modules: Mapping[str, Any],
    identity: Mapping[str, Any],
    seed: Callable[[dict[str, Any]], int],
) -> dict[str, Any] | None:
    """Resume a training run from the newest checkpoint of ``checkpoints``, if there is one.

    Parameters
    ----------
    modules
        What the checkpoint restores: ``{key: object with load_state_dict}`` (networks, optimisers,
        schedulers, losses), each loaded from ``state[key]``.
    identity
        Entries the checkpoint must hold unchanged (e.g. ``architecture``); a checkpoint made for
        another configuration is refused rather than half-loaded.
    seed
        The seed for a non-main process, from the state (only the main process's random state is
        saved; the others continue on a fresh stream).

    Returns
    -------
    The checkpoint's state (for the caller's own counters and history), or None when there is none.
    """
    state = checkpoints.latest(map_location=runtime.device)
    if state is None:
        return None
    found = {key: state.get(key) for key in identity}
    if found != dict(identity):
        raise ValueError(f"the checkpoints in {checkpoints.directory} were made with another architecture "
                         f"({found}); use another checkpoint folder for this configuration")
    for key, module in modules.items():
        module.load_state_dict(state[key])
    if runtime.is_main:
        restore_rng_state(state["rng"])
    else:
        seed_everything(seed(state))
    return state
