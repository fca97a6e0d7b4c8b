"""Whether this process has an MLflow run to log to.

In the process of a ``kedro run``, kedro-mlflow keeps the run active. A worker process that a parallel
runner spawns has no active run, but :class:`cellsynth.hooks.WorkerMlflowHooks` hands it the run in
MLflow's own environment variables (``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI``); MLflow's logging
functions resume that run instead of opening a new one.
"""

from __future__ import annotations

import mlflow
from mlflow.environment_variables import MLFLOW_RUN_ID


def run_to_log_to() -> bool:
    """True when an MLflow run is active here or handed down by the parent process."""
    return mlflow.active_run() is not None or bool(MLFLOW_RUN_ID.get())
