"""The whole study, as plain `kedro run` runs it, on a tiny configuration: every pipeline, every fold.

Also the study's leakage guard: a fold's test images never reach its GAN, pix2pix, SIMCEP fit or
segmentation training, and its validation images only choose and measure models.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STUDY_TINY, copy_run, run
from kedro.runner import ParallelRunner

from cellsynth import report
from cellsynth.crops import fold_of_group
from cellsynth.results import aggregate
from cellsynth.runners import DaskRunner

# one xdist worker runs every test of the shared tiny study, which it builds once
pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.xdist_group("tiny_study")]


def test_default_run_executes_the_whole_study_without_leakage(tiny_study: Path, monkeypatch: pytest.MonkeyPatch):
    project = tiny_study  # `kedro run` of the whole study with STUDY_TINY (conftest)
    monkeypatch.chdir(project)  # the notebook finds the project in the working directory
    folds = json.loads((project / "data/02_intermediate/folds.json").read_text())["folds"]
    groups = sorted(p.stem for p in (project / "data/03_primary/training_crops").glob("*.npz"))
    assert groups == ["fold_0", "fold_1"]

    # generative models: trained on their fold's (subset of) training images only, measured on validation
    for group in groups:
        (simcep_version,) = list((project / f"data/06_models/simcep/{group}.json").iterdir())
        simcep = json.loads((simcep_version / f"{group}.json").read_text())
        fold = folds[fold_of_group(group)]
        with np.load(project / f"data/03_primary/training_crops/{group}.npz") as crops:
            sources, n_crops = set(crops["source"]), len(crops["labels"])
        assert sources <= set(fold["train"]) and not sources & (set(fold["val"]) | set(fold["test"]))
        assert simcep["fitted_on"] == n_crops  # SIMCEP saw these crops and nothing else
        with np.load(project / f"data/03_primary/heldout_crops/{group}.npz") as heldout:
            assert set(heldout["source"]) == set(fold["val"])

    # segmentation: every fold x experiment x model, trained without the fold's validation or test images
    (results_version,) = list((project / "data/07_model_output/segmentation_results.json").iterdir())
    results = json.loads((results_version / "segmentation_results.json").read_text())
    expected = {(m, e, f) for m in ("stardist", "cellpose") for f in range(2) for e in ("raw", "merge")}
    assert {(r["model"], r["experiment"], r["fold"]) for r in results} == expected
    for record in results:
        fold = folds[record["fold"]]
        assert set(record["trained_on"]) <= set(fold["train"]), record
        assert 0 <= record["accuracy"] <= 1
        if record["experiment"] == "merge":
            assert record["synthetic_pairs"] == 8
    plan = json.loads((project / "data/05_model_input/training_sets.json").read_text())["experiments"]
    for experiment in plan:
        fold = folds[experiment["fold"]]
        assert experiment["test"] == fold["test"] and experiment["validation"] == fold["val"]
        for stage in experiment["stages"]:
            assert not set(stage["real"]) & (set(fold["test"]) | set(fold["val"]))
            assert stage["synthetic"] is None or fold_of_group(stage["synthetic"]) == experiment["fold"]

    # the report states exactly the numbers MLflow holds
    study = project / "data/08_reporting/study"
    html = (study / "index.html").read_text()
    assert html.count("data:image/png;base64") >= 5 and "merge" in html and "cellpose" in html
    assert "8 / 8" in (study / "accuracy.md").read_text() and "†" not in html  # merge's pairs per fold
    kept = dict(line.split(",")[:3:2] for line in (study / "gan_filter.csv").read_text().splitlines()[1:])
    assert kept == {"fold_0": "8", "fold_1": "8"}  # generated / kept per group, in the report
    with sqlite3.connect(project / "mlflow.db") as db:
        logged = dict(db.execute("SELECT key, value FROM metrics").fetchall())
        (runs,) = db.execute("SELECT COUNT(*) FROM runs").fetchone()
    stated = report.report_metrics(study)
    assert runs == 1 and "stardist.merge.accuracy" in stated and "cellpose.raw.fold_1.accuracy" in stated
    assert {k: logged[k] for k in stated} == pytest.approx(stated, abs=1e-12)
    for key in ("simcep_baseline.gan.flows.fid_randinit", "simcep_baseline.simcep.layout.ripley_l",
                "image_translation.heldout.ssim", "simcep.fold_0.cells_per_crop"):
        assert key in logged, key

    # the notebook reads the same run through the catalog
    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks/study_results.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), namespace)  # noqa: S102 - our own notebook
    assert len(namespace["results"]) == len(results)
    assert namespace["aggregated"]["mean"].tolist() == pytest.approx(aggregate(results)["mean"].tolist())


def _results(project: Path) -> dict[tuple[str, str, int], float]:
    """The newest ``segmentation_results`` version: test accuracy by (model, experiment, fold)."""
    newest = max((project / "data/07_model_output/segmentation_results.json").iterdir())
    records = json.loads((newest / "segmentation_results.json").read_text())
    return {(r["model"], r["experiment"], r["fold"]): r["accuracy"] for r in records}


def test_one_fold_runs_alone_and_the_parallel_runner_gives_the_sequential_results(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project = copy_run(tiny_study, tmp_path / "copy", monkeypatch)
    records = project / "data/07_model_output/segmentation_records"
    assert sorted(p.name for p in records.iterdir()) == ["fold_0", "fold_1"]
    shutil.rmtree(records / "fold_1")
    untouched = {p: p.stat().st_mtime_ns for p in records.rglob("*.json")}
    models = set((project / "data/06_models/segmentation").rglob("stage*"))

    run(project, STUDY_TINY, pipeline="__default__", namespaces=["fold_1"])  # kedro run --namespaces=fold_1
    assert sorted(p.name for p in (records / "fold_1").iterdir()) == [
        "cellpose_merge.json", "cellpose_raw.json", "stardist_merge.json", "stardist_raw.json"]
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # the other folds did not run
    assert set((project / "data/06_models/segmentation").rglob("stage*")) == models  # trained models reused
    # fold 1's whole chain ran again (finished trainings reloaded from their checkpoints), and only fold 1's
    for dataset in ("06_models/mask_gan", "06_models/pix2pix", "07_model_output/synthetic_pairs",
                    "07_model_output/simcep_pairs"):
        versions = {p.name.split(".")[0]: len(list(p.iterdir())) for p in (project / "data" / dataset).iterdir()}
        assert versions == {"fold_0": 1, "fold_1": 2}, dataset

    # fold 1's trainings, the gathering and the report in worker processes (the other folds' records are read)
    fold_1 = [f"fold_1.train_{m}_{e}" for m in ("stardist", "cellpose") for e in ("raw", "merge")]
    joining = ["gather_segmentation_results", "write_study_report"]
    run(project, STUDY_TINY, pipeline="evaluation", nodes=fold_1 + joining, runner=ParallelRunner(max_workers=2))
    assert _results(project) == _results(tiny_study)
    # what the worker processes logged reached the run's one MLflow run, not a new one
    with sqlite3.connect(project / "mlflow.db") as db:
        (runs,) = db.execute("SELECT COUNT(*) FROM runs").fetchone()
        (newest,) = db.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()
        keys = {key for (key,) in db.execute("SELECT key FROM metrics WHERE run_uuid = ?", (newest,))}
    assert runs == 3 and {"stardist.raw.fold_1.accuracy", "cellpose.merge.accuracy"} <= keys
    assert not (project / "mlruns").exists()


def test_the_dask_runner_on_a_local_cluster_gives_the_sequential_results(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    project = copy_run(tiny_study, tmp_path / "copy", monkeypatch)
    records = project / "data/07_model_output/segmentation_records"
    shutil.rmtree(records / "fold_0")
    generative = ["fold_0.train_mask_gan", "fold_0.train_painter"]
    fold_0 = [f"fold_0.train_{m}_{e}" for m in ("stardist", "cellpose") for e in ("raw", "merge")]
    joining = ["gather_segmentation_results", "write_study_report"]
    run(project, STUDY_TINY, pipeline="__default__", nodes=generative + fold_0 + joining,
        runner=DaskRunner(n_workers=2))
    assert len(list((records / "fold_0").iterdir())) == 4
    # the generative trainings ran in workers too: each wrote a new model version, the finished training reloaded
    for kind, weights in (("mask_gan", "G_ema"), ("pix2pix", "G")):
        versions = sorted((project / f"data/06_models/{kind}/fold_0.pt").iterdir())
        assert len(versions) == 2, kind
        before, after = (torch.load(version / "fold_0.pt", weights_only=False)[weights] for version in versions)
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), kind
    assert _results(project) == _results(tiny_study)
    with sqlite3.connect(project / "mlflow.db") as db:
        (runs,) = db.execute("SELECT COUNT(*) FROM runs").fetchone()
        (newest,) = db.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()
        keys = {key for (key,) in db.execute("SELECT key FROM metrics WHERE run_uuid = ?", (newest,))}
    assert runs == 2 and "cellpose.raw.fold_0.accuracy" in keys
