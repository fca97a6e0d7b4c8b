"""Wiring of the ``mask_gan`` pipeline."""

from kedro.pipeline import Pipeline, node, pipeline

from cellsynth.pipelines.mask_gan import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(nodes.train_mask_gans, ["encoded_flows", "params:mask_gan", "params:encoding", "params:fid"],
                 "mask_gan_models", name="train_mask_gans"),
            node(nodes.generate_synthetic_masks,
                 ["mask_gan_models", "encoded_flows", "params:mask_gan.generation", "params:mask_gan.runtime",
                  "params:encoding"],
                 ["synthetic_masks", "mask_gan_sample_grid@figure", "mask_gan_generation_metrics",
                  "mask_gan_generation_summary"],
                 name="generate_synthetic_masks"),
        ]
    )
