"""Wiring of the ``mask_gan`` pipeline: one training node per generative group, in the namespace ``mask_gan.<group>``
(:mod:`cellsynth.pipelines.fanout`), and one node that generates masks from all of them."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.fanout import GroupsGathered, group_datasets, group_trainings, study_shape
from cellsynth.pipelines.mask_gan import nodes

TRAINING_INPUTS = ["encoded_flows", "params:mask_gan", "params:encoding", "params:fid"]


def create_pipeline(groups: Sequence[str] | None = None, **kwargs) -> Pipeline:
    groups = study_shape().groups if groups is None else tuple(groups)
    trainings = group_trainings(nodes.train_group_gan, TRAINING_INPUTS, "mask_gan_model", "mask_gan", groups)
    return trainings + pipeline(
        [
            node(GroupsGathered(nodes.generate_synthetic_masks, groups),
                 [*group_datasets("mask_gan_model", groups), "encoded_flows", "params:mask_gan.generation",
                  "params:mask_gan.runtime", "params:encoding"],
                 ["synthetic_masks", "mask_gan_sample_grid@figure", "mask_gan_generation_metrics",
                  "mask_gan_generation_summary"],
                 name="generate_synthetic_masks"),
        ]
    )
