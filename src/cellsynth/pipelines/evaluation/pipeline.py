"""Wiring of the ``evaluation`` pipeline: one training node per (fold, experiment, model), under the
namespace ``fold_<k>`` (the fold count and experiments come from the run's parameters:
:mod:`cellsynth.pipelines.fanout`), reading the fold's plan and the one synthetic set it trains on; one node
gathers their records, one writes the report."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.evaluation import nodes
from cellsynth.pipelines.fanout import bound, source_dataset, study_shape
from cellsynth.study import experiment_source


def records_name(experiment: str, model: str) -> str:
    """The dataset of one training node's records within its fold's namespace (no dots: Kedro reads a
    dot as a namespace, and subset experiments carry one, as in ``subset_0.25_raw``)."""
    return f"segmentation_records_{model}_{experiment.replace('.', 'p')}"


def fold_trainings(fold: int, namespace: str, experiments: tuple[str, ...], models: tuple[str, ...]) -> Pipeline:
    """The segmentation trainings of one fold, in its namespace (``fold_1.train_stardist_merge``, ...)."""
    trainings = []
    for experiment in experiments:
        source = experiment_source(fold, experiment)
        synthetic = [source_dataset(source)] if source else []
        for model in models:
            trainings.append(node(bound(nodes.train_experiment, fold=fold, experiment=experiment, model=model),
                                  ["annotated_images", "training_plan", "params:evaluation", *synthetic],
                                  records_name(experiment, model),
                                  name=f"train_{model}_{experiment.replace('.', 'p')}"))
    free = Pipeline(trainings).inputs()
    return pipeline(trainings, namespace=namespace, parameters={"params:evaluation"},
                    inputs={name for name in free if name == "annotated_images" or name.startswith(f"{namespace}.")})


def create_pipeline(**kwargs) -> Pipeline:
    shape = study_shape()
    trainings = [fold_trainings(fold, namespace, shape.experiments, shape.models)
                 for fold, namespace in enumerate(shape.namespaces)]
    records = [f"{namespace}.{records_name(experiment, model)}" for namespace in shape.namespaces
               for experiment in shape.experiments for model in shape.models]
    return sum(trainings, Pipeline([])) + Pipeline(
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
