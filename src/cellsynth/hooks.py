"""Kedro hooks: every run ends with a summary of what it wrote and where, and nodes that a parallel runner
runs in worker processes log to the run's one MLflow run."""

from __future__ import annotations

import logging
import os
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


class WorkerMlflowHooks:
    """kedro-mlflow opens one MLflow run per ``kedro run``, in the main process. The worker processes that
    ``ParallelRunner`` spawns have none, and Kedro 1.7 does not load the project's hooks there (it bootstraps
    a spawned worker only when it knows the package name, which it reads in the worker itself). So for
    the run's duration the main process sets MLflow's own ``MLFLOW_RUN_ID`` and ``MLFLOW_TRACKING_URI``,
    which spawned workers inherit: every metric, parameter and artifact they log resumes the run instead
    of opening a new one (:func:`cellsynth.tracking.run_to_log_to`)."""

    def __init__(self) -> None:
        self._previous: dict[str, str | None] = {}

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self) -> None:
        run = mlflow.active_run()
        if run is not None:
            handed_down = {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
            self._previous = {name: os.environ.get(name) for name in handed_down}
            os.environ.update(handed_down)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._restore()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._restore()

    def _restore(self) -> None:
        for name, value in self._previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._previous = {}
