"""The paper's segmentation experiments as a plan: which images train, validate and test each model.

For every cross-validation fold, an experiment is one or two training *stages*, each a set of real
training images plus, optionally, the synthetic pairs of one generative group:

- ``raw``: the fold's real training images;
- ``merge``: raw + the synthetic pairs generated from the fold's training images (the paper's
  "augmentation");
- ``pretrain``: the synthetic pairs alone, then fine-tuning on raw (the paper's "fine-tune");
- ``subset_<f>_raw`` / ``subset_<f>_merge``: a share ``f`` of the training images, without and with
  the synthetic pairs of generative models trained on that share only (the paper's subset experiments);
- ``subset_<f>_merge_simcep`` / ``subset_<f>_merge_realmasks``: two controls that say where a gain is won
  or lost: SIMCEP's masks instead of the GAN's through the same pix2pix (do the GAN's layouts add
  anything?), and pix2pix images of the subset's own real masks (synthetic images, no new masks: are
  the images the blocker?).

Every model of a fold is chosen on the fold's validation images and scored on its test images, which
no stage ever contains (:func:`check_plan` proves it for a plan).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cellsynth.crops import Fold, fold_of_group, subset_group
from cellsynth.io import AnnotatedImage
from cellsynth.metrics import accuracy_by_threshold, segmentation_accuracy
from cellsynth.training.config import config_from_params

logger = logging.getLogger(__name__)

EXPERIMENTS: tuple[str, ...] = ("raw", "merge", "pretrain")
CONTROLS: tuple[str, ...] = ("simcep", "realmasks")


def control_source(control: str, group: str) -> str:
    """The name of a control's synthetic pairs for a group, e.g. ``simcep:fold_0-subset_0.25``."""
    return f"{control}:{group}"


def source_group(source: str) -> str:
    """The generative group of a synthetic source (``simcep:fold_0`` and ``fold_0`` -> ``fold_0``)."""
    return source.rpartition(":")[2]
Budget = Literal["train", "finetune", "subset"]


@dataclass(frozen=True)
class Stage:
    """One training run: real image names, plus the synthetic pairs of group ``synthetic`` (or none).

    ``budget`` names the epoch budget it gets: ``train`` (from scratch), ``finetune`` (continuing the
    previous stage) or ``subset`` (from scratch on a subset), as the paper's 100 / 20 / 50 epochs.
    """

    real: tuple[str, ...]
    synthetic: str | None
    budget: Budget


@dataclass(frozen=True)
class Experiment:
    """The training stages of one experiment on one fold, with the images that choose and score it."""

    fold: int
    name: str
    stages: tuple[Stage, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        stages = tuple(Stage(tuple(s["real"]), s["synthetic"], s["budget"]) for s in data["stages"])
        return cls(int(data["fold"]), data["name"], stages, tuple(data["validation"]), tuple(data["test"]))

    @property
    def synthetic_groups(self) -> tuple[str, ...]:
        return tuple(s.synthetic for s in self.stages if s.synthetic is not None)


def experiment_names(
    experiments: Sequence[str], subset_fractions: Sequence[float] = (), controls: Sequence[str] = ()
) -> list[str]:
    """The names of one fold's experiments, in the order :func:`plan_experiments` plans them: the chosen
    :data:`EXPERIMENTS`, then per subset fraction ``subset_<f>_raw``, ``subset_<f>_merge`` and one
    ``subset_<f>_merge_<control>`` per control. Raises ValueError for an unknown name or an empty study."""
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"augmentation.experiments: unknown experiment(s) {unknown}; choose from {EXPERIMENTS}")
    unknown = sorted(set(controls) - set(CONTROLS))
    if unknown:
        raise ValueError(f"augmentation.controls: unknown control(s) {unknown}; choose from {CONTROLS}")
    if controls and not subset_fractions:
        raise ValueError("augmentation.controls run on the subsets: set subsets.fractions (e.g. [0.25]) or "
                         "augmentation.controls: []")
    if not experiments and not subset_fractions:
        raise ValueError("augmentation.experiments is empty and subsets.fractions too: nothing to train")
    names = sorted(set(experiments), key=EXPERIMENTS.index)
    for fraction in subset_fractions:
        suffixes = ["raw", "merge"] + [f"merge_{c}" for c in sorted(set(controls), key=CONTROLS.index)]
        names += [f"subset_{fraction:g}_{suffix}" for suffix in suffixes]
    return names


def plan_experiments(
    folds: Sequence[Fold],
    experiments: Sequence[str],
    subset_fractions: Sequence[float] = (),
    groups: Mapping[str, Sequence[str]] | None = None,
    controls: Sequence[str] = (),
) -> list[Experiment]:
    """Every (fold, experiment) of the study.

    Parameters
    ----------
    folds
        The cross-validation folds.
    experiments
        Names from :data:`EXPERIMENTS`, in any order.
    subset_fractions
        Shares of each fold's training images for the subset experiments.
    groups
        The images each generative model trained on (:func:`cellsynth.crops.training_groups`); a
        subset experiment trains on the images of group :func:`cellsynth.crops.subset_group`, the
        ones its synthetic pairs were made from.
    controls
        Names from :data:`CONTROLS`: each subset gets ``subset_<f>_merge_<control>`` as well, trained on
        the synthetic pairs :func:`control_source` names.
    """
    names = experiment_names(experiments, subset_fractions, controls)
    plan = []
    for i, fold in enumerate(folds):
        subsets = {}
        for fraction in subset_fractions:
            subset_name = subset_group(i, fraction)
            if groups is None or subset_name not in groups:
                raise ValueError(f"the training groups lack {subset_name}: rerun data_prep with the same "
                                 "subsets.fractions")
            subsets[f"subset_{fraction:g}"] = tuple(groups[subset_name])
        for name in names:
            source = experiment_source(i, name)
            if name == "pretrain":
                stages = (Stage((), source, "train"), Stage(fold.train, None, "finetune"))
            elif name.startswith("subset_"):
                stages = (Stage(subsets["_".join(name.split("_")[:2])], source, "subset"),)
            else:
                stages = (Stage(fold.train, source, "train"),)
            plan.append(Experiment(i, name, stages, fold.val, fold.test))
    check_plan(plan, folds)
    return plan


def experiment_source(fold: int, name: str) -> str | None:
    """The synthetic pairs an experiment of fold ``fold`` trains on, by its name (:func:`experiment_names`):
    ``None`` for ``raw`` and ``subset_<f>_raw``, the fold's group for ``merge`` and ``pretrain``, the subset's
    for ``subset_<f>_merge`` and a control's (:func:`control_source`) for ``subset_<f>_merge_<control>``."""
    if name in ("raw", "merge", "pretrain"):
        return None if name == "raw" else f"fold_{fold}"
    prefix, _, rest = name.partition("_")
    fraction, _, kind = rest.partition("_")
    if prefix == "subset" and fraction:
        group = subset_group(fold, float(fraction))
        if kind == "raw":
            return None
        if kind == "merge":
            return group
        control = kind.removeprefix("merge_")
        if kind.startswith("merge_") and control in CONTROLS:
            return control_source(control, group)
    raise ValueError(f"unknown experiment {name!r}: see cellsynth.study.experiment_names")


def check_plan(plan: Sequence[Experiment], folds: Sequence[Fold]) -> None:
    """Raise when a stage trains on an image of its fold's validation or test set, or on an image
    outside the fold's training set (the leakage guard of the study)."""
    for experiment in plan:
        fold = folds[experiment.fold]
        if set(experiment.test) != set(fold.test) or set(experiment.validation) != set(fold.val):
            raise ValueError(f"{experiment.name} of fold {experiment.fold}: validation/test images differ "
                             "from the fold's")
        for stage in experiment.stages:
            leaked = sorted(set(stage.real) - set(fold.train))
            if leaked:
                raise ValueError(f"{experiment.name} of fold {experiment.fold} would train on {leaked}, "
                                 f"which are not training images of that fold")
            if stage.synthetic is not None and fold_of_group(source_group(stage.synthetic)) != experiment.fold:
                raise ValueError(f"{experiment.name} of fold {experiment.fold} uses synthetic group "
                                 f"{stage.synthetic}, generated from another fold")


class EmptyTrainingSet(ValueError):
    """A training stage has no labelled object to learn from (typically an under-trained GAN's output)."""


@dataclass(frozen=True)
class Segmenter:
    """How the study trains and applies one segmentation method (StarDist or Cellpose).

    ``settings`` builds the method's settings dataclass from a parameters dict (with ``epochs`` and
    ``seed`` set per stage), ``train(images, labels, val_images, val_labels, settings, folder,
    init_from)`` writes a model folder, ``predict(folder, images)`` returns label images.
    """

    name: str
    settings: Callable[[dict[str, Any]], Any]
    train: Callable[..., Path]
    predict: Callable[[Path, list[np.ndarray]], list[np.ndarray]]
    elastic: bool  # the paper deforms elastically for StarDist only


def segmenters() -> dict[str, Segmenter]:
    """The methods of the study (imported lazily: TensorFlow and Cellpose load slowly)."""
    from cellsynth.segmentation import (
        CellposeSettings,
        StarDistSettings,
        predict_cellpose,
        predict_stardist,
        train_cellpose,
        train_stardist,
    )

    return {
        "stardist": Segmenter("stardist", lambda p: _settings(StarDistSettings, p, "stardist"), train_stardist,
                              predict_stardist, elastic=True),
        "cellpose": Segmenter("cellpose", lambda p: _settings(CellposeSettings, p, "cellpose"), train_cellpose,
                              predict_cellpose, elastic=False),
    }


def _settings(cls: type, params: dict[str, Any], name: str) -> Any:
    """A settings dataclass from parameters, naming any key it does not have."""
    return config_from_params(cls, params, f"evaluation.{name}.settings")


def mixing_weights(n_real: int, n_synthetic: int, share: float | None) -> list[float] | None:
    """Sampling weights (real images first) under which synthetic pairs get ``share`` of the draws.

    None when nothing is mixed (no share, or one of the two kinds is absent). Raises ValueError for a
    share outside (0, 1).
    """
    if share is None or n_real == 0 or n_synthetic == 0:
        return None
    if not 0.0 < share < 1.0:
        raise ValueError(f"augmentation.synthetic_share must be in (0, 1) or null, got {share}")
    synthetic = share * n_real / ((1.0 - share) * n_synthetic)
    return [1.0] * n_real + [synthetic] * n_synthetic


def run_experiment(
    experiment: Experiment,
    segmenter: Segmenter,
    *,
    settings: dict[str, Any],
    epochs: dict[str, int],
    budget_settings: dict[str, dict[str, Any]],
    augmenter: dict[str, Any],
    repeat: int,
    real: Mapping[str, AnnotatedImage],
    synthetic: Mapping[str, Sequence[AnnotatedImage]],
    folder: Path,
    init_from: str | Path | None = None,
    synthetic_share: float | None = None,
) -> dict[str, Any]:
    """Train ``segmenter`` through the stages of ``experiment`` and score it on the fold's test images.

    Parameters
    ----------
    settings
        The method's settings (its dataclass fields) except ``epochs``, ``seed`` and ``augment_config``.
    epochs
        Epochs per stage budget: ``train``, ``finetune``, ``subset``.
    budget_settings
        Settings that differ for a budget, e.g. ``{"subset": {"rescale": False}}`` (the paper's
        Cellpose subset runs did not rescale by the median object size).
    augmenter
        :class:`cellsynth.segmentation.AugmentConfig` fields (elastic deformation is switched off for
        methods that the paper trained without it).
    repeat
        Repeat index: seeds training with ``settings.seed + repeat``.
    real
        Real annotated images by name (must hold every image the experiment names).
    synthetic
        Synthetic pairs by group.
    folder
        Where the models go: ``<folder>/stage<k>-<digest>/``. A stage whose folder exists (same
        settings, data and starting point) is reused, so an interrupted study resumes.
    init_from
        A local model to start the first stage from instead of random weights (a StarDist model
        folder; a Cellpose model folder or weight file), e.g. a downloaded ``2D_versatile_fluo``.
        Its files' contents enter the digest, so another start never reuses a model.
    synthetic_share
        In a stage with real and synthetic images, the share of the trainer's image draws that fall
        on synthetic pairs (:func:`mixing_weights`); None draws every image alike, as the paper's
        merge does (with crops far smaller than the real images, synthetic pairs then dominate).

    Raises
    ------
    EmptyTrainingSet
        A stage has no labelled object at all.

    Returns
    -------
    dict
        The record: ``model``, ``experiment``, ``fold``, ``repeat``, ``accuracy`` (test),
        ``accuracy_by_iou`` (test, per IoU threshold: :func:`~cellsynth.metrics.accuracy_by_threshold`),
        ``validation_accuracy``, ``trained_on`` (real image names), ``synthetic_pairs`` (count),
        ``synthetic_groups`` (those the plan names, empty or not), ``model_path``.
    """
    missing = sorted({n for s in experiment.stages for n in s.real} - set(real)
                     | set(experiment.validation + experiment.test) - set(real))
    if missing:
        raise ValueError(f"{experiment.name} of fold {experiment.fold}: images {missing[:5]} are not in the dataset")
    digest = hashlib.sha256(segmenter.name.encode())
    if init_from is not None:
        digest.update(_content_digest(Path(init_from)).encode())
    model, trained_on, n_synthetic = init_from, set(), 0
    val = [real[n] for n in experiment.validation]
    for k, stage in enumerate(experiment.stages):
        samples = [real[n] for n in stage.real] + list(synthetic[stage.synthetic] if stage.synthetic else [])
        if stage.synthetic and not synthetic[stage.synthetic]:
            logger.warning("%s of fold %d, stage %d: synthetic group %s holds no pairs (no GAN mask passed its "
                           "filters), so this stage trains on the real images alone", experiment.name,
                           experiment.fold, k, stage.synthetic)
        if not any(sample.labels.any() for sample in samples):
            raise EmptyTrainingSet(f"{experiment.name} of fold {experiment.fold}, stage {k}: no labelled object in "
                                   f"its {len(samples)} training image(s) (synthetic group {stage.synthetic}: the "
                                   f"GAN's masks did not pass its filters, or hold no objects)")
        trained_on |= set(stage.real)
        n_synthetic += len(samples) - len(stage.real)
        weights = mixing_weights(len(stage.real), len(samples) - len(stage.real), synthetic_share)
        stage_settings = {**settings, **budget_settings.get(stage.budget, {}), "epochs": epochs[stage.budget],
                          "seed": settings.get("seed", 0) + repeat,
                          "augment_config": {**augmenter, "elastic": augmenter["elastic"] and segmenter.elastic}}
        config = segmenter.settings(stage_settings)
        digest.update(json.dumps([k, stage.budget, stage_settings], sort_keys=True).encode())
        if weights is not None:
            digest.update(json.dumps({"synthetic_share": synthetic_share}).encode())
        for sample in samples:
            digest.update(sample.image.tobytes())
            digest.update(sample.labels.tobytes())
        target = folder / f"stage{k}-{digest.hexdigest()[:12]}"
        if target.is_dir():
            logger.info("%s %s fold %d repeat %d stage %d: reusing %s", segmenter.name, experiment.name,
                        experiment.fold, repeat, k, target)
        else:
            logger.info("%s %s fold %d repeat %d stage %d: training on %d images (%d synthetic) for %d epochs",
                        segmenter.name, experiment.name, experiment.fold, repeat, k, len(samples),
                        len(samples) - len(stage.real), epochs[stage.budget])
            segmenter.train([s.image for s in samples], [s.labels for s in samples], [s.image for s in val],
                            [s.labels for s in val], config, target, init_from=model, sample_weights=weights)
        model = target
    test = [real[n] for n in experiment.test]
    by_iou = accuracy_by_threshold([s.labels for s in test], segmenter.predict(model, [s.image for s in test]))
    return {
        "model": segmenter.name, "experiment": experiment.name, "fold": experiment.fold, "repeat": repeat,
        "accuracy": float(np.mean(list(by_iou.values()))), "accuracy_by_iou": by_iou,
        "validation_accuracy": segmentation_accuracy([s.labels for s in val],
                                                     segmenter.predict(model, [s.image for s in val])),
        "trained_on": sorted(trained_on), "synthetic_pairs": n_synthetic,
        "synthetic_groups": list(experiment.synthetic_groups), "model_path": str(model),
    }


def _content_digest(path: Path) -> str:
    """A digest of a model file, or of every file in a model folder (names and bytes)."""
    if not path.exists():
        raise FileNotFoundError(f"init_from {path} does not exist")
    digest = hashlib.sha256()
    for item in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        digest.update(str(item.relative_to(path.parent if path.is_file() else path)).encode())
        digest.update(item.read_bytes())
    return digest.hexdigest()
