"""The study's report: Table 1 and Figure 6 of the paper, the quality tables, one HTML page.

:func:`write_report` writes the tables of :mod:`cellsynth.results` (accuracy per
experiment and per fold), the synthetic pairs each experiment trained on, the
quality and GAN-filter tables and the figures into one folder, atomically.
:func:`report_metrics` reads the MLflow metrics back from a written report, so
"report == MLflow" is a dict comparison with :func:`cellsynth.results.metric_names`.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cellsynth.io import staged_directory
from cellsynth.results import (
    accuracy_by_iou,
    accuracy_table,
    aggregate_folds,
    difference_table,
    metrics_from_tables,
    per_fold,
    require_columns,
    sort_experiments,
    sort_models,
    synthetic_pairs,
    training_share,
)

# pandas < 3 parses floats with a fast parser that can be one unit in the last
# place off; pandas 3 parses exactly by default and deprecates the option.
_ROUND_TRIP: dict[str, str] = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
_FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
# Files the report itself writes; user figures may not take these names.
_RESERVED_FILES = frozenset(
    {"accuracy.csv", "accuracy_per_fold.csv", "accuracy.md", "accuracy.png", "training_size.png", "quality.csv",
     "quality.md", "gan_filter.csv", "accuracy_by_iou.csv", "accuracy_by_iou.md", "index.html"}
)
IOU_CAPTION = ("Test accuracy TP / (TP + FP + FN) at each IoU threshold, mean over every fold and repeat (Table 1 is "
               "their mean). A change at 0.5 is in finding nuclei; a change only at 0.8-0.9 is in their outlines.")
# Marks an experiment that was planned with synthetic pairs but trained on none in some fold.
EMPTY_MARK = "†"


# ---------------------------------------------------------------------------
# reading a written report back


def read_accuracy_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``accuracy.csv`` or ``accuracy_per_fold.csv`` back exactly.

    Names stay strings (an experiment called ``1`` or ``NA`` is not turned
    into a number or NaN) and floats are parsed exactly (pandas < 3 needs the
    round-trip parser for that).
    """
    header = pd.read_csv(path, nrows=0).columns
    numeric = [c for c in header if c not in ("model", "experiment")]
    return pd.read_csv(
        path,
        dtype={"model": str, "experiment": str},
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in numeric},
        **_ROUND_TRIP,
    )


def report_metrics(folder: str | os.PathLike) -> dict[str, float]:
    """The MLflow metrics as a written report states them (compare with :func:`~cellsynth.results.metric_names`)."""
    folder = Path(folder)
    return metrics_from_tables(read_accuracy_csv(folder / "accuracy.csv"),
                               read_accuracy_csv(folder / "accuracy_per_fold.csv"))


# ---------------------------------------------------------------------------
# tables


def _mark_empty_comparisons(table: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Table 1 with a ``synthetic pairs`` column (per fold) and :data:`EMPTY_MARK` on experiments
    that trained on no synthetic pair in some fold; the footnote that explains the mark."""
    if pairs.empty:
        return table, ""
    table = table.copy()
    by_experiment = {e: group for e, group in pairs.groupby("experiment", sort=False)}
    table["synthetic pairs"] = [" / ".join(str(n) for n in by_experiment[e]["synthetic_pairs"])
                                if e in by_experiment else "" for e in table.index]
    empty = {e: [int(f) for f in group.loc[group["empty"], "fold"]] for e, group in by_experiment.items()
             if group["empty"].any()}
    table.index = [f"{e} {EMPTY_MARK}" if e in empty else e for e in table.index]
    table.index.name = "experiment"
    if not empty:
        return table, " Synthetic pairs: the count each experiment trained on, per fold."
    where = "; ".join(f"{e}: fold(s) {', '.join(map(str, folds))}" for e, folds in empty.items())
    return table, (f" Synthetic pairs: the count each experiment trained on, per fold. {EMPTY_MARK} Planned with "
                   f"synthetic pairs but trained on none ({where}): no GAN mask passed the filters, so the "
                   "model is raw's and the comparison is empty.")


def to_markdown(table: pd.DataFrame, index: bool = True, float_format: str | None = None) -> str:
    """A GitHub-flavoured Markdown pipe table (no dependency on ``tabulate``).

    Parameters
    ----------
    table
        Any DataFrame; MultiIndex labels are joined with ``" / "``.
    index
        Whether to write the index as the first column.
    float_format
        Format spec for floats (e.g. ``".4g"``); ``None`` writes them in full.
        NaN and None are written as empty cells.

    Returns
    -------
    str
        Header row, alignment row (numeric columns right-aligned) and one row
        per table row, each ``| a | b |``, ending with a newline. ``|`` in
        cells is escaped and newlines become ``<br>``.
    """
    headers: list[str] = []
    columns: list[list[str]] = []
    right: list[bool] = []
    if index:
        headers.append(_label(table.index.names if table.index.nlevels > 1 else table.index.name))
        columns.append([_cell(v, float_format) for v in table.index])
        right.append(False)
    for position, label in enumerate(table.columns):
        series = table.iloc[:, position]
        headers.append(_label(label))
        columns.append([_cell(v, float_format) for v in series])
        right.append(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))
    if not headers:
        raise ValueError("to_markdown: a table without columns (and without its index) has nothing to show")
    headers = [_escape(h) for h in headers]
    columns = [[_escape(c) for c in column] for column in columns]
    # at least three hyphens in every rule cell, as some renderers require, plus the colon
    widths = [max([4 if r else 3, len(h), *(len(c) for c in column)]) for h, column, r in zip(headers, columns, right)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right)) + " |"
    rows = [line([column[i] for column in columns]) for i in range(len(table))]
    return "\n".join([line(headers), rule, *rows]) + "\n"


def _label(label: object) -> str:
    if isinstance(label, (tuple, list)) or (hasattr(label, "__iter__") and not isinstance(label, str)):
        return " / ".join("" if part is None else str(part) for part in label)
    return "" if label is None else str(label)


def _cell(value: object, float_format: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, tuple):
        return _label(value)
    if isinstance(value, (float, np.floating)) and float_format is not None:
        return format(float(value), float_format)
    return str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>")


# ---------------------------------------------------------------------------
# figure


def accuracy_figure(aggregated: pd.DataFrame, folds: pd.DataFrame | None = None, title: str | None = None) -> Figure:
    """The paper's Figure 6: a panel per model, a bar per experiment.

    Parameters
    ----------
    aggregated
        :func:`~cellsynth.results.aggregate`'s table: bar height = ``mean``, error bar = ``std``
        over folds (none where NaN).
    folds
        :func:`~cellsynth.results.per_fold`'s table, optional: each fold's mean as a dot on its bar.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        The caller closes it (``plt.close(figure)``).
    """
    require_columns(aggregated, ("model", "experiment", "mean", "std"), "aggregated table")
    if aggregated.empty:
        raise ValueError("aggregated table is empty: nothing to plot")
    if folds is not None:
        require_columns(folds, ("model", "experiment", "fold", "mean"), "per-fold table")
    models = sort_models(aggregated["model"])
    experiments = sort_experiments(aggregated["experiment"])
    # one colour per experiment across panels, so the same experiment is easy to find
    palette = plt.get_cmap("tab10" if len(experiments) <= 10 else "tab20")
    colours = {e: palette(i % palette.N) for i, e in enumerate(experiments)}
    width = max(3.0, 0.55 * len(experiments) + 1.2)
    figure, axes = plt.subplots(1, len(models), figsize=(width * len(models), 4.2), sharey=True, squeeze=False)
    for axis, model in zip(axes[0], models):
        rows = aggregated[aggregated["model"] == model].set_index("experiment")
        names = [e for e in experiments if e in rows.index]
        x = np.arange(len(names))
        means = np.array([float(rows.at[e, "mean"]) for e in names])
        stds = np.array([float(rows.at[e, "std"]) for e in names])
        axis.bar(x, means, width=0.7, color=[colours[e] for e in names], edgecolor="black", linewidth=0.6, zorder=2)
        has_std = np.isfinite(stds)
        if has_std.any():
            axis.errorbar(x[has_std], means[has_std], yerr=stds[has_std], fmt="none", ecolor="black", capsize=3,
                          linewidth=1, zorder=3)
        if folds is not None:
            model_folds = folds[folds["model"] == model]
            for position, experiment in zip(x, names):
                fold_rows = model_folds.loc[model_folds["experiment"] == experiment]
                values = fold_rows.sort_values("fold")["mean"].to_numpy(float)
                # deterministic spread, so dots of equal folds do not hide each other
                offsets = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(len(values))
                axis.scatter(position + offsets, values, s=14, color="white", edgecolor="black", linewidth=0.8,
                             zorder=4)
        if "raw" in names:
            axis.axhline(means[names.index("raw")], color="0.4", linestyle="--", linewidth=0.8, zorder=1)
        axis.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
        axis.set_title(model)
        axis.set_ylim(0.0, 1.05)
        axis.grid(axis="y", color="0.9", zorder=0)
    axes[0, 0].set_ylabel("accuracy (mean over IoU 0.5–0.9)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


# What each variant of an experiment is called in the training-size figure, in legend order.
_VARIANT_LABELS = {
    "raw": "real images only",
    "merge": "real + GAN pairs",
    "pretrain": "GAN pairs, then real (fine-tune)",
    "merge_simcep": "real + SIMCEP pairs (control)",
    "merge_realmasks": "real + images of the real masks (control)",
}


def training_size_figure(aggregated: pd.DataFrame, title: str | None = None) -> Figure:
    """The paper's Figure 6 as it is drawn there: accuracy against the share of each fold's training
    images, one line per variant (:func:`~cellsynth.results.training_share`), a panel per model.

    Parameters
    ----------
    aggregated
        :func:`~cellsynth.results.aggregate`'s table; points = ``mean``, error bars = ``std`` over folds.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        The caller closes it.
    """
    require_columns(aggregated, ("model", "experiment", "mean", "std"), "aggregated table")
    if aggregated.empty:
        raise ValueError("aggregated table is empty: nothing to plot")
    placed = [training_share(name) for name in aggregated["experiment"]]
    table = aggregated.assign(share=[share for share, _ in placed], variant=[variant for _, variant in placed])
    variants = sorted(set(table["variant"]), key=lambda v: (list(_VARIANT_LABELS).index(v)
                                                            if v in _VARIANT_LABELS else len(_VARIANT_LABELS), v))
    shares = sorted(set(table["share"]))
    # a small sideways offset per variant, so that error bars at one share do not hide each other
    span = 0.02 * (max(shares) - min(shares) or 1.0)
    offsets = {v: (i - (len(variants) - 1) / 2) * span for i, v in enumerate(variants)}
    models = sort_models(table["model"])
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), sharey=True, squeeze=False)
    palette = plt.get_cmap("tab10")
    for axis, model in zip(axes[0], models):
        for i, variant in enumerate(variants):
            rows = table[(table["model"] == model) & (table["variant"] == variant)].sort_values("share")
            if rows.empty:
                continue
            x = rows["share"].to_numpy(float) + offsets[variant]
            std = rows["std"].to_numpy(float)
            axis.errorbar(x, rows["mean"].to_numpy(float), yerr=np.where(np.isfinite(std), std, 0.0),
                          marker="o", markersize=5, capsize=3, linewidth=1.2, color=palette(i % palette.N),
                          linestyle="-" if len(rows) > 1 else "none", label=_VARIANT_LABELS.get(variant, variant))
        axis.set_xticks(shares, [f"{s:.0%}" for s in shares])
        axis.set_xlabel("share of the fold's training images")
        axis.set_title(model)
        axis.grid(color="0.9")
    # the panels share a y range fitted to the error bars (to the next 0.1), so that gains of a few
    # hundredths stay visible; one legend lists the variants of every panel
    spread = table["std"].where(np.isfinite(table["std"]), 0.0)
    low, high = (table["mean"] - spread).min(), (table["mean"] + spread).max()
    axes[0, 0].set_ylim(max(0.0, np.floor(low * 10) / 10 - 0.05), min(1.05, np.ceil(high * 10) / 10 + 0.05))
    axes[0, 0].set_ylabel("accuracy (mean over IoU 0.5–0.9)")
    legend = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    axes[0, -1].legend(list(legend.values()), list(legend), fontsize=7, loc="best")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------
# report


def write_report(
    folder: str | os.PathLike,
    records: Iterable[Mapping[str, Any]] | pd.DataFrame,
    quality_table: pd.DataFrame | None = None,
    figures: Mapping[str, Figure] | Mapping[str, str | os.PathLike] | None = None,
    title: str = "cellsynth: segmentation with synthetic training data",
    extra_sections: Mapping[str, str] | None = None,
    gan_filter: pd.DataFrame | None = None,
    *,
    generated: datetime | None = None,
) -> dict[str, Path]:
    """Write the study's report into ``folder``, replacing any previous one as a whole.

    Files
    -----
    ``accuracy.csv``
        :func:`~cellsynth.results.aggregate`, floats in full precision (read with :func:`read_accuracy_csv`).
    ``accuracy_per_fold.csv``
        :func:`~cellsynth.results.per_fold`.
    ``accuracy.md``
        :func:`~cellsynth.results.accuracy_table` as Markdown, with a caption; when the records count their synthetic
        pairs (:func:`~cellsynth.results.synthetic_pairs`), a column of those counts per fold, and experiments that
        trained on none although planned with them marked :data:`EMPTY_MARK` and footnoted.
    ``accuracy.png``
        :func:`accuracy_figure`.
    ``training_size.png``
        :func:`training_size_figure`, when the study has subset experiments.
    ``accuracy_by_iou.csv``, ``accuracy_by_iou.md``
        :func:`~cellsynth.results.accuracy_by_iou`, when the records carry it (also a section of the page).
    ``quality.csv``, ``quality.md``
        ``quality_table`` with its index (FID/KID, layout distances, ...), when given.
    ``gan_filter.csv``
        ``gan_filter`` (per group: masks generated and kept by the filters), when given.
    ``<name>.png`` (or ``.jpg``/``.svg``)
        Each of ``figures``: a matplotlib figure saved as PNG (not closed:
        the caller owns it), or an image file copied.
    ``index.html``
        One self-contained page (images as base64 data URIs, inline CSS, no
        scripts, no external resources): title, date, accuracy table, bar
        chart, per-fold values, quality table, figures, ``extra_sections``
        (title -> plain text, shown as preformatted-wrapped text).

    Everything is written into a temporary folder beside ``folder`` that
    replaces ``folder`` only when complete: on any error the previous report
    is left as it was and no partial folder remains.

    Parameters
    ----------
    generated
        Time stamp shown in the page (default: now, UTC).

    Returns
    -------
    dict[str, Path]
        File name -> final path, for every file written.

    Raises
    ------
    ValueError
        Bad records (see :func:`~cellsynth.results.validate_records`), a figure name that is not
        a plain file stem or clashes with the report's own files, an image file
        of another type than PNG/JPEG/SVG.
    FileNotFoundError
        A figure path that does not exist.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"report folder {folder} exists and is not a folder")
    records = list(records) if not isinstance(records, pd.DataFrame) else records
    # validate everything before writing anything
    folds = per_fold(records)
    aggregated = aggregate_folds(folds)
    metrics_from_tables(aggregated, folds)  # the names MLflow will get must be unique
    figure_files = _figure_files(figures or {})
    generated = generated or datetime.now(timezone.utc)

    charts: list[tuple[str, Figure]] = []
    written: list[str] = []
    try:
        with staged_directory(folder) as staging:
            def save_text(name: str, text: str) -> None:
                (staging / name).write_text(text, encoding="utf-8")
                written.append(name)

            aggregated.to_csv(staging / "accuracy.csv", index=False)
            folds.to_csv(staging / "accuracy_per_fold.csv", index=False)
            written += ["accuracy.csv", "accuracy_per_fold.csv"]
            table, footnote = _mark_empty_comparisons(accuracy_table(aggregated).join(difference_table(folds)),
                                                      synthetic_pairs(records))
            caption = _accuracy_caption(aggregated, folds) + footnote
            save_text("accuracy.md", to_markdown(table) + "\n" + caption + "\n")

            charts = [("accuracy.png", accuracy_figure(aggregated, folds))]
            if any(training_share(name)[0] < 1.0 for name in aggregated["experiment"]):
                charts.append(("training_size.png", training_size_figure(aggregated)))
            for file_name, chart in charts:
                chart.savefig(staging / file_name, dpi=150, bbox_inches="tight")
                written.append(file_name)

            by_iou = accuracy_by_iou(records)
            if len(by_iou):
                by_iou.to_csv(staging / "accuracy_by_iou.csv", index=False)
                written.append("accuracy_by_iou.csv")
                iou_table = to_markdown(by_iou.set_index(["model", "experiment"]), float_format=".3f")
                iou_text = iou_table + "\n" + IOU_CAPTION
                save_text("accuracy_by_iou.md", iou_text + "\n")
                extra_sections = {"Accuracy per IoU threshold": iou_text, **(extra_sections or {})}
            if quality_table is not None:
                quality_table.to_csv(staging / "quality.csv", index=True)
                written.append("quality.csv")
                save_text("quality.md", to_markdown(quality_table, float_format=".4g"))
            if gan_filter is not None:
                gan_filter.to_csv(staging / "gan_filter.csv", index=True)
                written.append("gan_filter.csv")

            images: list[tuple[str, str]] = []
            for name, (file_name, source) in figure_files.items():
                target = staging / file_name
                if isinstance(source, Path):
                    shutil.copyfile(source, target)
                else:
                    source.savefig(target, format="png", dpi=120, bbox_inches="tight")
                written.append(file_name)
                images.append((name, file_name))

            page = _html_page(
                title=title, generated=generated, staging=staging, table=table, caption=caption,
                folds=folds, quality_table=quality_table, gan_filter=gan_filter, images=images,
                extra_sections=extra_sections or {},
            )
            save_text("index.html", page)
    finally:
        for _, chart in charts:
            plt.close(chart)
    return {name: folder / name for name in written}


def _figure_files(figures: Mapping[str, Any]) -> dict[str, tuple[str, Path | Any]]:
    """Figure name -> (file name in the report, source path or figure), checked."""
    files: dict[str, tuple[str, Path | Any]] = {}
    taken = {name.lower() for name in _RESERVED_FILES}
    for name, value in figures.items():
        if not isinstance(name, str) or not _FIGURE_NAME.fullmatch(name):
            raise ValueError(f"figure name {name!r} must be a file stem of letters, digits, '_', '-', '.'")
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(f"figure {name!r}: image file {path} does not exist")
            suffix = path.suffix.lower()
            if suffix not in _IMAGE_TYPES:
                raise ValueError(f"figure {name!r}: {path} is not a {'/'.join(_IMAGE_TYPES)} image")
            source: Path | Any = path
        elif hasattr(value, "savefig"):
            suffix, source = ".png", value
        else:
            raise ValueError(f"figure {name!r} is a {type(value).__name__}, not a matplotlib figure or an image path")
        file_name = f"{name}{suffix}"
        # lower case: file names must not clash on case-insensitive file systems either
        if file_name.lower() in taken:
            raise ValueError(f"figure {name!r}: file name {file_name} is already used by the report")
        taken.add(file_name.lower())
        files[name] = (file_name, source)
    return files


def _accuracy_caption(aggregated: pd.DataFrame, folds: pd.DataFrame) -> str:
    n_folds = sorted(set(aggregated["n_folds"].astype(int)))
    repeats = sorted(set(folds["n_repeats"].astype(int)))
    return (
        "Accuracy = mean over IoU thresholds 0.5–0.9 of TP / (TP + FP + FN) on each fold's test images. "
        "Repeats within a fold are averaged first; cells show mean ± sample standard deviation over "
        f"{_count(n_folds)} fold(s), {_count(repeats)} repeat(s) per fold. A gain is the difference to the "
        "experiment without synthetic pairs on the same real images, taken within each fold, then mean ± "
        "standard deviation over the folds."
    )


def _count(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 1.2em 0; } figcaption { color: #555; font-size: 0.9em; }
.caption { color: #555; font-size: 0.9em; max-width: 60em; } .text { white-space: pre-wrap; }
"""


def _html_page(
    *,
    title: str,
    generated: datetime,
    staging: Path,
    table: pd.DataFrame,
    caption: str,
    folds: pd.DataFrame,
    quality_table: pd.DataFrame | None,
    gan_filter: pd.DataFrame | None,
    images: Sequence[tuple[str, str]],
    extra_sections: Mapping[str, str],
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">Generated {esc(generated.isoformat(timespec="seconds"))}; '
        f"{int(folds['n_repeats'].sum())} trained segmentation models.</p>",
        "<h2>Segmentation accuracy</h2>",
        table.reset_index().to_html(border=0, index=False),  # one header row, "experiment" included
        f'<p class="caption">{esc(caption)}</p>',
        _html_image(staging / "accuracy.png", "Accuracy per experiment: bars = mean over folds, "
                    "error bars = standard deviation over folds, dots = folds; dashed line = raw."),
        *([_html_image(staging / "training_size.png", "Accuracy against the share of each fold's training images, "
                       "with and without synthetic pairs (the paper's Figure 6): points = mean over folds, "
                       "error bars = standard deviation over folds.")]
          if (staging / "training_size.png").is_file() else []),
        "<details><summary>Per-fold values</summary>",
        folds.to_html(border=0, index=False, float_format=lambda v: f"{v:.4f}", na_rep=""),
        "</details>",
    ]
    if quality_table is not None:
        parts += ["<h2>Synthetic data quality</h2>",
                  quality_table.to_html(border=0, float_format=lambda v: f"{v:.4g}", na_rep="")]
    if gan_filter is not None:
        parts += ["<h2>Mask GAN filter</h2>",
                  gan_filter.to_html(border=0, float_format=lambda v: f"{v:.3g}", na_rep=""),
                  '<p class="caption">Masks generated per group and kept by the filters (mask_gan.generation: '
                  "min_objects, max_consistency_error); only kept masks become synthetic pairs.</p>"]
    if images:
        parts.append("<h2>Figures</h2>")
        parts += [_html_image(staging / file_name, name.replace("_", " ")) for name, file_name in images]
    for heading, text in extra_sections.items():
        parts += [f"<h2>{esc(str(heading))}</h2>", f'<div class="text">{esc(str(text))}</div>']
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_image(path: Path, caption: str) -> str:
    mime = _IMAGE_TYPES[path.suffix.lower()]
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(caption, quote=True)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
