"""The study plan (which images train, choose and score each model) and the experiment runner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import disk_labels

from cellsynth.crops import make_folds, training_groups
from cellsynth.io import AnnotatedImage
from cellsynth.study import (
    EmptyTrainingSet,
    Experiment,
    Stage,
    check_plan,
    control_source,
    mixing_weights,
    plan_experiments,
    run_experiment,
    segmenters,
)


def test_plan_covers_every_fold_and_experiment_and_never_trains_on_held_out_images():
    names = [f"im{i:02d}" for i in range(12)]
    folds = make_folds(names, k=4, seed=0)
    groups = training_groups(folds, names, "folds", [0.5], seed=7)
    plan = plan_experiments(folds, ["merge", "raw", "pretrain"], subset_fractions=[0.5], groups=groups)
    assert [(e.fold, e.name) for e in plan[:5]] == [(0, "raw"), (0, "merge"), (0, "pretrain"), (0, "subset_0.5_raw"),
                                                   (0, "subset_0.5_merge")]
    assert len(plan) == 4 * 5
    for experiment in plan:
        fold = folds[experiment.fold]
        assert experiment.test == fold.test and experiment.validation == fold.val
        for stage in experiment.stages:
            assert not set(stage.real) & (set(fold.val) | set(fold.test))
            if stage.synthetic is not None:  # synthetic pairs of generative models trained on these very images
                assert set(groups[stage.synthetic]) == set(stage.real or fold.train)
    pretrain = next(e for e in plan if e.name == "pretrain")
    assert [(len(s.real), s.synthetic, s.budget) for s in pretrain.stages] == [(0, "fold_0", "train"),
                                                                                (6, None, "finetune")]
    assert Experiment.from_dict(pretrain.to_dict()) == pretrain


def test_controls_train_on_the_subset_with_simcep_or_their_own_masks_painted():
    names = [f"im{i:02d}" for i in range(9)]
    folds = make_folds(names, k=3, seed=0)
    groups = training_groups(folds, names, "folds", [0.25], seed=7)
    plan = plan_experiments(folds, ["raw"], subset_fractions=[0.25], groups=groups, controls=["realmasks", "simcep"])
    first = [e for e in plan if e.fold == 0]
    assert [e.name for e in first] == ["raw", "subset_0.25_raw", "subset_0.25_merge", "subset_0.25_merge_simcep",
                                       "subset_0.25_merge_realmasks"]
    control = first[3]
    assert control.stages[0].real == first[2].stages[0].real  # the same real images as merge
    assert control.synthetic_groups == (control_source("simcep", "fold_0-subset_0.25"),)
    assert [e.synthetic_groups for e in first[2:]] == [("fold_0-subset_0.25",), ("simcep:fold_0-subset_0.25",),
                                                       ("realmasks:fold_0-subset_0.25",)]
    with pytest.raises(ValueError, match="augmentation.controls"):
        plan_experiments(folds, ["raw"], controls=["mixup"])
    with pytest.raises(ValueError, match="subsets.fractions"):
        plan_experiments(folds, ["raw"], controls=["simcep"])


def test_a_plan_that_trains_on_test_images_or_another_folds_synthetic_data_is_refused():
    folds = make_folds([f"im{i}" for i in range(6)], k=3, seed=0)
    fold = folds[0]
    leaky = Experiment(0, "raw", (Stage(fold.train + fold.test[:1], None, "train"),), fold.val, fold.test)
    with pytest.raises(ValueError, match="not training images"):
        check_plan([leaky], folds)
    foreign = Experiment(0, "merge", (Stage(fold.train, "fold_1", "train"),), fold.val, fold.test)
    with pytest.raises(ValueError, match="another fold"):
        check_plan([foreign], folds)
    with pytest.raises(ValueError, match="unknown experiment"):
        plan_experiments(folds, ["raw", "mixup"])


# Cellpose, because it trains in a second (StarDist's tiny training takes 3-4 s): the stage logic is the same.
CELLPOSE_TINY = {"batch_size": 2, "bsize": 32, "rescale": False}


def _sample(name: str, seed: int, empty: bool = False) -> AnnotatedImage:
    rng = np.random.default_rng(seed)
    centres = [tuple(int(v) for v in rng.integers(8, 56, 2)) for _ in range(5)]
    labels = np.zeros((64, 64), np.int32) if empty else disk_labels((64, 64), centres, 5)
    image = ((labels > 0) * 180 + rng.integers(0, 40, (64, 64))).astype(np.uint8)[..., None]
    return AnnotatedImage(name, image, labels)


def test_pretraining_then_fine_tuning_runs_resumes_and_refuses_empty_data(tmp_path: Path):
    real = {f"im{i}": _sample(f"im{i}", i) for i in range(4)}
    synthetic = {"fold_0": [_sample(f"gan_{i}", 10 + i) for i in range(2)],
                 "fold_0-empty": [_sample("gan_e", 20, empty=True)]}
    experiment = Experiment(0, "pretrain", (Stage((), "fold_0", "train"), Stage(("im0", "im1"), None, "finetune")),
                            ("im2",), ("im3",))
    settings = CELLPOSE_TINY
    augmenter = {"elastic": True, "p_elastic": 0.5}
    cellpose = segmenters()["cellpose"]
    args = dict(settings=settings, epochs={"train": 1, "finetune": 1, "subset": 1}, budget_settings={},
                augmenter=augmenter, repeat=0, real=real, synthetic=synthetic, folder=tmp_path)
    record = run_experiment(experiment, cellpose, **args)
    assert record["trained_on"] == ["im0", "im1"] and record["synthetic_pairs"] == 2
    assert 0 <= record["accuracy"] <= 1 and Path(record["model_path"]).name.startswith("stage1-")
    assert len(list(tmp_path.iterdir())) == 2  # one model folder per stage

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    again = run_experiment(experiment, dataclasses.replace(cellpose, train=no_training), **args)
    assert again == record

    empty = Experiment(0, "pretrain", (Stage((), "fold_0-empty", "train"),), ("im2",), ("im3",))
    with pytest.raises(EmptyTrainingSet, match="no labelled object"):
        run_experiment(empty, cellpose, **args)
    with pytest.raises(ValueError, match=r"unknown evaluation.cellpose.settings parameter\(s\) \['bsize_'\]"):
        run_experiment(experiment, cellpose, **{**args, "settings": {**settings, "bsize_": 8}})


def test_merge_without_synthetic_pairs_reuses_the_raw_model(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Stages are stored by content: ``merge`` with an empty synthetic group is ``raw`` again, so it is
    not trained twice; a repeat (another seed) is a different stage."""
    real = {f"im{i}": _sample(f"im{i}", i) for i in range(4)}
    settings = CELLPOSE_TINY
    cellpose = segmenters()["cellpose"]
    raw = Experiment(0, "raw", (Stage(("im0", "im1"), None, "train"),), ("im2",), ("im3",))
    merge = Experiment(0, "merge", (Stage(("im0", "im1"), "fold_0", "train"),), ("im2",), ("im3",))
    args = dict(settings=settings, epochs={"train": 1, "finetune": 1, "subset": 1}, budget_settings={},
                augmenter={"elastic": False}, repeat=0, real=real, synthetic={"fold_0": []}, folder=tmp_path)
    raw_record = run_experiment(raw, cellpose, **args)

    def no_training(*args, **kwargs):
        raise AssertionError("merge without synthetic pairs was trained again")

    merge_record = run_experiment(merge, dataclasses.replace(cellpose, train=no_training), **args)
    assert merge_record["model_path"] == raw_record["model_path"] and merge_record["synthetic_pairs"] == 0
    assert merge_record["accuracy"] == raw_record["accuracy"]
    assert "fold_0 holds no pairs" in caplog.text
    repeat = run_experiment(raw, cellpose, **{**args, "repeat": 1})
    assert repeat["model_path"] != raw_record["model_path"]


def test_a_synthetic_share_weights_the_draws_and_is_part_of_the_stage_identity(tmp_path: Path):
    """augmentation.synthetic_share: real images weigh 1 and the synthetic pairs share the rest, so that
    they get that share of Cellpose's draws (train_probs); a stage with a share is another model."""
    real = {f"im{i}": _sample(f"im{i}", i) for i in range(4)}
    synthetic = {"fold_0": [_sample(f"s{i}", 10 + i) for i in range(4)]}
    cellpose = segmenters()["cellpose"]
    merge = Experiment(0, "merge", (Stage(("im0", "im1"), "fold_0", "train"),), ("im2",), ("im3",))
    args = dict(settings={**CELLPOSE_TINY, "nimg_per_epoch": 4}, epochs={"train": 1, "finetune": 1, "subset": 1},
                budget_settings={}, augmenter={"elastic": False}, repeat=0, real=real, synthetic=synthetic,
                folder=tmp_path)
    plain = run_experiment(merge, cellpose, **args)
    shared = run_experiment(merge, cellpose, **args, synthetic_share=0.2)
    assert shared["model_path"] != plain["model_path"]
    sidecar = json.loads(next(Path(shared["model_path"]).glob("*.json")).read_text())
    assert sidecar["sample_weights"] == pytest.approx([1, 1] + [0.2 * 2 / (0.8 * 4)] * 4)
    assert json.loads(next(Path(plain["model_path"]).glob("*.json")).read_text())["sample_weights"] is None
    with pytest.raises(ValueError, match="synthetic_share must be in"):
        run_experiment(merge, cellpose, **args, synthetic_share=1.0)


@pytest.mark.parametrize("n_real, n_synthetic, share, expected", [
    (27, 180, 0.5, [1.0] * 27 + [27 / 180] * 180), (3, 1, 0.25, [1.0] * 3 + [1.0]),
    (5, 0, 0.5, None), (0, 5, 0.5, None), (5, 5, None, None),
])
def test_mixing_weights_give_the_synthetic_pairs_their_share(n_real, n_synthetic, share, expected):
    weights = mixing_weights(n_real, n_synthetic, share)
    assert weights == (None if expected is None else pytest.approx(expected))
    if weights is not None:
        assert sum(weights[n_real:]) / sum(weights) == pytest.approx(share)


def test_a_local_pretrained_model_starts_the_first_stage_and_is_part_of_its_identity(tmp_path: Path):
    """``init_from`` (evaluation.<model>.init_from): the first stage fine-tunes that model, and a
    stage started from it never reuses the model trained from scratch."""
    real = {f"im{i}": _sample(f"im{i}", i) for i in range(4)}
    cellpose = segmenters()["cellpose"]
    raw = Experiment(0, "raw", (Stage(("im0", "im1"), None, "train"),), ("im2",), ("im3",))
    args = dict(settings=CELLPOSE_TINY, epochs={"train": 1, "finetune": 1, "subset": 1}, budget_settings={},
                augmenter={"elastic": False}, repeat=0, real=real, synthetic={}, folder=tmp_path / "models")
    scratch = run_experiment(raw, cellpose, **args)
    tuned = run_experiment(raw, cellpose, **args, init_from=scratch["model_path"])
    assert tuned["model_path"] != scratch["model_path"]
    sidecar = next(Path(tuned["model_path"]).glob("*.json"))
    assert str(Path(scratch["model_path"]).resolve()) in sidecar.read_text()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_experiment(raw, cellpose, **args, init_from=tmp_path / "missing")
