"""Kedro datasets for what kedro-datasets has no type for: annotated image
folders, arrays per cross-validation group, bundles of arrays and trained
models. All write atomically, so an interrupted run never leaves a
half-written entry behind, and all support ``versioned: true``.

What one generative group (``fold_0``, ``fold_0.subset_0p25``, ``all``) makes is one entry per group, from a
dataset factory (``"{group}.synthetic_pairs"``), written by that group's own node. :class:`NpzGroupsDataset`
holds what ``data_prep`` makes for every group in one node (crops, encoded flows), loaded lazily, one
partition per group, as kedro-datasets' ``PartitionedDataset`` does; it exists because that one cannot be
versioned and saves partition by partition (a crash leaves some groups written, and ``overwrite: true``
deletes the old ones first), where this one replaces the whole set of groups at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version

from cellsynth.io import (
    AnnotatedImage,
    read_dataset,
    staged_directory,
    write_atomically,
    write_dataset,
)
from cellsynth.tracking import run_to_log_to


class AnnotatedImageFolderDataset(AbstractVersionedDataset[list[AnnotatedImage], list[AnnotatedImage]]):
    """A folder with ``images/`` and ``masks/`` paired by stem (see :mod:`cellsynth.io`), so that it can be
    taken out of the project and used as is.

    Loads ``list[AnnotatedImage]`` sorted by name; saving replaces the folder atomically. With
    ``allow_empty: true`` an empty list is saved as empty ``images/`` and ``masks/`` folders (a generator
    whose masks all failed the filters) and loads as ``[]``; otherwise an empty folder is an error.

    Example ``catalog.yml`` entry::

        "{group}.synthetic_pairs":
          type: cellsynth.datasets.AnnotatedImageFolderDataset
          path: data/07_model_output/synthetic_pairs/{group}
          allow_empty: true
          versioned: true
    """

    def __init__(self, path: str, allow_empty: bool = False, version: Version | None = None,
                 metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(path), version)
        self._allow_empty = bool(allow_empty)
        self.metadata = metadata

    def load(self) -> list[AnnotatedImage]:
        folder = Path(self._get_load_path())
        parts = [folder / "images", folder / "masks"]
        if self._allow_empty and all(p.is_dir() and not any(p.iterdir()) for p in parts):
            return []
        return read_dataset(folder)

    def save(self, data: list[AnnotatedImage]) -> None:
        folder = Path(self._get_save_path())
        if data or not self._allow_empty:
            write_dataset(folder, data)
            return
        with staged_directory(folder) as staging:
            (staging / "images").mkdir()
            (staging / "masks").mkdir()

    def _exists(self) -> bool:
        return Path(self._get_load_path(), "images").is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "allow_empty": self._allow_empty, "version": self._version}


class LazyGroups(Mapping[str, Any]):
    """Read-only mapping ``group -> data`` over one file or folder per group, each read when accessed,
    so a node touching one fold never holds the others in memory."""

    def __init__(self, paths: dict[str, Path], read: Callable[[Path], Any]):
        self._paths = dict(sorted(paths.items()))
        self._read = read

    def __getitem__(self, group: str) -> Any:
        return self._read(self._paths[group])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


class NpzGroupsDataset(AbstractVersionedDataset[Mapping[str, dict[str, np.ndarray]], LazyGroups]):
    """Arrays per group (``fold_0``, ..., or ``all``): a folder with one compressed ``<group>.npz`` each.

    Saves ``{group: {name: array}}``, replacing the whole folder atomically (no stale
    groups survive a rerun with fewer folds); loads a lazy :class:`LazyGroups` mapping.
    """

    def __init__(self, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(path), version)
        self.metadata = metadata

    def load(self) -> LazyGroups:
        return LazyGroups({p.stem: p for p in Path(self._get_load_path()).glob("*.npz")}, _read_npz)

    def save(self, data: Mapping[str, dict[str, np.ndarray]]) -> None:
        _save_groups(Path(self._get_save_path()), data, lambda staging, group, arrays: np.savez_compressed(
            staging / f"{group}.npz", **arrays), f"NpzGroupsDataset {self._filepath}")

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}


class NpzDataset(AbstractVersionedDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """Named arrays in one compressed ``.npz`` file (one group's generated masks, say), written atomically."""

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(filepath), version)
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        return _read_npz(Path(self._get_load_path()))

    def save(self, data: dict[str, np.ndarray]) -> None:
        write_atomically(Path(self._get_save_path()), lambda stream: np.savez_compressed(stream, **data))

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}


def _save_groups(folder: Path, data: Mapping[str, Any], write: Callable[[Path, str, Any], object], name: str) -> None:
    """Write every group into a staging folder beside ``folder``, then swap it in: no stale groups
    survive a rerun with fewer folds and a failure leaves the previous data intact."""
    if not data:
        raise ValueError(f"{name}: nothing to save (no groups)")
    with staged_directory(folder) as staging:
        for group, value in data.items():
            write(staging, group, value)


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


class FilePathDataset(AbstractDataset[None, Path]):
    """Loads the path of a file another catalog entry writes (a figure, say), for nodes that copy or embed
    it; use it under a transcoded name (``mask_gan_sample_grid@path``) so the lineage shows the link."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Path:
        if not self._filepath.is_file():
            raise FileNotFoundError(f"{self._filepath} does not exist: run the pipeline that writes it first")
        return self._filepath.resolve()

    def save(self, data: None) -> None:
        raise DatasetError(f"FilePathDataset {self._filepath} is read-only; save through the entry that writes it")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class FigureDataset(AbstractDataset[Any, None]):
    """A matplotlib figure written as a PNG (atomically, then closed) and, during a run tracked by MLflow,
    logged as an artifact of that run.

    It does what kedro-mlflow's ``MlflowArtifactDataset`` around a ``matplotlib.MatplotlibDataset`` does,
    but can be pickled (that wrapper builds its class at run time), so that multiprocessing runners
    (``ParallelRunner``, the Dask runner) can carry the catalog. Write-only: read the file through a
    :class:`FilePathDataset`.
    """

    def __init__(self, filepath: str, dpi: int = 100, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._dpi = dpi
        self.metadata = metadata

    def load(self) -> None:
        raise DatasetError(f"FigureDataset {self._filepath} is write-only; read it through a FilePathDataset")

    def save(self, data: Any) -> None:
        import matplotlib.pyplot as plt  # only where a figure is written

        try:
            write_atomically(self._filepath, lambda stream: data.savefig(stream, format="png", dpi=self._dpi))
        finally:
            plt.close(data)
        import mlflow

        if run_to_log_to():
            mlflow.log_artifact(str(self._filepath))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dpi": self._dpi}


class StudyReportDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """The study's report folder (:func:`cellsynth.report.write_report`), written atomically and, during a
    run tracked by MLflow, logged as the artifact folder ``<artifact_path>``.

    Saves the keyword arguments of ``write_report`` (``records``, ``quality_table``, ``figures``, ``title``);
    loads ``{"folder", "accuracy", "accuracy_per_fold", "metrics"}`` of the written report.
    """

    def __init__(self, path: str, artifact_path: str = "study_report", metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self._artifact_path = artifact_path
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        from cellsynth import report

        return {"folder": self._path, "accuracy": report.read_accuracy_csv(self._path / "accuracy.csv"),
                "accuracy_per_fold": report.read_accuracy_csv(self._path / "accuracy_per_fold.csv"),
                "metrics": report.report_metrics(self._path)}

    def save(self, data: dict[str, Any]) -> None:
        import mlflow

        from cellsynth import report

        report.write_report(self._path, **data)
        if run_to_log_to():
            mlflow.log_artifacts(str(self._path), self._artifact_path)

    def _exists(self) -> bool:
        return (self._path / "index.html").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "artifact_path": self._artifact_path}
