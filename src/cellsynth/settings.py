"""Kedro project settings for cellsynth."""

from pathlib import Path

from cellsynth.hooks import RunSummaryHooks

HOOKS = (RunSummaryHooks(),)


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
