"""Nodes of the ``data_prep`` pipeline: thin calls into the library modules."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellsynth import encoding
from cellsynth.crops import Fold, crops_by_group, heldout_groups, make_folds, training_groups
from cellsynth.io import AnnotatedImage, read_dataset, write_dataset
from cellsynth.metrics import object_statistics, segmentation_accuracy
from cellsynth.phantom import demo_dataset
from cellsynth.training.config import config_from_params

logger = logging.getLogger(__name__)


def load_annotated_images(dataset: dict[str, Any]) -> list[AnnotatedImage]:
    """Read the annotated dataset named by ``data_prep.dataset.source``.

    ``source: demo`` writes the built-in phantom tissue to ``demo_path`` first
    when it is missing or was made with other ``demo`` settings.
    """
    source = dataset.get("source")
    if not source:
        raise ValueError("parameter data_prep.dataset.source is empty: use 'demo' or a folder with images/ and masks/")
    if source != "demo":
        return read_dataset(Path(source))
    folder, settings = Path(dataset["demo_path"]), dict(dataset["demo"])
    stamp = folder / "demo_settings.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != settings:
        logger.info("Writing the demo phantom dataset %s to %s", settings, folder)
        samples = [AnnotatedImage(f"demo_{i:03d}", image, labels)
                   for i, (image, labels) in enumerate(demo_dataset(**settings))]
        write_dataset(folder, samples)
        stamp.write_text(json.dumps(settings))
    return read_dataset(folder)


def split_folds(images: list[AnnotatedImage], folds: dict[str, Any]) -> dict[str, Any]:
    """K image-level cross-validation folds, recorded with their settings."""
    split = make_folds([s.name for s in images], k=folds["k"], seed=folds["seed"],
                       val_fraction=folds.get("val_fraction"))
    for i, fold in enumerate(split):
        logger.info("fold %d: %d training, %d validation, %d test images", i, len(fold.train), len(fold.val),
                    len(fold.test))
    return {"k": folds["k"], "seed": folds["seed"], "val_fraction": folds.get("val_fraction"),
            "folds": [f.to_dict() for f in split]}


def assign_training_groups(
    images: list[AnnotatedImage], folds: dict[str, Any], training_scope: str, subsets: dict[str, Any]
) -> dict[str, list[str]]:
    """The images every group's generative models train on: ``{fold_i | fold_i-subset_f | all: [name, ...]}``."""
    groups = training_groups([Fold.from_dict(f) for f in folds["folds"]], [s.name for s in images], training_scope,
                             subsets["fractions"], subsets["seed"])
    for group, names in groups.items():
        logger.info("%s: generative models train on %d image(s)", group, len(names))
    return {group: list(names) for group, names in groups.items()}


def extract_training_crops(
    images: list[AnnotatedImage], groups: dict[str, list[str]], crops: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """EXTRACT-CROPS from the training images of each group (fold, fold subset or all)."""
    return crops_by_group(images, groups, **crops)


def extract_heldout_crops(
    images: list[AnnotatedImage], folds: dict[str, Any], groups: dict[str, list[str]], crops: dict[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Crops of each fold's validation images (never seen by its generative models), unrotated, to
    measure pix2pix against real images. With ``training_scope: all`` the measurement is in-sample."""
    if "all" in groups:
        logger.warning("training_scope is 'all': pix2pix is measured on its own training images (in-sample)")
    heldout = heldout_groups(groups, [Fold.from_dict(f) for f in folds["folds"]])
    return crops_by_group(images, heldout, **{**crops, "rotations": False})


def encode_crops(training_crops: Mapping[str, dict], encoding_params: dict[str, Any]) -> dict[str, dict]:
    """ENCODE every training crop's label image."""
    flows = {}
    for group in sorted(training_crops):
        labels = training_crops[group]["labels"]
        flows[group] = {"flows": encoding.encode_batch(labels, method=encoding_params["method"], progress=True)}
    return flows


def summarise_data_prep(
    images: list[AnnotatedImage],
    training_crops: Mapping[str, dict],
    encoded_flows: Mapping[str, dict],
    encoding_params: dict[str, Any],
    codec_check: dict[str, Any],
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Dataset statistics and the ENCODE -> DECODE round-trip accuracy of each group.

    Returns MLflow metrics (``{name: {"value", "step"}}``, logged as ``data_prep.<name>``) and the
    same figures as a JSON report.
    """
    summary: dict[str, Any] = {"dataset": object_statistics([s.labels for s in images]), "groups": {}}
    check = config_from_params(encoding.CodecCheckSettings, codec_check, "data_prep.codec_check")
    for group in sorted(training_crops):
        labels = training_crops[group]["labels"]
        flows = encoded_flows[group]["flows"]
        checked = slice(0, check.max_crops)
        decoded = encoding.decode_batch(flows[checked], method=encoding_params["method"], progress=True,
                                        **check.decode)
        summary["groups"][group] = {
            "crops": len(labels),
            "objects_per_crop": object_statistics(list(labels))["objects_per_image"],
            "roundtrip_accuracy": segmentation_accuracy(list(labels[checked]), list(decoded)),
        }
    summary["roundtrip_accuracy"] = float(np.mean([g["roundtrip_accuracy"] for g in summary["groups"].values()]))
    metrics = {f"dataset.{k}": v for k, v in summary["dataset"].items()}
    metrics["crops"] = float(sum(g["crops"] for g in summary["groups"].values()))
    metrics["roundtrip_accuracy"] = summary["roundtrip_accuracy"]
    logger.info("ENCODE -> DECODE round trip (%s): accuracy %.4f", encoding_params["method"],
                summary["roundtrip_accuracy"])
    return {name: {"value": float(value), "step": 0} for name, value in metrics.items()}, summary
