"""Wiring of the ``synthesize`` pipeline: data_prep, the mask GAN and pix2pix trained on every image (the
group ``all``), then N synthetic pairs written to a dataset folder. The training nodes are those of the
other pipelines, reused under the namespace ``synthesize`` with ``training_scope`` taken from
``synthesize.training_scope``; their checkpoints are content-addressed, so trained models are loaded."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.data_prep.pipeline import create_pipeline as data_prep
from cellsynth.pipelines.image_translation.pipeline import create_pipeline as image_translation
from cellsynth.pipelines.mask_gan.pipeline import create_pipeline as mask_gan
from cellsynth.pipelines.synthesize import nodes

TRAINING_NODES = ("load_annotated_images", "split_folds", "assign_training_groups", "extract_training_crops",
                  "encode_crops")


def create_pipeline(**kwargs) -> Pipeline:
    models = (data_prep().only_nodes(*TRAINING_NODES) + mask_gan(["all"]).only_nodes("all.train_mask_gan")
              + image_translation(["all"]).only_nodes("all.train_painter"))
    writing = pipeline([
        node(nodes.write_synthetic_dataset,
             ["all.mask_gan_model", "all.pix2pix_model", "params:synthesize", "params:mask_gan.generation",
              "params:mask_gan.runtime", "params:encoding"],
             "synthetic_dataset_manifest", name="write_synthetic_dataset"),
    ])
    combined = models + writing
    # parameters keep their names under the namespace, except training_scope, which synthesize sets itself
    parameters = {name: name for node_ in combined.nodes for name in node_.inputs if name.startswith("params:")}
    parameters["params:training_scope"] = "params:synthesize.training_scope"
    return pipeline(combined, namespace="synthesize", outputs={"synthetic_dataset_manifest"}, parameters=parameters)
