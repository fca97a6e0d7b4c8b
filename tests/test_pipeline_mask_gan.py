"""A real Kedro session runs ``data_prep`` then ``mask_gan`` on a tiny configuration; a rerun resumes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import GAN_TINY, REPO, TINY, run
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cellsynth import encoding
from cellsynth.gan.pretrained import load_initial_weights
from cellsynth.mask_scale import largest_object_areas, median_object_area
from cellsynth.phantom import demo_dataset
from cellsynth.pipelines.mask_gan.pipeline import create_pipeline

pytestmark = pytest.mark.usefixtures("single_thread")


def test_mask_gan_trains_generates_logs_and_resumes(project: Path):
    run(project, GAN_TINY)  # data_prep
    run(project, GAN_TINY, pipeline="mask_gan")
    assert [p.name for p in (project / "data/06_models/mask_gan").iterdir()] == ["all.pt"]  # one file per group
    (version,) = list((project / "data/06_models/mask_gan/all.pt").iterdir())  # one version folder
    model = torch.load(version / "all.pt", weights_only=False)
    assert model["encoding"] == "cellpose_flow"
    assert [h["kimg"] for h in model["history"]] == [0.016, 0.032]
    (version,) = list((project / "data/07_model_output/synthetic_masks/all.npz").iterdir())
    with np.load(version / "all.npz") as synthetic:
        assert synthetic["flows"].shape == (8, 32, 32, 3) and synthetic["labels"].shape == (8, 32, 32)
    assert (project / "data/08_reporting/mask_gan_sample_grid.png").stat().st_size > 1000
    with sqlite3.connect(project / "mlflow.db") as db:
        keys = {k for (k,) in db.execute("SELECT DISTINCT key FROM metrics")}
        artifacts = db.execute("SELECT artifact_uri FROM runs").fetchall()
    assert {"mask_gan.all.fid_randinit", "mask_gan.all.pass_rate", "mask_gan.all.diversity", "mask_gan.all.augment_p",
            "mask_gan.all.kept"} <= keys
    assert artifacts

    # a longer run with the same settings and data continues from the last checkpoint
    (checkpoints,) = list((project / "data/06_models/mask_gan_checkpoints").iterdir())
    run(project, {**GAN_TINY, "mask_gan.training.kimg": 0.048}, pipeline="mask_gan", nodes=["all.train_mask_gan"])
    latest = torch.load(sorted(checkpoints.glob("checkpoint-*.pt"))[-1], weights_only=False)
    assert [h["kimg"] for h in latest["history"]] == [0.016, 0.032, 0.048]


def test_the_demo_gan_starts_from_the_shipped_generator_and_its_masks_pass_the_filters(project: Path):
    """conf/base as the demo runs it: 64x64 crops learnt at 32x32 (downsample 2), fine-tuned from the
    shipped generator, every filter at its configured value: at least half of the masks are kept."""
    settings = {**TINY, "training_scope": "all", "mask_gan.training.kimg": 0.064,
                "mask_gan.training.snapshot_kimg": 0.032, "mask_gan.runtime.device": "cpu",
                "mask_gan.evaluation.n_images": 4, "mask_gan.generation.n": 16}
    run(project, settings)
    run(project, settings, pipeline="mask_gan")
    (version,) = list((project / "data/06_models/mask_gan/all.pt").iterdir())
    model = torch.load(version / "all.pt", weights_only=False)
    assert model["downsample"] == 2 and model["architecture"]["img_resolution"] == 32
    (version,) = list((project / "data/07_model_output/synthetic_masks/all.npz").iterdir())
    with np.load(version / "all.npz") as synthetic:
        kept = len(synthetic["labels"])
        assert synthetic["labels"].shape[1:] == (64, 64) and synthetic["flows"].shape[1:] == (64, 64, 3)
        assert all(mask.max() >= 3 for mask in synthetic["labels"])  # generation.min_objects
    assert kept >= 16 / 2


def _generate_on_memory_catalog(generation: dict, object_area: float | None = None,
                                object_area_max: float | None = None) -> dict:
    """The ``all.generate_masks`` node and the summary, on an in-memory catalog (as the Kedro starters test
    their pipelines): the shipped generator as the trained model of group ``all``, conf/base's settings."""
    params = yaml.safe_load((REPO / "conf/base/parameters_mask_gan.yml").read_text())["mask_gan"]
    state = load_initial_weights(params["init_from"])
    model = {"architecture": state["architecture"], "G_ema": state["G_ema"], "downsample": params["downsample"],
             "object_area": object_area, "object_area_max": object_area_max}
    (image, labels), = demo_dataset(n_images=1, size=64, seed=0)
    catalog = DataCatalog({
        "all.mask_gan_model": MemoryDataset(model),
        "encoded_flows": MemoryDataset({"all": {"flows": encoding.encode_batch(labels[None])}}),
        "params:mask_gan.generation": MemoryDataset({**params["generation"], **generation}),
        "params:mask_gan.runtime": MemoryDataset({**params["runtime"], "device": "cpu"}),
        "params:encoding": MemoryDataset({"method": "cellpose_flow"}),
    })
    for name in ("all.generate_masks", "summarise_generation"):  # one at a time: a runner releases intermediates
        SequentialRunner().run(create_pipeline(["all"]).only_nodes(name), catalog)
    return {name: catalog.load(name) for name in ("all.synthetic_masks", "mask_gan_generation_metrics",
                                                   "mask_gan_generation_summary")}


def test_generation_node_keeps_what_passes_the_filters_and_counts_it():
    outputs = _generate_on_memory_catalog({"n": 16})
    summary, kept = outputs["mask_gan_generation_summary"]["all"], outputs["all.synthetic_masks"]["labels"]
    assert summary["generated"] == 16 and summary["kept"] == len(kept) >= 8
    assert all(mask.shape == (64, 64) and mask.max() >= 3 for mask in kept)  # upscaled, min_objects
    assert outputs["mask_gan_generation_metrics"]["all.kept"]["value"] == len(kept)


def test_match_scale_zooms_the_kept_masks_to_the_training_crops_object_area():
    native = median_object_area(_generate_on_memory_catalog({"n": 16})["all.synthetic_masks"]["labels"])
    outputs = _generate_on_memory_catalog({"n": 16, "match_scale": True}, object_area=2.25 * native)
    summary, synthetic = outputs["mask_gan_generation_summary"]["all"], outputs["all.synthetic_masks"]
    assert summary["scale_factor"] == pytest.approx(1.5, rel=0.01)
    assert median_object_area(synthetic["labels"]) == pytest.approx(2.25 * native, rel=0.3)
    assert all(mask.max() >= 3 for mask in synthetic["labels"])  # min_objects holds after the zoom
    # the stored fields encode the zoomed masks
    np.testing.assert_array_equal(synthetic["flows"], encoding.encode_batch(synthetic["labels"]))
    with pytest.raises(ValueError, match="match_scale: false"):
        _generate_on_memory_catalog({"n": 16, "match_scale": True})  # a model without the crops' object area


def test_drop_oversized_drops_the_masks_holding_an_object_larger_than_any_training_object():
    native = _generate_on_memory_catalog({"n": 16})["all.synthetic_masks"]["labels"]
    largest = largest_object_areas(native)
    limit = float(np.median(largest))
    outputs = _generate_on_memory_catalog({"n": 16, "drop_oversized": True}, object_area_max=limit)
    kept = outputs["all.synthetic_masks"]["labels"]
    assert len(kept) == (largest <= limit).sum() >= 1 and len(kept) < len(native)
    assert largest_object_areas(kept).max() <= limit
    assert outputs["mask_gan_generation_summary"]["all"]["kept"] == len(kept)
    with pytest.raises(ValueError, match="drop_oversized: false"):
        _generate_on_memory_catalog({"n": 2, "drop_oversized": True})  # a model without the crops' largest area


def test_a_typo_in_the_decode_options_is_named():
    with pytest.raises(ValueError, match=r"unknown mask_gan.generation.decode option\(s\) \['nitre'\]"):
        _generate_on_memory_catalog({"n": 2, "decode": {"nitre": 50}})
