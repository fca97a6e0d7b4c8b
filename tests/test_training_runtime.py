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
    with pytest.raises(ValueError, match="runtime.compile must be true or false"):
        start_runtime("cpu", compile="yes")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            start_runtime("cuda")


def test_compiled_module_computes_the_same_and_trains_the_same_weights():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.LeakyReLU(0.2),
                                  torch.nn.Conv2d(4, 1, 1))
    assert start_runtime("cpu").compiled(network) is network
    compiled = start_runtime("cpu", compile=True).compiled(network)
    assert compiled is not network
    images = torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(compiled(images), network(images), rtol=1e-5, atol=1e-5)
    compiled(images).square().mean().backward()
    assert all(p.grad is not None for p in network.parameters())  # the gradients land on the shared weights
    assert set(compiled.state_dict()) == {"_orig_mod." + k for k in network.state_dict()}


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
