"""The Kedro context of a finished study, for the scripts that extend it (``retrain_longer.py``,
``repaint_study.py``, ``study_masks.py``): run in the study's project folder, with its ``--env`` and
``--params``, so that they read the study's catalog and parameters as its ``kedro run`` did."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def study_context(env: str, params: str | None) -> Iterator[Any]:
    """The ``KedroContext`` of the project in the working directory, with ``params`` read as ``kedro run
    --params`` reads them (``a.b=1,c=x``)."""
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    from kedro.framework.cli.utils import _split_params
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path.cwd())
    extra = _split_params(None, None, params) if params else None
    with KedroSession.create(project_path=Path.cwd(), env=env, runtime_params=extra) as session:
        yield session.load_context()


def require_groups(groups: Iterable[str], study_groups: Iterable[str]) -> None:
    """Stop with the study's groups named when one of ``groups`` (``--group``) is not among them."""
    known = sorted(study_groups)
    unknown = sorted(set(groups) - set(known))
    if unknown:
        raise SystemExit(f"unknown group(s) {unknown}; the study has {known}")
