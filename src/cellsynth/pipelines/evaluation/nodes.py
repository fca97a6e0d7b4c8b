"""Nodes of the ``evaluation`` pipeline: thin calls into :mod:`cellsynth.study` and :mod:`cellsynth.results`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from tqdm.auto import tqdm

from cellsynth.comparison import mean_table, readable_quality_table
from cellsynth.io import AnnotatedImage
from cellsynth.results import metric_names
from cellsynth.study import EmptyTrainingSet, Experiment, Segmenter, run_experiment, segmenters
from cellsynth.tracking import run_to_log_to

logger = logging.getLogger(__name__)


def train_experiment(
    images: list[AnnotatedImage],
    training_plan: dict[str, Any],
    params: dict[str, Any],
    *synthetic_pairs: list[AnnotatedImage],
    fold: int,
    experiment: str,
    model: str,
) -> list[dict[str, Any]]:
    """Train ``model`` on one (fold, experiment) of the fold's plan for ``repeats`` seeds, score each on the
    fold's test images, and log the model folders to MLflow (``segmentation_models/...``) when a run is
    active in this process. One record per repeat. ``synthetic_pairs``: the one synthetic set the
    experiment trains on (:func:`cellsynth.study.experiment_source`), or none.

    Models are kept in ``evaluation.model_dir/<model>/``, one folder per training stage named by a digest
    of its settings, data and starting point. A finished stage is reused wherever it recurs, so a rerun
    after a crash (or with more experiments) only trains what is missing, and an experiment whose
    synthetic group is empty (``merge`` when no GAN mask passed the filters) reuses ``raw``'s model.
    An experiment whose training data hold no labelled object (synthetic pairs of an under-trained GAN)
    is skipped with a warning: no record.
    """
    segmenter, start = _segmenter(params, model)
    planned = [Experiment.from_dict(e) for e in training_plan["experiments"]]
    chosen = [e for e in planned if e.fold == fold and e.name == experiment]
    if not chosen:
        raise ValueError(f"the training plan has no experiment {experiment!r} of fold {fold}: rerun the "
                         "augmentation pipeline with this run's parameters")
    (planned_experiment,) = chosen
    real = {s.name: s for s in images}
    sources = planned_experiment.synthetic_groups
    if len(sources) != len(synthetic_pairs):
        raise ValueError(f"{experiment} of fold {fold} trains on the synthetic sets {list(sources)}, but its node "
                         f"got {len(synthetic_pairs)}: rebuild the pipelines with this run's parameters")
    synthetic = dict(zip(sources, synthetic_pairs))
    method = params[model]
    records = []
    for repeat in tqdm(range(params["repeats"]), desc=f"{model} {experiment} fold {fold}", unit="repeat"):
        try:
            record = run_experiment(planned_experiment, segmenter, settings=method["settings"],
                                    epochs=method["epochs"], budget_settings=method.get("budget_settings") or {},
                                    augmenter=training_plan["augmenter"], repeat=repeat, real=real,
                                    synthetic=synthetic, folder=Path(params["model_dir"]) / model,
                                    init_from=start, synthetic_share=training_plan.get("synthetic_share"))
        except EmptyTrainingSet as error:
            logger.warning("skipped: %s", error)
            continue
        logger.info("%s %s fold %d repeat %d: test accuracy %.4f (validation %.4f)", model, experiment, fold,
                    repeat, record["accuracy"], record["validation_accuracy"])
        if run_to_log_to() and params["log_models"]:
            mlflow.log_artifacts(record["model_path"], f"segmentation_models/fold_{fold}/{experiment}/"
                                                       f"{model}-r{repeat}")
        records.append(record)
    return records


def _segmenter(params: dict[str, Any], model: str) -> tuple[Segmenter, str | None]:
    """The method named ``model`` and the local weights it starts from, checked against ``evaluation``."""
    available = segmenters()
    if model not in available:
        raise ValueError(f"evaluation.models: unknown model {model!r}; choose from {sorted(available)}")
    if params["repeats"] < 1:
        raise ValueError(f"evaluation.repeats must be >= 1, got {params['repeats']}")
    start = params[model].get("init_from")
    if start is not None and not Path(start).exists():
        raise FileNotFoundError(f"evaluation.{model}.init_from: {start} does not exist (a local model: "
                                f"{'a StarDist model folder' if model == 'stardist' else 'a Cellpose weight file'})")
    return available[model], start


def gather_segmentation_results(*records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of every (fold, experiment, model) training node, in one list."""
    return [record for node_records in records for record in node_records]


def write_study_report(
    results: list[dict[str, Any]],
    structure_comparison: pd.DataFrame,
    gan_filter: dict[str, dict[str, Any]],
    mask_gan_grid: Path,
    translation_grid: Path,
    structure_grid: Path,
    augmentation_preview: Path,
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The report (Table 1 and Figure 6 analogues with the synthetic pairs behind each experiment, the
    generative-quality table, the GAN filter's counts per group, sample grids) and the same accuracies as
    MLflow metrics ``<model>.<experiment>.accuracy[_std]`` and ``...fold_<i>.accuracy``."""
    filter_table = pd.DataFrame.from_dict(gan_filter, orient="index", columns=["generated", "kept", "diversity"])
    filter_table.index.name = "group"
    content = {
        "records": results,
        "quality_table": readable_quality_table(mean_table(structure_comparison)),
        "gan_filter": filter_table,
        "figures": {"mask_gan_samples": mask_gan_grid, "image_translation_samples": translation_grid,
                    "structure_samples": structure_grid, "augmentation_preview": augmentation_preview},
        "title": params["title"],
    }
    metrics = metric_names(results)
    return content, {k: {"value": v, "step": 0} for k, v in metrics.items()}
