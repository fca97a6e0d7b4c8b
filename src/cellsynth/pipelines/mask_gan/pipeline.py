"""Wiring of the ``mask_gan`` pipeline: per generative group, in the group's namespace
(:mod:`cellsynth.pipelines.fanout`), a training node and a generating node; one node sums the groups up."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cellsynth.pipelines.fanout import GroupsGathered, bound, group_datasets, group_pipeline, study_shape
from cellsynth.pipelines.mask_gan import nodes


def group_nodes(group: str) -> Pipeline:
    """TRAIN-GAN and GAN-GENERATE of one group (``fold_0.train_mask_gan``, ``fold_0.generate_masks``)."""
    return group_pipeline([
        node(bound(nodes.train_group_gan, group=group), ["encoded_flows", "params:mask_gan", "params:encoding",
                                                       "params:fid"], "mask_gan_model", name="train_mask_gan"),
        node(bound(nodes.generate_group_masks, group=group),
             ["mask_gan_model", "params:mask_gan.generation", "params:mask_gan.runtime", "params:encoding"],
             ["synthetic_masks", "mask_gan_generation"], name="generate_masks"),
    ], group, shared={"encoded_flows"})


def create_pipeline(groups: Sequence[str] | None = None, **kwargs) -> Pipeline:
    groups = study_shape().groups if groups is None else tuple(groups)
    return sum((group_nodes(group) for group in groups), Pipeline([])) + Pipeline([
        node(GroupsGathered(nodes.summarise_generation, groups, per_group=2),
             [*group_datasets("synthetic_masks", groups), *group_datasets("mask_gan_generation", groups),
              "encoded_flows", "params:encoding"],
             ["mask_gan_sample_grid@figure", "mask_gan_generation_metrics", "mask_gan_generation_summary"],
             name="summarise_generation"),
    ])
