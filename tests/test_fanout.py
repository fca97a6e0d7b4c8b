"""The study fans out: one training node per (fold, experiment, model), in one namespace per fold, built
for the parameters of the run that is about to start."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, nested
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession

from cellsynth.pipelines.fanout import GroupsGathered, StudyShape, group_datasets, source_dataset
from cellsynth.study import experiment_source


def _params(env: str = "local") -> dict:
    return OmegaConfigLoader(str(REPO / "conf"), env=env, base_env="base", default_run_env="local",
                             merge_strategy={"parameters": "soft"})["parameters"]


def test_the_shape_follows_the_configuration():
    assert StudyShape.from_params(_params()) == StudyShape(3, ("fold_0", "fold_1", "fold_2"), ("raw", "merge"),
                                                           ("stardist", "cellpose"))
    workstation = StudyShape.from_params(_params("workstation"))
    assert workstation.groups == ("fold_0", "fold_1", "fold_2", "fold_0-subset_0.25", "fold_1-subset_0.25",
                                  "fold_2-subset_0.25")
    assert workstation.experiments == ("raw", "merge", "pretrain", "subset_0.25_raw", "subset_0.25_merge",
                                       "subset_0.25_merge_simcep", "subset_0.25_merge_realmasks")
    assert workstation.namespaces == ["fold_0", "fold_1", "fold_2"]


def test_a_plan_the_study_would_reject_leaves_no_trainings_and_a_bad_fold_count_is_named():
    params = _params()
    params["augmentation"]["experiments"] = ["mixup"]  # plan_training_sets names it when it runs
    assert StudyShape.from_params(params).experiments == ()
    params["data_prep"]["folds"]["k"] = 0
    with pytest.raises(ValueError, match="data_prep.folds.k"):
        StudyShape.from_params(params)


def _evaluation_namespaces(project: Path, params: dict) -> tuple[list[str], set[str]]:
    with KedroSession.create(project_path=project, runtime_params=nested(params)) as session:
        session.load_context()
        nodes = pipelines["evaluation"].nodes
    return sorted({n.namespace for n in nodes if n.namespace}), {n.name for n in nodes}


def test_each_session_builds_the_pipelines_for_its_own_parameters(project: Path):
    namespaces, names = _evaluation_namespaces(project, {"data_prep.folds.k": 4, "subsets.fractions": [0.5]})
    assert namespaces == ["fold_0", "fold_1", "fold_2", "fold_3"]
    assert {"fold_3.train_cellpose_subset_0p5_merge", "gather_segmentation_results"} <= names
    assert len(names) == 4 * 4 * 2 + 2  # (raw, merge, subset raw, subset merge) x 2 models per fold
    namespaces, names = _evaluation_namespaces(project, {})
    assert namespaces == ["fold_0", "fold_1", "fold_2"] and len(names) == 3 * 2 * 2 + 2


def _pipelines_of(project: Path, params: dict) -> dict:
    with KedroSession.create(project_path=project, runtime_params=nested(params)) as session:
        session.load_context()
        return {name: pipelines[name] for name in ("__default__", "mask_gan", "data_prep")}


def test_each_fold_is_one_namespaced_chain_that_a_namespace_selects(
    project: Path, recwarn: pytest.WarningsRecorder
):
    built = _pipelines_of(project, {"data_prep.folds.k": 2, "subsets.fractions": [0.5]})
    assert sorted(n.name for n in built["mask_gan"].nodes) == [
        "fold_0.generate_masks", "fold_0.subset_0p5.generate_masks", "fold_0.subset_0p5.train_mask_gan",
        "fold_0.train_mask_gan", "fold_1.generate_masks", "fold_1.subset_0p5.generate_masks",
        "fold_1.subset_0p5.train_mask_gan", "fold_1.train_mask_gan", "summarise_generation"]
    fold_1 = built["__default__"].only_nodes_with_namespaces(["fold_1"])
    per_group = {"train_mask_gan", "generate_masks", "train_painter", "paint_synthetic_masks", "paint_training_masks",
                 "score_painter", "fit_simcep", "simulate_simcep_masks", "paint_simcep_masks", "compare_structure"}
    trainings = {f"train_{model}_{experiment}" for model in ("stardist", "cellpose") for experiment in (
        "raw", "merge", "subset_0p5_raw", "subset_0p5_merge")}
    assert {n.name for n in fold_1.nodes} == ({f"fold_1.{name}" for name in per_group | trainings}
                                              | {f"fold_1.subset_0p5.{name}" for name in per_group}
                                              | {"fold_1.plan_training_sets"})
    # the fold's chain needs only what data_prep makes: `kedro run --namespaces=fold_1` runs after it
    assert {name for name in fold_1.inputs() if not name.startswith("params:")} == {
        "annotated_images", "encoded_flows", "folds", "training_groups", "training_crops", "heldout_crops"}
    assert {name for name in fold_1.inputs() if not name.startswith("params:")} <= built["data_prep"].all_outputs()
    assert "fold_1.subset_0p5.synthetic_pairs" in built["__default__"].only_nodes(
        "fold_1.train_stardist_subset_0p5_merge").inputs()
    assert not built["__default__"].only_nodes("fold_1.train_stardist_raw").inputs() & {
        "fold_1.synthetic_pairs", "fold_1.subset_0p5.synthetic_pairs"}  # raw waits for no GAN
    # every namespace is valid: no path leaves one and comes back into it
    assert not [w for w in recwarn if "interrupted" in str(w.message)]


def test_airflow_gets_one_task_per_fold(project: Path):
    """``kedro airflow create --group-by namespace`` (kedro-airflow; Airflow itself is not needed to write the
    DAG): each fold's chain is one task, run as ``--namespaces=fold_<k>``, between data_prep and the report."""
    subprocess.run([sys.executable, "-m", "kedro", "airflow", "create", "--group-by", "namespace", "-t", "dags"],
                   cwd=project, check=True, capture_output=True, env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"})
    dag = (project / "dags/cellsynth_dag.py").read_text()
    tasks = set(re.findall(r'@task\(task_id="([^"]+)"\)', dag))
    assert {"fold-0", "fold-1", "fold-2", "encode-crops", "write-study-report"} <= tasks
    assert not any(name.startswith("train-") for name in tasks)  # no training outside a fold's task
    assert '_run_kedro_node(namespaces=["fold_1"])' in dag
    assert 'tasks["encode-crops"] >> tasks["fold-1"]' in dag
    assert 'tasks["fold-1"] >> tasks["summarise-generation"]' in dag


def test_each_experiment_reads_the_one_synthetic_set_it_trains_on():
    assert [experiment_source(1, name) for name in ("raw", "merge", "pretrain", "subset_0.25_raw",
                                                    "subset_0.25_merge", "subset_0.25_merge_simcep")] == [
        None, "fold_1", "fold_1", None, "fold_1-subset_0.25", "simcep:fold_1-subset_0.25"]
    assert [source_dataset(s) for s in ("fold_1", "simcep:fold_1-subset_0.25", "realmasks:fold_0-subset_1")] == [
        "fold_1.synthetic_pairs", "fold_1.subset_0p25.simcep_pairs", "fold_0.subset_1.realmask_pairs"]
    with pytest.raises(ValueError, match="unknown experiment 'subset_0.25_mixup'"):
        experiment_source(0, "subset_0.25_mixup")


def test_the_gathering_adapter_passes_each_block_of_groups_as_one_mapping_and_pickles():
    gathered = GroupsGathered(group_namespace_pairs, ["fold_0", "fold_0-subset_0.25"], per_group=2)
    assert gathered.__name__ == "group_namespace_pairs"
    assert pickle.loads(pickle.dumps(gathered))("a", "b", "c", "d", "rest") == (
        {"fold_0": "a", "fold_0-subset_0.25": "b"}, {"fold_0": "c", "fold_0-subset_0.25": "d"}, ("rest",))
    assert group_datasets("model", ["fold_0", "fold_0-subset_0.25", "all"]) == [
        "fold_0.model", "fold_0.subset_0p25.model", "all.model"]


def group_namespace_pairs(first: dict, second: dict, *rest: str) -> tuple[dict, dict, tuple[str, ...]]:
    return first, second, rest
