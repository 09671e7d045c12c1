"""What each `python -m clbench` subcommand does, once its arguments are parsed (`clbench.cli`), and the parsing
of the values they take."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from clbench.core.errors import ConfigError
from clbench.core.invocation import clbench_command


def _key_values(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r} is not key=value", f"write {what} name=value")
        out[key.strip()] = value.strip()
    return out


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--fraction {text!r} is not a number", "give a share in (0, 1], e.g. 0.33") from None
    if not 0 < value <= 1:
        raise ConfigError(f"--fraction {text} is outside (0, 1]", "give a share in (0, 1], e.g. 0.33")
    return value


def image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r} is not HEIGHTxWIDTH", "write e.g. --size 48x72") from None
    return height, width


DEFAULT_STRATEGIES = "naive,ewc,replay,frozen-generator,generator-only"


DEFAULT_FRACTIONS = "0.1,0.25,0.33,0.5,1.0"


def _base_config(args: argparse.Namespace):
    """Preset, then --config, then --set, then the flags: what `run` and `sweep` share.

    Returns the config, the strategy's `--set` values and the scenario's (`scenario.X`, without the prefix).
    """
    from clbench import config as cfg
    from clbench.scenario.contract import PREFIX

    config = cfg.preset(args.preset)
    yaml_sets = cfg.load_yaml(args.config) if args.config is not None else {}
    scenario_sets = {k.removeprefix(PREFIX): v for k, v in yaml_sets.items() if k.startswith(PREFIX)}
    config = cfg.override(config, {k: v for k, v in yaml_sets.items() if not k.startswith(PREFIX)}, str(args.config))
    sets = _key_values(args.set, "--set")
    scenario_sets |= {k.removeprefix(PREFIX): v for k, v in sets.items() if k.startswith(PREFIX)}
    config_sets = {k: v for k, v in sets.items() if not k.startswith(PREFIX) and ("." in k or k in ("seed", "device"))}
    strategy_sets = {k: v for k, v in sets.items() if k not in config_sets and not k.startswith(PREFIX)}
    config = cfg.override(config, config_sets)
    flags: dict[str, object] = {}
    if getattr(args, "fraction", None) is not None:
        scenario_sets["fraction"] = _fraction(args.fraction)
    if args.data is not None:
        flags["data.root"] = args.data
    if getattr(args, "seed", None) is not None:
        flags["seed"] = args.seed
    if args.epochs is not None:
        flags["train.epochs"] = cfg.parse_per_experience(args.epochs, int, "--epochs")  # validate checks ≥ 0
    if args.device is not None:
        flags["device"] = args.device
    if getattr(args, "references", None) is not None:
        flags["eval.references"] = args.references
    return cfg.validate(cfg.override(config, flags)), strategy_sets, scenario_sets


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is None:
        _refuse_unknown_names(args.scenario, [args.strategy])
    from clbench.run.loop import run
    from clbench.scenario import contract as scenarios
    from clbench.strategy.contract import instantiate, resolve

    with _torchrun(args):
        if args.resume is not None:
            return _resume(args)
        config, strategy_sets, scenario_sets = _base_config(args)
        scenario = scenarios.load(args.scenario, scenario_sets)
        strategy = instantiate(resolve(args.strategy), strategy_sets)
        run(
            config,
            strategy,
            scenario,
            experiment=args.experiment,
            run_name=args.run_name,
            tracking_uri=args.tracking_uri,
            progress=not args.no_progress,
            strategy_spec=args.strategy,
            scenario_spec=args.scenario,
        )
    return 0


def _refuse_unknown_names(scenario: str, strategies: list[str]) -> None:
    """A mistyped scenario or strategy name is named before the imports that loading any of them costs."""
    from clbench.core.registry import refuse_unknown_name

    refuse_unknown_name(scenario, "scenario")
    for strategy in strategies:
        refuse_unknown_name(strategy, "strategy")


@contextlib.contextmanager
def _torchrun(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun: join the process group first (on the device asked for), and let rank 0 alone speak."""
    from clbench.training import distributed

    if not distributed.launched():
        yield
        return
    distributed.start(args.device or "auto")
    try:
        with distributed.quiet_followers():
            yield
    finally:
        distributed.stop()


def _resume(args: argparse.Namespace) -> int:
    """Continue a checkpointed run: its config, strategy, experiment and store come from the checkpoint."""
    from clbench.config import RunConfig
    from clbench.run.loop import run
    from clbench.scenario import contract as scenarios
    from clbench.strategy.contract import instantiate, resolve
    from clbench.training import checkpoints, distributed

    checkpoint = distributed.from_main(lambda: checkpoints.load_run(None if args.resume == "latest" else args.resume))
    meta = checkpoint.meta
    strategy = instantiate(resolve(meta["strategy"]["spec"]), meta["strategy"]["params"])
    # Checkpoints from before scenarios were plugins ran clevr-humans, with its fraction in the data config.
    fraction = meta["config"]["data"].get("fraction", 1.0)
    scenario_meta = meta.get("scenario") or {"spec": "clevr-humans", "params": {"fraction": fraction}}
    scenario_params = {"validation": 0.0} | scenario_meta["params"]  # checkpoints from before it held none out
    run(
        RunConfig.from_dict(meta["config"]),
        strategy,
        scenarios.load(scenario_meta["spec"], scenario_params),
        experiment=meta["experiment"],
        run_name=meta["run_name"],
        tracking_uri=args.tracking_uri or meta["tracking_uri"],
        progress=not args.no_progress,
        resume=checkpoint,
        strategy_spec=meta["strategy"]["spec"],
        scenario_spec=scenario_meta["spec"],
    )
    return 0


def _samples(text: str, what: str) -> int:
    """A sample count: 2000, 400k, 1.5M."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text.strip()[-1:].lower(), 1)
    try:
        value = float(text.strip()[:-1] if scale > 1 else text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a sample count", f"write e.g. {what} 400k or 15M") from None
    if not value >= 0 or value != value:
        raise ConfigError(f"{what} {text} is negative", f"give {what} 0 or more samples")
    return int(value * scale)


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch

    from clbench.run import pretrain
    from clbench.scenario import contract as scenarios
    from clbench.training import pretraining
    from clbench.training.checkpoints import scenario_identity

    config, strategy_sets, scenario_sets = _base_config(args)
    if strategy_sets:
        raise ConfigError(f"pretrain takes no strategy parameters ({', '.join(strategy_sets)})", "leave them out")
    if not args.target > 0:
        raise ConfigError(f"--target {args.target} is not a positive accuracy", "give e.g. --target 0.9")
    scenario = scenarios.load(args.scenario, scenario_sets)
    budget = _samples(args.budget, "--budget")
    if budget < 1:
        raise ConfigError("--budget 0 trains nothing", "give a sample budget, e.g. --budget 15M")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    schedule = pretraining.Schedule(
        peak=args.lr if args.lr is not None else config.train.lr_of(0),
        warmup=_samples(args.warmup, "--warmup"),
        total=budget,
        shape=args.schedule,
    )
    spec = pretraining.PretrainSpec(
        config=config,
        scenario=scenario_identity(scenario),
        schedule=schedule,
        budget=budget,
        target=args.target,
        type_target=args.type_target,
        eval_every=max(1, _samples(args.eval_every, "--eval-every")),
        eval_questions=args.eval_questions,
        train_world=args.train_world,
    )
    folder = args.out or Path("pretrain") / f"{scenario.name}-{config.preset}"
    outcome = pretrain.pretrain(
        spec,
        scenario,
        folder,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment or "pretrain",
        checkpoint_seconds=args.checkpoint_every,
        progress_bar=not args.no_progress,
        stop_after=_samples(args.stop_after, "--stop-after") if args.stop_after else None,
    )
    if args.ship and (outcome.progress.finished or outcome.stopped == "stop_after"):
        command = _command_line(args)
        record = pretrain.ship(
            args.ship, spec, scenario, folder, command=command, to=args.ship_to, stopped=outcome.stopped
        )
        print(f"shipped {args.ship}: {record}", file=sys.stderr)
    elif args.ship:
        print(f"not shipped: the pretraining has not finished ({outcome.stopped})", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    named = [] if args.strategies.strip() == "all" else [s.strip() for s in args.strategies.split(",") if s.strip()]
    _refuse_unknown_names(args.scenario, named)
    from clbench.engines.pool import Engine
    from clbench.engines.sweep import SweepSpec, parse_list, sweep
    from clbench.scenario import contract as scenarios
    from clbench.training import distributed

    if distributed.launched():
        raise ConfigError(
            "sweep does not run under torchrun (each cell is its own run)",
            "start it with python -m clbench sweep; use --engine ray to spread cells over machines",
        )
    config, strategy_sets, scenario_sets = _base_config(args)
    grid = dict(_grid_axis(item) for item in args.grid)
    has_fraction = "fraction" in scenarios.resolve(args.scenario).parameters()
    if args.fractions is not None or (has_fraction and "scenario.fraction" not in grid):
        fractions = parse_list(args.fractions or DEFAULT_FRACTIONS, str, "--fractions")
        grid = {"scenario.fraction": tuple(f"{_fraction(f):g}" for f in fractions)} | grid
    spec = SweepSpec(
        strategies=_strategy_list(args.strategies),
        seeds=parse_list(args.seeds, int, "--seeds"),
        config=config,
        grid=tuple(grid.items()),
        strategy_sets=strategy_sets,
        scenario=args.scenario,
        scenario_sets=scenario_sets,
    )
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} is below 1", "give --jobs 1 or more (at most the CPU cores)")
    if args.engine == "pool" and (args.address or args.cell_cpus != 1 or args.cell_gpus):
        raise ConfigError("--address, --cell-cpus and --cell-gpus are Ray's", "add --engine ray, or leave them out")
    engine = Engine(args.engine, args.address, args.cell_cpus, args.cell_gpus)
    result = sweep(
        spec,
        jobs=args.jobs,
        engine=engine,
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
        progress=not args.no_progress,
        command=_command_line(args),
    )
    return 1 if result.count("FAILED") else 0


def _grid_axis(item: str) -> tuple[str, tuple[str, ...]]:
    """`KEY=V1,V2` (or `KEY=V1;V2` when values hold commas, like question-type orders) → (KEY, values)."""
    key, sep, values = item.partition("=")
    separator = ";" if ";" in values else ","
    parts = tuple(v.strip() for v in values.split(separator))
    if not sep or not key.strip() or not all(parts):
        raise ConfigError(f"--grid {item!r} is not KEY=V1,V2,...", "write e.g. --grid scenario.fraction=0.1,0.5,1")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"--grid {item!r} repeats a value", "list each value once")
    return key.strip(), parts


def cmd_report(args: argparse.Namespace) -> int:
    from clbench.core.paths import writable_folder
    from clbench.engines.sweep import parse_list
    from clbench.report.runs import load_sweeps
    from clbench.report.summary import build_report
    from clbench.scenario.contract import resolve

    scenario = resolve(args.scenario)
    writable_folder(args.out, "--out", create=False)  # before any work; build_report makes it
    sweeps = list(parse_list(args.sweep, str, "--sweep")) if args.sweep else []
    runs = load_sweeps(args.experiment or scenario.name, sweeps, args.tracking_uri)
    out = args.out / scenario.name
    written = build_report(runs, out, scenario, report_command=_command_line(args))
    parents = f"the parent run{'s' if len(runs.parents) > 1 else ''} {', '.join(runs.parents)}"
    print(f"wrote {len(written)} files to {out} (and to {parents} in MLflow)")
    print((out / "summary.md").read_text())
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed: the arguments `main` parsed (a caller's own list too, not only the process's)."""
    return shlex.join(["python", "-m", "clbench", *getattr(args, "argv", sys.argv[1:])])


def _strategy_list(text: str) -> tuple[str, ...]:
    """`--strategies`: names or specs, comma-separated; `all` is every registered strategy."""
    from clbench.engines.sweep import parse_list
    from clbench.strategy.contract import available

    return tuple(sorted(available())) if text.strip() == "all" else parse_list(text, str, "--strategies")


def cmd_strategies(args: argparse.Namespace) -> int:
    from clbench.strategy.contract import STATE_KINDS, available, shortcut
    from clbench.strategy.search import declared

    for name, cls in available().items():
        params = ", ".join(f"{k}={v!r}" for k, v in cls.parameters().items()) or "no parameters"
        template = f", template {cls.template.__name__}" if cls.template is not None else ""
        state = cls.state or "unsaid, treated as training"
        print(f"{name:18s} {cls.describe()}")
        print(f"{'':18s}   defaults: {params}")
        if spaces := declared(cls):  # what `clbench tune --strategy NAME` searches when no --param is given
            print(f"{'':18s}   tune searches: {', '.join(f'{k} in {v}' for k, v in spaces.items())}")
        where = f"[{cls.__module__}:{cls.__qualname__}]"
        print(f"{'':18s}   state: {state} (shortcut: {shortcut(cls())}{template})   {where}")
    print("\nstate kinds (what the experience-0 cache and --resume may assume):", file=sys.stderr)
    for kind, meaning in STATE_KINDS.items():
        print(f"  {kind}: {meaning}", file=sys.stderr)
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from clbench.scenario.contract import PREFIX, available

    for name, cls in available().items():
        scenario = cls()
        params = ", ".join(f"{PREFIX}{k}={v!r}" for k, v in cls.parameters().items()) or "no parameters"
        print(f"{name:18s} {cls.describe()}")
        print(f"{'':18s}   experiences: {' → '.join(scenario.experience_names())}")
        print(f"{'':18s}   {params}   [{cls.__module__}:{cls.__qualname__}]")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """MLflow's UI over the store, run by this interpreter (whether or not its environment is activated), opened
    on the runs table of the experiment compared."""
    from clbench.report.tracking import check_store, tracking_uri
    from clbench.report.ui import open_address, require_free_port

    uri = tracking_uri(args.tracking_uri)
    check_store(uri)
    if uri.startswith(("http://", "https://")):  # a server is its own UI
        print(f"the store is an MLflow server; its UI: {open_address(uri, args.port, args.experiment)}")
        return 0
    require_free_port(args.port)
    address = open_address(uri, args.port, args.experiment)
    print(f"MLflow UI on {address} over {uri} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    # one worker: one person's browser needs no more, and it starts in a quarter of the time and memory
    os.execv(sys.executable, [*command, "--port", str(args.port), "--workers", "1"])
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "generate":
        from clbench.synth import generate

        root = generate(args.out, args.preset, args.seed, world=args.world)
        print(f"wrote {root}")
    elif args.data_command == "prepare":
        from clbench.config import PRESETS
        from clbench.data.cache import prepare_dataset

        small = PRESETS["small"].model
        size = args.size or (small.image_height, small.image_width)
        caches = prepare_dataset(args.root, size, jobs=args.jobs)
        for split, cache in caches.items():
            print(f"{split}: {len(cache)} images {size[0]}x{size[1]} cached ({cache.fingerprint[:12]})")
    elif args.data_command == "features":
        return _extract_features(args)
    elif args.data_command == "check":
        from clbench.data.check import check_dataset

        report = check_dataset(args.root)
        print(report.render())
        if report.executor_agreement < 1.0:
            return 1
    return 0


def _extract_features(args: argparse.Namespace) -> int:
    from clbench.model.features import extract_dataset
    from clbench.run.build import resolve_device

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} is below 1", "give 1 or more, e.g. 64")
    height, width = args.size
    if min(height, width) < 1:
        raise ConfigError(f"--size {height}x{width} is not positive", "write e.g. --size 224x224")
    device = resolve_device(args.device)
    if args.root is None:
        from clbench.synth import ensure_default_data

        root = ensure_default_data(progress=not args.no_progress)
    else:
        root = args.root
    caches = extract_dataset(
        root, args.size, args.weights, device=device, batch_size=args.batch_size, progress=not args.no_progress
    )
    for split, cache in caches.items():
        _, channels, rows, cols = cache.shape
        size_gb = cache.array.nbytes / 1e9
        print(f"{split}: {len(cache)} images → {channels}×{rows}×{cols} float16 features ({size_gb:.2f} GB)")
    command = ["run", *(["--data", str(args.root)] if args.root is not None else []), "--set", "model.stem=resnet101"]
    command += ["--set", f"model.image_height={height}", "--set", f"model.image_width={width}"]
    command += [] if args.weights == "imagenet" else ["--set", f"model.stem_weights={args.weights}"]
    print(f"runs read them with: {clbench_command(*command)}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    _refuse_unknown_names(args.scenario, [args.strategy])
    from clbench.core.paths import writable_folder
    from clbench.engines.pool import Engine
    from clbench.engines.search import tune
    from clbench.engines.sweep import parse_list
    from clbench.engines.tune import TuneSpec, parse_objectives
    from clbench.strategy.contract import resolve
    from clbench.strategy.search import search_space

    if args.trials < 1:
        raise ConfigError(f"--trials {args.trials} runs nothing", "give --trials 1 or more, e.g. --trials 30")
    if args.jobs < 1 or (args.stop_after is not None and args.stop_after < 1):
        raise ConfigError("--jobs and --stop-after must be 1 or more", "give e.g. --jobs 2")
    config, strategy_sets, scenario_sets = _base_config(args)
    strategy = resolve(args.strategy)
    params = dict(_tune_param(item) for item in args.param)
    space = search_space(strategy, params, f"strategy {strategy.name!r}")
    none = args.final_seeds.strip().lower() in ("", "none")
    spec = TuneSpec(
        strategy=args.strategy,
        config=config,
        space=tuple((name, str(s)) for name, s in space.items()),
        objectives=parse_objectives(args.objective),
        trials=args.trials,
        seeds=parse_list(args.seeds, int, "--seeds"),
        final_seeds=() if none else parse_list(args.final_seeds, int, "--final-seeds"),
        strategy_sets=strategy_sets,
        scenario=args.scenario,
        scenario_sets=scenario_sets,
        study=args.study,
    )
    writable_folder(args.out, "--out", create=False)
    outcome = tune(
        spec,
        jobs=args.jobs,
        engine=Engine(args.engine, args.address),
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        out=args.out,
        command=_command_line(args),
        stop_after=args.stop_after,
    )
    return 0 if outcome.summary is not None or outcome.finished_trials < spec.trials else 1


def _tune_param(item: str) -> tuple[str, str | None]:
    """`--param NAME=SPACE`, or a bare `NAME` (its declared space)."""
    name, sep, space = item.partition("=")
    if not name.strip() or (sep and not space.strip()):
        raise ConfigError(f"--param {item!r} is not NAME or NAME=SPACE", "write e.g. --param ewc_lambda=log:1:1e6")
    return name.strip(), space.strip() if sep else None


COMMANDS = {
    "run": cmd_run,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "strategies": cmd_strategies,
    "scenarios": cmd_scenarios,
    "ui": cmd_ui,
    "data": cmd_data,
    "pretrain": cmd_pretrain,
    "tune": cmd_tune,
}
