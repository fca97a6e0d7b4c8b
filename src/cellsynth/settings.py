"""Kedro project settings for cellsynth."""

import multiprocessing
from pathlib import Path

from cellsynth.hooks import RunSummaryHooks, WorkerMlflowHooks
from cellsynth.pipelines.fanout import StudyShapeHooks

HOOKS = (StudyShapeHooks(), RunSummaryHooks(), WorkerMlflowHooks())

# ParallelRunner's workers are started fresh, not forked: a process forked after torch and TensorFlow have
# started their thread pools hangs (measured with the tiny study). Kedro bootstraps the project in a
# worker only when this global start method is "spawn" (KEDRO_MP_CONTEXT alone is not enough).
multiprocessing.set_start_method("spawn", force=True)


def sqlite_uri(path: str) -> str:
    """``${sqlite_uri:mlflow.db}`` in configuration: an absolute SQLite URI for a path relative to the
    project root (MLflow caches stores by URI, so a relative one would follow the first working directory)."""
    return f"sqlite:///{(Path.cwd() / path).resolve()}"


CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"sqlite_uri": sqlite_uri},
    # conf/paper (and conf/local) name only the parameters they change; the rest comes from base.
    "merge_strategy": {"parameters": "soft"},
}
