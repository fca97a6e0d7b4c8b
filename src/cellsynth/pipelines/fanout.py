"""The study's shape when Kedro builds its pipelines: how many folds, which experiments, which models.

The segmentation trainings are one node per (fold, experiment, model), in one namespace per fold
(``fold_0``, ``fold_1``, ...), so that ``kedro run --namespaces=fold_1`` runs one fold and a parallel or
distributed runner runs trainings side by side. How many such nodes there are depends on the parameters,
but Kedro builds pipelines without them (``register_pipelines()`` takes no argument). So
:class:`StudyShapeHooks` reads the run's parameters (environment and ``--params`` included) as soon as
the session's context exists, before the runner asks for a pipeline, and has the pipelines rebuilt when
the shape changed. Where no session runs (``kedro registry list``), the shape comes from the
configuration on disk: ``conf/base`` and the environment ``$KEDRO_ENV`` (``local`` when unset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines, settings

from cellsynth.study import experiment_names
from cellsynth.training.config import check_positive_int

REGISTRY = "cellsynth.pipeline_registry"


@dataclass(frozen=True)
class StudyShape:
    """What the per-fold nodes are built for: ``folds`` namespaces, each with one training node per
    experiment and model."""

    folds: int
    experiments: tuple[str, ...]
    models: tuple[str, ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StudyShape:
        """The shape that a run with these (complete) parameters plans. Experiments that the plan would
        reject (unknown names, nothing to train) leave the shape without trainings: the planning node
        then fails with the reason, and runs that plan nothing (``data_prep``, ``synthesize``) still work."""
        augmentation = params.get("augmentation") or {}
        try:
            experiments = tuple(experiment_names(augmentation.get("experiments") or (),
                                                 (params.get("subsets") or {}).get("fractions") or (),
                                                 augmentation.get("controls") or ()))
        except ValueError:
            experiments = ()
        folds = params["data_prep"]["folds"]["k"]
        check_positive_int(folds, "data_prep.folds.k")
        return cls(folds, experiments, tuple((params.get("evaluation") or {}).get("models") or ()))

    @property
    def namespaces(self) -> list[str]:
        return [f"fold_{k}" for k in range(self.folds)]


_shape: StudyShape | None = None


def study_shape() -> StudyShape:
    """The shape of the current session's study, or of the configuration on disk outside a session."""
    global _shape
    if _shape is None:
        conf = Path.cwd() / settings.CONF_SOURCE
        loader = OmegaConfigLoader(str(conf), env=os.environ.get("KEDRO_ENV"), **settings.CONFIG_LOADER_ARGS)
        _shape = StudyShape.from_params(loader["parameters"])
    return _shape


class StudyShapeHooks:
    """Rebuilds the pipelines for the parameters of the session that is about to run."""

    @hook_impl(tryfirst=True)  # before any other hook reads ``context.params``, which builds the pipelines
    def after_context_created(self, context: Any) -> None:
        global _shape
        shape = StudyShape.from_params(context.config_loader["parameters"])
        if shape != _shape:
            _shape = shape
            pipelines.configure(REGISTRY)
