"""Kedro project settings for cellsynth."""

from cellsynth.hooks import RunSummaryHooks

HOOKS = (RunSummaryHooks(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
