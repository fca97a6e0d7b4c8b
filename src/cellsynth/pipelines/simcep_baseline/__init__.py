"""``simcep_baseline``: SIMCEP fitted to each group's training crops, its masks (and their pix2pix
images), and the structure comparison real vs GAN vs SIMCEP."""

from cellsynth.pipelines.simcep_baseline.pipeline import create_pipeline

__all__ = ["create_pipeline"]
