"""Structure comparison of mask sets: identical sets are at distance 0, a different layout is farther."""

from __future__ import annotations

import numpy as np
import pytest

from cellsynth import simcep
from cellsynth.comparison import (
    ComparisonSettings,
    MaskSet,
    compare_mask_sets,
    comparison_table,
    mean_table,
    readable_quality_table,
)
from cellsynth.encoding import CodecCheckSettings
from cellsynth.quality import inception_features
from cellsynth.training.config import config_from_params
from cellsynth.translation import ChannelNormalizer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def features():
    with pytest.warns(UserWarning):
        return inception_features(allow_download=False)


def _images(labels: np.ndarray) -> np.ndarray:
    return ((labels > 0) * 200 + 20).astype(np.uint8)[..., None]


def test_identical_sets_are_at_zero_and_other_layouts_farther(features):
    dense = np.stack(simcep.simulate(simcep.SimcepParams(cells_per_crop=12, radius_min=3, radius_max=5), 4, 48, 0))
    sparse = np.stack(simcep.simulate(simcep.SimcepParams(cells_per_crop=3, radius_min=6, radius_max=9), 4, 48, 1))
    normalizer = ChannelNormalizer([0], [255], "uint8")
    scores = compare_mask_sets(MaskSet(dense, _images(dense)),
                               {"same": MaskSet(dense, _images(dense)), "sparse": MaskSet(sparse, _images(sparse)),
                                "masks only": MaskSet(sparse), "one": MaskSet(sparse[:1]),
                                "none": MaskSet(np.zeros((0, 1, 1), np.int32))},
                               features, normalizer)
    same, other = scores["same"], scores["sparse"]
    assert same["flows.fid_randinit"] == pytest.approx(0, abs=1e-6) and same["layout.cells_per_crop"] == 0
    assert other["flows.fid_randinit"] > 1 and other["images.fid_randinit"] > 1
    assert other["layout.cells_per_crop"] > 5 and other["layout.area"] > same["layout.area"]
    assert "images.fid_randinit" not in scores["masks only"]
    assert "flows.fid_randinit" not in scores["one"] and scores["one"]["n_masks"] == 1
    assert scores["none"] == {"n_masks": 0.0}  # e.g. a GAN whose masks all failed its filters


def test_mismatched_sizes_and_missing_normalizer_are_named(features):
    masks = np.stack(simcep.simulate(simcep.SimcepParams(), 2, 32, 0))
    bigger = np.stack(simcep.simulate(simcep.SimcepParams(), 2, 40, 0))
    with pytest.raises(ValueError, match="'big'.*shape"):
        compare_mask_sets(MaskSet(masks), {"big": MaskSet(bigger)}, features)
    with pytest.raises(ValueError, match="normalizer"):
        compare_mask_sets(MaskSet(masks, _images(masks)), {}, features)


def test_comparison_table_has_a_row_per_group_and_set_and_the_means():
    table = comparison_table({"fold_0": {"real": {"fid": 1.0}, "gan": {"fid": 5.0}},
                              "fold_1": {"real": {"fid": 3.0}, "gan": {"fid": float("nan")}}})
    assert list(table.columns) == ["group", "set", "fid"]
    means = table[table["group"] == "mean"].set_index("set")["fid"]
    assert len(table) == 6 and means["real"] == 2.0 and means["gan"] == 5.0
    assert mean_table(table.rename(columns={"fid": "flows.fid"})).to_dict() == {"real": {"flows.fid": 2.0},
                                                                                "gan": {"flows.fid": 5.0}}
    with pytest.raises(ValueError, match="no group"):
        comparison_table({})


def test_quality_table_reads_without_a_glossary_and_marks_the_closer_set():
    table = comparison_table({"fold_0": {
        "real": {"flows.fid_randinit": 1.0, "flows.kid_randinit_std": 0.1, "layout.ripley_l": 0.5},
        "gan": {"flows.fid_randinit": 3.0, "flows.kid_randinit_std": 0.2, "layout.ripley_l": 2.0},
        "simcep": {"flows.fid_randinit": 5.0, "flows.kid_randinit_std": 0.1, "layout.ripley_l": 1.0}}})
    readable = readable_quality_table(mean_table(table))
    assert list(readable.columns) == ["real training crops", "GAN", "SIMCEP", "closer to real"]
    assert "lower is closer" in readable.index.name
    rows = readable["closer to real"].to_dict()
    assert rows == {"FID of the masks (as flow fields), random-init Inception": "GAN",
                    "KID of the masks (as flow fields), spread, random-init Inception": "",
                    "Ripley's L (px): distribution distance": "SIMCEP"}


def test_comparison_settings_name_a_bad_parameter():
    assert config_from_params(ComparisonSettings, {"max_masks": None, "seed": 3}, "c") == ComparisonSettings(None, 3)
    with pytest.raises(ValueError, match="simcep_baseline.comparison.max_masks"):
        ComparisonSettings(max_masks=0)
    with pytest.raises(ValueError, match=r"unknown simcep_baseline.comparison parameter\(s\) \['max_mask'\]"):
        config_from_params(ComparisonSettings, {"max_mask": 8}, "simcep_baseline.comparison")


def test_codec_check_settings_name_a_bad_parameter():
    check = config_from_params(CodecCheckSettings, {"max_crops": 4, "decode": {"niter": 50}}, "data_prep.codec_check")
    assert check.max_crops == 4 and check.decode == {"niter": 50}
    with pytest.raises(ValueError, match="data_prep.codec_check.decode"):
        CodecCheckSettings(decode={"n_iter": 50})
    with pytest.raises(ValueError, match="data_prep.codec_check.max_crops"):
        CodecCheckSettings(max_crops=1.5)
