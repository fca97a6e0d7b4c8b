"""The study's shape when Kedro builds its pipelines: how many folds, which groups, experiments and models.

Every training is a node of its own, so that a parallel or distributed runner runs trainings side by side
and ``kedro run --namespaces=...`` runs one group of them: the mask GAN and the pix2pix of each generative
group (a fold, a fold's subset, or ``all``) in the namespaces ``mask_gan.<group>`` and
``image_translation.<group>`` (``mask_gan.fold_0``, ``mask_gan.fold_0.subset_0p25``), and each (fold,
experiment, model) of the segmentation study in its fold's namespace (``fold_0``, ``fold_1``, ...). How many
such nodes there are depends on the parameters, but Kedro builds pipelines without them
(``register_pipelines()`` takes no argument). So :class:`StudyShapeHooks` reads the run's parameters
(environment and ``--params`` included) as soon as the session's context exists, before the runner asks
for a pipeline, and has the pipelines rebuilt when the shape changed. Where no session runs (``kedro
registry list``), the shape comes from the configuration on disk: ``conf/base`` and the environment
``$KEDRO_ENV`` (``local`` when unset).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial, update_wrapper
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines, settings
from kedro.pipeline import Pipeline, node, pipeline

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


def group_trainings(function: Callable[..., Any], inputs: Sequence[str], output: str, pipeline_name: str,
                    groups: Sequence[str]) -> Pipeline:
    """One node ``train`` per group calling ``function(*inputs, group=group)``, in the namespace
    ``<pipeline_name>.<group namespace>`` (``mask_gan.fold_1``: ``kedro run --namespaces=mask_gan.fold_1``
    trains that group alone), writing the group's ``<group namespace>.<output>`` (:func:`group_datasets`).

    The trainings get a namespace of their own rather than their fold's: the nodes that join every group's
    models (generation, painting, the training plan) run before the fold's segmentation trainings, and a
    Kedro namespace must not be left and re-entered."""
    return sum((
        pipeline([node(update_wrapper(partial(function, group=group), function), list(inputs), output, name="train")],
                 namespace=f"{pipeline_name}.{group_namespace(group)}",
                 inputs={name for name in inputs if not name.startswith("params:")},
                 outputs={output: dataset},
                 parameters={name for name in inputs if name.startswith("params:")})
        for group, dataset in zip(groups, group_datasets(output, groups))
    ), Pipeline([]))


class GroupsGathered:
    """A node function that takes one input per group first (:func:`group_datasets`), then ``function``'s
    other inputs, and calls ``function`` with the groups' values as one mapping ``{group: value}``: the
    join of per-group training nodes. A class rather than a closure, so that parallel runners can pickle it."""

    def __init__(self, function: Callable[..., Any], groups: Sequence[str]) -> None:
        self.function, self.groups = function, tuple(groups)
        self.__name__, self.__qualname__ = function.__name__, function.__qualname__
        self.__module__, self.__doc__ = function.__module__, function.__doc__

    def __call__(self, *inputs: Any) -> Any:
        per_group, rest = inputs[:len(self.groups)], inputs[len(self.groups):]
        return self.function(dict(zip(self.groups, per_group)), *rest)


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
