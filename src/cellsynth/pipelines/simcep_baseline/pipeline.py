"""Wiring of the ``simcep_baseline`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.fanout import GroupsGathered, group_datasets, study_shape
from cellsynth.pipelines.simcep_baseline import nodes


def create_pipeline(**kwargs) -> Pipeline:
    groups = study_shape().groups
    models = group_datasets("pix2pix_model", groups)
    return pipeline(
        [
            node(nodes.fit_simcep, ["training_crops", "params:simcep_baseline"],
                 ["simcep_parameters", "simcep_parameter_metrics"], name="fit_simcep"),
            node(nodes.simulate_simcep_masks, ["simcep_parameters", "params:simcep_baseline"], "simcep_masks",
                 name="simulate_simcep_masks"),
            node(GroupsGathered(nodes.translate_simcep_masks, groups),
                 [*models, "simcep_masks", "params:image_translation"], "simcep_pairs", name="translate_simcep_masks"),
            node(GroupsGathered(nodes.compare_structure, groups),
                 [*models, "training_crops", "heldout_crops", "synthetic_pairs", "simcep_pairs",
                  "params:simcep_baseline", "params:fid"],
                 ["structure_comparison", "structure_metrics", "structure_sample_grid@figure"],
                 name="compare_structure"),
        ]
    )
