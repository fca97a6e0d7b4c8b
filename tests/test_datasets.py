"""The custom Kedro datasets: one group's annotated images and arrays, and arrays per group, written
atomically and read lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import disk_labels
from kedro.io import Version

from cellsynth.datasets import AnnotatedImageFolderDataset, NpzDataset, NpzGroupsDataset
from cellsynth.io import AnnotatedImage


def _sample(name: str, value: int) -> AnnotatedImage:
    labels = disk_labels((32, 32), [(8, 8), (20, 20)], 4)
    return AnnotatedImage(name, np.full((32, 32, 1), value, np.uint16), labels)


def test_a_group_of_pairs_round_trips_and_may_be_empty_where_allowed(tmp_path: Path):
    dataset = AnnotatedImageFolderDataset(str(tmp_path / "pairs"), allow_empty=True)
    dataset.save([_sample("gan_0000", 7), _sample("gan_0001", 9)])
    # laid out like a real dataset, so it can be used outside the project
    assert sorted(p.name for p in (tmp_path / "pairs/images").iterdir()) == ["gan_0000.png", "gan_0001.png"]
    first = dataset.load()[0]
    assert first.image.dtype == np.uint16 and first.image.max() == 7 and first.labels.max() == 2
    dataset.save([])  # a generator whose masks all failed the filters
    assert dataset.load() == []
    with pytest.raises(Exception, match="no samples to write"):
        AnnotatedImageFolderDataset(str(tmp_path / "real")).save([])


def test_a_failed_save_keeps_the_old_pairs_and_leaves_nothing_behind(tmp_path: Path):
    dataset = AnnotatedImageFolderDataset(str(tmp_path / "pairs"), allow_empty=True)
    dataset.save([_sample("c", 3)])
    bad = AnnotatedImage("bad", np.zeros((32, 32, 1), np.float32), np.zeros((32, 32), np.int32))
    with pytest.raises(Exception):
        dataset.save([_sample("d", 4), bad])
    assert [s.name for s in dataset.load()] == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]  # no staging folder left behind


def test_a_damaged_pair_is_named_when_read(tmp_path: Path):
    dataset = AnnotatedImageFolderDataset(str(tmp_path / "pairs"), allow_empty=True)
    dataset.save([_sample("a", 1)])
    (tmp_path / "pairs/masks/a.tif").unlink()
    with pytest.raises(Exception, match=r"a\.png: image has no mask"):
        dataset.load()


def test_npz_arrays_round_trip_in_versions(tmp_path: Path):
    first = NpzDataset(str(tmp_path / "masks.npz"), version=Version(None, "v1"))
    first.save({"labels": np.arange(8, dtype=np.int32).reshape(2, 2, 2), "flows": np.zeros((2, 2, 2, 3), np.uint8)})
    NpzDataset(str(tmp_path / "masks.npz"), version=Version(None, "v2")).save({"labels": np.ones((1, 2, 2), np.int32)})
    latest = NpzDataset(str(tmp_path / "masks.npz"), version=Version(None, None)).load()
    assert list(latest) == ["labels"] and latest["labels"].shape == (1, 2, 2)
    assert first.load()["labels"].dtype == np.int32 and list(first.load()) == ["labels", "flows"]
    assert sorted(p.name for p in (tmp_path / "masks.npz").iterdir()) == ["v1", "v2"]


def test_npz_groups_refuse_an_empty_save(tmp_path: Path):
    with pytest.raises(Exception, match="nothing to save"):
        NpzGroupsDataset(str(tmp_path / "x")).save({})
