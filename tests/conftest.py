"""Shared fixtures: small annotated datasets written to temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from skimage.io import imsave
from torch import nn

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``, on by default in pyproject.toml) the workers, which inherit this
    environment, compute on one thread each: a worker per core, each of two threads, slowed each other
    3-4x on 2 cores. The subprocesses that tests start (kedro, torchrun, Dask) inherit it too."""
    if getattr(config.option, "numprocesses", None):
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                         "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ[variable] = "1"


REPO = Path(__file__).resolve().parents[1]
SHARED_DSB2018 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"


def disk_labels(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    """``(H, W)`` int32 labels with one disk per centre, ids 1..n in order."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for index, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = index
    return labels


def write_pair(folder: Path, stem: str, image: np.ndarray, labels: np.ndarray, mask_suffix: str = ".tif") -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    imsave(folder / "images" / f"{stem}.png", image, check_contrast=False)
    if mask_suffix == ".tif":
        tifffile.imwrite(folder / "masks" / f"{stem}.tif", labels)
    else:
        imsave(folder / "masks" / f"{stem}{mask_suffix}", labels, check_contrast=False)


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """Three 64x64 grayscale images with 4 disks each, masks as uint16 TIFF."""
    folder = tmp_path / "dataset"
    rng = np.random.default_rng(0)
    for i in range(3):
        labels = disk_labels((64, 64), [(16, 16), (16, 48), (48, 16), (48, 48)], 6 + i)
        image = (rng.random((64, 64)) * 50 + (labels > 0) * 150).astype(np.uint8)
        write_pair(folder, f"img{i}", image, (labels * 3).astype(np.uint16))  # ids 3, 6, 9, 12: not sequential
    return folder


@pytest.fixture(scope="module")
def single_thread():
    """Run torch on one thread: tiny tensor ops are dominated by thread synchronisation, badly so on a
    shared 2-core machine (measured 5-20x faster single-threaded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_fields() -> np.ndarray:
    """``(64, 64, 64, 3)`` uint8 flow fields of the 64x64 tiles of stardist's annotated nuclei image."""
    # Imported here, not at the top: every pytest start-up would pay for them (about 2 s).
    from stardist import data as stardist_data

    from cellsynth.encoding import encode_batch

    _, mask = stardist_data.test_image_nuclei_2d(return_mask=True)
    tiles = [mask[r : r + 64, c : c + 64] for r in range(0, 512, 64) for c in range(0, 512, 64)]
    return encode_batch(np.stack(tiles))


class MeanColours(nn.Module):
    """Cheap stand-in feature extractor: channel means of 2x2 blocks in [0, 1], ``(N, 12)`` float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.float() / 255, 2).flatten(1)


@pytest.fixture
def mean_colours():
    """:class:`MeanColours` as an extractor for :mod:`cellsynth.quality`: FID arithmetic without Inception."""
    from cellsynth.quality import InceptionFeatures

    return InceptionFeatures(module=MeanColours(), standard=False, name="mean-colours")


@pytest.fixture
def dsb2018() -> Path:
    if not SHARED_DSB2018.is_dir():
        pytest.skip(f"{SHARED_DSB2018} is absent (it lies beside the checkout in development and CI only)")
    return SHARED_DSB2018


def copy_project(folder: Path) -> Path:
    """The project's configuration copied into ``folder`` (the package itself is installed)."""
    for name in ("conf", "pyproject.toml", ".telemetry"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    (folder / "src").mkdir(exist_ok=True)  # Kedro only wants the folder to exist
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's configuration in an empty folder, as the working directory."""
    copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    bootstrap_project(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plain ``kedro run`` of the whole study on :data:`STUDY_TINY`, shared by the tests that check
    its outputs (the study, and image_translation's outputs within it). Tests must not change it:
    copy it (:func:`copy_run`) to run more."""
    folder = copy_project(tmp_path_factory.mktemp("tiny_study"))
    previous, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(folder)
    torch.set_num_threads(1)
    try:
        bootstrap_project(folder)
        run(folder, STUDY_TINY, pipeline="__default__")
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)
    return folder


def copy_run(source: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a finished project (configuration, data, checkpoints, MLflow store) as the working
    directory, to go on from without touching the original."""
    shutil.copytree(source, folder, dirs_exist_ok=True)
    monkeypatch.chdir(folder)
    bootstrap_project(folder)
    return folder


def nested(params: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``, as ``kedro run --params a.b=1`` builds it."""
    result: dict = {}
    for dotted, value in params.items():
        *parents, leaf = dotted.split(".")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return result


def run(project: Path, params: dict, pipeline: str = "data_prep", nodes: list[str] | None = None,
        **options: Any) -> None:
    """``kedro run --pipeline <pipeline> [--nodes <nodes>] --params ...`` in this process; ``options`` go
    to ``KedroSession.run`` (``namespaces``, ``runner``)."""
    try:
        with KedroSession.create(project_path=project, runtime_params=nested(params)) as session:
            session.run(pipeline_names=[pipeline], node_names=nodes, **options)
    finally:
        while mlflow.active_run():  # as when each `kedro run` is its own process: one MLflow run each
            mlflow.end_run()


# Tiny settings of the pipeline tests: each stage's adds to the one before.
TINY = {
    "data_prep.dataset.demo.n_images": 4,
    "data_prep.dataset.demo.size": 128,
    "data_prep.folds.k": 3,
    "data_prep.crops.size": 64,
    "data_prep.crops.stride": 64,
    "data_prep.codec_check.max_crops": 8,
}

GAN_TINY = {
    **TINY,
    "data_prep.crops.size": 32,
    "data_prep.crops.stride": 32,
    "training_scope": "all",
    "mask_gan.training.kimg": 0.032,
    "mask_gan.training.snapshot_kimg": 0.016,
    "mask_gan.training.batch": 8,
    "mask_gan.training.z_dim": 16,
    "mask_gan.training.w_dim": 16,
    "mask_gan.training.channel_base": 256,
    "mask_gan.training.channel_max": 16,
    "mask_gan.training.mbstd_group_size": 4,
    "mask_gan.downsample": 1,
    "mask_gan.init_from": None,
    "mask_gan.runtime.device": "cpu",
    "mask_gan.evaluation.n_images": 4,  # FID on few images: Inception costs ~0.3 s per image on one core
    "mask_gan.generation.n": 8,
    "mask_gan.generation.min_objects": 0,
    "mask_gan.generation.max_consistency_error": 1e9,
}

PIX2PIX_TINY = {
    **GAN_TINY,
    "training_scope": "folds",
    "image_translation.training.epochs": 2,
    "image_translation.training.decay_epochs": 1,
    "image_translation.training.batch": 4,
    "image_translation.training.g_filters": 8,
    "image_translation.training.d_filters": 8,
    "image_translation.training.checkpoint_every": 1,
    "image_translation.runtime.device": "cpu",
}

STUDY_TINY = {
    **PIX2PIX_TINY,
    "data_prep.folds.k": 2,  # two folds show per-fold independence as well as three, at two thirds of the cost
    "data_prep.folds.val_fraction": 0.5,  # of the 2 images outside a fold's test set: 1 validates, 1 trains
    "image_translation.evaluation.max_crops": 8,
    "simcep_baseline.simulation.n": 8,
    "simcep_baseline.comparison.max_masks": 4,  # FID and layout statistics on 4 masks per set
    "augmentation.experiments": ["raw", "merge"],  # pretrain and subsets: tests/test_study_plan.py
    "evaluation.stardist.epochs": {"train": 1, "finetune": 1, "subset": 1},
    "evaluation.stardist.settings.steps_per_epoch": 2,
    "evaluation.stardist.settings.patch_size": [32, 32],
    "evaluation.stardist.settings.nms_threshs": [0.4],  # one point of the threshold grid
    "evaluation.stardist.settings.iou_threshs": [0.5],
    "evaluation.cellpose.epochs": {"train": 1, "finetune": 1, "subset": 1},
    "evaluation.cellpose.settings.bsize": 32,
    "evaluation.cellpose.settings.rescale": False,  # native size: 9x fewer pixels (rescale: test_segmentation)
    "evaluation.cellpose.settings.nimg_per_epoch": None,  # one pass over the images, not the demo's 64 per epoch
    "evaluation.log_models": False,
}
