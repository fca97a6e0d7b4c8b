"""``image_translation``: pix2pix turns instance masks into microscopy images (PIX2PIX-TRAIN / PIX2PIX-GENERATE)."""

from cellsynth.pipelines.image_translation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
