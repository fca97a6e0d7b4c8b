"""The study's results: segmentation accuracy aggregated as in the paper, and its MLflow metrics.

One record per trained segmentation model::

    {"model": "stardist", "experiment": "subset_0.625", "fold": 0, "repeat": 1, "accuracy": 0.71}

``accuracy`` is the mean over the IoU thresholds 0.5..0.9 of TP / (TP + FP + FN)
on the fold's test images. As in Tasnadi et al. (2023), repeated trainings
within a fold are averaged first, then the mean and the standard deviation are
taken over the folds, so a fold trained more often does not weigh more.
Standard deviations are sample standard deviations (``ddof = 1``); with a
single fold (or a single repeat, per fold) they are NaN, shown as a bare mean
and not logged to MLflow.

:func:`metric_names` gives the numbers the pipeline logs to MLflow, built from
the same tables that :func:`cellsynth.report.write_report` writes.

The library has no Kedro or MLflow dependency; the pipeline does the logging.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cellsynth.study import EXPERIMENTS

RECORD_KEYS: tuple[str, ...] = ("model", "experiment", "fold", "repeat", "accuracy")
STD_DDOF = 1
KNOWN_MODELS: tuple[str, ...] = ("stardist", "cellpose")
AGGREGATE_COLUMNS: tuple[str, ...] = ("model", "experiment", "mean", "std", "n_folds", "n_repeats", "n_runs")
PER_FOLD_COLUMNS: tuple[str, ...] = ("model", "experiment", "fold", "mean", "std", "n_repeats")

# Names end up in MLflow metric keys and file names: keep them plain. A model
# name must not contain '.', the separator of the metric key's parts.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SUBSET = re.compile(r"subset[_-]?(\d+(?:\.\d*)?|\.\d+)(?:_(raw|merge(?:_[a-z]+)?))?")


@dataclass(frozen=True)
class Run:
    """One validated record: a trained model's accuracy on its fold's test images."""

    model: str
    experiment: str
    fold: int
    repeat: int
    accuracy: float


# ---------------------------------------------------------------------------
# records


def validate_records(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> list[Run]:
    """Check the records and return them as :class:`Run` objects.

    Parameters
    ----------
    records
        Dicts with the keys of :data:`RECORD_KEYS` (extra keys are ignored),
        or a DataFrame with those columns.

    Raises
    ------
    ValueError
        Listing every bad record by position and content: not a mapping, a
        missing key, a model/experiment name that is empty or has characters
        other than letters, digits, ``_``, ``-`` (and ``.`` for experiments),
        a fold/repeat that is not an integer >= 0, an accuracy that is not a
        finite number in [0, 1], the same (model, experiment, fold, repeat)
        twice; or no records at all.
    """
    if isinstance(records, pd.DataFrame):
        records = records.to_dict("records")
    problems: list[str] = []
    runs: list[Run] = []
    first_seen: dict[tuple[str, str, int, int], int] = {}
    count = 0
    for index, record in enumerate(records):
        count += 1
        where = f"record {index} ({_short(record)})"
        if not isinstance(record, Mapping):
            problems.append(f"{where}: is a {type(record).__name__}, not a dict")
            continue
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            problems.append(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")
            continue
        own = _record_problems(record)
        if own:
            problems += [f"{where}: {p}" for p in own]
            continue
        run = Run(record["model"], record["experiment"], int(record["fold"]), int(record["repeat"]),
                  float(record["accuracy"]))
        key = (run.model, run.experiment, run.fold, run.repeat)
        if key in first_seen:
            problems.append(f"{where}: duplicates record {first_seen[key]} (same model, experiment, fold and repeat)")
            continue
        first_seen[key] = index
        runs.append(run)
    if count == 0:
        raise ValueError("no accuracy records: expected at least one dict with keys " + ", ".join(RECORD_KEYS))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError(f"{len(problems)} bad accuracy record(s):\n  " + "\n  ".join(shown))
    return runs


def _record_problems(record: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, pattern in (("model", _MODEL_NAME), ("experiment", _EXPERIMENT_NAME)):
        value = record[key]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            allowed = "'_', '-'" + (", '.'" if key == "experiment" else "")
            problems.append(f"key {key!r} = {value!r} is not a name of letters, digits, {allowed}")
    for key in ("fold", "repeat"):
        value = record[key]
        # bool is an Integral too, but True as a fold number is a bug upstream
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            problems.append(f"key {key!r} = {value!r} is not an integer >= 0")
    value = record["accuracy"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        problems.append(f"key 'accuracy' = {value!r} is not a number")
    elif not math.isfinite(float(value)):
        problems.append(f"key 'accuracy' = {value!r} is not finite")
    elif not 0.0 <= float(value) <= 1.0:
        problems.append(f"key 'accuracy' = {value!r} is outside [0, 1]")
    return problems


def _short(record: object, limit: int = 160) -> str:
    text = repr(record)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# ordering


def experiment_sort_key(name: str) -> tuple[int, float, int, str]:
    """Sort key: raw, merge, pretrain, then ``subset_<fraction>[_raw|_merge|_merge_<control>]`` by
    decreasing fraction (``_raw``, then ``_merge``, then its controls), then other experiments by name."""
    if name in EXPERIMENTS:
        return (EXPERIMENTS.index(name), 0.0, 0, name)
    match = _SUBSET.fullmatch(name)
    if match:
        rank = {"raw": 0, "merge": 1}.get(match.group(2), 2)
        return (len(EXPERIMENTS), -float(match.group(1)), rank, name)
    return (len(EXPERIMENTS) + 1, 0.0, 0, name)


def model_sort_key(name: str) -> tuple[int, str]:
    """Sort key: StarDist, Cellpose, then other models by name."""
    return (KNOWN_MODELS.index(name) if name in KNOWN_MODELS else len(KNOWN_MODELS), name)


def sort_experiments(names: Iterable[str]) -> list[str]:
    """Distinct experiment names in report order (see :func:`experiment_sort_key`)."""
    return sorted(set(names), key=experiment_sort_key)


def sort_models(names: Iterable[str]) -> list[str]:
    """Distinct model names in report order (see :func:`model_sort_key`)."""
    return sorted(set(names), key=model_sort_key)


def _sort_table(table: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    keys = table.apply(
        lambda row: (model_sort_key(row["model"]), experiment_sort_key(row["experiment"]), *(row[c] for c in extra)),
        axis=1,
    )
    return table.iloc[sorted(range(len(table)), key=lambda i: keys.iloc[i])].reset_index(drop=True)


# ---------------------------------------------------------------------------
# aggregation


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than 2 values).

    ``math.fsum`` makes the result independent of the order of the records,
    so the report and MLflow agree to the last bit whatever order they came in.
    """
    n = len(values)
    mean = math.fsum(values) / n
    if n <= STD_DDOF:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - STD_DDOF))


def _group(runs: Sequence[Run]) -> dict[tuple[str, str], dict[int, list[float]]]:
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for run in runs:
        groups.setdefault((run.model, run.experiment), {}).setdefault(run.fold, []).append(run.accuracy)
    return groups


def per_fold(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (model, experiment, fold): mean and std over the repeats.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, experiment, fold, mean, std, n_repeats``, rows in
        report order (models, experiments, folds ascending).

    Raises
    ------
    ValueError
        From :func:`validate_records`.
    """
    rows = []
    for (model, experiment), folds in _group(validate_records(records)).items():
        for fold, values in folds.items():
            mean, std = _mean_std(values)
            rows.append({"model": model, "experiment": experiment, "fold": fold, "mean": mean, "std": std,
                         "n_repeats": len(values)})
    return _sort_table(pd.DataFrame(rows, columns=list(PER_FOLD_COLUMNS)), extra=("fold",))


def aggregate(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (model, experiment) as in the paper.

    The repeats within a fold are averaged first; ``mean`` and ``std`` are then
    taken over the folds' means.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, experiment, mean, std, n_folds, n_repeats, n_runs``:
        ``n_repeats`` is the smallest number of repeats of any fold, ``n_runs``
        the number of trained models behind the row. Rows in report order.

    Raises
    ------
    ValueError
        From :func:`validate_records`.
    """
    return aggregate_folds(per_fold(records))


def aggregate_folds(folds: pd.DataFrame) -> pd.DataFrame:
    """The aggregated table from the per-fold table (one code path for report and MLflow)."""
    rows = []
    for (model, experiment), group in folds.groupby(["model", "experiment"], sort=False):
        mean, std = _mean_std([float(v) for v in group["mean"]])
        rows.append({
            "model": model, "experiment": experiment, "mean": mean, "std": std, "n_folds": len(group),
            "n_repeats": int(group["n_repeats"].min()), "n_runs": int(group["n_repeats"].sum()),
        })
    return _sort_table(pd.DataFrame(rows, columns=list(AGGREGATE_COLUMNS)))


def reference_experiment(name: str) -> str | None:
    """The experiment without synthetic pairs that ``name`` is compared with: ``raw``, or for a subset
    experiment ``subset_<fraction>_raw`` (same real images); None for those two themselves."""
    match = _SUBSET.fullmatch(name)
    if match:
        reference = f"subset_{match.group(1)}_raw"
        return None if name == reference else reference
    return None if name == "raw" else "raw"


def training_share(name: str) -> tuple[float, str]:
    """Where an experiment sits in the paper's Figure 6: the share of the fold's training images it
    trained on, and its variant (``raw``, ``merge``, ``pretrain``, ``merge_<control>``, or the name itself
    for an experiment of another kind, at share 1)."""
    match = _SUBSET.fullmatch(name)
    if match:
        return float(match.group(1)), match.group(2) or "raw"
    return 1.0, name


def differences(folds: pd.DataFrame) -> pd.DataFrame:
    """Each experiment's gain over its :func:`reference_experiment`, paired by fold.

    The difference is taken within each fold (same test images) and then averaged over the folds
    both experiments ran in, so the spread is that of the gain, not of the folds' difficulty.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, experiment, reference, mean, std, n_folds``, rows in report order.
    """
    require_columns(folds, ("model", "experiment", "fold", "mean"), "per-fold table")
    by_key = {key: dict(zip(group["fold"], group["mean"]))
              for key, group in folds.groupby(["model", "experiment"], sort=False)}
    rows = []
    for (model, experiment), values in by_key.items():
        reference = reference_experiment(experiment)
        baseline = by_key.get((model, reference))
        shared = sorted(set(values) & set(baseline or {}))
        if not shared:
            continue
        mean, std = _mean_std([float(values[f]) - float(baseline[f]) for f in shared])
        rows.append({"model": model, "experiment": experiment, "reference": reference, "mean": mean, "std": std,
                     "n_folds": len(shared)})
    return _sort_table(pd.DataFrame(rows, columns=["model", "experiment", "reference", "mean", "std", "n_folds"]))


def require_columns(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, table.columns))}")


# ---------------------------------------------------------------------------
# MLflow metrics


def metric_names(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> dict[str, float]:
    """The MLflow metrics of the study, by readable name.

    ``<model>.<experiment>.accuracy`` (mean over folds),
    ``<model>.<experiment>.accuracy_std`` (std over folds, left out when NaN)
    and ``<model>.<experiment>.fold_<fold>.accuracy`` (mean over that fold's
    repeats). They are exactly the values of ``accuracy.csv`` and
    ``accuracy_per_fold.csv`` written by :func:`cellsynth.report.write_report`.
    """
    folds = per_fold(records)
    return metrics_from_tables(aggregate_folds(folds), folds)


def metrics_from_tables(aggregated: pd.DataFrame, folds: pd.DataFrame) -> dict[str, float]:
    """:func:`metric_names` from the aggregated and per-fold tables (e.g. read back from CSV)."""
    require_columns(aggregated, ("model", "experiment", "mean", "std"), "aggregated table")
    require_columns(folds, ("model", "experiment", "fold", "mean"), "per-fold table")
    metrics: dict[str, float] = {}

    def put(name: str, value: float) -> None:
        # e.g. experiment "x.fold_0" would collide with fold 0 of experiment "x"
        if name in metrics:
            raise ValueError(f"metric name {name!r} is produced twice; rename the experiment")
        metrics[name] = value

    for row in aggregated.itertuples(index=False):
        prefix = f"{row.model}.{row.experiment}"
        put(f"{prefix}.accuracy", float(row.mean))
        if math.isfinite(float(row.std)):
            put(f"{prefix}.accuracy_std", float(row.std))
    for row in folds.itertuples(index=False):
        put(f"{row.model}.{row.experiment}.fold_{int(row.fold)}.accuracy", float(row.mean))
    return metrics


# ---------------------------------------------------------------------------
# synthetic data behind each experiment


def synthetic_pairs(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """The synthetic pairs every (experiment, fold) trained on, from records that count them.

    Records carry ``synthetic_pairs`` (count) and ``synthetic_groups`` (the synthetic groups the
    experiment's plan names, :func:`cellsynth.study.run_experiment`); records without them are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``experiment, fold, synthetic_pairs`` (the fewest of any model or repeat) and ``empty``
        (the plan names synthetic groups but not one pair was trained on: no GAN mask passed the
        filters, so the experiment repeats ``raw``), rows in report order.
    """
    rows = {}
    for record in records.to_dict("records") if isinstance(records, pd.DataFrame) else records:
        count = record.get("synthetic_pairs")
        if count is None or (isinstance(count, float) and math.isnan(count)):
            continue
        key = (record["experiment"], int(record["fold"]))
        planned = len(record.get("synthetic_groups") or ()) > 0
        fewest, was_planned = rows.get(key, (int(count), planned))
        rows[key] = (min(fewest, int(count)), was_planned or planned)
    table = pd.DataFrame([{"experiment": e, "fold": f, "synthetic_pairs": n, "empty": planned and n == 0}
                          for (e, f), (n, planned) in rows.items()],
                         columns=["experiment", "fold", "synthetic_pairs", "empty"])
    order = sorted(range(len(table)), key=lambda i: (experiment_sort_key(table["experiment"].iloc[i]),
                                                      table["fold"].iloc[i]))
    return table.iloc[order].reset_index(drop=True)


def accuracy_by_iou(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Test accuracy per IoU threshold, mean over every fold and repeat, from records that carry
    ``accuracy_by_iou`` (:func:`cellsynth.study.run_experiment`): whether synthetic pairs change how many
    nuclei a model finds (IoU 0.5) or how well it outlines them (IoU 0.9).

    Returns
    -------
    pandas.DataFrame
        Columns ``model, experiment`` and one per threshold (``"0.5"``, ...), rows in report order;
        no rows when no record carries the breakdown.
    """
    rows: dict[tuple[str, str], list[Mapping[str, float]]] = {}
    for record in records.to_dict("records") if isinstance(records, pd.DataFrame) else records:
        by_iou = record.get("accuracy_by_iou")
        if isinstance(by_iou, Mapping) and by_iou:
            rows.setdefault((record["model"], record["experiment"]), []).append(by_iou)
    thresholds = sorted({t for runs in rows.values() for run in runs for t in run}, key=float)
    table = pd.DataFrame([{"model": model, "experiment": experiment,
                           **{t: _mean_std([run[t] for run in runs if t in run])[0] for t in thresholds}}
                          for (model, experiment), runs in rows.items()],
                         columns=["model", "experiment", *thresholds])
    return _sort_table(table)


# ---------------------------------------------------------------------------
# tables


def accuracy_table(aggregated: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The paper's Table 1: experiments as rows, models as columns, ``"mean ± std"`` cells.

    A NaN std (one fold) gives the bare mean; a model without that experiment
    gives ``"–"``. See :func:`accuracy_values` for the numbers.
    """
    means, stds = accuracy_values(aggregated, "mean"), accuracy_values(aggregated, "std")

    def cell(mean: float, std: float) -> str:
        if math.isnan(mean):
            return "–"
        return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    table = pd.DataFrame(
        [[cell(means.at[e, m], stds.at[e, m]) for m in means.columns] for e in means.index],
        index=means.index, columns=means.columns, dtype=object,
    )
    return table


def difference_table(folds: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Table 1's gain columns: experiments as rows, ``"<model> − reference"`` columns, ``"+mean ± std"``
    cells of :func:`differences` (empty where an experiment has no reference)."""
    gains = differences(folds)
    columns = {model: f"{model} gain" for model in sort_models(folds["model"])}
    table = pd.DataFrame("", index=sort_experiments(folds["experiment"]), columns=list(columns.values()),
                         dtype=object)
    for row in gains.itertuples(index=False):
        text = f"{row.mean:+.{digits}f}" + ("" if math.isnan(row.std) else f" ± {row.std:.{digits}f}")
        table.at[row.experiment, columns[row.model]] = f"{text} vs {row.reference}"
    table.index.name = "experiment"
    return table


def accuracy_values(aggregated: pd.DataFrame, statistic: str = "mean") -> pd.DataFrame:
    """One column of the aggregated table as experiments x models floats (NaN where not run).

    ``statistic`` is any numeric column of :func:`aggregate`: ``mean``, ``std``, ``n_folds``, ...
    """
    require_columns(aggregated, ("model", "experiment", statistic), "aggregated table")
    if aggregated.empty:
        raise ValueError("aggregated table is empty")
    values = aggregated.pivot(index="experiment", columns="model", values=statistic).astype(float)
    values = values.loc[sort_experiments(values.index), sort_models(values.columns)]
    values.index.name, values.columns.name = "experiment", None
    return values
