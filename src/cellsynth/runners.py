"""A Kedro runner that runs nodes on a Dask cluster (``dask.distributed``, the optional extra ``[dask]``).

    kedro run --runner=cellsynth.runners.DaskRunner                   # a local cluster of 2 worker processes
    DASK_SCHEDULER_ADDRESS=tcp://host:8786 kedro run --runner=cellsynth.runners.DaskRunner   # a running cluster

It is Kedro's own scheduling loop (``AbstractRunner``: a node is submitted once the nodes it depends on are
done) with a Dask client as the executor, as Kedro's Dask deployment guide sets out. The scheduler address
comes from Dask's configuration (``scheduler-address``, e.g. the environment variable above or
``~/.config/dask/``); without one, a ``LocalCluster`` is started for the run and closed after it.

On a machine with several GPUs, the local cluster gets one worker per GPU and each worker sees only its own
(``CUDA_VISIBLE_DEVICES``), so that trainings running side by side do not share a GPU; ``runtime.device:
auto`` then picks that one. ``gpus`` chooses them (``"auto"``: all that torch sees when there are two or more;
``""``: none). Workers of a running cluster are pinned when they start (``CUDA_VISIBLE_DEVICES=<k> dask
worker ...``, docs/scaling.md).

Every node output must be a persisted catalog entry (cellsynth's all are): a node's outputs are written by
the worker that ran it, and read from storage by whichever worker needs them, so a multi-machine cluster
needs the project folder on a shared file system. Each worker runs one node at a time, on one thread (Dask
sets ``OMP_NUM_THREADS=1`` in its workers). Workers log to the run's MLflow run: the run id and tracking
store are handed to them (:class:`cellsynth.hooks.WorkerMlflowHooks`, :func:`cellsynth.tracking.run_to_log_to`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner

HANDED_DOWN = ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")


def _set_environment(values: dict[str, str]) -> None:
    os.environ.update(values)


def _environment_value(name: str) -> str | None:
    return os.environ.get(name)  # (os.environ.get itself would be pickled with the caller's environment)


def local_gpus(gpus: str | Sequence[int]) -> tuple[int, ...]:
    """The GPUs a local cluster pins its workers to, one each: ``"auto"`` (every GPU torch sees, when there are
    two or more; with one there is nothing to share out), ``""`` (none), ``"0,2"`` or a sequence of indices."""
    if isinstance(gpus, str):
        if gpus == "auto":
            import torch

            count = torch.cuda.device_count()
            return tuple(range(count)) if count > 1 else ()
        try:
            gpus = [int(index) for index in gpus.split(",") if index.strip()]
        except ValueError as error:
            raise ValueError(f"DaskRunner gpus must be 'auto', '' or GPU indices such as '0,1', "
                             f"got {gpus!r}") from error
    indices = tuple(int(index) for index in gpus)
    if any(index < 0 for index in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"DaskRunner gpus must be distinct GPU indices >= 0, got {list(indices)}")
    return indices


class _DaskExecutor(Executor):
    """A ``concurrent.futures`` executor over a Dask client, for ``AbstractRunner``'s loop. Kedro builds a
    task with the main process's hook manager, which cannot be pickled; a task marked ``parallel`` builds
    its own in the worker instead, as under ``ParallelRunner``."""

    def __init__(self, address: str | None, n_workers: int, gpus: Sequence[int] = ()) -> None:
        from dask.distributed import Client, LocalCluster

        n_workers = len(gpus) or n_workers
        self._cluster = None if address else LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                                          processes=True, dashboard_address=None)
        self._client = Client(address or self._cluster)
        handed_down = {name: os.environ[name] for name in HANDED_DOWN if os.environ.get(name)}
        if handed_down:
            self._client.run(_set_environment, handed_down)
        if self._cluster is not None and gpus:
            # A worker process initialises CUDA with its first task, after this: it then sees its GPU only.
            self._client.wait_for_workers(n_workers)
            for worker, gpu in zip(sorted(self._client.scheduler_info()["workers"]), gpus):
                self._client.run(_set_environment, {"CUDA_VISIBLE_DEVICES": str(gpu)}, workers=[worker])
        self._executor = self._client.get_executor(pure=False)

    def worker_environment(self, name: str) -> dict[str, str | None]:
        """The value of one environment variable in each worker (by worker address)."""
        return self._client.run(_environment_value, name)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if hasattr(fn, "parallel"):  # a kedro.runner.Task
            fn.parallel, fn.hook_manager = True, None
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class DaskRunner(AbstractRunner):
    """Runs independent nodes side by side on a Dask cluster: the one at ``address`` (default: Dask's
    ``scheduler-address`` setting), or a local cluster started for the run: ``n_workers`` processes, or one
    per GPU of ``gpus`` (:func:`local_gpus`), each seeing only its own."""

    def __init__(self, is_async: bool = False, address: str | None = None, n_workers: int = 2,
                 gpus: str | Sequence[int] = "auto") -> None:
        super().__init__(is_async=is_async)
        import dask

        self._address = address or dask.config.get("scheduler-address", None)
        self._n_workers = int(n_workers)
        self._gpus = local_gpus(gpus)

    def _get_executor(self, max_workers: int) -> Executor:
        return _DaskExecutor(self._address, self._n_workers, self._gpus)

    def _run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None, run_id: str | None = None) -> None:
        in_memory = sorted(name for node in pipeline.nodes for name in node.outputs
                           if name not in catalog or isinstance(catalog.get(name), MemoryDataset))
        if in_memory:
            raise ValueError(f"DaskRunner: {in_memory} would stay in a worker's memory; give them catalog entries "
                             "that write to storage")
        super()._run(pipeline, catalog, hook_manager, run_id)
