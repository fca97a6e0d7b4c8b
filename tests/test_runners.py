"""The Dask runner's local cluster: one worker per GPU, each seeing only its own (checked on CPU through the
environment a worker's CUDA would read)."""

from __future__ import annotations

import pytest

pytest.importorskip("dask.distributed")

from cellsynth.runners import _DaskExecutor, local_gpus  # noqa: E402
from cellsynth.training import resolve_device  # noqa: E402


def test_gpu_lists_are_parsed_and_bad_ones_named():
    assert local_gpus("0,2") == (0, 2) and local_gpus([1]) == (1,) and local_gpus("") == ()
    assert local_gpus("auto") == ()  # no GPU here (or one: nothing to share out)
    with pytest.raises(ValueError, match="GPU indices such as '0,1'"):
        local_gpus("first")
    with pytest.raises(ValueError, match="distinct GPU indices"):
        local_gpus([0, 0])


def test_each_local_worker_is_pinned_to_its_own_gpu():
    executor = _DaskExecutor(None, n_workers=1, gpus=(0, 1))  # one worker per GPU, whatever n_workers says
    try:
        assert sorted(executor.worker_environment("CUDA_VISIBLE_DEVICES").values()) == ["0", "1"]
        assert executor.submit(resolve_device, "auto").result().type == "cpu"  # `auto` in a worker, no CUDA here
    finally:
        executor.shutdown()
