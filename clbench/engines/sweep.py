"""Sweeps: strategies × seeds × any grid of parameters, as one MLflow parent run with a child run per cell.

A grid axis is any config field (`train.lr`), scenario parameter (`scenario.fraction`, `scenario.order`) or
strategy parameter (`ewc_lambda`). Cells run in a local process pool, or as Ray tasks on a cluster
(`clbench.engines.ray`). Cells that agree on what experience 0
depends on (scenario identity, data, model, its training, seed) share it: the first of each group trains and
caches it (`clbench.training.checkpoints`); the group's other cells are queued once it is done and start from the cache.
A cell that fails is recorded as a FAILED child run and the sweep goes on; running the same sweep again
continues its parent run and skips finished cells.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import sys
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace

from tqdm.auto import tqdm

from clbench.config import RunConfig
from clbench.config import override as override_config
from clbench.config import validate as validate_config
from clbench.core.errors import ClbenchError, ConfigError
from clbench.engines import messages
from clbench.engines.pool import Engine, executor
from clbench.report import tracking
from clbench.report.tracking import CELL_TAG, COMMAND_TAG, ERROR_TAG, KIND_TAG, PARENT_TAG, SWEEP_TAG
from clbench.scenario.contract import DEFAULT as DEFAULT_SCENARIO
from clbench.scenario.contract import PREFIX as SCENARIO_PREFIX
from clbench.scenario.contract import Scenario
from clbench.scenario.contract import experience_names as checked_names
from clbench.scenario.contract import load as load_scenario
from clbench.strategy.contract import Strategy, instantiate, resolve, takes_cache
from clbench.training import checkpoints

_CONFIG_SECTIONS = ("data.", "model.", "train.")


@dataclass(frozen=True)
class Cell:
    strategy: str
    seed: int
    settings: tuple[tuple[str, str], ...] = ()  # one value per grid axis, as given on the command line

    @property
    def key(self) -> str:
        return "|".join([self.strategy, *(f"{k}={v}" for k, v in self.settings), str(self.seed)])

    @property
    def label(self) -> str:
        settings = " ".join(f"{k.removeprefix(SCENARIO_PREFIX)}={v}" for k, v in self.settings)
        return " ".join(part for part in (self.strategy, settings, f"seed={self.seed}") if part)


@dataclass(frozen=True)
class SweepSpec:
    """The grid and everything shared by its cells; equal specs are the same sweep."""

    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    config: RunConfig
    grid: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key, values) per axis, in the order given
    strategy_sets: dict[str, str] = field(default_factory=dict)
    scenario: str = DEFAULT_SCENARIO
    scenario_sets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def over_fractions(cls, strategies: str, seeds: str, fractions: str, config: RunConfig) -> SweepSpec:
        """Strategies × seeds × fine-tuning fractions, each given as a comma-separated list (as on a command line)."""
        return cls(
            parse_list(strategies, str, "--strategies"),
            parse_list(seeds, int, "--seeds"),
            config,
            grid=(("scenario.fraction", parse_list(fractions, str, "--fractions")),),
        )

    def cells(self) -> list[Cell]:
        keys = [key for key, _ in self.grid]
        combos = list(itertools.product(*(values for _, values in self.grid)))
        return [
            Cell(strategy, seed, tuple(zip(keys, combo, strict=True)))
            for seed, strategy, combo in itertools.product(self.seeds, self.strategies, combos)
        ]

    def materialize(self, cell: Cell) -> tuple[RunConfig, Strategy, Scenario]:
        """The cell's config, strategy and scenario: the shared settings with its grid values on top."""
        config_sets: dict[str, str] = {}
        strategy_sets, scenario_sets = dict(self.strategy_sets), dict(self.scenario_sets)
        for key, value in cell.settings:
            if key.startswith(SCENARIO_PREFIX):
                scenario_sets[key.removeprefix(SCENARIO_PREFIX)] = value
            elif key.startswith(_CONFIG_SECTIONS) or key in ("device",):
                config_sets[key] = value
            else:
                strategy_sets[key] = value
        config = validate_config(override_config(replace(self.config, seed=cell.seed), config_sets, "--grid"))
        scenario = load_scenario(self.scenario, scenario_sets)
        config.train.check_experiences(checked_names(scenario))
        return config, instantiate(resolve(cell.strategy), strategy_sets), scenario

    def key(self) -> str:
        identity = {
            "strategies": self.strategies,
            "seeds": self.seeds,
            "grid": self.grid,
            "config": {k: v for k, v in self.config.to_dict().items() if k != "seed"},
            "sets": self.strategy_sets,
            "scenario": [self.scenario, self.scenario_sets],
        }
        return checkpoints.digest(identity, 16)


def _experience0_group(config: RunConfig, scenario: Scenario, strategy: Strategy) -> str:
    """Cells with the same group share experience 0: its cache key, with the data settings for the fingerprint.

    A strategy that cannot start from the cache (`shortcut` is `retrain`, or it trains offline) is a group of
    its own: it never waits for another cell.
    """
    data, identity = json.dumps(asdict(config.data)), checkpoints.scenario_identity(scenario)
    key = checkpoints.experience0_key(config, data, identity, strategy.experience0_identity())
    if not (takes_cache(strategy) and config.train.reuse_experience0):
        return f"{key}/{strategy.name}/{json.dumps(strategy.params(), sort_keys=True, default=str)}"
    return key


@dataclass
class CellOutcome:
    cell: Cell
    run_id: str
    status: str  # FINISHED | FAILED | SKIPPED
    error: str = ""
    experience0_trained: bool = False
    figures: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0  # inside the worker
    overhead_s: float = 0.0  # the rest of the time from submitting the cell to its outcome: scheduling, transport


@dataclass
class SweepResult:
    parent_run_id: str
    outcomes: list[CellOutcome]
    wall_time_s: float

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def experience0_trained(self) -> int:
        return sum(o.experience0_trained for o in self.outcomes)


def parse_list(text: str, kind: type, what: str) -> tuple:
    """`a,b,c` → a tuple of `kind`, with a one-line error naming the bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{what} is empty", f"give a comma-separated list, e.g. {what} 0,1,2")
    try:
        values = tuple(kind(item) for item in items)
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r} has an item that is not {kind.__name__}: {exc}", "fix the list") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"{what} {text!r} repeats an item", "list each value once")
    return values


def sweep(
    spec: SweepSpec,
    *,
    jobs: int = 1,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    out=None,
    command: str = "",
    engine: Engine | None = None,
) -> SweepResult:
    """Run every cell of the grid not finished yet, `jobs` at a time (on Ray: as many as the cluster fits); log
    the parent run's report."""
    from mlflow import MlflowClient

    out = out or sys.stdout
    started = time.perf_counter()
    engine = engine or Engine()
    uri = tracking.tracking_uri(tracking_uri)
    tracking.configure(uri)
    groups = _check_cells(spec)
    ray_pool = engine.connect(uri)  # a cluster that cannot reach the store or the cache is refused before any write
    if ray_pool is not None:
        jobs = ray_pool.capacity()
        print(f"sweep on Ray: {jobs} cells at a time ({engine.describe()})", file=out)
    tracking.prepare_store(uri)
    experiment = experiment or load_scenario(spec.scenario, spec.scenario_sets).name
    client = MlflowClient()
    parent_id, done = _parent_run(client, spec, experiment, command)
    skipped, pending = _skipped_and_pending(spec, done, out)
    outcomes: list[CellOutcome] = []
    status = "FAILED"
    try:
        with executor(ray_pool, jobs) if pending else contextlib.nullcontext() as pool:
            total = len(skipped) + len(pending)
            with tqdm(total=total, initial=len(skipped), desc="sweep", unit="cell", disable=_no_bar(progress)) as bar:
                for outcome in _schedule(pool, jobs, pending, groups, spec, parent_id, experiment, uri):
                    outcomes.append(outcome)
                    bar.update(1)
                    bar.write(messages.describe(outcome), file=out)
                    out.flush()  # one line per cell, as it ends, even into a log file
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        result = SweepResult(parent_id, skipped + outcomes, time.perf_counter() - started)
        _close_parent(client, parent_id, result, status)
        if ray_pool is not None:
            ray_pool.close()
    print(messages.tally(result), file=out)
    if result.count("FINISHED") + result.count("SKIPPED"):
        _report_to_parent(parent_id, experiment, uri, out, spec.scenario)
    return result


def _skipped_and_pending(spec: SweepSpec, done: dict, out) -> tuple[list[CellOutcome], list[Cell]]:
    """The cells a re-run finds finished (skipped, said in one line) and those still to run.

    A finished cell is skipped only if it ran the strategy as it stands now: a default changed since (a new
    searched value, a user's edited plugin) makes its cells run again rather than sit in the report unchanged.
    """
    cells = spec.cells()
    current = {c: c.key in done and _same_strategy(done[c.key], spec.materialize(c)[1]) for c in cells}
    stale = sum(c.key in done and not same for c, same in current.items())
    skipped = [
        CellOutcome(c, done[c.key].info.run_id, "SKIPPED", experience0_trained=False) for c in cells if current[c]
    ]
    if skipped:
        print(f"sweep {spec.key()}: {len(skipped)} of {len(cells)} cells already finished, skipping them", file=out)
    if stale:
        print(
            f"sweep {spec.key()}: {stale} finished cells ran a strategy whose parameters changed since; rerunning them",
            file=out,
        )
    return skipped, [c for c in cells if not current[c]]


def _same_strategy(run, strategy) -> bool:
    """Whether a finished cell's run logged the parameters `strategy` has now."""
    logged = run.data.params
    return all(logged.get(f"strategy.{k}") == tracking.plain(v)[:6000] for k, v in strategy.params().items())


def _no_bar(progress: bool) -> bool:
    return not progress or not sys.stderr.isatty()


def _report_to_parent(parent_id: str, experiment: str, uri: str, out, scenario: str) -> None:
    """The sweep's report, logged beside its runs; then the commands that write it out and open the UI on it.

    The cells' results are safe in MLflow whatever happens here, so a report that fails only says so.
    """
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient

    from clbench.report.runs import load_sweep
    from clbench.report.summary import build_report

    report = messages.report_command(scenario, experiment, uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            build_report(load_sweep(experiment, parent_id, uri), Path(tmp))
    except Exception as exc:
        reason = exc.one_line() if isinstance(exc, ClbenchError) else f"{type(exc).__name__}: {exc}"
        print(f"the report could not be built ({reason}); retry with: {report}", file=out)
        return
    print(f"report logged to the parent run; write it out with: {report}", file=out)
    experiment_id = MlflowClient().get_run(parent_id).info.experiment_id
    print(messages.ui_line(experiment, experiment_id, uri), file=out)


def _check_cells(spec: SweepSpec) -> dict[Cell, str]:
    """Fail before starting anything if any cell's strategy, scenario or config is wrong; its experience-0 group."""
    groups = {}
    for cell in spec.cells():
        config, strategy, scenario = spec.materialize(cell)
        groups[cell] = _experience0_group(config, scenario, strategy)
    return groups


def _parent_run(client, spec: SweepSpec, experiment: str, command: str) -> tuple[str, dict]:
    """The sweep's parent run (new, or the one of an earlier identical sweep) and its finished cells."""

    key = spec.key()
    axes = {k: len(values) for k, values in spec.grid}
    experiment_id = tracking.use_experiment(experiment)
    tracking.describe_experiment(experiment_id)
    parent_id = tracking.reopen_latest(client, experiment_id, f"tags.`{SWEEP_TAG}` = '{key}'")
    if parent_id is None:
        parent = client.create_run(
            experiment_id,
            run_name="sweep " + "×".join(str(n) for n in (len(spec.strategies), *axes.values(), len(spec.seeds))),
            tags={SWEEP_TAG: key, KIND_TAG: "sweep", COMMAND_TAG: command},
        )
        parent_id = parent.info.run_id
        params = tracking.flatten({k: v for k, v in spec.config.to_dict().items() if k != "seed"}) | {
            "sweep.strategies": ",".join(spec.strategies),
            "sweep.seeds": ",".join(str(s) for s in spec.seeds),
            "sweep.key": key,
            "scenario": spec.scenario,
        }
        params |= {f"sweep.grid.{k}": ",".join(values) for k, values in spec.grid}
        params |= {f"strategy.{k}": v for k, v in spec.strategy_sets.items()}
        params |= {f"{SCENARIO_PREFIX}{k}": v for k, v in spec.scenario_sets.items()}
        tracking.log_params(parent_id, params | tracking.versions())
    return parent_id, _finished_cells(client, experiment_id, parent_id)


def _finished_cells(client, experiment_id: str, parent_id: str) -> dict:
    """cell key → the latest FINISHED child run of a sweep."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    return {run.data.tags[CELL_TAG]: run for run in runs if CELL_TAG in run.data.tags}


def _schedule(
    pool,
    jobs: int,
    pending: list[Cell],
    groups: dict[Cell, str],
    spec: SweepSpec,
    parent_id: str,
    experiment: str,
    uri: str,
):
    """Yield outcomes as cells end, with at most `jobs` cells in flight.

    Each experience-0 group's first cell runs alone; the rest start when it is done, ahead of every cell not yet
    started. Seeds go in order, and within a seed the first cells of groups with others to unlock go before
    groups of one (strategies that train experience 0 themselves): an interrupted or partial sweep has every
    strategy at its first seeds rather than one cell of each group or all seeds of some.
    """
    members: dict[str, list[Cell]] = {}
    for cell in pending:
        members.setdefault(groups[cell], []).append(cell)
    leaders = sorted((cells[0] for cells in members.values()), key=lambda c: (c.seed, len(members[groups[c]]) == 1))
    waiting = {group: cells[1:] for group, cells in members.items()}
    ready = deque(leaders)
    running: dict[Future, Cell] = {}
    submitted: dict[Future, float] = {}

    broken: list[Cell] = []

    def fill() -> None:
        while ready and len(running) < jobs:
            cell = ready.popleft()
            try:
                future = pool.submit(run_cell, cell, spec, parent_id, experiment, uri)
                running[future], submitted[future] = cell, time.perf_counter()
            except BrokenProcessPool:  # a worker died: no cell can start any more
                broken.append(cell)

    fill()
    while running or broken:
        while broken:
            cell = broken.pop(0)
            ready.extendleft(reversed(waiting.pop(groups[cell], [])))
            yield CellOutcome(cell, "", "FAILED", error="not started: a worker process died")
        if not running:
            fill()
            continue
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            cell = running.pop(future)
            ready.extendleft(reversed(waiting.pop(groups[cell], [])))  # a leader's end: its group goes next
            try:
                outcome = future.result()
                outcome.overhead_s = time.perf_counter() - submitted.pop(future) - outcome.wall_time_s
                yield outcome
            except BrokenProcessPool:
                yield CellOutcome(cell, "", "FAILED", error="its worker process died (killed, or out of memory)")
            except Exception as exc:  # the cell's run could not even be created (tracking store unreachable)
                yield CellOutcome(cell, "", "FAILED", error=f"{type(exc).__name__}: {exc}")
        fill()


def run_cell(cell: Cell, spec: SweepSpec, parent_id: str, experiment: str, uri: str) -> CellOutcome:
    """One cell in a worker: its child run is created first, so even a cell that fails at once is on record."""
    from mlflow import MlflowClient

    from clbench.run.log import summary_metrics
    from clbench.run.loop import run

    started = time.perf_counter()
    tracking.configure(uri)
    client = MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    resume = _interrupted(client, experiment_id, parent_id, cell)
    if resume is not None:
        run_id = resume.run_id  # an earlier attempt left a checkpoint: continue it, in its own run
    else:
        tags = {PARENT_TAG: parent_id, CELL_TAG: cell.key, KIND_TAG: "cell"}
        run_id = client.create_run(experiment_id, run_name=_cell_name(cell, spec), tags=tags).info.run_id
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            config, strategy, scenario = spec.materialize(cell)
            result = run(
                config,
                strategy,
                scenario,
                experiment=experiment,
                progress=False,
                run_id=run_id,
                resume=resume,
                strategy_spec=cell.strategy,
                scenario_spec=spec.scenario,
            )
    except KeyboardInterrupt:  # Ctrl-C, or the sweep told to stop: a rerun goes on from the cell's checkpoint
        client.set_terminated(run_id, "KILLED")
        raise
    except Exception as exc:
        error = exc.one_line() if isinstance(exc, ClbenchError) else f"{type(exc).__name__}: {exc}"
        log.write(traceback.format_exc())
        client.set_tag(run_id, ERROR_TAG, error[:5000])
        client.log_text(run_id, log.getvalue(), "cell.log")
        client.set_terminated(run_id, "FAILED")
        return CellOutcome(cell, run_id, "FAILED", error=error, wall_time_s=time.perf_counter() - started)
    client.log_text(run_id, log.getvalue(), "cell.log")
    return CellOutcome(
        cell,
        run_id,
        "FINISHED",
        experience0_trained=result.experience0_trained,
        figures=summary_metrics(result),
        wall_time_s=time.perf_counter() - started,
    )


def _cell_name(cell: Cell, spec: SweepSpec) -> str:
    """The cell's run name: its strategy with the parameters it changes, the scenario's and config's grid values."""
    try:
        strategy = tracking.strategy_label(spec.materialize(cell)[1])
    except ClbenchError:  # checked before the sweep started; the run records the error itself
        strategy = cell.strategy
    settings = spec.scenario_sets | {
        k.removeprefix(SCENARIO_PREFIX): v
        for k, v in cell.settings
        if k.startswith(SCENARIO_PREFIX) or k.startswith(_CONFIG_SECTIONS) or k == "device"
    }
    return tracking.run_name(strategy, spec.scenario, settings, cell.seed)


def _interrupted(client, experiment_id: str, parent_id: str, cell: Cell):
    """The checkpoint of this cell's latest unfinished run (killed, failed, or orphaned), if it left one."""
    from clbench.training import checkpoints

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{CELL_TAG}` = '{cell.key}' "
        "and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs and checkpoints.run_path(runs[0].info.run_id).is_file():
        return checkpoints.load_run(runs[0].info.run_id)
    return None


def _close_parent(client, parent_id: str, result: SweepResult, status: str) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    figures = {
        "sweep/cells_finished": result.count("FINISHED") + result.count("SKIPPED"),
        "sweep/cells_failed": result.count("FAILED"),
        "sweep/cells_run": result.count("FINISHED") + result.count("FAILED"),
        "sweep/experience0_trained": result.experience0_trained,
        "sweep/wall_time_s": result.wall_time_s,
    }
    ran = [o.overhead_s for o in result.outcomes if o.status == "FINISHED"]
    if ran:
        figures["sweep/cell_overhead_s"] = sum(ran) / len(ran)
    client.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()])
    client.set_terminated(parent_id, status)
