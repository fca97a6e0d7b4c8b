"""``data_prep``: annotated images -> cross-validation folds -> training crops -> encoded flow fields."""

from cellsynth.pipelines.data_prep.pipeline import create_pipeline

__all__ = ["create_pipeline"]
