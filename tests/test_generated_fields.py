"""Generated flow fields: the consistency error, the mask filter, sample diversity, snapshot metrics."""

from __future__ import annotations

import numpy as np
import pytest

from cellsynth.encoding import decode_batch, encode, encode_batch
from cellsynth.generated_fields import (
    consistency_errors,
    decode_consistency,
    generated_field_metrics,
    mask_filter,
    sample_diversity,
)
from cellsynth.quality import extract_features

CROP = 64

pytestmark = pytest.mark.usefixtures("single_thread")



def test_consistency_error_definition():
    yy, xx = np.mgrid[:32, :32]
    labels = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 64).astype(np.int32)
    exact = encode(labels)
    assert consistency_errors(exact[None], labels[None])[0] == 0.0
    # Probability off everywhere, flows intact: every foreground pixel disagrees.
    no_probability = exact.copy()
    no_probability[..., 0] = 0
    assert consistency_errors(no_probability[None], labels[None])[0] == pytest.approx(1.0)
    # Flows reversed on the object: |(-v) - v|^2 = 4 |v|^2 = 4 for unit vectors.
    reversed_flows = exact.copy()
    reversed_flows[..., 1:] = 255 - exact[..., 1:]
    assert consistency_errors(reversed_flows[None], labels[None])[0] == pytest.approx(4.0, abs=0.05)
    empty = np.zeros((1, 32, 32), np.int32)
    assert consistency_errors(encode_batch(empty), empty)[0] == 0.0


def test_a_dim_field_decoded_below_the_midpoint_is_consistent_at_the_decoders_threshold(real_fields):
    """A soft probability map (the channel at 40 % of its value) decodes into the full objects with
    ``cellprob_threshold`` -2 (p > 0.12); measured against that threshold the masks fit their field, against
    the midpoint every object disagrees."""
    dim = real_fields[:8].copy()
    dim[..., 0] = (dim[..., 0] * 0.4).astype(np.uint8)  # 255 -> 102: below 127.5, above 255 * sigmoid(-2) = 30
    labels = decode_batch(dim, cellprob_threshold=-2, device="cpu")
    full = decode_batch(real_fields[:8], device="cpu")
    assert (labels > 0).sum() == pytest.approx((full > 0).sum(), rel=0.02)
    matched = consistency_errors(dim, labels, cellprob_threshold=-2)
    assert (matched < 0.05).all()
    assert (consistency_errors(dim, labels)[labels.reshape(8, -1).any(1)] > 0.9).all()
    assert decode_consistency(dim, cellprob_threshold=-2, device="cpu") == 1.0
    assert mask_filter(dim, labels, min_objects=0, cellprob_threshold=-2).all()
    assert not mask_filter(dim, labels, min_objects=1).any()


def test_encoded_real_masks_are_consistent(real_fields):
    assert decode_consistency(real_fields, device="cpu") >= 0.95


def test_noise_fields_are_inconsistent():
    noise = np.random.default_rng(10).integers(0, 256, (16, CROP, CROP, 3), dtype=np.uint8)
    assert decode_consistency(noise, device="cpu") <= 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "binary"}, "'cellpose_flow' only"),
        ({"flows": np.zeros((2, 8, 8, 2), np.uint8)}, r"\(N, H, W, 3\)"),
        ({"flows": np.full((2, 8, 8, 3), 300.0)}, r"in \[0, 255\]"),
        ({"flows": np.full((2, 8, 8, 3), np.nan)}, r"in \[0, 255\]"),
        ({"tolerance": 0.0}, "tolerance must be a positive number"),
    ],
)
def test_decode_consistency_rejects_bad_inputs(kwargs, message):
    arguments = {"flows": np.zeros((2, 8, 8, 3), np.uint8), **kwargs}
    with pytest.raises(ValueError, match=message):
        decode_consistency(**arguments)


def test_consistency_errors_need_matching_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        consistency_errors(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9), np.int32))


def test_sample_diversity_is_zero_for_copies_and_grows_with_variety(real_fields):
    assert sample_diversity(np.repeat(real_fields[:1], 8, axis=0)) == pytest.approx(0.0, abs=1e-12)
    varied = sample_diversity(real_fields[:32])
    assert 0.15 < varied < 0.5  # nuclei crops (64x64, Cellpose flows): about 0.27 on DSB held-out crops
    with pytest.raises(ValueError, match="N >= 2"):
        sample_diversity(real_fields[:1])


def test_generated_field_metrics_of_real_fields_and_of_noise(mean_colours, real_fields):
    reference = extract_features(real_fields, mean_colours)
    metrics, labels, kept = generated_field_metrics(real_fields[:16], reference, mean_colours, min_objects=0,
                                                    device="cpu")
    objects = labels.reshape(16, -1).max(1)
    assert metrics["pass_rate"] == kept.mean() >= 0.9
    assert metrics["objects_per_mask"] == pytest.approx(objects.mean())
    assert metrics["cells_per_crop"] == pytest.approx(objects[kept].mean())
    assert {"fid_randinit", "kid_randinit_mean", "diversity"} <= set(metrics)
    noise = np.random.default_rng(3).integers(0, 256, (8, CROP, CROP, 3), dtype=np.uint8)
    metrics, _, kept = generated_field_metrics(noise, reference, mean_colours, device="cpu")
    assert metrics["pass_rate"] == 0.0 and np.isnan(metrics["cells_per_crop"])


def test_mask_filter_keeps_consistent_masks_with_enough_objects(real_fields):
    fields = real_fields[:8]
    labels = decode_batch(fields, device="cpu")
    objects = labels.reshape(8, -1).max(1)
    assert mask_filter(fields, labels, min_objects=0).all()  # real encodings are consistent
    np.testing.assert_array_equal(mask_filter(fields, labels, min_objects=5), objects >= 5)
    shuffled = labels[::-1].copy()  # masks of other fields: inconsistent unless both are empty
    differs = (shuffled != labels).reshape(8, -1).any(1)
    assert not mask_filter(fields, shuffled, min_objects=0)[differs].any()
    with pytest.raises(ValueError, match="min_objects >= 0 and max_consistency_error > 0"):
        mask_filter(fields, labels, max_consistency_error=0)
