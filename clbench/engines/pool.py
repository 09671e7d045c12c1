"""Where a sweep's cells run: a local process pool (the default) or Ray tasks (`clbench.engines.ray`)."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import active_children, get_context

from clbench.core.console import init_worker
from clbench.core.cores import usable_cores
from clbench.core.termination import sigterm_as_interrupt


@dataclass(frozen=True)
class Engine:
    """Where cells run: `pool` (local processes, the default) or `ray` (a local Ray instance, or a cluster)."""

    name: str = "pool"
    address: str | None = None
    cell_cpus: float = 1.0
    cell_gpus: float = 0.0

    def connect(self, uri: str):
        """The Ray pool, connected and checked against `uri`; None for the local pool."""
        if self.name == "pool":
            return None
        from clbench.engines.ray import RayPool

        pool = RayPool(self.address, self.cell_cpus, self.cell_gpus)
        try:
            pool.check_cluster(uri)
        except BaseException:
            pool.close()
            raise
        return pool

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address else "a local Ray instance"
        return f"{where}, {self.cell_cpus:g} CPUs and {self.cell_gpus:g} GPUs per cell"


def executor(ray_pool, jobs: int):
    """The executor cells are submitted to: the connected Ray pool, or a fresh local process pool whose workers
    share the cores (each gets its share of torch threads)."""
    if ray_pool is not None:
        return contextlib.nullcontext(ray_pool)
    threads = max(1, usable_cores() // max(jobs, 1))
    return _CellPool(jobs, mp_context=get_context("spawn"), initializer=init_worker, initargs=(threads,))


class _CellPool(ProcessPoolExecutor):
    """A process pool whose tasks (cells, trials) end on SIGTERM as on Ctrl-C, and which, left by an exception
    (Ctrl-C, SIGTERM, an error), stops them at once.

    ProcessPoolExecutor's own exit waits for the tasks in flight, and a worker outside the terminal's process
    group (its parent sent SIGTERM, not Ctrl-C) never hears of the interruption: it would finish a cell whose
    sweep is gone. Told instead, a task ends as Ctrl-C ends it (its MLflow run KILLED, its checkpoint kept for
    the rerun), and the worker then exits. An idle worker just dies.
    """

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_told_to_stop_like_ctrl_c, fn, *args, **kwargs)

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self._stop(grace_seconds=30.0)
        return super().__exit__(kind, value, traceback)

    def _stop(self, grace_seconds: float) -> None:
        """SIGTERM to every worker, no new task, and SIGKILL for the workers that linger."""
        workers = active_children()
        self.shutdown(wait=False, cancel_futures=True)  # each worker gets its exit call once the running tasks end
        for worker in workers:
            worker.terminate()
        deadline = time.monotonic() + grace_seconds
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()


def _told_to_stop_like_ctrl_c(fn, /, *args, **kwargs):
    with sigterm_as_interrupt():
        return fn(*args, **kwargs)
