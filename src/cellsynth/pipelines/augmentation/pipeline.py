"""Wiring of the ``augmentation`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.augmentation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(nodes.plan_training_sets,
                 ["folds", "training_groups", "synthetic_pairs", "simcep_pairs", "realmask_pairs",
                  "params:augmentation", "params:subsets", "params:training_scope"],
                 "training_sets", name="plan_training_sets"),
            node(nodes.preview_augmentation, ["annotated_images", "training_sets", "params:augmentation"],
                 "augmentation_preview@figure", name="preview_augmentation"),
        ]
    )
