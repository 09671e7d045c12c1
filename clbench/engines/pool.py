"""Where a sweep's cells run: a local process pool (the default) or Ray tasks (`clbench.engines.ray`)."""

from __future__ import annotations

import contextlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from clbench.core.console import init_worker
from clbench.core.cores import usable_cores


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
    return ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=init_worker, initargs=(threads,))
