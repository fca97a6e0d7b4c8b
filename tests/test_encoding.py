"""Tests of cellsynth.encoding: the three encodings and the batched flow decoder."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch
from conftest import disk_labels
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from cellsynth import encoding, flow_dynamics
from cellsynth.encoding import (
    METHODS,
    as_gan_images,
    decode,
    decode_batch,
    encode,
    encode_batch,
)
from cellsynth.metrics import segmentation_accuracy

# Cellpose warns "empty masks!" / "no seeds found" through logging; expected here.
logging.getLogger("cellpose").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def nuclei_crops() -> np.ndarray:
    """Four 256x256 crops of StarDist's bundled nuclei mask, ``(4, 256, 256)``."""
    from stardist.data import test_image_nuclei_2d

    _, mask = test_image_nuclei_2d(return_mask=True)
    return np.stack([mask[y : y + 256, x : x + 256] for y in (0, 256) for x in (0, 256)]).astype(np.int32)


@pytest.fixture(scope="module")
def nuclei_encoded(nuclei_crops: np.ndarray) -> np.ndarray:
    return encode_batch(nuclei_crops)


@pytest.fixture(scope="module")
def noised_encoded(nuclei_encoded: np.ndarray) -> np.ndarray:
    """Encoded crops plus white noise (sd 20) and smooth noise (sd 30), clipped to 0..255."""
    rng = np.random.default_rng(7)
    white = rng.normal(0.0, 20.0, nuclei_encoded.shape)
    smooth = ndi.gaussian_filter(rng.normal(0.0, 1.0, nuclei_encoded.shape), (0, 3, 3, 0))
    smooth *= 30.0 / smooth.std()
    return np.clip(nuclei_encoded + white + smooth, 0, 255).astype(np.float32)


def accuracy(gt: np.ndarray, pred: np.ndarray) -> float:
    return segmentation_accuracy(list(gt), list(pred))


# --- encodings: layout, dtypes, value ranges ---------------------------------------------------


def test_cellpose_flow_encoding_layout() -> None:
    labels = disk_labels((64, 64), [(20, 20), (44, 44)], 8)
    encoded = encode(labels)
    assert encoded.shape == (64, 64, 3) and encoded.dtype == np.uint8
    np.testing.assert_array_equal(encoded[..., 0], np.where(labels > 0, 255, 0))
    assert (encoded[labels == 0, 1:] == 128).all(), "zero flow is stored as round(127.5) = 128"
    unit = encoded[labels > 0, 1:] / 127.5 - 1.0
    # Unit vectors, except at the centres, where the heat gradient vanishes.
    assert np.mean(np.abs(np.hypot(unit[:, 0], unit[:, 1]) - 1.0) < 0.02) > 0.98


def test_cellpose_flow_channels_are_dx_then_dy_pointing_to_the_centre() -> None:
    from cellpose import dynamics

    labels = disk_labels((64, 64), [(32, 32)], 12)
    encoded = encode(labels).astype(int)
    # Right of the centre the flow points left (dx < 0), below it up (dy < 0).
    assert encoded[32, 40, 1] < 100 and abs(encoded[32, 40, 2] - 128) <= 2
    assert encoded[40, 32, 2] < 100 and abs(encoded[40, 32, 1] - 128) <= 2
    assert encoded[32, 24, 1] > 155 and encoded[24, 32, 2] > 155
    # Same numbers as Cellpose's dP = [dy, dx], swapped and quantised.
    dy_dx = dynamics.masks_to_flows(labels, device=torch.device("cpu"))
    np.testing.assert_array_equal(encoded[..., 1], np.round((dy_dx[1] + 1) * 127.5))
    np.testing.assert_array_equal(encoded[..., 2], np.round((dy_dx[0] + 1) * 127.5))


def test_binary_and_label_encoding_layout() -> None:
    labels = disk_labels((32, 48), [(10, 10), (20, 30)], 5) * 3
    binary = encode(labels, "binary")
    assert binary.shape == (32, 48, 1) and binary.dtype == np.uint8
    assert set(np.unique(binary)) == {0, 255}
    as_label = encode(labels, "label")
    assert as_label.shape == (32, 48, 1) and as_label.dtype == np.float32
    np.testing.assert_array_equal(as_label[..., 0], labels)


@pytest.mark.parametrize("method", METHODS)
def test_encode_batch_stacks_encode(method: str) -> None:
    stack = np.stack([disk_labels((40, 40), [(12, 12), (28, 26)], r) for r in (4, 6)])
    batch = encode_batch(stack, method)
    assert batch.shape[:3] == stack.shape
    for index in range(len(stack)):
        np.testing.assert_array_equal(batch[index], encode(stack[index], method))


def test_labels_split_into_pieces_before_encoding() -> None:
    # One id in two separate disks: both pieces get flows towards their own centre.
    labels = disk_labels((64, 64), [(16, 16), (48, 48)], 7)
    labels[labels > 0] = 5
    decoded = decode(encode(labels), min_size=0)
    assert decoded.max() == 2
    assert accuracy(connected_components(labels)[None], decoded[None]) == 1.0


# --- round trips ---------------------------------------------------------------------------------


def test_binary_round_trip_of_separated_objects() -> None:
    labels = disk_labels((64, 64), [(16, 16), (16, 48), (48, 30)], 9)
    decoded = decode(encode(labels, "binary"), "binary")
    assert decoded.dtype == np.int32
    assert accuracy(labels[None], decoded[None]) == 1.0


def test_label_round_trip_is_exact_up_to_numbering(nuclei_crops: np.ndarray) -> None:
    decoded = decode_batch(encode_batch(nuclei_crops, "label"), "label")
    assert decoded.dtype == np.int32
    for gt, pred in zip(nuclei_crops, decoded, strict=True):
        pairs = np.unique(np.stack([gt.ravel(), pred.ravel()]), axis=1)
        assert pairs.shape[1] == len(np.unique(gt)) == len(np.unique(pred))
        assert pred.max() == len(np.unique(pred)) - 1, "ids are sequential"


def test_label_decoding_rounds_clips_and_splits() -> None:
    encoded = np.zeros((8, 8, 1), np.float32)
    encoded[1:3, 1:3] = 2.4  # -> 2
    encoded[5:7, 5:7] = 1.6  # -> 2 again, but a separate component
    encoded[0, 7] = -3.0  # -> background
    decoded = decode(encoded, "label")
    assert sorted(np.unique(decoded)) == [0, 1, 2]
    assert decoded[0, 7] == 0 and decoded[1, 1] != decoded[5, 5]


def test_cellpose_flow_round_trip_on_nuclei(nuclei_crops: np.ndarray, nuclei_encoded: np.ndarray) -> None:
    decoded = decode_batch(nuclei_encoded, device="cpu")
    assert decoded.shape == nuclei_crops.shape and decoded.dtype == np.int32
    assert accuracy(nuclei_crops, decoded) >= 0.97
    for crop in decoded:
        assert crop.max() == len(np.unique(crop)) - 1, "ids are sequential"


def test_cellpose_flow_round_trip_on_phantom() -> None:
    from cellsynth.phantom import demo_dataset

    labels = np.stack([lab for _, lab in demo_dataset(n_images=2, size=256, seed=0)])
    decoded = decode_batch(encode_batch(labels), device="cpu")
    assert accuracy(labels, decoded) >= 0.97


def test_cellpose_flow_round_trip_on_dsb2018(dsb2018) -> None:
    files = sorted((dsb2018 / "fluo" / "masks").glob("*.tif"))[::10]
    labels = np.stack([tifffile.imread(path)[:256, :256] for path in files]).astype(np.int32)
    decoded = decode_batch(encode_batch(labels), device="cpu")
    assert accuracy(labels, decoded) >= 0.97


# --- the batched decoder against Cellpose --------------------------------------------------------


def test_batched_decoder_agrees_with_cellpose(nuclei_encoded: np.ndarray, noised_encoded: np.ndarray) -> None:
    for encoded in (nuclei_encoded, noised_encoded):
        ours = decode_batch(encoded, backend="batched", device="cpu")
        reference = decode_batch(encoded, backend="cellpose", device="cpu")
        assert accuracy(reference, ours) >= 0.99


def test_batched_decoder_agrees_with_cellpose_under_other_options(noised_encoded: np.ndarray) -> None:
    options = {"niter": 120, "flow_threshold": None, "min_size": 200, "cellprob_threshold": 0.5}
    ours = decode_batch(noised_encoded[:2], backend="batched", device="cpu", **options)
    reference = decode_batch(noised_encoded[:2], backend="cellpose", device="cpu", **options)
    assert accuracy(reference, ours) >= 0.99
    assert min(np.bincount(crop.ravel())[1:].min() for crop in ours) >= 200


def test_batch_result_equals_single_crop_results(noised_encoded: np.ndarray) -> None:
    batch = decode_batch(noised_encoded, device="cpu")
    for encoded, decoded in zip(noised_encoded, batch, strict=True):
        np.testing.assert_array_equal(decode(encoded, device="cpu"), decoded)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_decoder_on_cuda_agrees_with_cpu(noised_encoded: np.ndarray) -> None:
    on_gpu = decode_batch(noised_encoded, device="cuda")
    on_cpu = decode_batch(noised_encoded, device="cpu")
    assert accuracy(on_cpu, on_gpu) >= 0.99


@pytest.mark.parametrize("band_pixels", [1 << 14, flow_dynamics._CPU_BAND_PIXELS])
def test_flow_errors_match_cellpose(band_pixels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from cellpose import metrics
    from stardist.data import test_image_nuclei_2d

    # Nuclei plus a bar wider than a shelf of the packing canvas; small bands
    # on CPU split the canvas into many.
    monkeypatch.setattr(flow_dynamics, "_CPU_BAND_PIXELS", band_pixels)
    _, mask = test_image_nuclei_2d(return_mask=True)
    labels = np.zeros((300, 700), np.int64)
    labels[:, :512] = mask[:300]
    labels[:, 512:] = np.where(mask[:300, :188] > 0, mask[:300, :188] + 1000, 0)
    labels[140:160, 20:680] = 5000
    labels = connected_components(labels).astype(np.int64)
    rng = np.random.default_rng(0)
    noised = np.clip(encode(labels) + rng.normal(0.0, 30.0, (*labels.shape, 3)), 0, 255)
    unit_flows = torch.from_numpy(noised[None, ..., 1:] / 127.5 - 1.0).permute(0, 3, 1, 2).float()
    dx, dy = unit_flows[0].numpy()
    expected, _ = metrics.flow_error(labels.astype(np.int32), np.stack([dy, dx]) * 5.0, torch.device("cpu"))
    ours = flow_dynamics.flow_errors(torch.from_numpy(labels)[None], unit_flows)[1:].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_fill_holes_matches_cellpose() -> None:
    from cellpose import utils

    rng = np.random.default_rng(3)
    for _ in range(60):
        noise = ndi.gaussian_filter(rng.normal(size=(48, 48)), rng.uniform(1.0, 3.0))
        levels = np.digitize(noise, np.quantile(noise, np.sort(rng.uniform(0, 1, rng.integers(2, 6)))))
        levels[rng.random(levels.shape) < rng.uniform(0, 0.05)] = 0
        labels = connected_components(levels, background=0, connectivity=int(rng.integers(1, 3))).astype(np.int64)
        if labels.max() > 3:
            labels[labels == 2] = 3  # an object made of separate pieces
        expected = utils.fill_holes_and_remove_small_masks(labels.astype(np.uint16), min_size=-1)
        ours = flow_dynamics.fill_holes(labels.copy())
        pairs = np.unique(np.stack([expected.ravel(), ours.ravel()]), axis=1)
        assert pairs.shape[1] == len(np.unique(expected)) == len(np.unique(ours))
        np.testing.assert_array_equal(expected > 0, ours > 0)


def test_fill_holes_absorbs_enclosed_objects() -> None:
    ring = disk_labels((40, 40), [(20, 20)], 14) - disk_labels((40, 40), [(20, 20)], 8)
    labels = ring * 4 + disk_labels((40, 40), [(20, 20)], 4) * 9  # ring 4, gap, disk 9 inside
    filled = flow_dynamics.fill_holes(labels.astype(np.int64))
    np.testing.assert_array_equal(filled, disk_labels((40, 40), [(20, 20)], 14) * 4)


# --- empty input -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_empty_labels_round_trip_to_zeros(method: str) -> None:
    empty = np.zeros((32, 32), np.int32)
    encoded = encode(empty, method)
    if method == "cellpose_flow":
        assert (encoded[..., 0] == 0).all() and (encoded[..., 1:] == 128).all()
    else:
        assert not encoded.any()
    decoded = decode(encoded, method)
    assert decoded.dtype == np.int32 and not decoded.any()


@pytest.mark.parametrize("backend", encoding.BACKENDS)
def test_empty_crops_in_a_batch(backend: str, nuclei_encoded: np.ndarray) -> None:
    empty = encode(np.zeros((256, 256), np.int32))
    batch = np.stack([empty, nuclei_encoded[0], empty])
    decoded = decode_batch(batch, backend=backend, device="cpu")
    assert not decoded[0].any() and not decoded[2].any() and decoded[1].max() > 10


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.zeros((4, 4, 4), np.int32), ValueError, r"labels must be 2-D .*shape \(4, 4, 4\)"),
        (np.full((4, 4), 1.5), ValueError, "non-integer"),
        (np.full((4, 4), -1), ValueError, "non-negative.*-1"),
        (np.full((4, 4), np.nan), ValueError, "NaN"),
        (np.full((4, 4), "a"), TypeError, "dtype"),
        (np.zeros((0, 4), np.int32), ValueError, "empty"),
    ],
)
def test_encode_rejects_bad_labels(labels: np.ndarray, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        encode(labels)


def test_encode_batch_wants_a_stack() -> None:
    with pytest.raises(ValueError, match=r"labels must be 3-D \(B, H, W\)"):
        encode_batch(np.zeros((4, 4), np.int32))


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="method must be one of .*'flows'"):
        encode(np.zeros((4, 4), np.int32), "flows")
    with pytest.raises(ValueError, match="method must be one of .*'flows'"):
        decode(np.zeros((4, 4, 3), np.uint8), "flows")


@pytest.mark.parametrize(
    ("encoded", "method", "opts", "error", "match"),
    [
        (np.zeros((4, 4, 2), np.uint8), "cellpose_flow", {}, ValueError, "expects 3 channel.*got 2"),
        (np.zeros((4, 4, 3), np.uint8), "binary", {}, ValueError, "expects 1 channel.*got 3"),
        (np.zeros((4, 4), np.uint8), "binary", {}, ValueError, r"encoded must be 3-D \(H, W, C\)"),
        (np.full((4, 4, 3), np.inf, np.float32), "cellpose_flow", {}, ValueError, "NaN or infinite"),
        (np.zeros((4, 4, 3), bool), "cellpose_flow", {}, TypeError, "dtype"),
        (np.zeros((4, 4, 3), np.uint8), "cellpose_flow", {"backend": "numba"}, ValueError, "backend.*'numba'"),
        (np.zeros((4, 4, 3), np.uint8), "cellpose_flow", {"n_iter": 5}, TypeError, r"unexpected keyword.*n_iter"),
        (np.zeros((4, 4, 3), np.uint8), "cellpose_flow", {"niter": -1}, ValueError, "niter.*-1"),
        (np.zeros((4, 4, 3), np.uint8), "cellpose_flow", {"device": "tpu9"}, ValueError, "device.*'tpu9'"),
        (np.zeros((4, 4, 3), np.uint8), "cellpose_flow", {"min_size": "15"}, ValueError, "min_size.*'15'"),
        (np.zeros((4, 4, 3), np.uint8), "cellpose_flow", {"max_size_fraction": 0}, ValueError, "max_size_frac"),
        (np.zeros((4, 4, 1), np.uint8), "binary", {"niter": 5}, TypeError, "'binary' takes no options"),
    ],
)
def test_decode_rejects_bad_input(
    encoded: np.ndarray, method: str, opts: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode(encoded, method, **opts)


def test_decode_options_from_configuration_are_checked_by_name() -> None:
    assert set(encoding.FLOW_DECODE_OPTIONS) == {"niter", "cellprob_threshold", "flow_threshold", "min_size",
                                                 "max_size_fraction", "device", "backend", "batch_size"}
    assert encoding.check_decode_options({"niter": 50}, "x.decode") == {"niter": 50}
    assert encoding.check_decode_options(None, "x.decode") == {}
    with pytest.raises(ValueError, match=r"unknown mask_gan.generation.decode option\(s\) \['nitre'\]"):
        encoding.check_decode_options({"nitre": 50, "niter": 5}, "mask_gan.generation.decode")


def test_decode_batch_wants_a_batch() -> None:
    with pytest.raises(ValueError, match=r"encoded must be 4-D \(B, H, W, C\)"):
        decode_batch(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        decode(np.zeros((4, 4, 3), np.uint8), device="cuda")


@pytest.mark.parametrize("method", METHODS)
def test_gan_images_are_uint8_and_decode_back(method):
    labels = np.zeros((2, 32, 32), np.int32)
    labels[0, 4:12, 4:12], labels[0, 20:28, 6:14], labels[1, 10:20, 10:20] = 1, 2, 1
    images = as_gan_images(encode_batch(labels, method=method), method)
    assert images.dtype == np.uint8 and images.shape[:3] == labels.shape
    decoded = decode_batch(images, method=method)
    assert segmentation_accuracy(list(labels), list(decoded)) == 1.0


def test_batch_codec_shows_progress_when_asked(capsys):
    labels = np.zeros((3, 32, 32), np.int32)
    labels[:, 8:20, 8:20] = 1
    decode_batch(encode_batch(labels, progress=True), progress=True)
    err = capsys.readouterr().err
    assert "encode (cellpose_flow)" in err and "decode (batched)" in err


# --- reduced scale: the GAN learns smaller fields, decoded at full size ---------------------------


def test_downscale_samples_block_centres_of_labels_and_fields() -> None:
    labels = np.arange(2 * 8 * 8).reshape(2, 8, 8)
    small = encoding.downscale(labels, 2)
    assert small.shape == (2, 4, 4) and small.dtype == labels.dtype
    np.testing.assert_array_equal(small, labels[:, 1::2, 1::2])
    fields = np.zeros((3, 8, 8, 3), np.uint8)
    assert encoding.downscale(fields, 4).shape == (3, 2, 2, 3)
    assert encoding.downscale(fields, 1) is fields


def test_upscaled_fields_decode_to_the_full_size_objects() -> None:
    """Disks encoded, halved and enlarged again decode to the same disks at full size (smoothed outlines)."""
    labels = disk_labels((64, 64), [(16, 16), (16, 46), (46, 20), (44, 48)], 9)[None]
    full = encoding.upscale_fields(encoding.downscale(encode_batch(labels), 2), 2)
    assert full.shape == (1, 64, 64, 3) and full.dtype == np.uint8
    decoded = decode_batch(full)
    assert decoded.max() == 4
    assert accuracy(labels, decoded) > 0.8


def test_label_images_are_enlarged_by_repetition() -> None:
    """Interpolating ids would invent objects between them: label images repeat pixels."""
    small = np.array([[[[3], [7]], [[0], [1]]]], np.uint8)
    large = encoding.upscale_fields(small, 2, "label")
    np.testing.assert_array_equal(large[0, ..., 0], [[3, 3, 7, 7], [3, 3, 7, 7], [0, 0, 1, 1], [0, 0, 1, 1]])


@pytest.mark.parametrize("factor, match", [(0, "integer >= 1"), (1.5, "integer >= 1"), (3, "not a multiple")])
def test_bad_scale_factors_are_refused(factor, match) -> None:
    with pytest.raises(ValueError, match=match):
        encoding.downscale(np.zeros((1, 8, 8), np.int32), factor)


def test_upscale_wants_uint8_batches() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encoding.upscale_fields(np.zeros((1, 4, 4, 3), np.float32), 2)
