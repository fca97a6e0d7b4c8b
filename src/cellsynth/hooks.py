"""Kedro hooks: every run ends with a summary of what it wrote and where."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline

logger = logging.getLogger(__name__)


class RunSummaryHooks:
    """Logs, after a successful run, each persisted output with its location."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        lines = []
        for name in sorted(pipeline.all_outputs()):
            if name not in catalog:
                continue
            dataset = catalog.get(name)
            if isinstance(dataset, MemoryDataset):
                continue
            lines.append(f"  {name:<28} {dataset_location(dataset)}")
        if lines:
            logger.info("Run finished; it wrote:\n%s", "\n".join(lines))
        logger.info("MLflow tracking store: %s (browse with `mlflow ui --backend-store-uri %s`)",
                    mlflow.get_tracking_uri(), mlflow.get_tracking_uri())


def dataset_location(dataset: Any) -> str:
    """Where a catalog dataset keeps its data: the resolved (versioned) path if it has one."""
    try:
        return str(dataset._get_load_path())  # versioned datasets: the version just written
    except Exception:  # not versioned, or no path at all: fall back on its description
        description = dataset._describe()
        for key in ("filepath", "path"):
            if description.get(key):
                return str(description[key])
        return type(dataset).__name__
