"""Project pipelines: each folder under ``pipelines/`` is one; ``__default__`` runs the study (all of them but
``synthesize``, which makes a dataset to take away)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(p for name, p in pipelines.items() if name != "synthesize")
    return pipelines
