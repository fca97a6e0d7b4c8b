"""data_prep -> mask_gan -> image_translation per fold in a real Kedro session (the shared tiny study)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STUDY_TINY, copy_run, run

from cellsynth.io import read_dataset

# one xdist worker runs every test of the shared tiny study, which it builds once
pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.xdist_group("tiny_study")]


def test_image_translation_trains_per_fold_translates_measures_and_resumes(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project = tiny_study  # data_prep -> mask_gan -> image_translation ran there (STUDY_TINY)
    folds = json.loads((project / "data/02_intermediate/folds.json").read_text())["folds"]

    # pix2pix never sees the fold's validation or test images; it is measured on the validation images
    for i, fold in enumerate(folds):
        with np.load(project / f"data/03_primary/heldout_crops/fold_{i}.npz") as heldout:
            assert set(heldout["source"]) == set(fold["val"])
        with np.load(project / f"data/03_primary/training_crops/fold_{i}.npz") as crops:
            assert not set(crops["source"]) & (set(fold["val"]) | set(fold["test"]))

    models = {}
    for group in ("fold_0", "fold_1"):  # one model file per fold, written by its own node
        (version,) = list((project / f"data/06_models/pix2pix/{group}.pt").iterdir())
        models[group] = torch.load(version / f"{group}.pt", weights_only=False)
    assert [h["epoch"] for h in models["fold_0"]["history"]] == [1.0, 2.0]
    assert models["fold_0"]["normalizer"]["dtype"] == "uint8" and models["fold_0"]["representation"] == "label"

    # synthetic pairs: a real dataset per fold, one image for every kept GAN mask, same masks
    for i in range(2):
        (masks_version,) = list((project / f"data/07_model_output/synthetic_masks/fold_{i}.npz").iterdir())
        with np.load(masks_version / f"fold_{i}.npz") as synthetic:
            labels = synthetic["labels"]
        (pairs_version,) = list((project / f"data/07_model_output/synthetic_pairs/fold_{i}").iterdir())
        pairs = read_dataset(pairs_version / f"fold_{i}")
        assert len(pairs) == len(labels) == 8
        assert all(p.image.shape == (32, 32, 3) and p.image.dtype == np.uint8 for p in pairs)
        for pair, mask in zip(pairs, labels):
            assert len(np.unique(pair.labels)) == len(np.unique(mask))  # relabelled sequentially on write

    assert (project / "data/08_reporting/image_translation_sample_grid.png").stat().st_size > 1000
    with sqlite3.connect(project / "mlflow.db") as db:
        logged = dict(db.execute("SELECT key, value FROM metrics").fetchall())
    for key in ("image_translation.fold_1.heldout.psnr", "image_translation.fold_1.heldout.ssim",
                "image_translation.fold_1.heldout.fid_randinit", "image_translation.fold_1.gan_masks.fid_randinit",
                "image_translation.heldout.psnr", "image_translation.fold_0.G_l1", "image_translation.fold_0.D_loss"):
        assert np.isfinite(logged[key]), key
    assert logged["image_translation.heldout.psnr"] == pytest.approx(
        np.mean([logged[f"image_translation.fold_{i}.heldout.psnr"] for i in range(2)]))

    # asking for more epochs continues the finished runs instead of starting over
    project = copy_run(tiny_study, tmp_path / "resumed", monkeypatch)
    run(project, {**STUDY_TINY, "image_translation.training.epochs": 3}, pipeline="image_translation",
        nodes=["fold_0.train_painter"])
    latest = max((project / "data/06_models/pix2pix/fold_0.pt").iterdir())
    model = torch.load(latest / "fold_0.pt", weights_only=False)
    assert [h["epoch"] for h in model["history"]] == [1.0, 2.0, 3.0]
