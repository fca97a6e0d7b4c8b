"""Wiring of the ``image_translation`` pipeline: per generative group, in the group's namespace
(:mod:`cellsynth.pipelines.fanout`), the painter's training, its images of the GAN's masks and of the
group's own masks, and its scores on held-out masks; one node sums the groups up."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cellsynth.pipelines.fanout import GroupsGathered, bound, group_datasets, group_pipeline, study_shape
from cellsynth.pipelines.image_translation import nodes


def group_nodes(group: str) -> Pipeline:
    """One group's painter: ``fold_0.train_painter``, ``fold_0.paint_synthetic_masks``, ..."""
    return group_pipeline([
        node(bound(nodes.train_group_pix2pix, group=group), ["training_crops", "params:image_translation"],
             "pix2pix_model", name="train_painter"),
        node(bound(nodes.translate_synthetic_masks, group=group),
             ["pix2pix_model", "synthetic_masks", "params:image_translation"], "synthetic_pairs",
             name="paint_synthetic_masks"),
        node(bound(nodes.translate_training_masks, group=group),
             ["pix2pix_model", "training_crops", "synthetic_masks", "params:image_translation"], "realmask_pairs",
             name="paint_training_masks"),
        node(bound(nodes.evaluate_translation, group=group),
             ["pix2pix_model", "heldout_crops", "synthetic_pairs", "params:image_translation", "params:fid"],
             ["translation_scores", "translation_samples"], name="score_painter"),
    ], group, shared={"training_crops", "heldout_crops"})


def create_pipeline(groups: Sequence[str] | None = None, **kwargs) -> Pipeline:
    groups = study_shape().groups if groups is None else tuple(groups)
    return sum((group_nodes(group) for group in groups), Pipeline([])) + Pipeline([
        node(GroupsGathered(nodes.summarise_translation, groups, per_group=2),
             [*group_datasets("translation_scores", groups), *group_datasets("translation_samples", groups)],
             ["image_translation_metrics", "image_translation_sample_grid@figure"], name="summarise_translation"),
    ])
