"""Ray as a sweep engine: each cell a Ray task, on a local Ray instance or an existing cluster.

The sweep's scheduler (`clbench.engines.sweep._schedule`) is the same for both engines: `RayPool.submit` returns a
`concurrent.futures.Future`, as a process pool's does, so experience-0 groups, ordering and failure handling
are shared. What Ray adds is placement (`--cell-cpus`, `--cell-gpus`) and fault tolerance: a task whose worker
or node dies is retried by Ray (`max_retries`), and the retry finds the cell's unfinished MLflow run and its
checkpoint (`clbench.engines.sweep.run_cell`), so it continues from the last finished epoch in the same run.

For that, everything a cell touches must be reachable from every node, which `check_cluster` verifies before
any cell starts: the tracking store is an MLflow server, and `CLBENCH_CACHE_DIR` (experience-0 cache, run
checkpoints, locks) is one folder that every node sees.
"""

from __future__ import annotations

import os
import socket
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from clbench.core.errors import ConfigError
from clbench.training import checkpoints

# Passed on to every task, so a cell on any node reads the same data, cache and store as the driver.
_FORWARDED_ENV = ("CLBENCH_CACHE_DIR", "CLBENCH_DATA_HOME", "CLBENCH_LOCK_LEASE_S", "MLFLOW_TRACKING_URI")
_RETRIES = 3  # per cell, for lost workers and nodes (a cell that raises is not retried: it failed)


def _require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray, which is not installed", "pip install -e '.[ray]' (or use --engine pool)"
        ) from None
    return ray


@dataclass(frozen=True)
class Cluster:
    nodes: int
    cpus: float
    gpus: float


def _cell_task(threads: int, cwd: str, fn, *args) -> Any:
    """What runs on a Ray worker: the cell in the driver's folder (relative paths in the spec), with its threads."""
    from clbench.core.console import init_worker

    init_worker(threads)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(*args)


def _sees(path: str) -> tuple[str, bool]:
    import ray

    return ray.get_runtime_context().get_node_id(), os.path.isfile(path)


class RayPool:
    """Cells as Ray tasks, each needing `cell_cpus` CPUs and `cell_gpus` GPUs; `submit` gives a Future."""

    def __init__(self, address: str | None, cell_cpus: float, cell_gpus: float) -> None:
        ray = _require_ray()
        if cell_cpus <= 0 or cell_gpus < 0:
            raise ConfigError(
                f"--cell-cpus {cell_cpus:g} / --cell-gpus {cell_gpus:g}: a cell needs at least some CPU and no "
                "negative GPUs",
                "give e.g. --cell-cpus 1 --cell-gpus 0",
            )
        if address:
            _check_reachable(address)
        env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ}
        try:
            ray.init(
                address=address,
                runtime_env={"env_vars": env},
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}",
                "start one with `ray start --head` and pass the address it prints, or leave --address out",
            ) from None
        self.ray = ray
        self.threads = max(1, int(cell_cpus))
        self.cell_cpus, self.cell_gpus = cell_cpus, cell_gpus
        self._task = ray.remote(_cell_task).options(
            num_cpus=cell_cpus, num_gpus=cell_gpus, max_retries=_RETRIES, retry_exceptions=False
        )

    def cluster(self) -> Cluster:
        total = self.ray.cluster_resources()
        nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        return Cluster(nodes, float(total.get("CPU", 0)), float(total.get("GPU", 0)))

    def capacity(self) -> int:
        """How many cells fit on the cluster at once."""
        cluster = self.cluster()
        fits = [cluster.cpus // self.cell_cpus]
        if self.cell_gpus:
            fits.append(cluster.gpus // self.cell_gpus)
        room = int(min(fits))
        if room < 1:
            raise ConfigError(
                f"no node of the Ray cluster ({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs) fits a cell that needs "
                f"{self.cell_cpus:g} CPUs and {self.cell_gpus:g} GPUs",
                "lower --cell-cpus / --cell-gpus, or add nodes",
            )
        return room

    def check_cluster(self, uri: str) -> None:
        """Refuse, in one line, a cluster whose nodes cannot all reach the store, cache and checkpoints."""
        cluster = self.cluster()
        if cluster.nodes < 2:
            return
        problem = local_store_problem(uri, cluster.nodes)
        if problem:
            raise ConfigError(*problem)
        blind = self._nodes_not_seeing_cache()
        if blind:
            raise ConfigError(
                f"the cache folder {checkpoints.checkpoint_dir().parent} is not shared: {len(blind)} of "
                f"{cluster.nodes} Ray nodes cannot see it",
                "set CLBENCH_CACHE_DIR to a folder every node mounts (NFS, a shared volume) before `ray start` "
                "and this command",
            )

    def _nodes_not_seeing_cache(self) -> list[str]:
        """Write a token into the cache folder and ask one task on each node whether it is there."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = checkpoints.checkpoint_dir() / f".shared-{uuid.uuid4().hex}"
        token.parent.mkdir(parents=True, exist_ok=True)
        token.touch()
        try:
            probe = self.ray.remote(_sees).options(num_cpus=0)
            refs = [
                probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                    str(token)
                )
                for node in self.ray.nodes()
                if node.get("Alive")
            ]
            return [node for node, seen in self.ray.get(refs, timeout=120) if not seen]
        finally:
            token.unlink(missing_ok=True)

    def submit(self, fn, *args) -> Future:
        return self._task.remote(self.threads, os.getcwd(), fn, *args).future()

    def close(self) -> None:
        self.ray.shutdown()


def _check_reachable(address: str) -> None:
    """A cluster address nobody answers on is refused at once: Ray itself would retry for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"nothing answers at the Ray cluster address {address} ({exc.strerror or type(exc).__name__})",
            "start one with `ray start --head` and pass the address it prints, or leave --address out",
        ) from None


def local_store_problem(uri: str, nodes: int) -> tuple[str, str] | None:
    """A store only one machine can reach (an SQLite file, a folder), with a cluster of several nodes."""
    if nodes < 2 or uri.startswith(("http://", "https://", "databricks")):
        return None
    return (
        f"the tracking store {uri} is local to this machine, but the Ray cluster has {nodes} nodes",
        "start `mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://... "
        "--host 0.0.0.0` and pass --tracking-uri http://SERVER:5000",
    )
