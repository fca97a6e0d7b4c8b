"""The mask generator as the pipelines use it: parameter blocks parsed once, fields drawn, decoded, filtered."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from cellsynth.gan.pretrained import load_initial_weights
from cellsynth.generated_fields import mask_filter
from cellsynth.mask_generator import GenerationSettings, MaskGANSettings, MaskSource

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((REPO / "conf/base/parameters_mask_gan.yml").read_text())["mask_gan"]


def test_settings_parse_the_base_block_and_name_bad_parameters(params):
    settings = MaskGANSettings.from_params(params)
    assert settings.training.kimg == params["training"]["kimg"] and settings.downsample == params["downsample"]
    assert settings.generation.min_objects == params["generation"]["min_objects"]
    assert settings.eval_images == params["evaluation"]["n_images"] and settings.init_from == params["init_from"]
    assert GenerationSettings.from_params({**params["generation"], "decode": None}).decode == {}
    with pytest.raises(ValueError, match=r"unknown mask_gan parameter\(s\) \['downsampel'\]"):
        MaskGANSettings.from_params({**params, "downsampel": 2})
    with pytest.raises(ValueError, match=r"mask_gan.evaluation parameter\(s\) \['n'\]"):
        MaskGANSettings.from_params({**params, "evaluation": {"n": 3}})
    with pytest.raises(ValueError, match="mask_gan.downsample"):
        MaskGANSettings.from_params({**params, "downsample": 0})
    with pytest.raises(ValueError, match=r"unknown mask_gan.generation parameter\(s\) \['min_object'\]"):
        GenerationSettings.from_params({"min_object": 3})
    with pytest.raises(ValueError, match="mask_gan.generation.decode"):
        GenerationSettings(decode={"nitre": 5})
    for bad in ({"n": 0}, {"min_objects": -1}, {"max_consistency_error": 0}, {"truncation_psi": 1.5}):
        with pytest.raises(ValueError, match=f"mask_gan.generation.{next(iter(bad))}"):
            GenerationSettings(**bad)


def test_sampled_masks_are_deterministic_and_filtered_as_the_filters_say(params):
    state = load_initial_weights("demo-phantom")
    source = MaskSource.from_model({**state, "downsample": params["downsample"]}, "cellpose_flow",
                                   GenerationSettings.from_params(params["generation"]))
    drawn = source.sample(8, seed=5)
    again = source.sample(8, seed=5)
    size = state["architecture"]["img_resolution"] * params["downsample"]
    assert drawn.fields.shape == (8, size, size, 3) and drawn.labels.shape == (8, size, size)
    assert np.array_equal(drawn.labels, again.labels) and np.array_equal(drawn.kept, again.kept)
    assert not np.array_equal(drawn.labels, source.sample(8, seed=6).labels)
    expected = mask_filter(drawn.fields, drawn.labels, min_objects=source.filters.min_objects,
                           max_consistency_error=source.filters.max_consistency_error)
    assert np.array_equal(drawn.kept, expected) and drawn.kept.any()
    assert all(labels.max() >= source.filters.min_objects for labels in drawn.labels[drawn.kept])
    assert np.all(drawn.errors[drawn.kept] <= source.filters.max_consistency_error)
    strict = MaskSource(source.generator, source.downsample,
                        filters=dataclasses.replace(source.filters, min_objects=10_000))
    assert not strict.sample(8, seed=5).kept.any()

