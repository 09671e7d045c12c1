"""`python -m clbench …`: the command line. Errors from below arrive as ClbenchError and leave as one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from clbench.commands import COMMANDS, DEFAULT_FRACTIONS, DEFAULT_STRATEGIES, image_size
from clbench.core.console import quiet_libraries
from clbench.core.errors import ClbenchError, ConfigError
from clbench.core.registry import require_installed_package
from clbench.core.termination import EXIT_TERMINATED, Terminated, sigterm_as_interrupt

_EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as our one-line error (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


def _add_shared_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="clevr-humans", help="a name (see `scenarios`), file.py:Class or module:Class"
    )
    parser.add_argument("--data", help="the dataset root the scenario reads, as downloaded (default: generated)")
    parser.add_argument("--preset", default="small", help="tiny | small | paper (default: small)")
    parser.add_argument("--epochs", help="epochs per experience: N0,N1,... (the last repeats; one value: all)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a strategy parameter (ewc_lambda=100), a scenario parameter (scenario.fraction=0.5) or a config "
        "field (train.lr=1e-3, model.module_dim=64)",
    )
    parser.add_argument("--config", type=Path, help="YAML file of config fields (sections data/model/train/scenario)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the scenario's name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clbench",
        description="How much does FiLM forget when fine-tuned after CLEVR, and what fixes it? A continual-learning "
        "benchmark harness on Avalanche, every run tracked in MLflow.",
        epilog="Start with `python -m clbench run --strategy ewc` (generated data, a shipped first-task model), "
        "compare strategies with `python -m clbench sweep`, then open the runs with `python -m clbench ui`. "
        "`python -m clbench COMMAND --help` tells more.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_parser(commands)
    _add_sweep_parser(commands)
    _add_report_parser(commands)
    _add_pretrain_parser(commands)
    _add_tune_parser(commands)
    commands.add_parser("strategies", help="list the strategies found, with their parameters")
    commands.add_parser("scenarios", help="list the scenarios found, with their parameters and experiences")
    _add_ui_parser(commands)
    _add_data_parser(commands)
    return parser


def _add_run_parser(commands) -> None:
    run = commands.add_parser("run", help="train a scenario's experiences in turn with one strategy")
    run.add_argument("--strategy", default="naive", help="a name (see `strategies`), file.py:Class or module:Class")
    run.add_argument("--fraction", type=str, help="shortcut for --set scenario.fraction: the fine-tuning share")
    run.add_argument("--seed", type=int)
    _add_shared_run_options(run)
    run.add_argument("--run-name", help="MLflow run name (default: strategy · scenario · its settings · seed)")
    run.add_argument(
        "--references",
        action="store_true",
        default=None,
        help="also train (once, cached) the from-scratch and joint references: forward transfer, intransigence",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="RUN_ID",
        help="continue an interrupted run (default: the latest) with its own config, in its MLflow run",
    )


def _add_sweep_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="run strategies × seeds × a grid as one MLflow parent run")
    sweep.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help=f"comma-separated, or all (default: {DEFAULT_STRATEGIES})",
    )
    sweep.add_argument(
        "--fractions",
        help=f"shortcut for --grid scenario.fraction=... (default, where the scenario has one: {DEFAULT_FRACTIONS})",
    )
    sweep.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="an axis over any config field, scenario.* or strategy parameter; values split on commas, or on ';' "
        "when one holds commas (scenario.order=exist,count;count,exist)",
    )
    sweep.add_argument("--jobs", type=int, default=1, help="cells run at once, each in its own process (default: 1)")
    sweep.add_argument(
        "--engine",
        choices=("pool", "ray"),
        default="pool",
        help="where cells run: local processes (pool, default) or Ray tasks (needs the [ray] extra)",
    )
    sweep.add_argument("--address", help="Ray cluster to join (as `ray start --head` prints); default: a local one")
    sweep.add_argument("--cell-cpus", type=float, default=1.0, help="CPUs each cell asks Ray for (default: 1)")
    sweep.add_argument("--cell-gpus", type=float, default=0.0, help="GPUs each cell asks Ray for (default: 0)")
    sweep.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the from-scratch and joint references once per setting and seed, for forward transfer and "
        "intransigence (default: on)",
    )
    _add_shared_run_options(sweep)


def _add_report_parser(commands) -> None:
    report = commands.add_parser("report", help="tables and plots of a sweep, from MLflow, into a folder")
    report.add_argument("--scenario", default="clevr-humans", help="whose sweep (default: clevr-humans)")
    report.add_argument("--experiment", help="MLflow experiment (default: the scenario's name)")
    report.add_argument(
        "--sweep",
        help="the sweep's parent run id, or several, comma-separated, run with the same settings, for one report "
        "over all their cells (default: the latest sweep in the experiment)",
    )
    report.add_argument(
        "--out", type=Path, default=Path("results"), help="output folder; the report goes to OUT/<scenario>/"
    )
    report.add_argument("--tracking-uri")


def _add_ui_parser(commands) -> None:
    ui = commands.add_parser("ui", help="start the MLflow UI on 127.0.0.1 over the tracking store")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", help="the store (default: sqlite:///mlflow.db here)")
    ui.add_argument("--experiment", help="whose runs table it opens on (default: the experiment run last)")


def _add_data_parser(commands) -> None:
    data = commands.add_parser("data", help="generate, prepare or check a dataset").add_subparsers(
        dest="data_command", required=True, parser_class=_Parser
    )
    generate = data.add_parser("generate", help="write the embedded CLEVR-format dataset")
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--preset", default="small", help="tiny | small")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--world", choices=("clevr", "cogent"), default="clevr", help="clevr (CLEVR_v1.0 + CLEVR-Humans) | cogent"
    )
    prepare = data.add_parser("prepare", help="decode and resize images into the memory-mapped cache")
    prepare.add_argument("root", type=Path)
    prepare.add_argument("--size", type=image_size, help="HEIGHTxWIDTH (default: the small preset's)")
    prepare.add_argument("--jobs", type=int)
    features = data.add_parser(
        "features", help="extract the frozen ResNet-101 stem's features once, for runs with model.stem=resnet101"
    )
    features.add_argument(
        "root", type=Path, nargs="?", help="a dataset root as downloaded (default: the generated small dataset)"
    )
    features.add_argument("--stem", choices=("resnet101",), default="resnet101")
    features.add_argument("--size", type=image_size, default=(224, 224), help="HEIGHTxWIDTH (default: 224x224)")
    features.add_argument(
        "--weights",
        choices=("imagenet", "random"),
        default="imagenet",
        help="the backbone's weights: imagenet (the paper's) or random (a fixed random init, for machines without "
        "the pretrained file; set model.stem_weights=random in the runs that read them)",
    )
    features.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    features.add_argument("--batch-size", type=int, default=64, help="images per backbone forward (default: 64)")
    features.add_argument("--no-progress", action="store_true", help="no progress bars")
    check = data.add_parser("check", help="validate a dataset and run every program on its scene")
    check.add_argument("root", type=Path)


def _add_pretrain_parser(commands) -> None:
    pretrain = commands.add_parser(
        "pretrain", help="train a scenario's first experience once, until a target accuracy or a budget (resumable)"
    )
    _add_shared_run_options(pretrain)
    pretrain.add_argument("--seed", type=int)
    pretrain.add_argument("--out", type=Path, help="its folder: checkpoint, curve (default: pretrain/SCENARIO-PRESET)")
    pretrain.add_argument("--target", type=float, default=0.9, help="stop at this validation accuracy (default 0.9)")
    pretrain.add_argument("--type-target", type=float, default=0.8, help="... with every type this high (0.8)")
    pretrain.add_argument("--budget", default="15M", help="samples at most, e.g. 15M or 400k (default 15M)")
    pretrain.add_argument("--lr", type=float, help="peak learning rate (default: the preset's first)")
    pretrain.add_argument("--warmup", default="200k", help="samples of linear warm-up (default 200k)")
    pretrain.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "linear"])
    pretrain.add_argument("--eval-every", default="100k", help="samples between evaluations (default 100k)")
    pretrain.add_argument("--eval-questions", type=int, help="a fixed subset of the validation set (default: all)")
    pretrain.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    pretrain.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between saves (300)")
    pretrain.add_argument("--stop-after", help="end this sitting after this many samples in all (saved; continues)")
    pretrain.add_argument(
        "--train-world", help="a larger generated world to train on (e.g. small-100k); validation stays the run's"
    )
    pretrain.add_argument(
        "--ship", metavar="NAME", help="once finished (or ended by --stop-after), install its weights as model NAME"
    )
    pretrain.add_argument("--ship-to", type=Path, help="the folder to ship into (default: the installed package's)")


def _add_tune_parser(commands) -> None:
    tune = commands.add_parser(
        "tune", help="choose a strategy's parameters on the validation stream (Optuna), then test them on fresh seeds"
    )
    tune.add_argument("--strategy", required=True, help="a name (see `strategies`), file.py:Class or module:Class")
    tune.add_argument("--trials", type=int, default=30, help="trials in all, finished ones included (default: 30)")
    tune.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME[=SPACE]",
        help="search these parameters only: log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or choice:A,B (a bare NAME "
        "takes the space its strategy declares; default: every declared space)",
    )
    tune.add_argument(
        "--objective",
        default="average_accuracy",
        help="a validation measure: average_accuracy (default), forgetting, wc_acc, min_acc, learning_accuracy, "
        "bwt; two separated by a comma give a Pareto front",
    )
    tune.add_argument("--seeds", default="0", help="seeds each trial runs on, its objective their mean (default: 0)")
    tune.add_argument(
        "--final-seeds", default="0,1,2", help="seeds the chosen values are rerun and tested on, or none (0,1,2)"
    )
    tune.add_argument("--jobs", type=int, default=1, help="processes sharing the study (default: 1)")
    tune.add_argument("--engine", choices=("pool", "ray"), default="pool", help="where workers run (default: pool)")
    tune.add_argument("--address", help="Ray cluster to join (default: a local one)")
    tune.add_argument("--study", help="the Optuna study's name (default: one derived from the settings)")
    tune.add_argument("--storage", help="Optuna storage URL (default: sqlite optuna.db beside the MLflow store)")
    tune.add_argument(
        "--out", type=Path, default=Path("results/tuning"), help="summary folder root: OUT/<scenario>/<strategy>/"
    )
    tune.add_argument(
        "--stop-after", type=int, help="end this sitting after this many trials (the same command goes on)"
    )
    _add_shared_run_options(tune)


def _permission_problem(exc: PermissionError) -> ClbenchError:
    """A file or folder this user may not read or write, as one line naming it."""
    where = exc.filename or "a file"
    return ClbenchError(
        f"permission denied on {where}", "make it readable and writable for this user (chmod, chown), or use another"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet_libraries(debug)
    with sigterm_as_interrupt():
        return _dispatch(argv, debug)


def _dispatch(argv: list[str], debug: bool) -> int:
    try:
        require_installed_package()
        parser = build_parser()
        if not argv:  # what someone types to see what there is: the commands, not an error about missing one
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        args.argv = argv  # what a record of the command (pretrain, sweep, tune, report) quotes
        return COMMANDS[args.command](args)
    except ClbenchError as exc:
        if debug:
            raise
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return _EXIT_USAGE
    except PermissionError as exc:  # a path of the user's that no check before it caught
        if debug:
            raise
        print(f"error: {_permission_problem(exc).one_line()}", file=sys.stderr)
        return _EXIT_USAGE
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
