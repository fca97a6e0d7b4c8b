"""Wiring of the ``image_translation`` pipeline: one pix2pix training node per generative group, in the
namespace ``image_translation.<group>`` (:mod:`cellsynth.pipelines.fanout`); the nodes that paint and
measure join them."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.fanout import GroupsGathered, group_datasets, group_trainings, study_shape
from cellsynth.pipelines.image_translation import nodes


def create_pipeline(groups: Sequence[str] | None = None, **kwargs) -> Pipeline:
    groups = study_shape().groups if groups is None else tuple(groups)
    models = group_datasets("pix2pix_model", groups)
    trainings = group_trainings(nodes.train_group_pix2pix, ["training_crops", "params:image_translation"],
                                "pix2pix_model", "image_translation", groups)
    return trainings + pipeline(
        [
            node(nodes.extract_heldout_crops,
                 ["annotated_images", "folds", "training_groups", "params:data_prep.crops"],
                 "heldout_crops", name="extract_heldout_crops"),
            node(GroupsGathered(nodes.translate_synthetic_masks, groups),
                 [*models, "synthetic_masks", "params:image_translation"],
                 "synthetic_pairs", name="translate_synthetic_masks"),
            node(GroupsGathered(nodes.translate_training_masks, groups),
                 [*models, "training_crops", "synthetic_masks", "params:image_translation"],
                 "realmask_pairs", name="translate_training_masks"),
            node(GroupsGathered(nodes.evaluate_translation, groups),
                 [*models, "heldout_crops", "synthetic_pairs", "params:image_translation", "params:fid"],
                 ["image_translation_metrics", "image_translation_sample_grid@figure"], name="evaluate_translation"),
        ]
    )
