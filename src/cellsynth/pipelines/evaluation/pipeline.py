"""Wiring of the ``evaluation`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.evaluation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(nodes.train_segmentation_models,
                 ["annotated_images", "synthetic_pairs", "simcep_pairs", "realmask_pairs", "training_sets",
                  "params:evaluation"],
                 "segmentation_results", name="train_segmentation_models"),
            node(nodes.write_study_report,
                 ["segmentation_results", "structure_comparison", "mask_gan_generation_summary",
                  "mask_gan_sample_grid@path",
                  "image_translation_sample_grid@path", "structure_sample_grid@path", "augmentation_preview@path",
                  "params:evaluation.report"],
                 ["study_report", "evaluation_metrics"], name="write_study_report"),
        ]
    )
