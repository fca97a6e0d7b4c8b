"""Wiring of the ``simcep_baseline`` pipeline: per generative group, in the group's namespace
(:mod:`cellsynth.pipelines.fanout`), SIMCEP fitted to the group's crops, its masks, their painted images and
the comparison of real, GAN and SIMCEP sets with held-out real crops; one node sums the groups up."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cellsynth.pipelines.fanout import GroupsGathered, bound, group_datasets, group_pipeline, study_shape
from cellsynth.pipelines.simcep_baseline import nodes


def group_nodes(group: str) -> Pipeline:
    """One group's SIMCEP baseline: ``fold_0.fit_simcep``, ..., ``fold_0.compare_structure``."""
    return group_pipeline([
        node(bound(nodes.fit_simcep, group=group), ["training_crops", "params:simcep_baseline"], "simcep_parameters",
             name="fit_simcep"),
        node(bound(nodes.simulate_simcep_masks, group=group), ["simcep_parameters", "params:simcep_baseline"],
             "simcep_masks", name="simulate_simcep_masks"),
        node(bound(nodes.translate_simcep_masks, group=group),
             ["pix2pix_model", "simcep_masks", "params:image_translation"], "simcep_pairs",
             name="paint_simcep_masks"),
        node(bound(nodes.compare_structure, group=group),
             ["pix2pix_model", "training_crops", "heldout_crops", "synthetic_pairs", "simcep_pairs",
              "params:simcep_baseline", "params:fid"], ["structure_scores", "structure_samples"],
             name="compare_structure"),
    ], group, shared={"training_crops", "heldout_crops"})


def create_pipeline(groups: Sequence[str] | None = None, **kwargs) -> Pipeline:
    groups = study_shape().groups if groups is None else tuple(groups)
    return sum((group_nodes(group) for group in groups), Pipeline([])) + Pipeline([
        node(GroupsGathered(nodes.summarise_structure, groups, per_group=3),
             [*group_datasets("structure_scores", groups), *group_datasets("structure_samples", groups),
              *group_datasets("simcep_parameters", groups)],
             ["structure_comparison", "structure_metrics", "structure_sample_grid@figure",
              "simcep_parameter_metrics"], name="summarise_structure"),
    ])
