"""Kedro datasets for what kedro-datasets has no type for: annotated image
folders, arrays per cross-validation group, bundles of arrays and trained
models. All write atomically, so an interrupted run never leaves a
half-written entry behind, and all support ``versioned: true``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from kedro.io import AbstractVersionedDataset, Version

from cellsynth.io import (
    AnnotatedImage,
    read_dataset,
    replace_directory,
    write_atomically,
    write_dataset,
)


class AnnotatedImageFolderDataset(AbstractVersionedDataset[list[AnnotatedImage], list[AnnotatedImage]]):
    """A folder with ``images/`` and ``masks/`` paired by stem (see :mod:`cellsynth.io`).

    Loads ``list[AnnotatedImage]`` sorted by name; saving replaces the folder atomically.

    Example ``catalog.yml`` entry::

        synthetic_pairs:
          type: cellsynth.datasets.AnnotatedImageFolderDataset
          path: data/07_model_output/synthetic_pairs
          versioned: true
    """

    def __init__(self, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(path), version)
        self.metadata = metadata

    def load(self) -> list[AnnotatedImage]:
        return read_dataset(Path(self._get_load_path()))

    def save(self, data: list[AnnotatedImage]) -> None:
        write_dataset(Path(self._get_save_path()), data)

    def _exists(self) -> bool:
        return Path(self._get_load_path(), "images").is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}


class NpzGroups(Mapping[str, dict[str, np.ndarray]]):
    """Read-only mapping ``group -> dict of arrays`` over a folder of ``<group>.npz`` files.

    A group is read from disk when it is accessed, so a node touching one fold
    never holds the others in memory.
    """

    def __init__(self, folder: Path):
        self._paths = {p.stem: p for p in sorted(folder.glob("*.npz"))}

    def __getitem__(self, group: str) -> dict[str, np.ndarray]:
        with np.load(self._paths[group], allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class NpzGroupsDataset(AbstractVersionedDataset[Mapping[str, dict[str, np.ndarray]], NpzGroups]):
    """Arrays per group (``fold_0``, ..., or ``all``): a folder with one compressed ``<group>.npz`` each.

    Saves ``{group: {name: array}}``, replacing the whole folder atomically (no stale
    groups survive a rerun with fewer folds); loads an :class:`NpzGroups` mapping.
    """

    def __init__(self, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(path), version)
        self.metadata = metadata

    def load(self) -> NpzGroups:
        return NpzGroups(Path(self._get_load_path()))

    def save(self, data: Mapping[str, dict[str, np.ndarray]]) -> None:
        folder = Path(self._get_save_path())
        if not data:
            raise ValueError(f"NpzGroupsDataset {self._filepath}: nothing to save (no groups)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            for group, arrays in data.items():
                np.savez_compressed(staging / f"{group}.npz", **arrays)
            replace_directory(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}


class TorchDataset(AbstractVersionedDataset[dict[str, Any], dict[str, Any]]):
    """A dict of tensors, state dicts and plain settings stored with ``torch.save`` (trained models).

    Loads on the CPU; written atomically; ``versioned: true`` keeps every trained model.
    """

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(filepath), version)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return torch.load(Path(self._get_load_path()), map_location="cpu", weights_only=False)

    def save(self, data: dict[str, Any]) -> None:
        write_atomically(Path(self._get_save_path()), lambda stream: torch.save(data, stream))

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
