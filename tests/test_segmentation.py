"""cellsynth.segmentation: the augmentation protocol, and tiny real StarDist and Cellpose trainings.

The trainings run on the CPU on easy data (bright disks on dark noise) with
small settings, each once per module, so the file stays near two minutes on a
loaded 2-core machine.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import disk_labels

from cellsynth.metrics import segmentation_accuracy
from cellsynth.segmentation import (
    AugmentConfig,
    CellposeSettings,
    StarDistAugmenter,
    StarDistSettings,
    augment_pair,
    elastic_deform,
    intensity_augment,
    load_cellpose,
    load_stardist,
    predict_cellpose,
    predict_stardist,
    random_flip_rotate,
    read_cellpose_settings,
    read_stardist_settings,
    train_cellpose,
    train_stardist,
)
from cellsynth.segmentation import augment as augment_module
from cellsynth.segmentation._common import repeat_counts
from cellsynth.segmentation.stardist_model import GLIBC_MMAP_THRESHOLD_MAX

# One torch thread: on a loaded 2-core machine two threads were up to 10x slower (thread sync).
THREADS = 1


def disks(count: int, seed: int, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` uint8 images of up to 9 jittered radius-6 disks (brightness ~150 over noise 0..60)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    steps = (12, 32, 52)
    for _ in range(count):
        centres = [(int(y + rng.integers(-3, 4)), int(x + rng.integers(-3, 4)))
                   for y in steps for x in steps if rng.random() < 0.8]
        label = disk_labels((size, size), centres, 6)
        images.append((rng.random((size, size)) * 60 + (label > 0) * 150).astype(np.uint8))
        labels.append(label)
    return images, labels


def l_shape() -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 image whose intensity encodes its labels: an asymmetric L (id 1) and a bar (id 2)."""
    labels = np.zeros((32, 32), np.int32)
    labels[4:20, 4:8] = 1
    labels[16:20, 4:14] = 1
    labels[24:28, 20:30] = 2
    return labels.astype(np.float32) * 0.25, labels


def no_staging_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------- augmentation


def test_flip_rotate_moves_labels_with_the_image() -> None:
    image, labels = l_shape()
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(100):
        out_image, out_labels = random_flip_rotate(image, labels, rng)
        assert out_labels.dtype == labels.dtype and out_image.shape == image.shape
        np.testing.assert_array_equal(out_image, out_labels.astype(np.float32) * 0.25)  # still aligned
        assert np.bincount(out_labels.ravel()).tolist() == np.bincount(labels.ravel()).tolist()
        outcomes.add(out_labels.tobytes())
    assert len(outcomes) == 8  # the L has no symmetry: all 8 rotations/flips occur and differ


def test_flip_rotate_multichannel_and_non_square() -> None:
    labels = np.zeros((20, 36), np.int32)
    labels[2:6, 3:20] = 1
    image = np.stack([labels * 1.0, labels * 2.0], axis=-1).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        out_image, out_labels = random_flip_rotate(image, labels, rng, p_rotate=1.0)
        assert out_image.shape == (20, 36, 2) and out_labels.shape == (20, 36)
        np.testing.assert_array_equal(out_image[..., 1], 2.0 * out_labels)
        assert out_image.flags.c_contiguous and out_labels.flags.c_contiguous


def test_elastic_keeps_integer_labels_and_no_new_ids() -> None:
    labels = disk_labels((64, 64), [(16, 16), (16, 46), (46, 20), (44, 48)], 9) * 7  # ids 7, 14, 21, 28
    image = (labels > 0).astype(np.float32)
    rng = np.random.default_rng(2)
    for _ in range(10):
        out_image, out_labels = elastic_deform(image, labels, rng, sigma=6.0)
        assert out_labels.dtype == labels.dtype and out_image.dtype == np.float32
        assert set(np.unique(out_labels)) <= set(np.unique(labels))
        assert np.mean((out_image > 0.5) == (out_labels > 0)) > 0.97  # image and labels deform together
    assert not np.array_equal(out_labels, labels)


def test_elastic_fallback_equals_elasticdeform() -> None:
    labels = disk_labels((48, 48), [(12, 12), (30, 34)], 8)
    image = np.random.default_rng(3).random((48, 48, 2)).astype(np.float32)
    displacement = np.random.default_rng(4).normal(0, 5, (2, 3, 3))
    fallback_image, fallback_labels = augment_module._deform_with_scipy(image, labels, displacement)
    assert set(np.unique(fallback_labels)) <= {0, 1, 2}
    module = augment_module._elasticdeform()
    if module is None:
        pytest.skip("elasticdeform cannot be imported here (NumPy-1 wheel); the scipy fallback is in use")
    image_ref, labels_ref = module.deform_grid([image, labels], displacement, order=[3, 0], mode="constant",
                                              cval=[0.0, 0], axis=[(0, 1), (0, 1)])
    np.testing.assert_array_equal(fallback_labels, labels_ref)
    np.testing.assert_allclose(fallback_image, image_ref, atol=1e-4)


def test_intensity_statistics() -> None:
    # Left half 0, right half 1: the left mean estimates the bias, right minus left the scale.
    image = np.zeros((64, 64), np.float32)
    image[:, 32:] = 1.0
    rng = np.random.default_rng(5)
    scales, biases, noise = [], [], []
    for _ in range(300):
        out = intensity_augment(image, rng)
        bias = out[:, :32].mean()
        scales.append(out[:, 32:].mean() - bias)
        biases.append(bias)
        noise.append(out[:, :32].std())
    scales, biases = np.array(scales), np.array(biases)
    assert 0.6 - 0.01 < scales.min() < 0.7 and 1.9 < scales.max() < 2.0 + 0.01
    assert abs(scales.mean() - 1.3) < 0.06
    assert -0.2 - 0.005 < biases.min() < -0.17 and 0.17 < biases.max() < 0.2 + 0.005
    assert abs(biases.mean()) < 0.02
    assert abs(np.mean(noise) - 0.02) < 0.002
    assert intensity_augment(image, rng).dtype == np.float32


def test_augmentation_is_seeded() -> None:
    image, labels = l_shape()
    first = augment_pair(image, labels, np.random.default_rng(7))
    again = augment_pair(image, labels, np.random.default_rng(7))
    other = augment_pair(image, labels, np.random.default_rng(8))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    a, b = StarDistAugmenter(seed=3), StarDistAugmenter(seed=3)
    for _ in range(5):
        xa, ya = a(image, labels)
        xb, yb = b(image, labels)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_augment_pair_without_geometry_keeps_labels() -> None:
    image, labels = l_shape()
    config = AugmentConfig(p_rotate=0.0, p_flip=0.0, elastic=False)
    out_image, out_labels = augment_pair(image, labels, np.random.default_rng(0), config)
    np.testing.assert_array_equal(out_labels, labels)
    assert not np.array_equal(out_image, image)


def test_augment_rejects_bad_input() -> None:
    image, labels = l_shape()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="do not match"):
        augment_pair(image, labels[:, :20], rng)
    with pytest.raises(ValueError, match="integer"):
        augment_pair(image, labels.astype(np.float32), rng)
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(p_flip=1.5)


# ---------------------------------------------------------------- input validation (no training)


@pytest.mark.parametrize("trainer", ["stardist", "cellpose"])
def test_trainers_reject_bad_inputs(trainer: str, tmp_path: Path) -> None:
    images, labels = disks(3, 0)
    if trainer == "stardist":
        settings = StarDistSettings(patch_size=(64, 64))

        def train(x, y, **kwargs):
            return train_stardist(x, y, images, labels, settings, tmp_path / "model", **kwargs)
    else:
        settings = CellposeSettings()

        def train(x, y, **kwargs):
            return train_cellpose(x, y, images, labels, settings, tmp_path / "model", **kwargs)

    with pytest.raises(ValueError, match="empty"):
        train([], [])
    with pytest.raises(ValueError, match="3 images but 2 label images"):
        train(images, labels[:2])
    with pytest.raises(ValueError, match="pair 1"):
        train(images, [labels[0], labels[1][:32], labels[2]])
    with pytest.raises(ValueError, match="labels 0: dtype float32"):
        train(images, [labels[0].astype(np.float32)] + labels[1:])
    with pytest.raises(ValueError, match="image 2: dtype int64"):
        train(images[:2] + [images[2].astype(np.int64)], labels)
    with pytest.raises(ValueError, match="negative"):
        train(images, [labels[0] - 1] + labels[1:])
    with pytest.raises(FileNotFoundError):
        train(images, labels, init_from=tmp_path / "missing")
    with pytest.raises(ValueError, match="2 sample weights for 3 images"):
        train(images, labels, sample_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="finite, >= 0 and not all 0"):
        train(images, labels, sample_weights=[1.0, -1.0, 1.0])
    assert not (tmp_path / "model").exists()


def test_repeat_counts_list_images_in_proportion_to_their_weights() -> None:
    assert repeat_counts(np.array([1.0, 1.0, 0.15, 0.15])) == [7, 7, 1, 1]
    assert repeat_counts(np.array([2.0, 0.0, 1.0])) == [2, 0, 1]
    with pytest.raises(ValueError, match="spread too far"):
        repeat_counts(np.array([1.0, 1e-6]))


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        StarDistSettings(patch_size=(100, 100))
    with pytest.raises(ValueError, match="bsize"):
        CellposeSettings(bsize=40)
    with pytest.raises(ValueError, match="epochs"):
        CellposeSettings(epochs=0)


def test_cellpose_needs_enough_masks(tmp_path: Path) -> None:
    images, labels = disks(2, 0)
    with pytest.raises(ValueError, match="min_train_masks=20"):
        train_cellpose(images, labels, None, None, CellposeSettings(min_train_masks=20), tmp_path / "model")


# ---------------------------------------------------------------- StarDist training

# Small network, few steps, no augmentation: ~0.8 accuracy on the disks in 30 s (more under load).
TINY_STARDIST = StarDistSettings(
    epochs=12, steps_per_epoch=10, patch_size=(64, 64), n_rays=16, grid=(2, 2), unet_n_depth=2,
    unet_n_filter_base=16, net_conv_after_unet=32, augment=False, nms_threshs=(0.3, 0.5), threads=1,
)


@pytest.fixture(scope="module")
def stardist_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, labels = disks(8, 0)
    val_images, val_labels = disks(3, 1)
    workdir = tmp_path_factory.mktemp("stardist") / "model"
    started = time.perf_counter()
    path = train_stardist(images, labels, val_images, val_labels, TINY_STARDIST, workdir)
    print(f"tiny StarDist training: {time.perf_counter() - started:.1f} s")
    return path


def test_stardist_trains_and_segments(stardist_model: Path) -> None:
    assert {"config.json", "thresholds.json", "weights_best.h5", "cellsynth_stardist.json"} <= {
        p.name for p in stardist_model.iterdir()
    }
    assert no_staging_left(stardist_model.parent)
    assert read_stardist_settings(stardist_model) == TINY_STARDIST
    images, labels = disks(4, 2)
    predictions = predict_stardist(load_stardist(stardist_model), images)
    assert len(predictions) == 4
    assert all(p.shape == (64, 64) and p.dtype == np.int32 for p in predictions)
    accuracy = segmentation_accuracy(labels, predictions)
    assert accuracy > 0.6, accuracy  # an untrained network finds nothing (accuracy 0)
    with pytest.raises(ValueError, match="3 channels, the model takes 1"):
        predict_stardist(stardist_model, [np.stack([images[0]] * 3, axis=-1)])


def served_by_mmap(nbytes: int) -> bool:
    """Whether glibc's malloc serves a block of ``nbytes`` by a fresh mmap (IS_MMAPPED bit of its chunk header)."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    block = libc.malloc(nbytes)
    try:
        return bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2)
    finally:
        libc.free(block)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_stardist_training_leaves_malloc_serving_tensors_from_the_heap(stardist_model: Path) -> None:
    # TensorFlow's generator input set a 128 KiB mmap threshold; left so, every later torch
    # tensor page-faults in fresh (Cellpose trained 1.8x slower after StarDist).
    assert not served_by_mmap(1 << 20)
    # and mmap still serves what is over the threshold: 1 GiB, more than any free chunk the heap may hold
    # after the tests before this one (a 64 MiB request was once served from such a chunk)
    assert served_by_mmap(32 * GLIBC_MMAP_THRESHOLD_MAX)


def test_stardist_fine_tunes_from_saved_model(stardist_model: Path, tmp_path: Path) -> None:
    images, labels = disks(4, 3)
    val_images, val_labels = disks(2, 4)
    # Three small steps through the full augmentation (elastic included): the weights must start
    # from the saved model's and stay close to them, and the model still segments.
    settings = StarDistSettings(
        epochs=1, steps_per_epoch=3, learning_rate=1e-5, patch_size=(64, 64), augment=True,
        nms_threshs=(0.3,), threads=1,
    )
    path = train_stardist(images, labels, val_images, val_labels, settings, tmp_path / "tuned",
                          init_from=stardist_model, sample_weights=[1.0, 1.0, 1.0, 3.0])
    sidecar = json.loads((path / "cellsynth_stardist.json").read_text())
    assert sidecar["init_from"] == str(stardist_model.resolve())
    assert sidecar["n_train"] == 4 and sidecar["sample_weights"] == [1.0, 1.0, 1.0, 3.0]
    model = load_stardist(path)
    assert model.config.n_rays == 16 and model.config.unet_n_filter_base == 16  # architecture of the init model
    initial = load_stardist(stardist_model).keras_model.get_weights()
    tuned = model.keras_model.get_weights()
    assert len(initial) == len(tuned)
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(initial, tuned))  # Adam moves each by <= 3e-5
    assert not all(np.array_equal(a, b) for a, b in zip(initial, tuned))  # but it did train
    test_images, test_labels = disks(4, 2)
    assert segmentation_accuracy(test_labels, predict_stardist(model, test_images)) > 0.5


# ---------------------------------------------------------------- Cellpose training

# 20 epochs x 3 batches of 32x32 patches: ~0.9 accuracy on the disks in 25-55 s (load). Fewer
# steps leave BatchNorm's running statistics unsettled and prediction empty.
TINY_CELLPOSE = CellposeSettings(
    epochs=20, batch_size=8, learning_rate=0.01, nimg_per_epoch=24, bsize=32, rescale=False,
    intensity_copies=1, threads=THREADS,
)


@pytest.fixture(scope="module")
def no_downloads():
    """Make any attempt by Cellpose to fetch weights fail loudly."""
    import cellpose.models
    import cellpose.utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"Cellpose tried to download: {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cellpose.models, "cache_model_path", refuse)
        patch.setattr(cellpose.utils, "download_url_to_file", refuse)
        yield


@pytest.fixture(scope="module")
def cellpose_model(tmp_path_factory: pytest.TempPathFactory, no_downloads) -> Path:
    images, labels = disks(8, 0)
    val_images, val_labels = disks(2, 1)
    workdir = tmp_path_factory.mktemp("cellpose") / "model"
    started = time.perf_counter()
    path = train_cellpose(images, labels, val_images, val_labels, TINY_CELLPOSE, workdir)
    print(f"tiny Cellpose training: {time.perf_counter() - started:.1f} s")
    return path


def test_cellpose_trains_from_scratch_and_segments(cellpose_model: Path) -> None:
    assert (cellpose_model / "models" / "cellpose_model").is_file()
    assert no_staging_left(cellpose_model.parent)
    assert read_cellpose_settings(cellpose_model) == TINY_CELLPOSE
    sidecar = json.loads((cellpose_model / "cellsynth_cellpose.json").read_text())
    assert sidecar["n_train"] == 8 and sidecar["n_train_with_copies"] == 16
    images, labels = disks(4, 2)
    predictions = predict_cellpose(cellpose_model, images)
    assert len(predictions) == 4
    assert all(p.shape == (64, 64) and p.dtype == np.int32 for p in predictions)
    accuracy = segmentation_accuracy(labels, predictions)
    assert accuracy > 0.6, accuracy  # an untrained network finds nothing (accuracy 0)


def test_cellpose_fine_tunes_from_saved_model(cellpose_model: Path, tmp_path: Path, no_downloads) -> None:
    images, labels = disks(4, 3)
    labels = [np.where(y > 0, y.max() + 1 - y, 0).astype(y.dtype) for y in labels]  # ids not in scan order
    given = [y.copy() for y in labels]
    # Two epochs: Cellpose's warm-up keeps the learning rate at 0 and lr/9, so the result is
    # essentially the loaded model; from scratch it would segment nothing.
    settings = CellposeSettings(epochs=2, nimg_per_epoch=8, bsize=32, rescale=False, learning_rate=0.01,
                                intensity_copies=0, threads=THREADS)
    path = train_cellpose(images, labels, None, None, settings, tmp_path / "tuned", init_from=cellpose_model)
    assert all(np.array_equal(y, g) for y, g in zip(labels, given))  # Cellpose renumbers labels it is given in place
    sidecar = json.loads((path / "cellsynth_cellpose.json").read_text())
    assert sidecar["init_from"] == str(cellpose_model.resolve())
    trained = load_cellpose(path)
    assert trained.settings == settings
    test_images, test_labels = disks(4, 2)
    assert segmentation_accuracy(test_labels, predict_cellpose(trained, test_images)) > 0.6


def test_failed_training_leaves_previous_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cellpose.train

    workdir = tmp_path / "model"
    workdir.mkdir()
    (workdir / "old.txt").write_text("previous model")

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(cellpose.train, "train_seg", crash)
    images, labels = disks(2, 0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_cellpose(images, labels, None, None, CellposeSettings(epochs=1, bsize=32), workdir)
    assert [p.name for p in workdir.iterdir()] == ["old.txt"]
    assert no_staging_left(tmp_path)
