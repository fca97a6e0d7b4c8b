"""Reading annotated folders: good data round-trips, every bad input is named and nothing is written."""

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import disk_labels, write_pair

from cellsynth.io import (
    AnnotatedImage,
    DatasetError,
    read_dataset,
    read_image,
    staged_directory,
    write_atomically,
    write_dataset,
)


def test_read_dataset_pairs_by_stem_and_relabels(small_dataset: Path):
    samples = read_dataset(small_dataset)
    assert [s.name for s in samples] == ["img0", "img1", "img2"]
    for s in samples:
        assert s.image.shape == (64, 64, 1) and s.image.dtype == np.uint8
        assert s.labels.dtype == np.int32
        assert list(np.unique(s.labels)) == [0, 1, 2, 3, 4]


def test_write_then_read_round_trip_multichannel_16bit(tmp_path: Path):
    rng = np.random.default_rng(1)
    labels = disk_labels((40, 50), [(10, 10), (30, 30)], 5)
    samples = [
        AnnotatedImage("rgb", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), labels),
        AnnotatedImage("four", rng.integers(0, 65535, (40, 50, 4), dtype=np.uint16), labels),
    ]
    for sample in samples:
        write_dataset(tmp_path / sample.name, [sample])
        (back,) = read_dataset(tmp_path / sample.name)
        assert back.image.dtype == sample.image.dtype
        np.testing.assert_array_equal(back.image, sample.image)
        np.testing.assert_array_equal(back.labels, sample.labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_mixed_channel_counts_are_rejected(tmp_path: Path):
    labels = disk_labels((32, 32), [(16, 16)], 5)
    write_pair(tmp_path / "d", "gray", np.zeros((32, 32), np.uint8), labels)
    write_pair(tmp_path / "d", "rgb", np.zeros((32, 32, 3), np.uint8), labels)
    _expect_error(tmp_path / "d", "different channel counts [1, 3]")


def test_channel_first_tiff_is_moved_to_channel_last(tmp_path: Path):
    tifffile.imwrite(tmp_path / "cf.tif", np.zeros((2, 30, 40), np.uint16))
    assert read_image(tmp_path / "cf.tif").shape == (30, 40, 2)


def _expect_error(folder: Path, *fragments: str) -> None:
    before = sorted(p.relative_to(folder.parent) for p in folder.parent.rglob("*"))
    with pytest.raises(DatasetError) as error:
        read_dataset(folder)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert sorted(p.relative_to(folder.parent) for p in folder.parent.rglob("*")) == before, "something was written"


def test_image_without_mask_is_named(small_dataset: Path):
    (small_dataset / "masks" / "img1.tif").unlink()
    _expect_error(small_dataset, "img1.png", "image has no mask")


def test_mask_without_image_is_named(small_dataset: Path):
    (small_dataset / "images" / "img2.png").unlink()
    _expect_error(small_dataset, "img2.tif", "mask has no image")


def test_shape_mismatch_is_named(small_dataset: Path):
    tifffile.imwrite(small_dataset / "masks" / "img0.tif", np.zeros((32, 64), np.uint16))
    _expect_error(small_dataset, "img0.tif", "does not match image shape")


def test_float_labels_are_rejected(small_dataset: Path):
    tifffile.imwrite(small_dataset / "masks" / "img0.tif", np.ones((64, 64), np.float32))
    _expect_error(small_dataset, "img0.tif", "labels must be integers", "float32")


def test_negative_labels_are_rejected(small_dataset: Path):
    tifffile.imwrite(small_dataset / "masks" / "img1.tif", np.full((64, 64), -2, np.int16))
    _expect_error(small_dataset, "img1.tif", "must be >= 0")


def test_unreadable_file_is_named(small_dataset: Path):
    (small_dataset / "images" / "img2.png").write_bytes(b"not a png")
    _expect_error(small_dataset, "img2.png", "cannot be read")


def test_float_image_is_rejected(small_dataset: Path):
    tifffile.imwrite(small_dataset / "images" / "img0.tif", np.zeros((64, 64), np.float32))
    (small_dataset / "images" / "img0.png").unlink()
    _expect_error(small_dataset, "img0.tif", "float32")


def test_empty_dataset_is_rejected(tmp_path: Path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    _expect_error(tmp_path / "empty", "is empty")


def test_missing_subfolder_is_named(tmp_path: Path):
    (tmp_path / "nomasks" / "images").mkdir(parents=True)
    _expect_error(tmp_path / "nomasks", "masks", "missing folder")


def test_all_problems_are_reported_together(small_dataset: Path):
    (small_dataset / "masks" / "img1.tif").unlink()
    tifffile.imwrite(small_dataset / "masks" / "img0.tif", np.ones((64, 64), np.float64))
    _expect_error(small_dataset, "2 problem(s)", "img1.png", "img0.tif")


def test_png_masks_are_accepted(tmp_path: Path):
    labels = disk_labels((32, 32), [(10, 10), (22, 22)], 4).astype(np.uint8)
    write_pair(tmp_path / "d", "a", np.zeros((32, 32, 3), np.uint8), labels, mask_suffix=".png")
    (sample,) = read_dataset(tmp_path / "d")
    assert sample.image.shape == (32, 32, 3) and sample.labels.max() == 2


def test_write_dataset_replaces_existing_folder_atomically(tmp_path: Path):
    labels = disk_labels((32, 32), [(16, 16)], 5)
    write_dataset(tmp_path / "out", [AnnotatedImage("old", np.zeros((32, 32, 1), np.uint8), labels)])
    write_dataset(tmp_path / "out", [AnnotatedImage("new", np.zeros((32, 32, 1), np.uint8), labels)])
    assert [s.name for s in read_dataset(tmp_path / "out")] == ["new"]
    with pytest.raises(DatasetError, match="float64"):
        write_dataset(tmp_path / "out", [AnnotatedImage("bad", np.zeros((32, 32, 1)), labels)])
    assert [s.name for s in read_dataset(tmp_path / "out")] == ["new"], "a failed write must leave the old folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_real_dsb2018_folder_reads(dsb2018: Path):
    samples = read_dataset(dsb2018 / "he")
    assert len(samples) == 16
    assert all(s.image.shape[2] == 3 and s.labels.max() > 0 for s in samples)


def test_a_staged_folder_replaces_its_target_only_when_complete(tmp_path: Path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "old.txt").read_text() == "old"
    with staged_directory(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]
    with staged_directory(tmp_path / "made_by_writer", create=False) as staging:
        assert not staging.exists()  # the writer creates it (StarDist does)
        staging.mkdir()
    assert (tmp_path / "made_by_writer").is_dir()


def test_write_atomically_gives_the_permissions_of_a_plain_open(tmp_path: Path):
    previous = os.umask(0o027)
    try:
        write_atomically(tmp_path / "figure.png", lambda stream: stream.write(b"png"))
        (tmp_path / "plain.png").write_bytes(b"png")
    finally:
        os.umask(previous)
    assert (tmp_path / "figure.png").stat().st_mode & 0o777 == (tmp_path / "plain.png").stat().st_mode & 0o777 == 0o640
