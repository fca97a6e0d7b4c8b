"""Wiring of the ``evaluation`` pipeline: one training node per (fold, experiment, model), under the
namespace ``fold_<k>`` (the fold count and experiments come from the run's parameters:
:mod:`cellsynth.pipelines.fanout`); one node gathers their records, one writes the report."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.evaluation import nodes
from cellsynth.pipelines.fanout import study_shape

TRAINING_INPUTS = ["annotated_images", "synthetic_pairs", "simcep_pairs", "realmask_pairs", "training_sets",
                   "params:evaluation"]


def records_name(experiment: str, model: str) -> str:
    """The dataset of one training node's records within its fold's namespace (no dots: Kedro reads a
    dot as a namespace, and subset experiments carry one, as in ``subset_0.25_raw``)."""
    return f"segmentation_records_{model}_{experiment.replace('.', 'p')}"


def create_pipeline(**kwargs) -> Pipeline:
    shape = study_shape()
    trainings = [
        pipeline([node(update_wrapper(partial(nodes.train_experiment, fold=fold, experiment=experiment, model=model),
                                      nodes.train_experiment),
                       TRAINING_INPUTS, records_name(experiment, model),
                       name=f"train_{model}_{experiment.replace('.', 'p')}")
                  for experiment in shape.experiments for model in shape.models],
                 namespace=namespace, inputs=set(TRAINING_INPUTS) - {"params:evaluation"},
                 parameters={"params:evaluation"})
        for fold, namespace in enumerate(shape.namespaces)
    ]
    records = [f"{namespace}.{records_name(experiment, model)}" for namespace in shape.namespaces
               for experiment in shape.experiments for model in shape.models]
    return sum(trainings, Pipeline([])) + pipeline(
        [
            node(nodes.gather_segmentation_results, records, "segmentation_results",
                 name="gather_segmentation_results"),
            node(nodes.write_study_report,
                 ["segmentation_results", "structure_comparison", "mask_gan_generation_summary",
                  "mask_gan_sample_grid@path",
                  "image_translation_sample_grid@path", "structure_sample_grid@path", "augmentation_preview@path",
                  "params:evaluation.report"],
                 ["study_report", "evaluation_metrics"], name="write_study_report"),
        ]
    )
