"""Shared training machinery: runtime setup and atomic checkpoints."""

import random

import numpy as np
import pytest
import torch

from cellsynth.training import (
    CheckpointStore,
    capture_rng_state,
    restore_rng_state,
    start_runtime,
)


def test_cpu_runtime_without_torchrun_is_a_single_fp32_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    runtime = start_runtime("cpu", "auto", seed=1)
    assert (runtime.rank, runtime.world_size, runtime.is_main, runtime.distributed) == (0, 1, True, False)
    assert runtime.amp_dtype is None and runtime.device.type == "cpu"
    assert start_runtime("cpu", "bf16").amp_dtype == torch.bfloat16
    with start_runtime("cpu", "bf16").autocast():
        assert torch.ones(2, 2) @ torch.ones(2, 2) is not None and torch.is_autocast_enabled("cpu")


def test_bad_runtime_settings_are_named():
    with pytest.raises(ValueError, match="precision must be one of"):
        start_runtime("cpu", "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            start_runtime("cuda")


def test_checkpoints_are_numbered_pruned_and_the_newest_loads(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    assert store.latest() is None
    for progress in (1, 2, 10):
        store.save(progress, {"progress": progress, "weights": torch.full((3,), float(progress))})
    assert [p.name for p in store.paths()] == ["checkpoint-000002.pt", "checkpoint-000010.pt"]
    assert store.latest()["progress"] == 10
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, {"ok": True})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        store.save(2, {"bad": Unpicklable()})
    assert [p.name for p in store.paths()] == ["checkpoint-000001.pt"] and store.latest() == {"ok": True}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
