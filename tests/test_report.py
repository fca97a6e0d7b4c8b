"""The study's results and report: paper-style aggregation, tables, figure, and a report whose numbers are MLflow's."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cellsynth.report import (
    accuracy_figure,
    read_accuracy_csv,
    report_metrics,
    to_markdown,
    training_size_figure,
    write_report,
)
from cellsynth.results import (
    accuracy_table,
    accuracy_values,
    aggregate,
    difference_table,
    differences,
    metric_names,
    per_fold,
    sort_experiments,
    synthetic_pairs,
    training_share,
    validate_records,
)

# an independent exact reading of the CSV files (pandas < 3 needs the round-trip parser)
EXACT = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def rec(model: str, experiment: str, fold: int, repeat: int, accuracy: float) -> dict:
    return {"model": model, "experiment": experiment, "fold": fold, "repeat": repeat, "accuracy": accuracy}


# Hand-computed: stardist/raw has 2 repeats in fold 0 and 1 in fold 1, so the paper's
# mean of fold means (0.6 + 0.8) / 2 = 0.7 differs from the plain mean 2.0 / 3.
HAND = [
    rec("stardist", "raw", 0, 0, 0.5),
    rec("stardist", "raw", 0, 1, 0.7),
    rec("stardist", "raw", 1, 0, 0.8),
    rec("cellpose", "raw", 0, 0, 0.4),
    rec("cellpose", "raw", 0, 1, 0.6),
    rec("cellpose", "raw", 1, 0, 0.6),
    rec("cellpose", "raw", 1, 1, 0.8),
]


def study_records(seed: int = 0) -> list[dict]:
    """2 models x 4 experiments x 3 folds x 2 repeats with full-precision random accuracies."""
    rng = np.random.default_rng(seed)
    return [
        rec(model, experiment, fold, repeat, float(rng.uniform(0.3, 0.9)))
        for model in ("cellpose", "stardist")
        for experiment in ("subset_0.25", "raw", "merge", "pretrain")
        for fold in range(3)
        for repeat in range(2)
    ]


# ---------------------------------------------------------------------------
# aggregation


def test_aggregate_means_repeats_within_fold_first_then_over_folds():
    table = aggregate(HAND).set_index("model")
    star = table.loc["stardist"]
    assert star["mean"] == pytest.approx(0.7)
    assert star["mean"] != pytest.approx(np.mean([r["accuracy"] for r in HAND[:3]]))  # 0.667: not the plain mean
    assert star["std"] == pytest.approx(math.sqrt(0.02))  # sample std of (0.6, 0.8)
    assert (star["n_folds"], star["n_repeats"], star["n_runs"]) == (2, 1, 3)
    cell = table.loc["cellpose"]
    assert cell["mean"] == pytest.approx(0.6)  # fold means 0.5 and 0.7
    assert cell["std"] == pytest.approx(math.sqrt(0.02))
    assert (cell["n_folds"], cell["n_repeats"], cell["n_runs"]) == (2, 2, 4)
    assert list(aggregate(HAND).columns) == ["model", "experiment", "mean", "std", "n_folds", "n_repeats", "n_runs"]


def test_per_fold_means_and_stds_over_repeats():
    folds = per_fold(HAND)
    assert list(folds.columns) == ["model", "experiment", "fold", "mean", "std", "n_repeats"]
    star = folds[folds["model"] == "stardist"].set_index("fold")
    assert star.loc[0, "mean"] == pytest.approx(0.6)
    assert star.loc[0, "std"] == pytest.approx(math.sqrt(0.02))
    assert star.loc[1, "mean"] == pytest.approx(0.8)
    assert math.isnan(star.loc[1, "std"])  # one repeat: no spread
    assert list(folds["model"]) == ["stardist", "stardist", "cellpose", "cellpose"]


def test_experiments_and_models_in_report_order():
    names = ["zeta", "subset_0.25", "pretrain", "subset_0.625", "alpha", "raw", "merge", "subset_1"]
    expected = ["raw", "merge", "pretrain", "subset_1", "subset_0.625", "subset_0.25", "alpha", "zeta"]
    assert sort_experiments(names) == expected
    records = [rec(m, e, 0, 0, 0.5) for m in ("other", "cellpose", "stardist") for e in names]
    table = aggregate(records)
    assert list(table["model"].drop_duplicates()) == ["stardist", "cellpose", "other"]
    assert list(table.loc[table["model"] == "cellpose", "experiment"]) == expected


def test_record_order_does_not_change_any_number():
    records = study_records()
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    assert metric_names(shuffled) == metric_names(records)  # exact, not approx


# ---------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([rec("stardist", "raw", 0, 0, 0.5), {"model": "stardist", "experiment": "raw", "fold": 1, "repeat": 0}],
         r"record 1 .*missing key\(s\) 'accuracy'"),
        ([rec("stardist", "raw", 0, 0, float("nan"))], r"record 0 .*'accuracy' = nan is not finite"),
        ([rec("stardist", "raw", 0, 0, 1.5)], r"record 0 .*outside \[0, 1\]"),
        ([rec("stardist", "raw", 0, 0, "0.5")], r"record 0 .*'accuracy' = '0.5' is not a number"),
        ([rec("stardist", "raw", True, 0, 0.5)], r"record 0 .*'fold' = True is not an integer"),
        ([rec("stardist", "raw", 0, -1, 0.5)], r"record 0 .*'repeat' = -1"),
        ([rec("star.dist", "raw", 0, 0, 0.5)], r"record 0 .*'model' = 'star.dist'"),
        ([rec("stardist", "", 0, 0, 0.5)], r"record 0 .*'experiment' = ''"),
        ([rec("stardist", "raw", 0, 0, 0.5), rec("stardist", "raw", 0, 0, 0.6)], r"record 1 .*duplicates record 0"),
        (["stardist"], r"record 0 .*not a dict"),
        ([], r"no accuracy records"),
    ],
)
def test_bad_records_are_named(records, expected):
    with pytest.raises(ValueError, match=expected):
        aggregate(records)


def test_every_bad_record_is_listed_at_once():
    records = [rec("stardist", "raw", 0, 0, 0.5), {"model": "stardist"}, rec("cellpose", "raw", 0, 0, math.inf)]
    with pytest.raises(ValueError) as caught:
        validate_records(records)
    message = str(caught.value)
    assert "2 bad accuracy record(s)" in message
    assert "record 1" in message and "'experiment', 'fold', 'repeat', 'accuracy'" in message
    assert "record 2" in message and "not finite" in message


def test_numpy_scalars_and_dataframes_are_accepted():
    records = [rec("stardist", "raw", np.int64(f), np.int32(0), np.float32(0.5 + f / 10)) for f in range(2)]
    assert aggregate(records)["mean"].item() == pytest.approx(0.55)
    assert aggregate(pd.DataFrame(HAND)).equals(aggregate(HAND))


def test_metric_names_that_would_collide_are_refused():
    records = [rec("stardist", "x", 0, 0, 0.5), rec("stardist", "x.fold_0", 0, 0, 0.5),
               rec("stardist", "x.fold_0", 1, 0, 0.5)]
    with pytest.raises(ValueError, match="produced twice"):
        metric_names(records)


# ---------------------------------------------------------------------------
# tables and figure


def test_accuracy_table_strings_and_values():
    records = HAND + [rec("stardist", "merge", 0, 0, 0.9)]  # one fold: no std; cellpose lacks merge
    aggregated = aggregate(records)
    table = accuracy_table(aggregated)
    assert list(table.index) == ["raw", "merge"] and list(table.columns) == ["stardist", "cellpose"]
    assert table.loc["raw", "stardist"] == "0.700 ± 0.141"
    assert table.loc["merge", "stardist"] == "0.900"
    assert table.loc["merge", "cellpose"] == "–"
    values = accuracy_values(aggregated)
    assert values.loc["raw", "cellpose"] == pytest.approx(0.6)
    assert math.isnan(values.loc["merge", "cellpose"])
    assert accuracy_values(aggregated, "n_folds").loc["raw", "stardist"] == 2
    names = metric_names(records)
    assert "stardist.merge.accuracy" in names and "stardist.merge.accuracy_std" not in names
    assert names["stardist.raw.fold_1.accuracy"] == 0.8


PIPE_ROW = re.compile(r"^\|.*\|$")
RULE = re.compile(r"^\|( :?-{3,}:? \|)+$")


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_to_markdown_is_a_pipe_table():
    frame = pd.DataFrame(
        {"name": ["a|b", "two\nlines", None], "fid": [12.3456789, float("nan"), 1e-5], "n": [1, 2, 3]},
        index=pd.Index(["x", "y", "z"], name="set"),
    )
    text = to_markdown(frame, float_format=".4g")
    lines = text.rstrip("\n").split("\n")
    assert text.endswith("\n") and len(lines) == 2 + len(frame)
    assert all(PIPE_ROW.match(line) for line in lines)
    assert RULE.match(lines[1])
    assert len({len(cells(line)) for line in lines}) == 1 == len({len(line) for line in lines})
    assert cells(lines[0]) == ["set", "name", "fid", "n"]
    assert cells(lines[1])[0].startswith("-") and cells(lines[1])[2].endswith(":")  # text left, numbers right
    assert cells(lines[2]) == ["x", "a\\|b", "12.35", "1"]
    assert cells(lines[3]) == ["y", "two<br>lines", "", "2"]
    assert cells(lines[4]) == ["z", "", "1e-05", "3"]
    # MultiIndex columns, no index, full float precision by default
    columns = pd.MultiIndex.from_tuples([("stardist", "mean"), ("stardist", "std")])
    wide = pd.DataFrame([[0.1 + 0.2, 2.0]], columns=columns)
    wide_lines = to_markdown(wide, index=False).splitlines()
    assert cells(wide_lines[0]) == ["stardist / mean", "stardist / std"]
    assert cells(wide_lines[2]) == ["0.30000000000000004", "2.0"]
    with pytest.raises(ValueError):
        to_markdown(pd.DataFrame(index=[1, 2]), index=False)


def test_accuracy_figure_has_a_panel_per_model_and_a_bar_per_experiment():
    records = study_records()
    figure = accuracy_figure(aggregate(records), per_fold(records), title="study")
    try:
        axes = figure.get_axes()
        assert [a.get_title() for a in axes] == ["stardist", "cellpose"]
        for axis in axes:
            assert len(axis.patches) == 4
            assert [t.get_text() for t in axis.get_xticklabels()] == ["raw", "merge", "pretrain", "subset_0.25"]
            dots = sum(len(c.get_offsets()) for c in axis.collections
                       if c.get_offsets().ndim == 2 and len(c.get_offsets()))
            assert dots >= 4 * 3  # one dot per fold
    finally:
        plt.close(figure)


@pytest.mark.parametrize("name, expected", [
    ("raw", (1.0, "raw")), ("merge", (1.0, "merge")), ("pretrain", (1.0, "pretrain")),
    ("subset_0.25_raw", (0.25, "raw")), ("subset_0.25", (0.25, "raw")), ("subset_0.5_merge", (0.5, "merge")),
    ("subset_0.25_merge_simcep", (0.25, "merge_simcep")), ("mine", (1.0, "mine")),
])
def test_training_share_places_experiments_on_figure_6s_axis(name, expected):
    assert training_share(name) == expected


def test_training_size_figure_draws_a_line_per_variant_over_the_shares():
    """Figure 6: raw and merge are lines over the shares 0.25 and 1; a control run only at 0.25 and
    pretrain only at 1 are single points; a panel per model."""
    experiments = ["raw", "merge", "pretrain", "subset_0.25_raw", "subset_0.25_merge", "subset_0.25_merge_simcep"]
    records = [rec(model, experiment, fold, 0, 0.4 + 0.05 * i + 0.01 * fold)
               for model in ("stardist", "cellpose") for i, experiment in enumerate(experiments) for fold in range(3)]
    aggregated = aggregate(records)
    figure = training_size_figure(aggregated)
    try:
        axes = figure.get_axes()
        assert [a.get_title() for a in axes] == ["stardist", "cellpose"]
        for axis, model in zip(axes, ("stardist", "cellpose")):
            lines = {bars.get_label(): bars.lines[0] for bars in axis.containers}  # errorbar: (line, caps, bars)
            assert list(lines) == ["real images only", "real + GAN pairs", "GAN pairs, then real (fine-tune)",
                                   "real + SIMCEP pairs (control)"]
            means = aggregated[aggregated["model"] == model].set_index("experiment")["mean"]
            raw = lines["real images only"]
            assert np.allclose(np.round(raw.get_xdata(), 1), [0.2, 1.0], atol=0.06)  # offsets are small
            assert np.allclose(raw.get_ydata(), [means["subset_0.25_raw"], means["raw"]])
            assert np.allclose(lines["real + GAN pairs"].get_ydata(), [means["subset_0.25_merge"], means["merge"]])
            assert len(lines["real + SIMCEP pairs (control)"].get_xdata()) == 1
            assert [t.get_text() for t in axis.get_xticklabels()] == ["25%", "100%"]
    finally:
        plt.close(figure)


def test_training_size_figure_fits_its_y_range_and_its_legend_names_every_panels_variants():
    """Accuracies of 0.2-0.3 get a y range of a few tenths, not 0..1; a control run for one model only
    is still in the one legend."""
    records = [rec("stardist", e, f, 0, 0.2 + 0.02 * i + 0.01 * f)
               for i, e in enumerate(["subset_0.25_raw", "raw", "subset_0.25_merge_simcep"]) for f in range(3)]
    records += [rec("cellpose", e, f, 0, 0.28 + 0.01 * f) for e in ("subset_0.25_raw", "raw") for f in range(3)]
    aggregated = aggregate(records)
    figure = training_size_figure(aggregated)
    try:
        stardist, cellpose = figure.get_axes()
        low, high = stardist.get_ylim()
        assert cellpose.get_ylim() == (low, high)
        spread = aggregated["std"].fillna(0)
        assert low <= (aggregated["mean"] - spread).min() and high >= (aggregated["mean"] + spread).max()
        assert high - low <= 0.4
        assert [t.get_text() for t in cellpose.get_legend().get_texts()] == [
            "real images only", "real + SIMCEP pairs (control)"]
    finally:
        plt.close(figure)


def test_no_training_size_figure_without_subset_experiments(tmp_path: Path):
    records = [rec("stardist", e, f, 0, 0.5 + 0.1 * f) for e in ("raw", "merge") for f in range(2)]
    written = write_report(tmp_path / "r", records, None, {}, "t")
    assert "training_size.png" not in written and "accuracy.png" in written


# ---------------------------------------------------------------------------
# the report


def quality() -> pd.DataFrame:
    return pd.DataFrame(
        {"fid": [12.5, 30.25], "kid_mean": [0.0012, 0.0101]},
        index=pd.Index(["GAN masks", "SIMCEP masks"], name="source"),
    )


def sample_figure() -> plt.Figure:
    figure, axis = plt.subplots(figsize=(2, 2))
    axis.imshow(np.arange(16).reshape(4, 4))
    return figure


def test_write_report_writes_a_self_contained_page_with_mlflow_numbers(tmp_path: Path):
    records = study_records()
    png = tmp_path / "grid.png"
    plt.imsave(png, np.random.default_rng(0).random((8, 8)))
    figure = sample_figure()
    folder = tmp_path / "08_reporting" / "study"
    try:
        written = write_report(
            folder, records, quality(), {"mask_grid": figure, "image_grid": png}, "Study <1>",
            extra_sections={"Notes": "fold sizes <small>\nsecond line"},
        )
    finally:
        plt.close(figure)
    expected = {"accuracy.csv", "accuracy_per_fold.csv", "accuracy.md", "accuracy.png", "training_size.png",
                "quality.csv", "quality.md", "mask_grid.png", "image_grid.png", "index.html"}
    assert set(written) == expected
    assert {p.name for p in folder.iterdir()} == expected
    assert all(path == folder / name and path.is_file() for name, path in written.items())
    assert [p.name for p in folder.parent.iterdir()] == ["study"]  # no staging folder left

    page = (folder / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count("data:image/png;base64,") == 4  # bar chart, training-size chart, two figures
    assert "Study &lt;1&gt;" in page and "fold sizes &lt;small&gt;" in page
    assert "<table" in page and "GAN masks" in page and "0.0012" in page
    assert page.index("Segmentation accuracy") < page.index("Synthetic data quality") < page.index("Figures")

    # the numbers of the CSV files are, bit for bit, the metrics the pipeline logs
    metrics = metric_names(records)
    aggregated = pd.read_csv(folder / "accuracy.csv", **EXACT)
    folds = pd.read_csv(folder / "accuracy_per_fold.csv", **EXACT)
    from_csv = {}
    for row in aggregated.itertuples():
        from_csv[f"{row.model}.{row.experiment}.accuracy"] = row.mean
        from_csv[f"{row.model}.{row.experiment}.accuracy_std"] = row.std
    for row in folds.itertuples():
        from_csv[f"{row.model}.{row.experiment}.fold_{row.fold}.accuracy"] = row.mean
    assert from_csv == metrics
    assert len(metrics) == 2 * 4 * (2 + 3)
    assert report_metrics(folder) == metrics
    assert read_accuracy_csv(folder / "accuracy.csv").equals(aggregate(records))
    assert read_accuracy_csv(folder / "accuracy_per_fold.csv").equals(per_fold(records))

    markdown = (folder / "accuracy.md").read_text(encoding="utf-8")
    assert cells(markdown.splitlines()[0]) == ["experiment", "stardist", "cellpose", "stardist gain", "cellpose gain"]
    assert f"{metrics['stardist.raw.accuracy']:.3f} ± {metrics['stardist.raw.accuracy_std']:.3f}" in markdown
    assert pd.read_csv(folder / "quality.csv", index_col=0).equals(quality())
    assert "| GAN masks" in (folder / "quality.md").read_text(encoding="utf-8")


def test_write_report_without_quality_or_figures_and_with_one_fold(tmp_path: Path):
    records = [rec("stardist", "raw", 0, 0, 0.75), rec("cellpose", "raw", 0, 0, 0.5)]
    written = write_report(tmp_path / "r", records, None, {}, "t")
    assert set(written) == {"accuracy.csv", "accuracy_per_fold.csv", "accuracy.md", "accuracy.png", "index.html"}
    assert report_metrics(tmp_path / "r") == metric_names(records) == {
        "stardist.raw.accuracy": 0.75, "cellpose.raw.accuracy": 0.5,
        "stardist.raw.fold_0.accuracy": 0.75, "cellpose.raw.fold_0.accuracy": 0.5,
    }
    assert "| raw        | 0.750    | 0.500    |" in (tmp_path / "r" / "accuracy.md").read_text(encoding="utf-8")


def with_pairs(record: dict, pairs: int, groups: list[str]) -> dict:
    return {**record, "synthetic_pairs": pairs, "synthetic_groups": groups}


def test_experiments_that_trained_on_no_synthetic_pair_are_marked(tmp_path: Path):
    """A merge that got 0 synthetic pairs in a fold (no GAN mask passed the filters) is raw again: the
    report shows the counts per fold, marks it and says why, and the accuracy numbers stay as they are."""
    records = [with_pairs(rec(model, experiment, fold, 0, 0.5 + 0.1 * fold), pairs, groups)
               for model in ("stardist", "cellpose") for fold in range(2)
               for experiment, pairs, groups in (("raw", 0, []),
                                                 ("merge", 21 if fold == 0 else 0, [f"fold_{fold}"]),
                                                 ("pretrain", 21 if fold == 0 else 20, [f"fold_{fold}"]))]
    table = synthetic_pairs(records)
    assert table.to_dict("records") == [
        {"experiment": "raw", "fold": 0, "synthetic_pairs": 0, "empty": False},
        {"experiment": "raw", "fold": 1, "synthetic_pairs": 0, "empty": False},
        {"experiment": "merge", "fold": 0, "synthetic_pairs": 21, "empty": False},
        {"experiment": "merge", "fold": 1, "synthetic_pairs": 0, "empty": True},
        {"experiment": "pretrain", "fold": 0, "synthetic_pairs": 21, "empty": False},
        {"experiment": "pretrain", "fold": 1, "synthetic_pairs": 20, "empty": False},
    ]
    gan_filter = pd.DataFrame({"generated": [32, 32], "kept": [21, 0]},
                              index=pd.Index(["fold_0", "fold_1"], name="group"))
    written = write_report(tmp_path / "r", records, None, {}, "t", gan_filter=gan_filter)
    markdown = (tmp_path / "r" / "accuracy.md").read_text(encoding="utf-8")
    rows = {cells(line)[0]: cells(line) for line in markdown.splitlines() if line.startswith("| ")}
    assert rows["merge †"][-1] == "21 / 0" and rows["pretrain"][-1] == "21 / 20" and rows["raw"][-1] == "0 / 0"
    assert "† Planned with synthetic pairs but trained on none (merge: fold(s) 1)" in markdown
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "merge †" in page and "Mask GAN filter" in page
    assert pd.read_csv(written["gan_filter.csv"], index_col="group")["kept"].to_dict() == {"fold_0": 21, "fold_1": 0}
    assert report_metrics(tmp_path / "r") == metric_names(records)  # the mark is not part of any name


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failure_mid_write_keeps_the_previous_report(tmp_path: Path):
    folder = tmp_path / "study"
    write_report(folder, HAND, quality(), {}, "first")
    before = snapshot(folder)

    broken = sample_figure()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    broken.savefig = fail  # fails after the tables and the bar chart were written
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            write_report(folder, study_records(), quality(), {"good": sample_figure(), "broken": broken}, "second")
    finally:
        plt.close("all")
    assert snapshot(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["study"]

    # no previous report: nothing at all is left behind
    with pytest.raises(RuntimeError):
        write_report(tmp_path / "fresh", HAND, None, {"broken": broken}, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["study"]


@pytest.mark.parametrize(
    ("figures", "error", "match"),
    [
        ({"accuracy": "FIGURE"}, ValueError, "already used by the report"),
        ({"../escape": "FIGURE"}, ValueError, "file stem"),
        ({"missing": Path("does/not/exist.png")}, FileNotFoundError, "does not exist"),
        ({"text": 42}, ValueError, "not a matplotlib figure"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(tmp_path: Path, figures, error, match):
    figure = sample_figure()
    figures = {k: (figure if v == "FIGURE" else v) for k, v in figures.items()}
    try:
        with pytest.raises(error, match=match):
            write_report(tmp_path / "study", HAND, None, figures, "t")
    finally:
        plt.close(figure)
    with pytest.raises(ValueError, match="record 0"):
        write_report(tmp_path / "study", [rec("stardist", "raw", 0, 0, math.nan)], None, {}, "t")
    assert list(tmp_path.iterdir()) == []


def test_gains_are_paired_by_fold_against_the_experiment_on_the_same_real_images():
    """merge - raw within each fold (+0.1 and +0.3: mean 0.2, std 0.1414), whatever the folds' own
    difficulty; a subset experiment against its subset's raw; a control sorts after its merge."""
    records = [rec("stardist", "raw", 0, 0, 0.2), rec("stardist", "raw", 1, 0, 0.6),
               rec("stardist", "merge", 0, 0, 0.3), rec("stardist", "merge", 1, 0, 0.9),
               rec("stardist", "subset_0.25_raw", 0, 0, 0.1), rec("stardist", "subset_0.25_merge", 0, 0, 0.15),
               rec("stardist", "subset_0.25_merge_simcep", 0, 0, 0.05)]
    folds = per_fold(records)
    gains = differences(folds).set_index("experiment")
    assert list(gains.index) == ["merge", "subset_0.25_merge", "subset_0.25_merge_simcep"]
    assert gains.at["merge", "mean"] == pytest.approx(0.2) and gains.at["merge", "std"] == pytest.approx(0.02 ** 0.5)
    assert gains.at["subset_0.25_merge", "reference"] == "subset_0.25_raw"
    assert gains.at["subset_0.25_merge_simcep", "mean"] == pytest.approx(-0.05)
    table = difference_table(folds)
    assert table.at["merge", "stardist gain"] == "+0.200 ± 0.141 vs raw"
    assert table.at["raw", "stardist gain"] == ""
    assert sort_experiments(folds["experiment"])[-2:] == ["subset_0.25_merge", "subset_0.25_merge_simcep"]


def test_accuracy_per_iou_threshold_is_reported_when_records_carry_it(tmp_path: Path):
    """Records with a per-threshold breakdown get a table of it (mean over folds), in the page too; records
    without it (older studies) leave it out."""
    def with_iou(record: dict, at_05: float, at_09: float) -> dict:
        return {**record, "accuracy_by_iou": {"0.5": at_05, "0.9": at_09}}

    records = [with_iou(rec("stardist", "raw", 0, 0, 0.6), 0.9, 0.3),
               with_iou(rec("stardist", "raw", 1, 0, 0.5), 0.7, 0.3),
               with_iou(rec("stardist", "merge", 0, 0, 0.4), 0.8, 0.0)]
    written = write_report(tmp_path / "r", records, None, {}, "t")
    table = pd.read_csv(written["accuracy_by_iou.csv"])
    assert list(table.columns) == ["model", "experiment", "0.5", "0.9"]
    assert table.to_dict("records") == [
        {"model": "stardist", "experiment": "raw", "0.5": pytest.approx(0.8), "0.9": 0.3},
        {"model": "stardist", "experiment": "merge", "0.5": 0.8, "0.9": 0.0}]
    assert "Accuracy per IoU threshold" in written["index.html"].read_text(encoding="utf-8")
    plain = write_report(tmp_path / "p", [rec("stardist", "raw", 0, 0, 0.6)], None, {}, "t")
    assert "accuracy_by_iou.csv" not in plain
