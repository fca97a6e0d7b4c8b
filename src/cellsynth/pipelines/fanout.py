"""The study's shape when Kedro builds its pipelines: how many folds, which groups, experiments and models.

Each fold's chain is a modular pipeline of its own, in the namespace ``fold_<k>``: the mask GAN, painter and
SIMCEP nodes of each generative group (the fold's, and its subsets' under ``fold_<k>.subset_<f>``), its
training plan and one segmentation training node per (experiment, model). So ``kedro run --namespaces=fold_1``
runs fold 1 alone, and a parallel or distributed runner runs the folds side by side. What spans the folds
(data_prep, the gathering nodes, the report) stays outside the namespaces and joins them.

How many such nodes there are depends on the parameters, but Kedro builds pipelines without them
(``register_pipelines()`` takes no argument). So :class:`StudyShapeHooks` reads the run's parameters
(environment and ``--params`` included) as soon as the session's context exists, before the runner asks
for a pipeline, and has the pipelines rebuilt when the shape changed. Where no session runs (``kedro
registry list``), the shape comes from the configuration on disk: ``conf/base`` and the environment
``$KEDRO_ENV`` (``local`` when unset).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial, update_wrapper
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines, settings
from kedro.pipeline import Node, Pipeline, pipeline

from cellsynth.crops import group_names
from cellsynth.study import experiment_names
from cellsynth.training.config import check_positive_int

REGISTRY = "cellsynth.pipeline_registry"


@dataclass(frozen=True)
class StudyShape:
    """What the per-fold nodes are built for: ``folds`` namespaces, each with one training node per
    experiment and model, and a mask GAN and a pix2pix training per generative group."""

    folds: int
    groups: tuple[str, ...]
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
        groups = group_names(params["training_scope"], folds, (params.get("subsets") or {}).get("fractions") or ())
        return cls(folds, groups, experiments, tuple((params.get("evaluation") or {}).get("models") or ()))

    @property
    def namespaces(self) -> list[str]:
        return [f"fold_{k}" for k in range(self.folds)]


def group_namespace(group: str) -> str:
    """The namespace of a generative group's nodes: its fold's (``fold_0``), the fold's with the subset under
    it (``fold_0-subset_0.25`` -> ``fold_0.subset_0p25``: Kedro reads a dot as a namespace), or ``all``."""
    fold, _, subset = group.partition("-")
    return f"{fold}.{subset.replace('.', 'p')}" if subset else fold


def group_datasets(name: str, groups: Sequence[str]) -> list[str]:
    """The per-group datasets ``<namespace>.<name>`` of ``groups``, in order (catalog factories store them)."""
    return [f"{group_namespace(group)}.{name}" for group in groups]


def source_dataset(source: str) -> str:
    """The catalog entry of a synthetic source (:func:`cellsynth.study.experiment_source`): a group's GAN pairs
    (``fold_0`` -> ``fold_0.synthetic_pairs``) or a control's (``simcep:fold_0-subset_0.25`` ->
    ``fold_0.subset_0p25.simcep_pairs``)."""
    control, _, group = source.rpartition(":")
    name = {"": "synthetic_pairs", "simcep": "simcep_pairs", "realmasks": "realmask_pairs"}.get(control)
    if name is None:
        raise ValueError(f"unknown synthetic source {source!r}")
    return f"{group_namespace(group)}.{name}"


def bound(function: Callable[..., Any], **keywords: Any) -> Callable[..., Any]:
    """``function`` with ``keywords`` bound (``group="fold_0"``), keeping its name and docstring (for Kedro
    and kedro-viz); a ``partial``, so that parallel runners can pickle it."""
    return update_wrapper(partial(function, **keywords), function)


def group_pipeline(nodes: Sequence[Node], group: str, shared: Collection[str] = ()) -> Pipeline:
    """``nodes`` of one generative group in its namespace (:func:`group_namespace`): their datasets get the
    namespace as prefix (``synthetic_masks`` -> ``fold_0.subset_0p25.synthetic_masks``, catalog factories
    store them), except the ``shared`` ones (what data_prep makes for every group: ``encoded_flows``, ...)
    and the parameters."""
    free = Pipeline(nodes).inputs()
    return pipeline(nodes, namespace=group_namespace(group), inputs={name for name in free if name in shared},
                    parameters={name for name in free if name.startswith("params:")})


class GroupsGathered:
    """A node function that takes ``per_group`` blocks of one input per group first (each block in the order
    of ``groups``: :func:`group_datasets`), then ``function``'s other inputs, and calls ``function`` with each
    block as one mapping ``{group: value}``: the join of per-group nodes. A class rather than a closure, so
    that parallel runners can pickle it."""

    def __init__(self, function: Callable[..., Any], groups: Sequence[str], per_group: int = 1) -> None:
        self.function, self.groups, self.per_group = function, tuple(groups), int(per_group)
        self.__name__, self.__qualname__ = function.__name__, function.__qualname__
        self.__module__, self.__doc__ = function.__module__, function.__doc__

    def __call__(self, *inputs: Any) -> Any:
        n = len(self.groups)
        blocks = [dict(zip(self.groups, inputs[k * n:(k + 1) * n])) for k in range(self.per_group)]
        return self.function(*blocks, *inputs[self.per_group * n:])


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
