"""Transfer learning: the shipped generator, exported weights, and runs started from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cellsynth import encoding, generated_fields
from cellsynth.gan.pretrained import SHIPPED, export_weights, load_initial_weights
from cellsynth.gan.training import (
    GANConfig,
    adopt_architecture,
    build_generator,
    build_networks,
    gan_run_fingerprint,
    generate_images,
    train_gan,
)
from cellsynth.training import CheckpointStore, start_runtime

REPO = Path(__file__).resolve().parents[1]
TINY = dict(batch=4, z_dim=16, w_dim=16, channel_base=256, channel_max=16, r1_interval=2, seed=0, aug="none",
            pl_weight=0, style_mixing_prob=0)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def images() -> np.ndarray:
    return (np.random.default_rng(0).random((16, 32, 32, 3)) * 255).astype(np.uint8)


def _train(images, directory: Path, steps: int, init_from=None, **overrides):
    config = GANConfig(kimg=steps * TINY["batch"] / 1000, snapshot_kimg=TINY["batch"] / 1000, **{**TINY, **overrides})
    result = train_gan(images, config, CheckpointStore(directory), start_runtime("cpu", "fp32", seed=0),
                       init_from=init_from, progress=False)
    return result, CheckpointStore(directory).latest()


def base_mask_gan() -> dict:
    return yaml.safe_load((REPO / "conf/base/parameters_mask_gan.yml").read_text())["mask_gan"]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_generator_fits_the_base_configuration_and_records_its_training(name):
    """Every shipped generator draws the fields conf/base learns for 64x64 crops at 1/downsample (so
    any run of conf/base can start from it, in the generator's own widths), and its file says how it
    was made: the demo's on other phantom tissue than the demo's, the nuclei one on the DSB
    pretraining set only."""
    params = base_mask_gan()
    assert params["init_from"] in SHIPPED  # the demo starts from one
    state = load_initial_weights(name)
    config = adopt_architecture(GANConfig.from_params(params["training"]), state["architecture"])
    assert build_networks(config, 64 // params["downsample"], 3).architecture == state["architecture"]
    assert state["nimg"] > 0
    trained = state["trained"]
    assert trained["command"].startswith("python benchmarks/converge_gan.py")
    if name == "demo-phantom":
        assert trained["data"] == "demo" and trained["demo_seed"] != 0  # other phantom tissue than the demo's
    else:
        folders = trained["data"] if isinstance(trained["data"], list) else [trained["data"]]
        assert folders and all("dsb2018_pretrain/" in folder for folder in folders)  # never the evaluation set


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_generator_masks_pass_the_configured_filters(name):
    """Decoded masks of each shipped generator pass min_objects / max_consistency_error at conf/base's values."""
    params = base_mask_gan()
    state = load_initial_weights(name)
    generator = build_generator(state["architecture"])
    generator.load_state_dict(state["G_ema"])
    small = generate_images(generator, 32, seed=0)
    fields = encoding.upscale_fields(small, params["downsample"])
    labels = encoding.decode_batch(fields, device="cpu")
    generation = params["generation"]
    kept = generated_fields.mask_filter(fields, labels, min_objects=generation["min_objects"],
                                        max_consistency_error=generation["max_consistency_error"])
    assert kept.mean() >= 0.5
    assert generated_fields.sample_diversity(fields) > 0.1  # not one field repeated


def test_exported_weights_start_a_run_that_continues_their_schedules(images, tmp_path):
    _, checkpoint = _train(images, tmp_path / "first", steps=3, blur_sigma=2.0, blur_fade_kimg=0.016)
    path = export_weights(checkpoint, tmp_path / "weights.pt", trained={"command": "test"})
    for spec in (path, tmp_path / "first"):  # a weights file, or a run's checkpoint folder
        state = load_initial_weights(spec)
        assert state["nimg"] == 12 and set(state) >= {"G", "D", "G_ema", "architecture"}
    state = load_initial_weights(path)
    assert state["trained"] == {"command": "test"}
    result, second = _train(images, tmp_path / "second", steps=1, init_from=state, blur_sigma=2.0,
                            blur_fade_kimg=0.016)
    assert second["schedule_offset"] == 12 and second["nimg"] == 4  # a new run, the schedules go on
    start = build_networks(GANConfig(**TINY), 32, 3).generator
    start.load_state_dict(state["G"])
    assert any(not torch.equal(v, second["G"][k]) for k, v in start.state_dict().items())  # it trained on
    config = GANConfig(**TINY)
    assert gan_run_fingerprint(config, images, state) != gan_run_fingerprint(config, images)


def test_weights_of_other_widths_fine_tune_in_their_own_shape_and_other_resolutions_are_refused(images, tmp_path):
    first, _ = _train(images, tmp_path / "first", steps=1)
    start = load_initial_weights(tmp_path / "first")
    result, checkpoint = _train(images, tmp_path / "second", steps=1, init_from=start, channel_max=8, z_dim=8)
    assert result.architecture == first.architecture  # the settings' widths are for training from scratch
    assert checkpoint["config"]["channel_max"] == TINY["channel_max"] and checkpoint["config"]["z_dim"] == 16
    with pytest.raises(ValueError, match="mask_gan.init_from holds a generator of another architecture"):
        _train(np.tile(images, (1, 2, 2, 1)), tmp_path / "third", steps=1, init_from=start)  # 64x64 fields


def test_bad_init_specs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a shipped generator"):
        load_initial_weights(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        load_initial_weights(tmp_path)
    torch.save({"G": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks"):
        load_initial_weights(tmp_path / "partial.pt")
