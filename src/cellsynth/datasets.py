"""Kedro datasets for what kedro-datasets has no type for: annotated image
folders and bundles of NumPy arrays. Both write atomically, so an interrupted
run never leaves a half-written entry behind, and both support ``versioned: true``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractVersionedDataset, Version

from cellsynth.io import AnnotatedImage, read_dataset, write_dataset


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


class NpzDataset(AbstractVersionedDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """A ``dict[str, np.ndarray]`` stored as one compressed ``.npz`` file.

    Used for stacks of crops, label images and encoded flows; also as the
    partition type of a ``partitions.PartitionedDataset`` (one file per fold).
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        compress: bool = True,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(PurePosixPath(filepath), version)
        self._compress = compress
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        with np.load(Path(self._get_load_path()), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    def save(self, data: dict[str, np.ndarray]) -> None:
        if not isinstance(data, dict) or not all(isinstance(v, np.ndarray) for v in data.values()):
            raise TypeError(f"NpzDataset {self._filepath}: expected dict[str, np.ndarray], got {type(data).__name__}")
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                (np.savez_compressed if self._compress else np.savez)(stream, **data)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "compress": self._compress}
