"""``evaluation``: StarDist and Cellpose trained per fold, experiment and repeat; the study's report."""

from cellsynth.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
