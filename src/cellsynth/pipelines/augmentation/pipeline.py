"""Wiring of the ``augmentation`` pipeline: each fold's training plan in the fold's namespace
(:mod:`cellsynth.pipelines.fanout`), then the plans joined and a preview of the augmentations."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.augmentation import nodes
from cellsynth.pipelines.fanout import GroupsGathered, bound, group_datasets, study_shape

PLAN_INPUTS = ["folds", "training_groups", "params:augmentation", "params:subsets", "params:training_scope"]


def create_pipeline(**kwargs) -> Pipeline:
    namespaces = study_shape().namespaces
    plans = sum((pipeline([node(bound(nodes.plan_training_sets, fold=fold), PLAN_INPUTS, "training_plan",
                                name="plan_training_sets")],
                          namespace=namespace, inputs={"folds", "training_groups"},
                          parameters={name for name in PLAN_INPUTS if name.startswith("params:")})
                 for fold, namespace in enumerate(namespaces)), Pipeline([]))
    return plans + Pipeline([
        node(GroupsGathered(nodes.gather_training_sets, namespaces), group_datasets("training_plan", namespaces),
             "training_sets", name="gather_training_sets"),
        node(nodes.preview_augmentation, ["annotated_images", "training_sets", "params:augmentation"],
             "augmentation_preview@figure", name="preview_augmentation"),
    ])
