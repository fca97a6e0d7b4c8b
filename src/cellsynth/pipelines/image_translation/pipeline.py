"""Wiring of the ``image_translation`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.image_translation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(nodes.extract_heldout_crops,
                 ["annotated_images", "folds", "training_groups", "params:data_prep.crops"],
                 "heldout_crops", name="extract_heldout_crops"),
            node(nodes.train_pix2pix_models, ["training_crops", "params:image_translation"],
                 "pix2pix_models", name="train_pix2pix_models"),
            node(nodes.translate_synthetic_masks,
                 ["pix2pix_models", "synthetic_masks", "params:image_translation"],
                 "synthetic_pairs", name="translate_synthetic_masks"),
            node(nodes.translate_training_masks,
                 ["pix2pix_models", "training_crops", "synthetic_masks", "params:image_translation"],
                 "realmask_pairs", name="translate_training_masks"),
            node(nodes.evaluate_translation,
                 ["pix2pix_models", "heldout_crops", "synthetic_pairs", "params:image_translation", "params:fid"],
                 ["image_translation_metrics", "image_translation_sample_grid@figure"], name="evaluate_translation"),
        ]
    )
