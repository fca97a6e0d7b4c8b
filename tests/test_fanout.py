"""The study fans out: one training node per (fold, experiment, model), in one namespace per fold, built
for the parameters of the run that is about to start."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from conftest import REPO, nested
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession

from cellsynth.pipelines.fanout import GroupsGathered, StudyShape, group_datasets


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
        return {name: pipelines[name] for name in ("__default__", "mask_gan", "image_translation")}


def test_each_generative_group_trains_in_a_node_of_its_own_that_a_namespace_selects(
    project: Path, recwarn: pytest.WarningsRecorder
):
    built = _pipelines_of(project, {"data_prep.folds.k": 2, "subsets.fractions": [0.5]})
    assert sorted(n.name for n in built["mask_gan"].nodes) == [
        "generate_synthetic_masks", "mask_gan.fold_0.subset_0p5.train", "mask_gan.fold_0.train",
        "mask_gan.fold_1.subset_0p5.train", "mask_gan.fold_1.train"]
    fold_1 = built["__default__"].only_nodes_with_namespaces(["image_translation.fold_1"])
    assert {n.name for n in fold_1.nodes} == {"image_translation.fold_1.train",
                                             "image_translation.fold_1.subset_0p5.train"}
    assert fold_1.all_outputs() == {"fold_1.pix2pix_model", "fold_1.subset_0p5.pix2pix_model"}
    # every namespace is valid: no path leaves one and comes back into it
    assert not [w for w in recwarn if "interrupted" in str(w.message)]


def test_the_gathering_adapter_passes_the_groups_as_one_mapping_and_pickles():
    gathered = GroupsGathered(group_namespace_pairs, ["fold_0", "fold_0-subset_0.25"])
    assert gathered.__name__ == "group_namespace_pairs"
    assert pickle.loads(pickle.dumps(gathered))("a", "b", "rest") == (
        {"fold_0": "a", "fold_0-subset_0.25": "b"}, ("rest",))
    assert group_datasets("model", ["fold_0", "fold_0-subset_0.25", "all"]) == [
        "fold_0.model", "fold_0.subset_0p25.model", "all.model"]


def group_namespace_pairs(groups: dict, *rest: str) -> tuple[dict, tuple[str, ...]]:
    return groups, rest
