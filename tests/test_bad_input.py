"""The bad-input catalogue: every user mistake gets one line naming the problem and the fix, exit code 2, no
traceback, and leaves no file, cache or tracking store behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clbench.cli import main
from clbench.core.errors import ConfigError

Setup = Callable[[Path, Path], list[str]]  # (tmp folder, tiny dataset) → argv


def _copy(tiny_root: Path, tmp: Path) -> Path:
    """A private copy of the tiny dataset to damage."""
    return Path(shutil.copytree(tiny_root, tmp / "data"))


def _run(data: Path, *more: str) -> list[str]:
    return ["run", "--preset", "tiny", "--data", str(data), "--no-progress", *more]


def _damage_json(relative: str, edit: Callable[[str], str]) -> Setup:
    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        data = _copy(tiny_root, tmp)
        path = data / relative
        path.write_text(edit(path.read_text()))
        return _run(data)

    return setup


def _edit_first_question(relative: str, **changes: object) -> Setup:
    def edit(text: str) -> str:
        blob = json.loads(text)
        blob["questions"][0].update(changes)
        return json.dumps(blob)

    return _damage_json(relative, edit)


def _truncated_png(tmp: Path, tiny_root: Path) -> list[str]:
    data = _copy(tiny_root, tmp)
    image = sorted((data / "CLEVR_v1.0" / "images" / "train").glob("*.png"))[3]
    image.write_bytes(image.read_bytes()[:100])
    return _run(data)


def _empty_folder(tmp: Path, tiny_root: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return _run(tmp / "empty")


def _no_humans(tmp: Path, tiny_root: Path) -> list[str]:
    data = _copy(tiny_root, tmp)
    shutil.rmtree(data / "CLEVR-Humans")
    return _run(data)


def _cogent_without(split_file: str) -> Setup:
    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        from tests.cogent_fixture import write_cogent_fixture

        root = write_cogent_fixture(tmp / "cogent")
        (root / "CLEVR_CoGenT_v1.0" / "questions" / split_file).unlink()
        return _run(root, "--scenario", "cogent")

    return setup


def _empty_store(tmp: Path, tiny_root: Path) -> list[str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp / 'store.db'}"
    MlflowClient(uri).create_experiment("clevr-humans", artifact_location=str(tmp / "artifacts"))
    return ["report", "--tracking-uri", uri, "--out", str(tmp / "out")]


def _empty_store_then(*argv: str) -> Setup:
    """`argv` against a store that holds one experiment and no run."""

    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        _empty_store(tmp, tiny_root)
        return [*argv, "--tracking-uri", f"sqlite:///{tmp / 'store.db'}"]

    return setup


def _plugin(source: str, spec: str = "plugin.py:Mine") -> Setup:
    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        (tmp / "plugin.py").write_text(source)
        return _run(tiny_root, "--strategy", str(tmp / spec))

    return setup


def _file(name: str, text: str, *argv: str) -> Setup:
    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        (tmp / name).write_text(text)
        return [a.replace("{tmp}", str(tmp)).replace("{data}", str(tiny_root)) for a in argv]

    return setup


def _argv(*argv: str) -> Setup:
    return lambda tmp, tiny_root: [a.replace("{tmp}", str(tmp)).replace("{data}", str(tiny_root)) for a in argv]


_HELD: list[object] = []  # what a setup keeps alive while its command runs: denied reads, a taken port


def _unreadable(*argv: str) -> Setup:
    """A dataset folder no one but its owner may read (`{locked}` in `argv`): chmod 000, and where the tests run as
    root, which reads anyway, the same PermissionError raised by the calls that would meet it."""

    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        locked = tmp / "locked"
        shutil.copytree(tiny_root / "CLEVR_v1.0" / "questions", locked / "CLEVR_v1.0" / "questions")
        locked.chmod(0)
        _HELD.append(locked)
        if os.geteuid() == 0:
            _HELD.append(_deny(locked))
        return [a.replace("{locked}", str(locked)).replace("{data}", str(tiny_root)) for a in argv]

    return setup


def _deny(folder: Path) -> pytest.MonkeyPatch:
    """Make the OS calls that read `folder` or what is in it fail as they do for a user without the right."""
    import builtins
    import io

    patch = pytest.MonkeyPatch()

    def guard(real: Callable, itself: bool, denied: object = None) -> Callable:
        def call(path: object, *args: object, **kwargs: object) -> object:
            if isinstance(path, str | Path):
                target = Path(os.path.abspath(path))
                if (itself and target == folder) or folder in target.parents:
                    if denied is not None:
                        return denied
                    raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        return call

    patch.setattr(os, "stat", guard(os.stat, itself=False))
    patch.setattr(os, "listdir", guard(os.listdir, itself=True))
    patch.setattr(os, "scandir", guard(os.scandir, itself=True))
    patch.setattr(os, "access", guard(os.access, itself=True, denied=False))
    patch.setattr(builtins, "open", guard(builtins.open, itself=False))
    patch.setattr(io, "open", guard(io.open, itself=False))
    return patch


def _taken_port(*argv: str) -> Setup:
    """`{port}` in `argv`: a port another program listens on while the command runs."""

    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _HELD.append(listener)
        return [a.replace("{port}", str(listener.getsockname()[1])) for a in argv]

    return setup


def _env(name: str, relative: str, *argv: str) -> Setup:
    """`argv` with `$name` pointing at a file under the test's folder, where a folder belongs."""

    def setup(tmp: Path, tiny_root: Path) -> list[str]:
        (tmp / relative).write_text("")
        os.environ[name] = str(tmp / relative)  # restored by the test's monkeypatch, which set it first
        return [a.replace("{tmp}", str(tmp)).replace("{data}", str(tiny_root)) for a in argv]

    return setup


def _folder_store(tmp: Path, tiny_root: Path) -> list[str]:
    """A folder as MLflow's retired folder store writes one: an experiment's `0/meta.yaml`."""
    (tmp / "mlruns" / "0").mkdir(parents=True)
    (tmp / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    return [*(a.replace("{data}", str(tiny_root)) for a in RUN), "--tracking-uri", str(tmp / "mlruns")]


@pytest.fixture(autouse=True)
def _release_held() -> Iterator[None]:
    yield
    while _HELD:
        held = _HELD.pop()
        if isinstance(held, Path):
            held.chmod(0o755)
        elif isinstance(held, pytest.MonkeyPatch):
            held.undo()
        else:
            held.close()


HUMANS_TRAIN = "CLEVR-Humans/CLEVR-Humans-train.json"
CLEVR_TRAIN = "CLEVR_v1.0/questions/CLEVR_train_questions.json"
RUN = ("run", "--preset", "tiny", "--data", "{data}", "--no-progress")
TUNE = ("tune", "--strategy", "ewc", "--preset", "tiny", "--data", "{data}", "--no-progress")

CATALOGUE: dict[str, tuple[Setup, str]] = {
    # data
    "missing data folder": (_argv("run", "--data", "{tmp}/nowhere", "--preset", "tiny"), "does not exist"),
    "empty data folder": (_empty_folder, "CLEVR_v1.0"),
    "no CLEVR-Humans folder": (_no_humans, "has no CLEVR-Humans/ folder"),
    "truncated questions JSON": (_damage_json(CLEVR_TRAIN, lambda t: t[: len(t) // 2]), "CLEVR_train_questions.json"),
    "corrupt CLEVR-Humans JSON": (_damage_json(HUMANS_TRAIN, lambda t: "{not json" + t), "CLEVR-Humans-train.json"),
    "truncated PNG": (_truncated_png, ".png"),
    "question naming a missing image": (
        _edit_first_question(HUMANS_TRAIN, image_filename="CLEVR_train_999999.png"),
        "CLEVR_train_999999.png",
    ),
    "unknown answer": (_edit_first_question(HUMANS_TRAIN, answer="purple elephant"), "purple elephant"),
    "data check on a missing folder": (_argv("data", "check", "{tmp}/nowhere"), "does not exist"),
    "features of a missing folder": (_argv("data", "features", "{tmp}/nowhere", "--weights", "random"), "not exist"),
    # values
    "fraction 0": (_argv(*RUN, "--fraction", "0"), "outside (0, 1]"),
    "fraction 1.5": (_argv(*RUN, "--fraction", "1.5"), "outside (0, 1]"),
    "fraction -1": (_argv(*RUN, "--fraction", "-1"), "outside (0, 1]"),
    "fraction abc": (_argv(*RUN, "--fraction", "abc"), "not a number"),
    "unknown preset": (_argv("run", "--preset", "huge"), "unknown preset 'huge'"),
    "epochs not a number": (_argv(*RUN, "--epochs", "x"), "not integers"),
    "negative epochs": (_argv(*RUN, "--epochs", "-1"), "≥ 0"),
    "negative epochs through --set": (_argv(*RUN, "--set", "train.epochs=2,-1"), "holds a negative count"),
    "seed beyond NumPy's range": (_argv(*RUN, "--seed", str(2**40)), "outside 0..4294967295"),
    "negative seed": (_argv(*RUN, "--seed", "-1"), "seed -1 is outside"),
    "unknown ResNet weights": (_argv(*RUN, "--set", "model.stem_weights=imagenet21k"), "use imagenet or random"),
    "no FiLMed blocks": (_argv(*RUN, "--set", "model.num_modules=0"), "model.num_modules=0 is below 1"),
    "GRU of width 0": (_argv(*RUN, "--set", "model.gru_hidden_dim=0"), "model.gru_hidden_dim=0 is below 1"),
    "image height 0": (_argv(*RUN, "--set", "model.image_height=0"), "model.image_height=0 is below 1"),
    "stem shrinking the image below 2 cells": (_argv(*RUN, "--set", "model.stem_layers=6"), "fewer model.stem_layers"),
    "negative stem layers": (_argv(*RUN, "--set", "model.stem_layers=-1"), "model.stem_layers=-1 is negative"),
    "dropout 1.5": (_argv(*RUN, "--set", "model.dropout=1.5"), "model.dropout=1.5 is outside [0, 1)"),
    "batch size 0": (_argv(*RUN, "--set", "train.batch_size=0"), "train.batch_size=0 is below 1"),
    "evaluation batch size 0": (_argv(*RUN, "--set", "train.eval_batch_size=0"), "train.eval_batch_size=0 is below 1"),
    "learning rate 0": (_argv(*RUN, "--set", "train.lr=0"), "train.lr=0.0 is not positive"),
    "fine-tuning learning rate 0": (_argv(*RUN, "--set", "train.lr=1e-3,0"), "train.lr=0.0 is not positive"),
    "learning rates not numbers": (_argv(*RUN, "--set", "train.lr=1e-3,fast"), "are not numbers"),
    "epochs for three experiences": (_argv(*RUN, "--epochs", "1,1,1"), "train.epochs gives 3 values but the scen"),
    "learning rates for three": (_argv(*RUN, "--set", "train.lr=1,1,1"), "train.lr gives 3 values but the scenario"),
    "sweep epochs for three": (_argv("sweep", "--preset", "tiny", "--epochs", "1,1,1"), "train.epochs gives 3 val"),
    "negative weight decay": (_argv(*RUN, "--set", "train.weight_decay=-1"), "train.weight_decay=-1.0 is negative"),
    "negative data-loader workers": (_argv(*RUN, "--set", "train.num_workers=-1"), "train.num_workers=-1 is negative"),
    "negative continual-evaluation interval": (_argv(*RUN, "--set", "eval.every=-5"), "eval.every=-5 is negative"),
    "empty continual-evaluation subset": (_argv(*RUN, "--set", "eval.subset=0"), "eval.subset=0 is below 1"),
    "no CLEVR train questions": (_argv(*RUN, "--set", "data.max_train_questions=0"), "leaves no questions"),
    "no test questions": (_argv(*RUN, "--set", "data.max_test_questions=0"), "leaves no questions"),
    "negative word count": (_argv(*RUN, "--set", "data.min_word_count=-1"), "data.min_word_count=-1 is negative"),
    "unknown subcommand": (_argv("frobnicate"), "invalid choice"),
    # scenarios
    "unknown scenario": (_argv(*RUN, "--scenario", "cogen"), "did you mean 'cogent'"),
    "unknown question type in the order": (
        _argv(*RUN, "--scenario", "question-types", "--set", "scenario.order=exist,cout"),
        "unknown question type 'cout' (did you mean 'count'?)",
    ),
    "empty experience in the order": (
        _argv(*RUN, "--scenario", "question-types", "--set", "scenario.order=exist,,count"),
        "has an empty experience",
    ),
    "question type in two experiences": (
        _argv(*RUN, "--scenario", "question-types", "--set", "scenario.order=wh,count"),
        "puts count in two experiences",
    ),
    "CoGenT folder missing a split": (_cogent_without("CLEVR_valB_questions.json"), "CLEVR_valB_questions.json"),
    "unknown scenario parameter": (_argv(*RUN, "--set", "scenario.fractoin=0.5"), "did you mean scenario.fraction"),
    "--fraction for a scenario without one": (
        _argv(*RUN, "--scenario", "question-types", "--fraction", "0.5"),
        "has no parameter scenario.fraction",
    ),
    "epochs for six of five experiences": (
        _argv(*RUN, "--scenario", "question-types", "--epochs", "1,1,1,1,1,1"),
        "train.epochs gives 6 values but the scenario has 5",
    ),
    "CoGenT pool of no image": (
        _argv(*RUN, "--scenario", "cogent", "--set", "scenario.pool_images=0"),
        "scenario.pool_images=0 is below 1",
    ),
    "sweep grid with an empty value": (_argv("sweep", "--preset", "tiny", "--grid", "train.lr=1e-3,"), "--grid"),
    "sweep grid over an unknown key": (
        _argv("sweep", "--preset", "tiny", "--strategies", "ewc", "--grid", "ewc_lamda=1,2"),
        "did you mean",
    ),
    "report of an unknown scenario": (_argv("report", "--scenario", "nope", "--out", "{tmp}/out"), "unknown scenario"),
    # strategies and plugins
    "unknown strategy": (_argv(*RUN, "--strategy", "ewk"), "did you mean 'ewc'"),
    "plugin file with a syntax error": (_plugin("class Mine(:\n"), "syntax error"),
    "plugin file without the class": (_plugin("X = 1\n"), "no class 'Mine'"),
    "plugin class that is not a strategy": (_plugin("class Mine:\n    pass\n"), "not a Strategy subclass"),
    "missing plugin file": (_argv(*RUN, "--strategy", "{tmp}/nothing.py:Mine"), "does not exist"),
    "unknown strategy parameter": (_argv(*RUN, "--strategy", "ewc", "--set", "ewc_lamda=1"), "did you mean"),
    "strategy parameter of the wrong type": (_argv(*RUN, "--strategy", "ewc", "--set", "ewc_lambda=lots"), "float"),
    "strategy parameter out of range": (_argv(*RUN, "--strategy", "ewc", "--set", "ewc_lambda=-1"), "negative"),
    "negative buffer": (_argv(*RUN, "--strategy", "replay", "--set", "mem_size=-5"), "must be positive"),
    "negative temperature": (_argv(*RUN, "--strategy", "lwf", "--set", "temperature=-2"), "temperature"),
    "negative SI lambda": (_argv(*RUN, "--strategy", "si", "--set", "si_lambda=-1"), "negative"),
    "memory batch larger than the buffer": (
        _argv(*RUN, "--strategy", "der", "--set", "mem_size=16", "--set", "batch_size_mem=64"),
        "between 1 and mem_size",
    ),
    "MIR subsample smaller than its replayed batch": (
        _argv(*RUN, "--strategy", "mir", "--set", "subsample=8", "--set", "batch_size_mem=32"),
        "subsample",
    ),
    "A-GEM sample larger than its memory": (
        _argv(*RUN, "--strategy", "agem", "--set", "patterns_per_experience=10", "--set", "sample_size=64"),
        "cannot be larger",
    ),
    "unknown strategy in a sweep list": (_argv("sweep", "--strategies", "naive,sii", "--preset", "tiny"), "si"),
    "--set without =": (_argv(*RUN, "--set", "no_equals_sign"), "is not key=value"),
    "unknown config key": (_argv(*RUN, "--set", "train.nope=1"), "unknown key 'nope'"),
    "config value of the wrong type": (_argv(*RUN, "--set", "train.lr=fast"), "train.lr"),
    # files, stores, devices
    "bad YAML config": (_file("bad.yaml", "train: {lr: [1,\n", *RUN, "--config", "{tmp}/bad.yaml"), "not valid YAML"),
    "config file that is not a mapping": (_file("list.yaml", "- 1\n", *RUN, "--config", "{tmp}/list.yaml"), "mapping"),
    "missing config file": (_argv(*RUN, "--config", "{tmp}/missing.yaml"), "does not exist"),
    "unwritable tracking store folder": (
        _file("afile", "", *RUN, "--tracking-uri", "sqlite:///{tmp}/afile/mlflow.db"),
        "cannot write the MLflow store",
    ),
    "unreachable tracking server": (_argv(*RUN, "--tracking-uri", "http://127.0.0.1:9"), "cannot be reached"),
    "unwritable report folder": (_file("afile", "", "report", "--out", "{tmp}/afile/report"), "cannot write"),
    "unwritable generate folder": (
        _file("afile", "", "data", "generate", "--preset", "tiny", "--out", "{tmp}/afile/data"),
        "cannot write",
    ),
    "CUDA asked for where there is none": (_argv(*RUN, "--device", "cuda"), "no CUDA GPU"),
    # sweeps, reports, resume
    "sweep fraction 1.5": (_argv("sweep", "--preset", "tiny", "--fractions", "0.5,1.5"), "outside (0, 1]"),
    "sweep seeds not integers": (_argv("sweep", "--preset", "tiny", "--seeds", "0,x"), "not int"),
    "sweep seed out of range": (_argv("sweep", "--preset", "tiny", "--seeds", "0,-1"), "seed -1 is outside"),
    "sweep with no jobs": (_argv("sweep", "--preset", "tiny", "--jobs", "0"), "--jobs 0"),
    "sweep with an unknown strategy": (_argv("sweep", "--preset", "tiny", "--strategies", "naive,ewk"), "did you mean"),
    "Ray's options on the process pool": (_argv("sweep", "--preset", "tiny", "--address", "h:6379"), "are Ray's"),
    "a Ray cell with no CPU": (
        _argv("sweep", "--preset", "tiny", "--engine", "ray", "--cell-cpus", "0"),
        "--cell-cpus 0",
    ),
    "a Ray cluster nobody runs": (
        _argv("sweep", "--preset", "tiny", "--engine", "ray", "--address", "127.0.0.1:9"),
        "nothing answers",
    ),
    "report with no store": (_argv("report", "--out", "{tmp}/out"), "no MLflow store at"),
    "report with no sweep in the store": (_empty_store, "no sweep found"),
    "resume with nothing to resume": (_argv("run", "--resume"), "no interrupted run to resume"),
    # tune
    "tune with no trials": (_argv(*TUNE, "--trials", "0"), "--trials 0 runs nothing"),
    "tune of an unknown parameter": (_argv(*TUNE, "--param", "ewc_lamda=log:1:10"), "did you mean 'ewc_lambda'"),
    "tune over a malformed range": (_argv(*TUNE, "--param", "ewc_lambda=log:10:1"), "is not a range"),
    "tune over a range of no kind": (_argv(*TUNE, "--param", "ewc_lambda=between:1:10"), "is not a range"),
    "tune towards an unknown objective": (_argv(*TUNE, "--objective", "accurracy"), "unknown objective"),
    "tune of a parameter with no search space": (_argv(*TUNE, "--param", "decay_factor"), "has no search space"),
    "tune of a strategy with no search space": (
        _argv("tune", "--strategy", "naive", "--preset", "tiny", "--data", "{data}"),
        "declares no search space",
    ),
    "tune on a storage that cannot be reached": (
        _file("afile", "", *TUNE, "--storage", "sqlite:///{tmp}/afile/optuna.db"),
        "cannot be reached",
    ),
    "tune on a database nobody runs": (_argv(*TUNE, "--storage", "postgresql://u@127.0.0.1:9/x"), "cannot be reached"),
    "resume of an unknown run": (_argv("run", "--resume", "0123abcd"), "no checkpoint for run 0123abcd"),
    # the paths, stores, drivers and processes a newcomer's first hour meets
    "unreadable data folder": (_unreadable(*RUN[:3], "--data", "{locked}", "--no-progress"), "cannot be read"),
    "data check of an unreadable folder": (_unreadable("data", "check", "{locked}"), "cannot be read"),
    "dataset folder that is a file": (_file("afile", "", *RUN[:3], "--data", "{tmp}/afile"), "is a file"),
    "questions file of the wrong shape": (
        _damage_json(HUMANS_TRAIN, lambda t: json.dumps(json.loads(t)["questions"])),
        "holds an array at line 1, byte 0 where CLEVR's format has an object",
    ),
    "cache folder that is a file": (_env("CLBENCH_CACHE_DIR", "afile", *RUN), "$CLBENCH_CACHE_DIR"),
    "generated-data home that is a file": (
        _env("CLBENCH_DATA_HOME", "afile", "run", "--preset", "tiny", "--no-progress"),
        "$CLBENCH_DATA_HOME",
    ),
    "strategy parameter nan": (_argv(*RUN, "--strategy", "ewc", "--set", "ewc_lambda=nan"), "is not a number"),
    "YAML config value of the wrong type": (
        _file("typed.yaml", "train: {batch_size: [1, 2]}\n", *RUN, "--config", "{tmp}/typed.yaml"),
        "give an int, e.g. `train.batch_size: 1` in",
    ),
    "YAML config list that is not numbers": (
        _file("epochs.yaml", "train: {epochs: [a, b]}\n", *RUN, "--config", "{tmp}/epochs.yaml"),
        "e.g. `train.epochs: [4, 8]` in",
    ),
    "config file that is a folder": (_argv(*RUN, "--config", "{tmp}"), "is a folder"),
    "MLflow folder store": (_folder_store, "mlflow migrate-filestore --source"),
    "tracking URI of no known scheme": (_argv(*RUN, "--tracking-uri", "foo://bar"), "names no store MLflow opens"),
    "SQLite URI without a path": (_argv(*RUN, "--tracking-uri", "sqlite://x.db"), "has no file path"),
    "tracking store that is no database": (
        _file("notes.txt", "hello", *RUN, "--tracking-uri", "sqlite:///{tmp}/notes.txt"),
        "is not an SQLite database",
    ),
    "SQLite store that is a folder": (_argv(*RUN, "--tracking-uri", "sqlite:///{tmp}"), "is a folder"),
    "ui on a taken port": (_taken_port("ui", "--port", "{port}"), "is taken"),
    "ui of an experiment the store lacks": (_empty_store_then("ui", "--experiment", "nope"), "no experiment 'nope'"),
}


def _files(*folders: Path) -> set[Path]:
    return {p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_behind(case, tiny_root, tmp_path, monkeypatch, capsys):
    setup, message = CATALOGUE[case]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the default MLflow store and report folder would land here
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CLBENCH_DATA_HOME", str(tmp_path / "home"))
    argv = setup(tmp_path, tiny_root)
    capsys.readouterr()  # what the setup printed is not the command's output
    before = _files(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err, err
    assert " — " in err or ";" in err or ":" in err  # the problem, then the fix
    left = sorted(str(p.relative_to(tmp_path)) for p in _files(tmp_path) - before)
    assert left == [], f"left behind: {left}"


def test_the_catalogue_is_at_least_25_mistakes():
    assert len(CATALOGUE) >= 25


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from clbench.core.errors import ClbenchError

    with pytest.raises(ClbenchError):
        main(["--debug", "run", "--fraction", "1.5"])
    assert os.listdir(tmp_path) == []


def test_ray_asked_for_where_it_is_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the [ray] extra
    assert main(["sweep", "--preset", "tiny", "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs Ray, which is not installed" in err and "pip install -e '.[ray]'" in err and "\n" not in err
    assert os.listdir(tmp_path) == []


def test_a_database_store_without_its_driver_names_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets where it is not installed
    assert main(["run", "--preset", "tiny", "--tracking-uri", "postgresql://u:secret@127.0.0.1:9/db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs the Python driver psycopg" in err and "pip install 'psycopg[binary]'" in err and "\n" not in err
    assert "secret" not in err  # the password stays out of the terminal
    assert os.listdir(tmp_path) == []


def test_running_from_the_folder_above_the_clone_names_the_real_cause(tmp_path):
    """Above a clone named clbench, Python imports the clone's folder as a namespace package in place of clbench."""
    (tmp_path / "clbench").symlink_to(Path(__file__).resolve().parents[1], target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "clbench", "strategies"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert f"{tmp_path / 'clbench'} as the clbench package" in err and "run clbench from another folder" in err


def test_a_folder_as_tracking_store_keeps_its_runs_in_an_sqlite_file_inside(tiny_root, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "runs" / "mlruns"  # not there yet: made with the store
    argv = ["run", "--preset", "tiny", "--data", str(tiny_root), "--epochs", "0", "--no-progress"]
    assert main([*argv, "--tracking-uri", str(store)]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracking store:")]
    assert said == [
        f"tracking store: the folder {store} keeps its runs in {store / 'mlflow.db'} (sqlite:///{store}/mlflow.db)"
    ]
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("clevr-humans").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "0"  # a plain value, not "(0,)"


def test_help_and_a_mistyped_command_answer_without_importing_torch_or_avalanche():
    """They bring seconds of imports; `--help`, a typo or `clbench ui` should answer at once."""
    probe = (
        "import contextlib, io, sys\n"
        "from clbench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    codes = [main(['frobnicate'])]\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        main(['--help'])\n"
        "print(codes, sorted({'torch', 'avalanche', 'mlflow'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "[2] []", done.stdout + done.stderr[-2000:]


def test_clbench_alone_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: clbench") and all(f" {c} " in out or f"{{{c}," in out for c in ("run", "sweep"))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--strategy", "ewk"],
        ["run", "--scenario", "cogentt"],
        ["sweep", "--strategies", "naive,ewk"],
        ["tune", "--strategy", "sii"],
        ["run", "--strategy", "no/such/file.py:Mine"],
    ],
    ids=["run-strategy", "run-scenario", "sweep", "tune", "missing-file"],
)
def test_a_mistyped_name_is_named_before_any_plugin_is_imported(argv):
    """A typo is answered at once, not after the seconds importing Avalanche (through any plugin) costs."""
    probe = (
        "import sys; from clbench.cli import main; code = main(sys.argv[1:]); "
        "assert 'avalanche' not in sys.modules and 'torch' not in sys.modules, 'imported before the check'; "
        "raise SystemExit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and ("did you mean" in done.stderr or "does not exist" in done.stderr)


def test_the_names_read_from_source_are_the_names_registered():
    from clbench.core.registry import refuse_unknown_name
    from clbench.scenario.contract import SCENARIOS
    from clbench.strategy.contract import STRATEGIES

    for kind, noun in ((STRATEGIES, "strategy"), (SCENARIOS, "scenario")):
        for name in kind.available():
            refuse_unknown_name(name, noun)  # every registered name passes the early check
        with pytest.raises(ConfigError) as refused:
            refuse_unknown_name("no-such-plugin", noun)
        listed = refused.value.one_line().split("choose one of ")[1].split(", or give")[0].split(", ")
        assert listed == sorted(kind.available())  # and the early check knows no name the registry does not
