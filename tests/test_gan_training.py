"""The StyleGAN2-ADA training loop: resume is exact, a killed run continues, settings are checked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cellsynth.gan.training import (
    GANConfig,
    gan_run_fingerprint,
    generate_images,
    snapshot_rank,
    train_gan,
)
from cellsynth.training import CheckpointStore, start_runtime

TINY = dict(batch=4, z_dim=16, w_dim=16, channel_base=256, channel_max=16, r1_interval=2, pl_interval=2,
            ada_interval=1, ada_kimg=1, seed=0)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def images() -> np.ndarray:
    return (np.random.default_rng(0).random((16, 32, 32, 3)) * 255).astype(np.uint8)


def _train(images, directory: Path, steps: int, **overrides):
    config = GANConfig(kimg=steps * TINY["batch"] / 1000, snapshot_kimg=TINY["batch"] / 1000, **{**TINY, **overrides})
    return train_gan(images, config, CheckpointStore(directory), start_runtime("cpu", "fp32", seed=0), progress=False)


def test_resume_continues_bit_identically(images, tmp_path):
    _train(images, tmp_path / "straight", steps=4, aug_p=0.5)
    _train(images, tmp_path / "resumed", steps=2, aug_p=0.5)
    _train(images, tmp_path / "resumed", steps=4, aug_p=0.5)  # picks up the checkpoint at step 2
    straight = CheckpointStore(tmp_path / "straight").latest()
    resumed = CheckpointStore(tmp_path / "resumed").latest()
    assert resumed["nimg"] == straight["nimg"] == 16
    assert [h["kimg"] for h in resumed["history"]] == [h["kimg"] for h in straight["history"]]
    for net in ("G", "D", "G_ema"):
        for key, value in straight[net].items():
            assert torch.equal(value, resumed[net][key]), f"{net}.{key} differs after resume"
    assert resumed["augment_p"] == straight["augment_p"] != 0.5  # ADA moved p, and resumed it exactly


def test_mode_seeking_weighs_in_only_from_its_kimg(images, tmp_path):
    def g_ema(name, **settings):
        _train(images, tmp_path / name, steps=2, **settings)
        return CheckpointStore(tmp_path / name).latest()["G_ema"]

    without = g_ema("without", mode_seeking=0.0)
    not_yet = g_ema("not_yet", mode_seeking=1.0, mode_seeking_kimg=1.0)  # 1 kimg: after these 8 images
    at_once = g_ema("at_once", mode_seeking=1.0, mode_seeking_kimg=0.0)
    assert all(torch.equal(without[k], not_yet[k]) for k in without)
    assert not all(torch.equal(without[k], at_once[k]) for k in without)


def test_the_newest_checkpoint_is_the_one_furthest_on(tmp_path):
    """Snapshots at 520 and 1000 images (batch 40, every 0.5 kimg): resuming starts from 1000, not 520
    (checkpoints once named 1000 images "1" and 520 images "520", and resumed from the older one)."""
    data = (np.random.default_rng(0).random((8, 32, 32, 3)) * 255).astype(np.uint8)
    config = GANConfig(kimg=1.0, snapshot_kimg=0.5, **{**TINY, "batch": 40})
    train_gan(data, config, CheckpointStore(tmp_path), start_runtime("cpu", "fp32", seed=0), progress=False)
    assert [p.name for p in CheckpointStore(tmp_path).paths()] == ["checkpoint-000520.pt", "checkpoint-001000.pt"]
    assert CheckpointStore(tmp_path).latest()["nimg"] == 1000


def test_killed_run_resumes_from_its_last_checkpoint(images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        from cellsynth.gan.training import GANConfig, train_gan
        from cellsynth.training import CheckpointStore, start_runtime
        config = GANConfig(kimg=10, snapshot_kimg=0.004, **{TINY!r})
        train_gan(np.load({str(tmp_path / 'images.npy')!r}), config, CheckpointStore({str(tmp_path / 'ckpt')!r}),
                  start_runtime("cpu", "fp32"), progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    store = CheckpointStore(tmp_path / "ckpt")
    deadline = time.time() + 120
    while len(store.paths()) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.kill()
    process.wait()
    assert store.paths(), "the background run wrote no checkpoint"
    reached = store.latest()["nimg"]
    result = _train(images, tmp_path / "ckpt", steps=reached // TINY["batch"] + 2)
    assert result.history[-1]["kimg"] * 1000 == reached + 2 * TINY["batch"]
    assert store.latest()["nimg"] == reached + 2 * TINY["batch"]


def _left_share(fields: np.ndarray) -> float:
    """Share of fields whose bright mass (channel 0 above mid-grey) lies mostly in the left half."""
    mass = np.clip(fields[..., 0].astype(float) - 127.5, 0, None)
    return float((mass[:, :, :16].sum((1, 2)) > mass[:, :, 16:].sum((1, 2))).mean())


def test_training_learns_the_data_and_all_its_modes(tmp_path):
    """The whole loop (losses, penalties, optimisers, ADA, G_ema) learns: after 200 steps on dark fields
    with one bright disk, left in half of them and right in the other half, and constant channels 1-2,
    G_ema's samples have those constant channels, a dark background, and both disk positions across z
    (no mode collapse). An untrained generator is far off (measured: background 87, mean deviation of
    channels 1-2 from 128 of 86; trained: 33 and 10, disks left in 66 % of 64 samples)."""
    yy, xx = np.mgrid[:32, :32]
    data = np.full((64, 32, 32, 3), 128, np.uint8)
    for i in range(len(data)):
        data[i, ..., 0] = np.where((yy - 16) ** 2 + (xx - (8 if i % 2 else 24)) ** 2 < 36, 230, 25)
    config = GANConfig(kimg=1.6, snapshot_kimg=1.6, batch=8, z_dim=16, w_dim=16, channel_base=512, channel_max=32,
                       aug="ada", ada_kimg=5, seed=0)
    result = train_gan(data, config, CheckpointStore(tmp_path), start_runtime("cpu", "fp32", seed=0), progress=False)
    fake = generate_images(result.generator_ema, 64, seed=1)
    assert fake[:, :4, :, 0].astype(float).mean() < 60  # background: the data's 25, not the mid-grey 127.5
    assert np.abs(fake[..., 1:].astype(float) - 128).mean() < 20
    assert 0.2 <= _left_share(fake) <= 0.8  # both modes, each in at least a fifth of the samples

    # the mode check fails for a generator that ignores z: the same network with a constant w
    ignoring = result.generator_ema
    last = ignoring.mapping.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
    assert _left_share(generate_images(ignoring, 64, seed=1)) in (0.0, 1.0)


def test_best_snapshot_is_selected_by_fid_then_pass_rate(images, tmp_path):
    scores = iter([{"fid_randinit": 5.0, "pass_rate": 0.1}, {"fid_randinit": 2.0, "pass_rate": 0.5},
                   {"fid_randinit": 2.0, "pass_rate": 0.9}, {"fid_randinit": 3.0, "pass_rate": 1.0}])
    config = GANConfig(kimg=0.016, snapshot_kimg=0.004, **TINY)
    result = train_gan(images, config, CheckpointStore(tmp_path), start_runtime("cpu", "fp32"),
                       evaluate=lambda g: next(scores), progress=False)
    assert result.best["kimg"] == pytest.approx(0.012)
    assert [h["fid_randinit"] for h in result.history] == [5.0, 2.0, 2.0, 3.0]


def test_snapshots_without_usable_masks_rank_last():
    empty = {"fid_randinit": 10.0, "pass_rate": 1.0, "objects_per_mask": 0.0}
    rejected = {"fid_randinit": 12.0, "pass_rate": 0.0, "objects_per_mask": 2.0}
    poor = {"fid_randinit": 80.0, "pass_rate": 0.2, "objects_per_mask": 3.5}
    assert snapshot_rank(poor) < snapshot_rank(empty) and snapshot_rank(poor) < snapshot_rank(rejected)
    assert snapshot_rank({"fid": 5.0}) < snapshot_rank({"fid": 6.0})


def test_generation_is_deterministic_and_in_range(images, tmp_path):
    result = _train(images, tmp_path, steps=1)
    first = generate_images(result.generator_ema, 5, seed=3)
    assert first.shape == (5, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, generate_images(result.generator_ema, 5, seed=3))
    assert not np.array_equal(first, generate_images(result.generator_ema, 5, seed=4))


def test_fingerprint_ignores_training_length_but_not_settings(images):
    base = GANConfig(**TINY)
    assert gan_run_fingerprint(base, images) == gan_run_fingerprint(GANConfig(**TINY, kimg=99), images)
    assert gan_run_fingerprint(base, images) == gan_run_fingerprint(GANConfig(**TINY, modulation="grouped"), images)
    assert gan_run_fingerprint(base, images) != gan_run_fingerprint(GANConfig(**{**TINY, "batch": 8}), images)
    assert gan_run_fingerprint(base, images) != gan_run_fingerprint(base, images[::-1])


def test_checkpoints_of_another_architecture_are_refused(images, tmp_path):
    _train(images, tmp_path, steps=1)
    with pytest.raises(ValueError, match="another architecture"):
        _train(images, tmp_path, steps=2, channel_max=8)


@pytest.mark.parametrize("key, value, message", [("aug", "sometimes", "mask_gan.aug"), ("batch", 0, "mask_gan.batch"),
                                                 ("kimg", -1, "mask_gan.kimg"),
                                                 ("modulation", "fused", "mask_gan.modulation"),
                                                 ("objective", "wasserstein", "mask_gan.objective"),
                                                 ("d_learning_rate", 0.0, "mask_gan.d_learning_rate"),
                                                 ("blur_sigma", -1.0, "mask_gan.blur_sigma"),
                                                 ("mode_seeking_kimg", -1.0, "mask_gan.mode_seeking_kimg"),
                                                 ("ada_max_p", 1.2, "mask_gan.ada_max_p")])
def test_bad_settings_are_named(key, value, message):
    with pytest.raises(ValueError, match=message):
        GANConfig(**{**TINY, key: value})
    with pytest.raises(ValueError, match="unknown mask_gan parameter"):
        GANConfig.from_params({"kimgs": 3})


def test_an_initial_p_above_the_cap_is_named():
    with pytest.raises(ValueError, match="mask_gan.ada_max_p"):
        GANConfig(**TINY, aug_p=0.7, ada_max_p=0.5)


def test_bad_training_images_are_named(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        _train(np.zeros((4, 32, 32, 3), np.float32), tmp_path, steps=1)
    with pytest.raises(ValueError, match="square"):
        _train(np.zeros((4, 32, 64, 3), np.uint8), tmp_path, steps=1)


def test_torchrun_with_two_cpu_processes_trains_and_checkpoints(images, tmp_path):
    """The distributed path (gloo on CPU) runs end to end; the per-process batch is half the total."""
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        from cellsynth.gan.training import GANConfig, train_gan
        from cellsynth.training import CheckpointStore, start_runtime
        runtime = start_runtime("cpu", "fp32")
        assert runtime.world_size == 2
        config = GANConfig(kimg=0.016, snapshot_kimg=0.008, **{TINY!r})
        result = train_gan(np.load({str(tmp_path / 'images.npy')!r}), config,
                           CheckpointStore({str(tmp_path / 'ckpt')!r}), runtime, progress=False)
        torch.save(result.generator_ema.state_dict(), {str(tmp_path)!r} + f"/g_ema_{{runtime.rank}}.pt")
    """))
    completed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                "--master_port=29517", str(script)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert CheckpointStore(tmp_path / "ckpt").latest()["nimg"] == 16
    rank0, rank1 = (torch.load(tmp_path / f"g_ema_{r}.pt") for r in (0, 1))
    for key in rank0:  # gradients are averaged, so both processes hold the same weights
        assert torch.equal(rank0[key], rank1[key]), key
