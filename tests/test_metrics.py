"""The paper's accuracy: hand-made cases and agreement with stardist.matching."""

import numpy as np
import pytest
from conftest import disk_labels
from stardist.matching import matching_dataset

from cellsynth.metrics import (
    DEFAULT_IOU_THRESHOLDS,
    accuracy_by_threshold,
    object_statistics,
    segmentation_accuracy,
    with_group_means,
)


def test_thresholds_are_the_papers():
    assert DEFAULT_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def test_identical_inputs_score_one():
    labels = disk_labels((64, 64), [(16, 16), (40, 40)], 8)
    assert segmentation_accuracy([labels], [labels]) == 1.0


def test_hand_made_case():
    gt = np.zeros((10, 20), np.int32)
    gt[:, :10] = 1
    gt[:, 10:] = 2
    pred = np.zeros_like(gt)
    pred[:, :10] = 1            # exact match of object 1: TP at every threshold
    pred[:, 10:17] = 2          # IoU 0.7 with object 2: TP at 0.5..0.7, FP + FN above
    # thresholds 0.5, 0.55, 0.6, 0.65, 0.7 -> 2/2; 0.75, 0.8, 0.85, 0.9 -> 1/(1+1+1)
    expected = (5 * 1.0 + 4 * (1 / 3)) / 9
    assert segmentation_accuracy([gt], [pred]) == pytest.approx(expected)
    by_iou = accuracy_by_threshold([gt], [pred])
    assert list(by_iou) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9"]
    assert by_iou["0.7"] == 1.0 and by_iou["0.75"] == pytest.approx(1 / 3)  # found, but outlined too loosely


def test_missing_and_extra_objects():
    gt = disk_labels((64, 64), [(16, 16), (40, 40)], 8)
    pred = disk_labels((64, 64), [(16, 16)], 8)
    assert segmentation_accuracy([gt], [pred]) == pytest.approx(0.5)  # 1 TP, 1 FN
    assert segmentation_accuracy([pred], [gt]) == pytest.approx(0.5)  # 1 TP, 1 FP


def test_agrees_with_stardist_matching_on_random_pairs():
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(6):
        centres = [tuple(c) for c in rng.integers(8, 120, (12, 2))]
        gt = disk_labels((128, 128), centres, 7)
        shifted = [(y + rng.integers(-3, 4), x + rng.integers(-3, 4)) for y, x in centres[: rng.integers(6, 12)]]
        gts.append(gt)
        preds.append(disk_labels((128, 128), shifted, int(rng.integers(5, 9))))
    ours = segmentation_accuracy(gts, preds)
    reference = np.mean([s.accuracy for s in matching_dataset(gts, preds, thresh=list(DEFAULT_IOU_THRESHOLDS),
                                                                 show_progress=False)])
    assert ours == pytest.approx(reference)
    assert 0.0 < ours < 1.0


def test_bad_inputs_are_named():
    labels = disk_labels((16, 16), [(8, 8)], 3)
    with pytest.raises(ValueError, match="1 ground-truth images but 2"):
        segmentation_accuracy([labels], [labels, labels])
    with pytest.raises(ValueError, match="no images"):
        segmentation_accuracy([], [])
    with pytest.raises(ValueError, match=r"pair 0 has shapes \(16, 16\)"):
        segmentation_accuracy([labels], [labels[:8]])


def test_object_statistics():
    labels = disk_labels((64, 64), [(16, 16), (40, 40)], 5)
    stats = object_statistics([labels, np.zeros_like(labels)])
    assert stats["images"] == 2 and stats["objects"] == 2 and stats["objects_per_image"] == 1
    assert stats["area_p50"] == pytest.approx(np.sum(labels == 1))


def test_group_metrics_are_named_by_group_and_averaged_over_the_groups_that_have_them():
    per_group = {"fold_0": {"gan": {"fid": 2.0, "kid": float("nan")}, "n": 1},
                 "fold_1": {"gan": {"fid": 4.0, "kid": 0.5}}}
    assert with_group_means(per_group) == {
        "fold_0.gan.fid": 2.0, "fold_0.n": 1.0, "fold_1.gan.fid": 4.0, "fold_1.gan.kid": 0.5,
        "gan.fid": 3.0, "gan.kid": 0.5, "n": 1.0}
