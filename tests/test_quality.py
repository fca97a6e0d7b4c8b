"""FID/KID with honest labels, weight resolution without network, PSNR/SSIM of paired images.

Inception at 299x299 costs ~0.4 s per image on one CPU core, so the
tests that run it use few images; the metric arithmetic and the input checks
are tested with a cheap stand-in feature module instead.
"""

from __future__ import annotations

import hashlib
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MeanColours
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from cellsynth import quality
from cellsynth.quality import (
    INCEPTION_FILENAMES,
    STANDARD_NAME,
    ImageFeatures,
    InceptionFeatures,
    RandomInitFeaturesWarning,
    extract_features,
    feature_images,
    image_quality,
    inception_features,
    paired_similarity,
)

CROP = 64


def _no_network(*args, **kwargs):
    raise AssertionError("network access attempted")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def offline_empty_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub folder; any download attempt fails the test."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    return hub


@pytest.fixture(scope="module")
def randinit() -> InceptionFeatures:
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(torch.hub, "get_dir", lambda: "/nonexistent/torch-hub")
        warnings.simplefilter("ignore", RandomInitFeaturesWarning)
        return inception_features(allow_download=False)


def _images(n: int, seed: int, channels: int = 3, size: int = 16, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (n, size, size, channels), dtype=np.uint8)


# ----------------------------------------------------------------------------
# Random-init Inception: scores and labels
# ----------------------------------------------------------------------------


def test_randinit_fid_and_kid_are_zero_for_a_set_itself_and_grow_with_noise(randinit, real_fields):
    rng = np.random.default_rng(0)
    fields = real_fields[[9, 27, 36]]
    real = extract_features(fields, randinit)
    scores = [image_quality(real, real, features=randinit)]
    for sigma in (4, 16, 64):
        noisy = np.clip(fields + rng.normal(0, sigma, fields.shape), 0, 255).astype(np.uint8)
        scores.append(image_quality(real, noisy, features=randinit))
    assert all(set(s) == {"fid_randinit", "kid_randinit_mean", "kid_randinit_std"} for s in scores)
    fid = [s["fid_randinit"] for s in scores]
    kid = [s["kid_randinit_mean"] for s in scores]
    assert abs(fid[0]) < 1e-3 * fid[-1]
    assert fid[0] < fid[1] < fid[2] < fid[3]
    # The unbiased KID of a set against itself is -2 (mean k(x, x) - mean
    # k(x, x')) / N: at most 0, an O(1/N) offset that 3 images make visible.
    assert -kid[-1] < kid[0] <= 0
    assert kid[0] < kid[1] < kid[2] < kid[3]


def test_randinit_weights_are_fixed_and_leave_the_global_rng_alone(randinit, offline_empty_hub):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    with pytest.warns(RandomInitFeaturesWarning):
        again = inception_features()
    assert torch.equal(torch.random.get_rng_state(), state)
    expected = randinit.module.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in again.module.state_dict().items())


def test_missing_weights_give_a_warning_and_randinit_labels_without_network(offline_empty_hub):
    with pytest.warns(RandomInitFeaturesWarning, match="NOT standard FID"):
        features = inception_features(allow_download=False)
    assert not features.standard
    assert features.metric_prefix == "fid_randinit"
    assert features.kid_prefix == "kid_randinit"
    assert features.name == "inception-v3-randinit-seed0"


def test_allowed_download_goes_to_the_hub_cache_and_is_verified(monkeypatch, tmp_path):
    calls = []

    def fake_download(url: str, destination: str, **kwargs) -> None:
        calls.append(url)
        Path(destination).write_bytes(b"an html error page")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(ValueError, match="checksum mismatch"):
        inception_features(allow_download=True)
    assert len(calls) == 1 and calls[0].endswith("6726825d.pth")
    assert not list((tmp_path / "checkpoints").iterdir())  # the bad download is removed


def test_failed_download_raises(monkeypatch, tmp_path):
    def unreachable(*args, **kwargs) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(RuntimeError, match="downloading the Inception weights"):
        inception_features(allow_download=True)


# ----------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------


def test_weights_with_wrong_content_are_rejected(tmp_path, offline_empty_hub):
    wrong = tmp_path / INCEPTION_FILENAMES[0]
    wrong.write_bytes(b"\0" * 1024)
    with pytest.raises(ValueError, match=rf"{INCEPTION_FILENAMES[0]}: SHA-256 checksum mismatch"):
        inception_features(wrong)
    cached = offline_empty_hub / "checkpoints" / INCEPTION_FILENAMES[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\0" * 1024)
    with pytest.raises(ValueError, match=rf"{INCEPTION_FILENAMES[1]}: SHA-256 checksum mismatch"):
        inception_features()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        inception_features(tmp_path / "missing.pth")


def test_verified_weights_are_loaded_and_labelled_standard(randinit, offline_empty_hub, monkeypatch):
    # The real file is not available offline: stand in a state dict whose
    # digest is declared the expected one.
    weights = offline_empty_hub / "checkpoints" / INCEPTION_FILENAMES[0]
    weights.parent.mkdir(parents=True)
    torch.save(randinit.module.state_dict(), weights)
    monkeypatch.setattr(quality, "INCEPTION_SHA256", hashlib.sha256(weights.read_bytes()).hexdigest())
    for features in (inception_features(weights), inception_features()):  # explicit path, then hub cache
        assert features.standard and features.name == STANDARD_NAME
        assert (features.metric_prefix, features.kid_prefix) == ("fid", "kid")
        loaded = features.module.state_dict()
        assert all(torch.equal(value, loaded[key]) for key, value in randinit.module.state_dict().items())


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`:UserWarning")
def test_module_is_a_torchmetrics_feature_extractor(randinit):
    image = torch.from_numpy(_images(1, seed=0, size=32)).permute(0, 3, 1, 2)
    fid = FrechetInceptionDistance(feature=randinit.module)
    fid.train()  # must not put the batch norms into training mode
    fid.update(image, real=True)
    assert not randinit.module.training
    assert int(fid.real_features_num_samples) == 1
    assert fid.real_features_sum.shape == (2048,) and torch.isfinite(fid.real_features_sum).all()
    kid = KernelInceptionDistance(feature=randinit.module, subset_size=1)
    assert kid.inception is randinit.module


# ----------------------------------------------------------------------------
# FID/KID arithmetic and inputs (stand-in extractor)
# ----------------------------------------------------------------------------


def test_fid_matches_torchmetrics(mean_colours):
    # 20 > 12 feature dimensions and 8 < 12 exercise both covariance factorisations.
    real, fake = _images(20, seed=1), _images(8, seed=2, low=40, high=200)
    reference = FrechetInceptionDistance(feature=mean_colours.module)
    reference.update(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)
    reference.update(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
    ours = image_quality(real, fake, features=mean_colours)["fid_randinit"]
    assert ours == pytest.approx(float(reference.compute()), rel=1e-4)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`:UserWarning")
def test_kid_matches_torchmetrics(mean_colours):
    # Subsets of all images: the permutations then do not change the value.
    real, fake = _images(10, seed=3), _images(10, seed=4, low=40, high=200)
    reference = KernelInceptionDistance(feature=mean_colours.module, subsets=2, subset_size=10)
    reference.update(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)
    reference.update(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
    expected_mean, _ = reference.compute()
    ours = image_quality(real, fake, features=mean_colours, kid_subsets=2)
    # torchmetrics computes in the features' float32.
    assert ours["kid_randinit_mean"] == pytest.approx(float(expected_mean), rel=1e-4)
    assert ours["kid_randinit_std"] == pytest.approx(0.0, abs=1e-9)


def test_kid_subsets_are_seeded_locally(mean_colours):
    real, fake = _images(12, seed=5), _images(9, seed=6, low=40, high=200)
    state = torch.random.get_rng_state()
    first = image_quality(real, fake, features=mean_colours, kid_subsets=5, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first == image_quality(real, fake, features=mean_colours, kid_subsets=5, seed=1)
    assert first["kid_randinit_std"] > 0  # subsets of 9 out of 12 real images differ


def test_one_channel_images_are_repeated_to_three(mean_colours):
    gray = _images(4, seed=7, channels=1)
    ones = extract_features(gray, mean_colours).values
    threes = extract_features(np.repeat(gray, 3, axis=-1), mean_colours).values
    np.testing.assert_array_equal(ones, threes)


def test_real_features_can_be_reused_but_not_mixed(mean_colours):
    real, fake = _images(6, seed=8), _images(6, seed=9, low=40, high=200)
    cached = extract_features(real, mean_colours, batch_size=4)
    assert cached.values.shape == (6, 12) and cached.image_shape == (16, 16, 3)
    assert image_quality(cached, fake, features=mean_colours) == image_quality(real, fake, features=mean_colours)
    other = InceptionFeatures(module=MeanColours(), standard=False, name="other")
    with pytest.raises(ValueError, match="different extractors"):
        image_quality(cached, fake, features=other)
    foreign = ImageFeatures(values=cached.values, extractor="other", image_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="different extractors"):
        image_quality(cached, foreign)


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (_images(4, 0).astype(np.float32), _images(4, 1), "real must have dtype uint8"),
        (_images(4, 0), _images(1, 1), "fake has 1 images"),
        (_images(4, 0, channels=2), _images(4, 1), r"real must have shape \(N, H, W, C\) with C = 1 or 3"),
        (_images(4, 0)[..., 0], _images(4, 1), r"real must have shape \(N, H, W, C\)"),
        (_images(4, 0), _images(4, 1, channels=1), r"differ in \(H, W, C\)"),
        (_images(4, 0), _images(4, 1, size=20), r"differ in \(H, W, C\)"),
        (list(_images(4, 0)), _images(4, 1), "real must be a numpy array"),
    ],
)
def test_bad_images_are_rejected(mean_colours, real, fake, message):
    with pytest.raises(ValueError, match=message):
        image_quality(real, fake, features=mean_colours)


def test_feature_images_bring_any_channel_count_to_one_or_three_uint8_channels():
    scaled = np.linspace(-1, 1, 2 * 4 * 4 * 5, dtype=np.float32).reshape(2, 4, 4, 5)
    assert feature_images(scaled[..., :1]).shape == (2, 4, 4, 1)
    two = feature_images(scaled[..., :2])
    assert two.shape == (2, 4, 4, 3) and two.dtype == np.uint8 and (two[..., 2] == 0).all()
    many = feature_images(scaled)
    assert many.shape == (2, 4, 4, 3) and many[0, 0, 0, 0] == 0 and (many == feature_images(scaled[..., :3])).all()
    assert feature_images(np.ones((1, 2, 2, 1), np.float32)).max() == 255


def test_paired_similarity_is_perfect_for_identical_images_and_drops_with_noise():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (3, 32, 32, 2)).astype(np.float32)
    assert paired_similarity(real, real) == {"psnr": 100.0, "ssim": pytest.approx(1.0)}
    slightly = paired_similarity(real, np.clip(real + rng.normal(0, 0.05, real.shape), -1, 1))
    badly = paired_similarity(real, np.clip(real + rng.normal(0, 0.5, real.shape), -1, 1))
    assert 40 > slightly["psnr"] > badly["psnr"] > 5 and 1 > slightly["ssim"] > badly["ssim"]
    with pytest.raises(ValueError, match="one shape"):
        paired_similarity(real, real[:2])
