"""``mask_gan``: StyleGAN2-ADA on encoded flow fields -> best snapshot -> synthetic instance masks."""

from cellsynth.pipelines.mask_gan.pipeline import create_pipeline

__all__ = ["create_pipeline"]
