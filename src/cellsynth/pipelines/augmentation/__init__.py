"""``augmentation``: the training sets of every experiment and fold, and the classical augmenters."""

from cellsynth.pipelines.augmentation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
