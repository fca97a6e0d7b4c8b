"""``synthesize``: the mask GAN and pix2pix trained on every image -> N synthetic pairs in a dataset folder."""

from cellsynth.pipelines.synthesize.pipeline import create_pipeline

__all__ = ["create_pipeline"]
