"""MLflow tracking: an Avalanche logger that sends every metric to MLflow, plus run helpers.

The logger buffers metric values and sends them in batches (`log_batch`) at epoch and experience ends: one
SQLite write per batch instead of one per value, so tracking costs nothing next to training.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avalanche.logging import BaseLogger

from clbench.core.errors import ConfigError
from clbench.core.invocation import DEFAULT_STORE
from clbench.core.locks import process_alive
from clbench.report import stores, ui
from clbench.report.stores import local_store

# Tags that tie a sweep's runs together, shared by the sweep that writes them and the report that reads them.
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs under
KIND_TAG = "clbench.kind"  # "sweep" on a parent, "cell" on its children
SWEEP_TAG = "clbench.sweep"  # on a parent: the sweep's key
COMMAND_TAG = "clbench.command"  # on a parent: the command line that started it
CELL_TAG = "clbench.cell"  # on a child: strategy|fraction|seed
ERROR_TAG = "clbench.error"  # on a failed child: its one-line error


def tracking_uri(explicit: str | None = None) -> str:
    """`--tracking-uri`, else `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db` in the working folder.

    A folder (a path or a `file:` URI), which MLflow 3 no longer opens as a store, keeps its runs in an SQLite
    file inside it; a path to a `.db` file is that SQLite store.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_STORE}"
    return local_store(uri)


def check_store(uri: str) -> None:
    """Fail fast, in one line, where the store cannot be opened: a folder that cannot be written, a file that is no
    database, a server that does not answer, a database driver that is not installed, an unknown scheme."""
    scheme = uri.partition(":")[0].lower() if "://" in uri else ""
    if scheme == "sqlite":
        stores.check_sqlite(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme.partition("+")[0] in stores.DATABASES:
        stores.check_database(uri)
    elif scheme not in ("file", "databricks", "databricks-uc", "uc"):
        raise ConfigError(
            f"the tracking URI {uri!r} names no store MLflow opens",
            "pass a folder, sqlite:///PATH.db, http://HOST:PORT (an MLflow server) or a database URL "
            "(postgresql://, mysql://, mssql://) as --tracking-uri",
        )


def configure(uri: str) -> None:
    """Point MLflow at `uri`, failing fast with one line where the store cannot be reached (checked first, so a
    bad URI never becomes the process's tracking URI)."""
    import mlflow

    check_store(uri)
    mlflow.set_tracking_uri(uri)


def prepare_store(uri: str) -> None:
    """Create a SQLite store's schema once, under a lock: processes that start together (a sweep's workers,
    parallel runs) would otherwise race through MLflow's migrations and fail. Called just before the first
    write, so bad input found earlier leaves no store behind."""
    if not uri.startswith("sqlite:///"):
        return
    from mlflow import MlflowClient

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)  # a folder store named before it exists
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): start runs on a new store one at a time
        MlflowClient(uri).search_experiments(max_results=1)
        return
    with path.open("a") as handle:  # flock is independent of SQLite's own fcntl record locks
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"MLflow tracking server {uri} cannot be reached ({reason})",
            "start it (python -m clbench ui) or pass another --tracking-uri",
        ) from None


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def versions() -> dict[str, str]:
    import avalanche
    import mlflow
    import numpy
    import pandas
    import torch

    import clbench

    return {
        "version.clbench": clbench.__version__,
        "version.torch": torch.__version__,
        "version.avalanche": getattr(avalanche, "__version__", "unknown"),
        "version.mlflow": mlflow.__version__,
        "version.numpy": numpy.__version__,
        "version.pandas": pandas.__version__,
        "version.python": platform.python_version(),
    }


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient()
    items = [Param(k, plain(v)[:6000]) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


class NullLogger:
    """What the ranks of a torchrun job other than 0 log to: nothing (rank 0's MLflowLogger logs the run)."""

    @contextmanager
    def muted(self, mute: bool = True) -> Iterator[None]:
        yield

    def flush(self) -> None:
        pass


class MLflowLogger(BaseLogger):
    """Avalanche logger → MLflow metrics of one run, with steps (Avalanche's x_plot: training iterations)."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        from mlflow import MlflowClient

        self.run_id = run_id
        self.client = MlflowClient()
        self._pending: list[Any] = []
        self._muted = False

    @contextmanager
    def muted(self, mute: bool = True) -> Iterator[None]:
        """Drop what is logged meanwhile: a resumed run going again over experiences it has logged already."""
        before, self._muted = self._muted, mute
        try:
            yield
        finally:
            self._muted = before

    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        from mlflow.entities import Metric

        if self._muted:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.log_single_metric(f"{name}/{key}", item, x_plot)
            return
        if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return
        self._pending.append(Metric(name, float(value), int(time.time() * 1000), int(x_plot)))

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    # Avalanche calls these on loggers like on plugins: send what was gathered at natural boundaries.
    def after_training_epoch(self, strategy, metric_values, **kwargs) -> None:
        self.flush()

    def after_training_exp(self, strategy, metric_values, **kwargs) -> None:
        self.flush()

    def after_eval(self, strategy, metric_values, **kwargs) -> None:
        self.flush()


PID_TAG, HOST_TAG = "clbench.pid", "clbench.host"


def run_name(strategy: str, scenario: str, settings: Mapping[str, Any], seed: int) -> str:
    """What a run is, as the runs table shows it first: `ewc(ewc_lambda=500) · clevr-humans · fraction=0.5 · seed=1`
    (`strategy` as `strategy_label` gives it)."""
    values = " ".join(f"{k}={_short(v)}" for k, v in settings.items())
    return " · ".join(part for part in (strategy, scenario, values, f"seed={seed}") if part)


def strategy_label(strategy: Any) -> str:
    """The strategy's name with the parameters that differ from its defaults, `ewc(ewc_lambda=500)`: two runs that
    differ only there get different names."""
    inside = ", ".join(f"{k}={_short(v)}" for k, v in changed_parameters(strategy).items())
    return f"{strategy.name}({inside})" if inside else strategy.name


def changed_parameters(strategy: Any) -> dict[str, Any]:
    """The strategy's parameters whose values differ from its class's defaults."""
    defaults = type(strategy).parameters()
    return {k: v for k, v in strategy.params().items() if k not in defaults or v != defaults[k]}


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else plain(value)


def plain(value: Any) -> str:
    """A value as a param a researcher filters on: lists and tuples as `1,3`, not Python's `(1, 3)`."""
    if isinstance(value, list | tuple):
        return ",".join(plain(v) for v in value)
    return str(value)


def reopen_latest(client, experiment_id: str, filter_string: str) -> str | None:
    """The newest run of the experiment matching `filter_string`, marked running again: the parent run a repeated
    sweep or search continues (None: there is none)."""
    found = client.search_runs(
        [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not found:
        return None
    client.update_run(found[0].info.run_id, status="RUNNING")
    return found[0].info.run_id


def describe_experiment(experiment_id: str, run_id: str | None = None, compared: Sequence[str] = ()) -> None:
    """The experiment's description, kind and runs-table view (`clbench.report.ui`), brought up to date with the
    metrics run `run_id` logged and the params it is `compared` on; a user's own description is left alone."""
    from mlflow import MlflowClient

    client = MlflowClient()
    metrics = client.get_run(run_id).data.metrics if run_id else {}
    for key, value in ui.experiment_tags(client.get_experiment(experiment_id).tags, metrics, compared).items():
        client.set_experiment_tag(experiment_id, key, value)


def end_orphaned_runs(experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this machine whose process is gone (SIGKILL, power loss, OOM killer).

    A killed process cannot end its own run; the next clbench command on the same store does it instead.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    host = socket.gethostname()
    running = client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    ended = []
    for run in running:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not process_alive(int(pid)) and int(pid) != os.getpid():
            try:
                client.set_terminated(run.info.run_id, "KILLED")
                ended.append(run.info.run_id)
            except mlflow.exceptions.MlflowException:
                continue
    return ended


def use_experiment(experiment: str) -> str:
    """The experiment's id, made where it is missing, and made the active one. On a SQLite store its artifacts go
    beside the database (`<its folder>/mlruns/<experiment>`): MLflow's default is `./mlruns` under whichever folder
    the command was started from, which scatters one store's artifacts over every folder it was used from."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(experiment) is None:
        store = Path(uri.removeprefix("sqlite:///")).resolve().parent
        folder = store / "mlruns" / re.sub(r"[^\w.-]", "_", experiment)
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # made meanwhile by another process
            mlflow.create_experiment(experiment, artifact_location=folder.as_uri())
    return mlflow.set_experiment(experiment).experiment_id


@contextmanager
def mlflow_run(experiment: str, run_name: str | None = None, run_id: str | None = None) -> Iterator[str]:
    """Start (or resume) a run; end it FINISHED, KILLED on Ctrl-C, FAILED on any other error.

    The run is tagged with this process's id and host, so a later command can tell an orphaned run from a
    live one (`end_orphaned_runs`).
    """
    import mlflow

    describe_experiment(use_experiment(experiment))
    run = mlflow.start_run(run_id=run_id, run_name=run_name if run_id is None else None)
    mlflow.set_tags({PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()})
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
