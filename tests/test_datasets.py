"""The custom Kedro datasets: groups of annotated images, written atomically and read lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import disk_labels

from cellsynth.datasets import AnnotatedImageGroupsDataset, NpzGroupsDataset
from cellsynth.io import AnnotatedImage, DatasetError


def _sample(name: str, value: int) -> AnnotatedImage:
    labels = disk_labels((32, 32), [(8, 8), (20, 20)], 4)
    return AnnotatedImage(name, np.full((32, 32, 1), value, np.uint16), labels)


def test_annotated_image_groups_round_trip_with_an_empty_group(tmp_path: Path):
    dataset = AnnotatedImageGroupsDataset(str(tmp_path / "pairs"))
    dataset.save({"fold_0": [_sample("gan_0000", 7), _sample("gan_0001", 9)], "fold_1": []})
    # laid out like a real dataset, so it can be used outside the project
    assert sorted(p.name for p in (tmp_path / "pairs/fold_0/images").iterdir()) == ["gan_0000.png", "gan_0001.png"]
    loaded = dataset.load()
    assert list(loaded) == ["fold_0", "fold_1"] and loaded["fold_1"] == []
    first = loaded["fold_0"][0]
    assert first.image.dtype == np.uint16 and first.image.max() == 7 and first.labels.max() == 2


def test_groups_are_replaced_whole_and_a_failed_save_keeps_the_old_data(tmp_path: Path):
    dataset = AnnotatedImageGroupsDataset(str(tmp_path / "pairs"))
    dataset.save({"fold_0": [_sample("a", 1)], "fold_1": [_sample("b", 2)]})
    dataset.save({"all": [_sample("c", 3)]})
    assert list(dataset.load()) == ["all"]  # no stale fold survives
    bad = AnnotatedImage("bad", np.zeros((32, 32, 1), np.float32), np.zeros((32, 32), np.int32))
    with pytest.raises(Exception):
        dataset.save({"fold_0": [_sample("d", 4)], "fold_1": [bad]})
    assert list(dataset.load()) == ["all"] and dataset.load()["all"][0].name == "c"
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]  # no staging folder left behind


def test_a_damaged_group_is_named_when_read(tmp_path: Path):
    dataset = AnnotatedImageGroupsDataset(str(tmp_path / "pairs"))
    dataset.save({"fold_0": [_sample("a", 1)]})
    (tmp_path / "pairs/fold_0/masks/a.tif").unlink()
    with pytest.raises(DatasetError, match=r"a\.png: image has no mask"):
        dataset.load()["fold_0"]


def test_npz_groups_refuse_an_empty_save(tmp_path: Path):
    with pytest.raises(Exception, match="nothing to save"):
        NpzGroupsDataset(str(tmp_path / "x")).save({})
