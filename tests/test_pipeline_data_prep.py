"""A real Kedro session runs ``data_prep`` end to end on a tiny configuration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run, write_pair


def test_data_prep_runs_end_to_end_on_the_demo(project: Path):
    run(project, TINY)
    folds = json.loads((project / "data/02_intermediate/folds.json").read_text())
    assert folds["k"] == 3 and len(folds["folds"]) == 3
    groups = json.loads((project / "data/02_intermediate/training_groups.json").read_text())
    assert groups == {f"fold_{i}": fold["train"] for i, fold in enumerate(folds["folds"])}
    assert sorted(p.name for p in (project / "data/01_raw/demo/images").iterdir()) == [
        f"demo_00{i}.png" for i in range(4)]
    for i, fold in enumerate(folds["folds"]):
        with np.load(project / f"data/03_primary/training_crops/fold_{i}.npz") as crops:
            labels, images, source = crops["labels"], crops["images"], crops["source"]
        assert labels.shape[1:] == (64, 64) and images.shape[:3] == labels.shape and len(labels) % 4 == 0
        assert set(source) <= set(fold["train"]), "a crop came from a validation or test image"
        with np.load(project / f"data/04_feature/encoded_flows/fold_{i}.npz") as flows:
            assert flows["flows"].shape == labels.shape + (3,) and flows["flows"].dtype == np.uint8
    summary = json.loads((project / "data/08_reporting/data_prep_summary.json").read_text())
    assert summary["roundtrip_accuracy"] >= 0.97
    with sqlite3.connect(project / "mlflow.db") as db:
        logged = dict(db.execute("SELECT key, value FROM metrics").fetchall())
        params = dict(db.execute("SELECT key, value FROM params").fetchall())
    assert logged["data_prep.roundtrip_accuracy"] == pytest.approx(summary["roundtrip_accuracy"])
    assert logged["data_prep.dataset.images"] == 4
    assert params["data_prep.folds.k"] == "3"


def test_data_prep_on_a_user_folder_with_bad_input_writes_nothing(project: Path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("user") / "dataset"
    image = np.zeros((64, 64), np.uint8)
    for stem in ("a", "b", "c"):
        write_pair(folder, stem, image, np.ones((64, 64), np.uint16))
    (folder / "masks" / "b.tif").unlink()
    with pytest.raises(Exception, match="b.png: image has no mask"):
        run(project, {**TINY, "data_prep.dataset.source": str(folder)})
    written = [p for p in (project / "data").rglob("*") if p.is_file()] if (project / "data").exists() else []
    assert written == []


def test_subset_groups_are_cropped_from_a_share_of_the_fold_training_images(project: Path):
    run(project, {**TINY, "data_prep.dataset.demo.n_images": 6, "subsets.fractions": [0.5]})
    folds = json.loads((project / "data/02_intermediate/folds.json").read_text())["folds"]
    groups = sorted(p.stem for p in (project / "data/03_primary/training_crops").glob("*.npz"))
    assert groups == ["fold_0", "fold_0-subset_0.5", "fold_1", "fold_1-subset_0.5", "fold_2", "fold_2-subset_0.5"]
    for i, fold in enumerate(folds):
        with np.load(project / f"data/03_primary/training_crops/fold_{i}-subset_0.5.npz") as crops:
            assert len(set(crops["source"])) == 1 and set(crops["source"]) <= set(fold["train"])
