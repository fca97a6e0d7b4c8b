"""Starting weights for transfer learning: generators shipped with cellsynth, or another run's.

A run started from other weights (``mask_gan.init_from``) begins with their G, D and ``G_ema``
and continues their schedules (:func:`cellsynth.gan.training.train_gan`). :data:`SHIPPED` lists
the generators that come with the package; each file records how it was trained (``trained``:
the command, data, settings, length and the metrics of its last snapshot).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from cellsynth.io import write_atomically
from cellsynth.training import CheckpointStore

SHIPPED: dict[str, str] = {
    # 64x64 crops of phantom tissue (cellsynth.phantom, seed 1000, disjoint from the demo's), learnt
    # at 32x32 (mask_gan.downsample 2) with conf/base's settings by benchmarks/train_demo_generator.sh.
    "demo-phantom": "mask_gan_demo_phantom.pt",
    # 64x64 crops of DSB 2018 nuclei (../shared/data/dsb2018_pretrain: 501 fluorescence and 78 H&E
    # images, both modalities weighted alike, disjoint from dsb2018/), learnt at 32x32 with conf/base's
    # settings, then at 0.6x, 1x and 1.4x the images' size (other magnifications, denser tissue), by
    # benchmarks/train_nuclei_generator.sh: the start for real nuclei data.
    "nuclei": "mask_gan_nuclei.pt",
}
WEIGHT_KEYS = ("G", "D", "G_ema")


def shipped_path(name: str) -> Path:
    """The file of a shipped generator."""
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped generator {name!r}; cellsynth ships {sorted(SHIPPED)}")
    return Path(str(resources.files("cellsynth.gan.weights") / SHIPPED[name]))


def load_initial_weights(spec: str | os.PathLike) -> dict[str, Any]:
    """The state to start a transfer-learning run from.

    Parameters
    ----------
    spec
        The name of a shipped generator (:data:`SHIPPED`), a file written by :func:`export_weights`
        or a training checkpoint, or a checkpoint folder of another run (its newest checkpoint).

    Returns
    -------
    dict
        At least ``G``, ``D`` and ``G_ema`` state dicts; ``architecture``, ``nimg`` (images seen),
        ``config`` (training settings of a checkpoint) and ``trained`` (how exported weights were
        made) when known.
    """
    path = shipped_path(str(spec)) if str(spec) in SHIPPED else Path(spec)
    if path.is_dir():
        state = CheckpointStore(path).latest()
        if state is None:
            raise FileNotFoundError(f"mask_gan.init_from: {path} holds no checkpoint-*.pt")
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
    else:
        raise FileNotFoundError(f"mask_gan.init_from: {spec} is neither a shipped generator {sorted(SHIPPED)}, "
                                "a weights file nor a checkpoint folder")
    missing = [key for key in WEIGHT_KEYS if key not in state]
    if missing:
        raise ValueError(f"mask_gan.init_from: {path} lacks {missing}; it is not a mask GAN checkpoint")
    return {key: state[key] for key in (*WEIGHT_KEYS, "architecture", "nimg", "config", "trained") if key in state}


def export_weights(checkpoint: dict[str, Any], path: str | os.PathLike, trained: dict[str, Any]) -> Path:
    """Write the networks of a training checkpoint as a starting point for other runs.

    Parameters
    ----------
    checkpoint
        A state saved by :func:`~cellsynth.gan.training.train_gan` (``CheckpointStore.latest()``).
    path
        The file to write (atomically).
    trained
        How the weights were made (command, data, settings, metrics), stored as ``trained``.
    """
    state = {key: {name: value.detach().cpu() for name, value in checkpoint[key].items()} for key in WEIGHT_KEYS}
    # nimg counts every image the weights have seen, those of the run they started from too.
    nimg = checkpoint["nimg"] + checkpoint.get("schedule_offset", 0)
    state.update(architecture=checkpoint["architecture"], nimg=nimg, trained=trained)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: torch.save(state, stream))
    return path
