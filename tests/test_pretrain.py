"""Pretraining resumes to the bit after a SIGKILL, and a shipped model is what a matching run starts from."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from clbench.cli import main
from clbench.core.errors import ConfigError
from clbench.model import pretrained
from clbench.training import pretraining as pretrain

PRETRAIN = [
    sys.executable, "-m", "clbench", "pretrain", "--preset", "tiny", "--budget", "1200", "--warmup", "300",
    "--eval-every", "400", "--threads", "1", "--no-progress", "--target", "2",
]  # fmt: skip


@pytest.fixture()
def clbench_env(tracking_store, monkeypatch) -> Iterator[dict[str, str]]:
    """The session's isolated homes (conftest) and a store of the test's own, here and for the subprocesses; the
    torch threads a command sets are given back."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    threads = torch.get_num_threads()
    yield os.environ | {"MLFLOW_TRACKING_URI": tracking_store}
    torch.set_num_threads(threads)


@dataclass
class Done:
    """What a command left, as `subprocess.run` gives it."""

    returncode: int
    stdout: str
    stderr: str


def _clbench(*argv: str) -> Done:
    """`python -m clbench ARGV` run here: the CLI's own `main`, without paying a process's imports (seconds of
    Avalanche and torch) again. The process boundary itself is tested where it matters: a SIGKILL."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return Done(code, out.getvalue(), err.getvalue())


def _pretrain(folder: Path, *extra: str) -> Done:
    return _clbench(*PRETRAIN[3:], "--out", str(folder), *extra)


def _run_tiny(cwd: Path, monkeypatch, *extra: str) -> Done:
    monkeypatch.chdir(cwd)
    return _clbench("run", "--preset", "tiny", "--no-progress", *extra)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / pretrain.CHECKPOINT, weights_only=True)["model"]


def _samples(folder: Path) -> int:
    try:
        return torch.load(folder / pretrain.CHECKPOINT, weights_only=True)["progress"]["samples"]
    except (OSError, RuntimeError, EOFError):
        return 0


def test_pretrain_resumes_exactly_after_sigkill_and_refuses_other_settings(tmp_path, clbench_env):
    whole = _pretrain(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen(
        [*PRETRAIN, "--out", str(tmp_path / "killed"), "--checkpoint-every", "0"],
        env=clbench_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while _samples(tmp_path / "killed") < 500 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    interrupted_at = _samples(tmp_path / "killed")
    assert 500 <= interrupted_at < 1200, f"killed at {interrupted_at} samples, not in the middle"
    resumed = _pretrain(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing" in resumed.stderr
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed pretraining ended with other weights"
    curve_a = torch.load(tmp_path / "whole" / pretrain.CHECKPOINT, weights_only=True)["progress"]["curve"]
    curve_b = torch.load(tmp_path / "killed" / pretrain.CHECKPOINT, weights_only=True)["progress"]["curve"]
    assert [p["accuracy"] for p in curve_a] == [p["accuracy"] for p in curve_b]
    assert (tmp_path / "whole" / pretrain.CURVE_PNG).stat().st_size > 1000

    other = _pretrain(tmp_path / "killed", "--lr", "0.5")  # not this pretraining: refused
    assert other.returncode == 2
    assert other.stderr.strip().count("\n") == 0, other.stderr
    assert "other settings (schedule.peak differ)" in other.stderr


def test_shipped_model_is_what_a_matching_run_starts_from(tmp_path, clbench_env, monkeypatch):
    shipped = tmp_path / "shipped"
    monkeypatch.setenv("CLBENCH_PRETRAINED_PATH", str(shipped))
    made = _pretrain(tmp_path / "p", "--ship", "tiny-test", "--ship-to", str(shipped))
    assert made.returncode == 0, made.stderr
    record = json.loads((shipped / "tiny-test.json").read_text())
    assert {"command", "commit", "data_fingerprint", "samples", "wall_hours", "machine"} <= record["provenance"].keys()
    assert 1200 <= record["provenance"]["samples"] < 1200 + 16  # the budget, to the batch
    assert (shipped / "tiny-test.png").is_file()
    assert record["validation"]["per_type"].keys() >= {"exist", "count"}
    more = _clbench(*PRETRAIN[3:6], "--budget", "1600", *PRETRAIN[8:], "--out", str(tmp_path / "p"))
    assert more.returncode == 0 and "going on to 1,600" in more.stderr, more.stderr  # a larger budget continues it
    assert _samples(tmp_path / "p") >= 1600
    budgets = torch.load(tmp_path / "p" / pretrain.CHECKPOINT, weights_only=True)["progress"]["budgets"]
    assert budgets == [[0, 1200], [record["provenance"]["samples"], 1600]]  # what a record made now would list

    run = _run_tiny(tmp_path, monkeypatch, "--strategy", "ewc")
    assert run.returncode == 0, run.stderr
    assert "experience 0: the shipped model tiny-test" in run.stderr
    first_row = next(line for line in run.stdout.splitlines() if line.startswith("CLEVR "))
    assert float(first_row.split()[1]) == pytest.approx(100 * record["validation"]["accuracy"], abs=0.05)

    untrained = _run_tiny(tmp_path, monkeypatch, "--set", "model.module_dim=4")
    assert untrained.returncode == 0, untrained.stderr
    assert "no shipped model matches" in untrained.stderr


def test_stop_after_ships_where_it_stands_and_the_record_remakes_it(tmp_path, clbench_env):
    """Ended early by `--stop-after` (here where it already stands), a pretraining ships the weights its last sitting
    left, not one step more, and its record keeps the budget the schedule decays to, so the recorded command makes
    the same weights from scratch. Another budget past the warm-up is refused: it would change that schedule."""
    folder, shipped = tmp_path / "p", tmp_path / "shipped"
    assert _pretrain(folder, "--stop-after", "500").returncode == 0
    before, seen = _weights(folder), _samples(folder)
    assert 500 <= seen < 1200
    other = _clbench(*PRETRAIN[3:6], "--budget", str(seen), *PRETRAIN[8:], "--out", str(folder))
    assert other.returncode == 2 and other.stderr.strip().count("\n") == 0, other.stderr
    assert "decays its learning rate toward --budget 1200" in other.stderr and "--stop-after" in other.stderr

    done = _pretrain(folder, "--stop-after", str(seen), "--ship", "early", "--ship-to", str(shipped))
    assert done.returncode == 0, done.stderr
    blob = torch.load(folder / pretrain.CHECKPOINT, weights_only=True)
    assert blob["progress"]["samples"] == seen and blob["progress"]["finished"] is None  # it can go on later
    assert blob["progress"]["curve"][-1]["samples"] == seen  # evaluated where it stands
    assert all(torch.equal(before[k], blob["model"][k]) for k in before), "a step was taken past --stop-after"
    provenance = json.loads((shipped / "early.json").read_text())["provenance"]
    assert provenance["stopped"] == "stop_after" and provenance["schedule"]["total"] == 1200
    assert "--budget 1200 --warmup 300" in provenance["command"] and f"--stop-after {seen}" in provenance["command"]
    assert _pretrain(tmp_path / "again", "--stop-after", str(seen)).returncode == 0  # the record's command, afresh
    again = _weights(tmp_path / "again")
    assert all(torch.equal(before[k], again[k]) for k in before)


def test_fine_tuning_rates_retuned_later_still_continue_the_pretraining(tmp_path):
    """Only what the first experience trains with is the pretraining's: a preset whose later experiences get
    another learning rate continues it, from a checkpoint saved before or after the change; a first-experience
    rate of its own does not."""
    from clbench.config import override, preset

    def spec(lr: str) -> pretrain.PretrainSpec:
        config = override(preset("tiny"), {"train.lr": lr})
        return pretrain.PretrainSpec(config, {"name": "clevr-humans"}, pretrain.Schedule(1e-3, 10, 100), 100, 2.0)

    cut = spec("2e-3,1e-2").identity()
    uncut = json.loads(json.dumps(cut))  # as checkpoints saved it before: every experience's rate
    uncut["config"]["train"]["lr"] = [2e-3, 1e-2]
    for blob in ({"spec": cut}, {"spec": uncut}):
        pretrain.check_continuable(blob, spec("2e-3,1e-3"), tmp_path)
        with pytest.raises(ConfigError, match=r"config\.train\.lr differ"):
            pretrain.check_continuable(blob, spec("1e-3,1e-2"), tmp_path)


def test_weights_that_no_longer_fit_are_refused_in_one_line(tmp_path):
    from clbench.config import preset
    from clbench.model.film import FiLM

    model = FiLM(40, 32, preset("tiny").model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    pretrained.write(
        "old",
        tmp_path,
        state=state,
        applies_to={},
        provenance={"command": "python -m clbench pretrain --preset tiny", "samples": 1},
        validation={"accuracy": 0.5},
        curve_png=None,
        dtype="float32",
    )
    record = pretrained.Record(tmp_path / "old.json", json.loads((tmp_path / "old.json").read_text()))
    with pytest.raises(ConfigError, match=r"old no longer fits the model code \(missing: classifier"):
        pretrained.load_weights(record, model)
    (tmp_path / "old.pt").write_bytes(b"not the file")
    with pytest.raises(ConfigError, match="do not match their record"):
        pretrained.load_weights(record, model)


def test_schedule_warms_up_then_decays():
    schedule = pretrain.Schedule(peak=1e-3, warmup=100, total=1100, shape="cosine", floor=0.1)
    assert schedule.lr(0) == pytest.approx(1e-5)
    assert schedule.lr(99) == pytest.approx(1e-3)
    assert schedule.lr(600) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert schedule.lr(1100) == pytest.approx(1e-4)
    assert pretrain.Schedule(1e-3, 0, 10, "constant").lr(5) == 1e-3


def test_eta_extrapolates_a_rising_curve_and_refuses_a_flat_one():
    point = lambda samples, accuracy: pretrain.Point(samples, 0.0, 0.0, 0.0, accuracy, {})  # noqa: E731
    rising = [point(100, 0.5), point(1000, 0.6)]
    assert pretrain.eta_to_target(rising, 0.7, rate=10.0) == pytest.approx((10_000 - 1000) / 10.0, rel=1e-6)
    assert pretrain.eta_to_target([point(100, 0.6), point(1000, 0.6)], 0.7, rate=10.0) is None


@pytest.mark.parametrize("record", pretrained.records(), ids=lambda r: r.name)
def test_every_shipped_model_loads_and_reproduces_its_accuracy(record, clbench_env, monkeypatch):
    """The installed package's weights still fit today's model and score what their record says on the run's own
    validation set (the generated world, made here if needed)."""
    from clbench.config import RunConfig, preset
    from clbench.run.build import build_benchmark, build_model
    from clbench.scenario import contract as scenarios
    from clbench.training.checkpoints import scenario_identity

    for key, value in clbench_env.items():
        monkeypatch.setenv(key, value)
    model_config = record.data["applies_to"]["model"]
    base = preset(record.data["provenance"].get("preset", "small"))
    config = RunConfig.from_dict(base.to_dict() | {"model": base.to_dict()["model"] | model_config})
    scenario = scenarios.load(record.data["applies_to"]["scenario"]["name"], {})
    bench = build_benchmark(config, scenario, False)
    assert pretrained.identity(config, scenario_identity(scenario), bench) == record.data["applies_to"]
    model = build_model(config, bench, torch.device("cpu"))
    model.load_state_dict(pretrained.load_weights(record, model))
    val = pretrain.Batches(bench.test_datasets[0], 0, 256)
    accuracy, per_type = pretrain.evaluate(model, val, bench.type_names, torch.device("cpu"))
    assert accuracy == pytest.approx(record.accuracy, abs=1e-9)
    assert per_type == pytest.approx(record.data["validation"]["per_type"], abs=1e-9)
    assert os.path.getsize(record.weights) <= pretrained.MAX_BYTES
