"""Wiring of the ``data_prep`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.data_prep import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(nodes.load_annotated_images, "params:data_prep.dataset", "annotated_images",
                 name="load_annotated_images"),
            node(nodes.split_folds, ["annotated_images", "params:data_prep.folds"], "folds", name="split_folds"),
            node(nodes.assign_training_groups,
                 ["annotated_images", "folds", "params:training_scope", "params:subsets"],
                 "training_groups", name="assign_training_groups"),
            node(nodes.extract_training_crops, ["annotated_images", "training_groups", "params:data_prep.crops"],
                 "training_crops", name="extract_training_crops"),
            node(nodes.extract_heldout_crops,
                 ["annotated_images", "folds", "training_groups", "params:data_prep.crops"],
                 "heldout_crops", name="extract_heldout_crops"),
            node(nodes.encode_crops, ["training_crops", "params:encoding"], "encoded_flows", name="encode_crops"),
            node(nodes.summarise_data_prep,
                 ["annotated_images", "training_crops", "encoded_flows", "params:encoding",
                  "params:data_prep.codec_check"],
                 ["data_prep_metrics", "data_prep_summary"], name="summarise_data_prep"),
        ]
    )
