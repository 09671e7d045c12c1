"""Validation streams and `clbench tune`: held-out questions never trained on, trials as child runs that a second
sitting completes without redoing, and a summary whose only test figures are the final reruns'."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from clbench.cli import main
from clbench.config import PRESETS
from clbench.core.errors import ConfigError
from clbench.engines.tune import KIND_TAG, PARENT_TAG, STATE_TAG, TRIAL_TAG
from clbench.report.tuning import TuningReport, write_summary
from clbench.run.build import build_benchmark
from clbench.scenario.contract import load as load_scenario
from clbench.strategy.contract import resolve
from clbench.strategy.search import Space, parse_space, search_space
from clbench.training.checkpoints import scenario_identity

FAST = ["--preset", "tiny", "--no-progress", "--set", "eval.every=0"]  # no continual evaluation: seconds per run


@pytest.fixture()
def tiny_config(tiny_root: Path):
    base = PRESETS["tiny"]
    return replace(base, data=replace(base.data, root=str(tiny_root)))


def _images(dataset) -> set[int]:
    return set(dataset.rows.tolist())


@pytest.mark.parametrize("scenario", ["clevr-humans", "question-types"])
def test_no_validation_question_is_on_an_image_its_experience_trains_on(tiny_config, scenario):
    bench = build_benchmark(tiny_config, load_scenario(scenario), progress=False)
    assert bench.validation_names == bench.experience_names
    assert len(list(bench.valid_stream)) == len(bench.experience_names)
    for train, valid in zip(bench.train_datasets, bench.validation_datasets, strict=True):
        assert len(valid) > 0 and len(train) > 0
        assert train.images is valid.images  # one image cache: rows name the same images
        assert not _images(train) & _images(valid)
    whole = build_benchmark(tiny_config, load_scenario(scenario, {"validation": "0"}), progress=False)
    assert not whole.validation_datasets and not list(whole.valid_stream)
    assert [len(t) for t in whole.train_datasets] == [
        len(t) + len(v) for t, v in zip(bench.train_datasets, bench.validation_datasets, strict=True)
    ]
    assert [len(t) for t in whole.test_datasets] == [len(t) for t in bench.test_datasets]  # tests unchanged


def test_the_validation_share_is_part_of_what_experience0_depends_on():
    default, none = load_scenario("clevr-humans"), load_scenario("clevr-humans", {"validation": "0"})
    assert scenario_identity(default) != scenario_identity(none)
    assert "validation" not in scenario_identity(none)  # keys made before the split stay valid without one
    assert scenario_identity(load_scenario("question-types"))["validation"] == 0.1
    with pytest.raises(ConfigError, match="outside"):
        load_scenario("clevr-humans", {"validation": "1"})


def test_search_spaces_come_from_the_fields_and_param_overrides_them():
    ewc = resolve("ewc")
    assert search_space(ewc, {}, "ewc") == {"ewc_lambda": Space("log", 1.0, 1e6)}
    assert search_space(ewc, {"ewc_lambda": "float:1:10"}, "ewc") == {"ewc_lambda": Space("float", 1.0, 10.0)}
    assert parse_space("choice:separate,online", "mode").choices == ("separate", "online")
    assert parse_space("int:16:512", "mem_size") == Space("int", 16, 512)
    for bad in ("log:0:10", "log:10:1", "uniform:1:2", "float:a:b", "int:1.2:1.8", "choice:a,a"):
        with pytest.raises(ConfigError):
            parse_space(bad, "x")
    with pytest.raises(ConfigError, match="no search space"):
        search_space(ewc, {"decay_factor": None}, "ewc")
    with pytest.raises(ConfigError, match="declares no search space"):
        search_space(resolve("naive"), {}, "naive")


def _children(uri: str, parent: str) -> list:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`{PARENT_TAG}` = '{parent}'", max_results=1000)


def test_runs_show_validation_metrics_by_default(tiny_root, tracking_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--strategy", "naive", "--data", str(tiny_root), "--tracking-uri", tracking_store, *FAST]) == 0
    assert "Validation (held out of each experience): average accuracy" in capsys.readouterr().out
    client = MlflowClient(tracking_store)
    (run,) = client.search_runs([client.get_experiment_by_name("clevr-humans").experiment_id])
    metrics = run.data.metrics
    for name in ("valid/average_accuracy_frac", "valid/average_forgetting_frac", "valid/learning_accuracy_frac"):
        assert name in metrics
    assert "valid/accuracy_frac/after_CLEVR/CLEVR" in metrics and "accuracy_frac/after_CLEVR/CLEVR" in metrics
    assert int(run.data.params["data.size.valid/CLEVR"]) > 0


def test_tune_killed_after_two_trials_completes_four_without_redoing_them(
    tiny_root, tracking_store, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = ["tune", "--strategy", "ewc", "--trials", "4", "--data", str(tiny_root), "--tracking-uri", tracking_store]
    argv += ["--out", str(tmp_path / "out"), "--final-seeds", "0", *FAST]
    assert main([*argv, "--stop-after", "2"]) == 0
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    first = {t.number: t.params for t in study.trials}
    assert len(first) == 2 and not (tmp_path / "out").exists()
    assert main(argv) == 0
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert {t.number: t.params for t in study.trials if t.number < 2} == first

    client = MlflowClient(tracking_store)
    experiment = client.get_experiment_by_name("clevr-humans-tuning").experiment_id
    parents = client.search_runs([experiment], filter_string=f"tags.`{KIND_TAG}` = 'tune'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = _children(tracking_store, parents[0].info.run_id)
    trials = [r for r in children if r.data.tags[KIND_TAG] == "trial"]
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in trials) == [0, 1, 2, 3]  # each trial ran once
    for run in trials:
        assert run.data.tags[STATE_TAG] in ("complete", "pruned")
        assert "valid/accuracy_frac/after_CLEVR/CLEVR" in run.data.metrics
    assert {r.data.tags["clbench.role"] for r in children if r.data.tags[KIND_TAG] == "final"} == {"tuned", "naive"}

    folder = tmp_path / "out" / "clevr-humans" / "ewc"
    summary = (folder / "summary.md").read_text()
    chosen = study.best_trial.params["ewc_lambda"]
    assert f"| ewc_lambda | `log:1:1e+06` | {chosen:.4g} |" in summary
    assert "Test result of the chosen values" in summary and "Against naive fine-tuning" in summary
    table = pd.read_csv(folder / "trials.csv")
    figures = [c for c in table.columns if not c.startswith(("param ", "objective ", "number", "state", "last rung"))]
    assert figures and all(c.startswith("valid/") for c in figures)  # no trial's test figure


def _finished_trial(number: int, values: list[float], lam: float):
    return optuna.trial.create_trial(
        values=values,
        params={"ewc_lambda": lam},
        distributions={"ewc_lambda": optuna.distributions.FloatDistribution(1, 1e6, log=True)},
        user_attrs={"validation": {"valid/average_accuracy_frac": values[0], "average_accuracy_frac": 0.987654}},
    )


def _ewc_report(study, objectives: list[tuple[str, str]], **extra) -> TuningReport:
    """The summary of an ewc search over `study` that chose trial 1 (λ = 100), without final reruns."""
    return TuningReport(
        scenario="clevr-humans",
        strategy="ewc",
        objectives=objectives,
        spaces={"ewc_lambda": Space("log", 1, 1e6)},
        study=study,
        chosen={"ewc_lambda": 100.0},
        chosen_number=1,
        finals=pd.DataFrame(),
        last_test="CLEVR-Humans",
        **extra,
    )


def test_two_objectives_give_a_pareto_front_and_only_validation_figures(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (values, lam) in enumerate((([0.5, 0.2], 10.0), ([0.6, 0.3], 100.0), ([0.4, 0.4], 1000.0))):
        study.add_trial(_finished_trial(number, values, lam))
    report = _ewc_report(study, [("average_accuracy", "maximize"), ("forgetting", "minimize")])
    written = write_summary(report, tmp_path / "summary")
    assert (tmp_path / "summary" / "pareto_front.png") in written
    front = pd.read_csv(tmp_path / "summary" / "pareto_front.csv")
    assert sorted(front["number"]) == [0, 1]
    assert "0.987654" not in (tmp_path / "summary" / "trials.csv").read_text()  # a test figure is never copied


def test_strategies_lists_what_tune_searches_in_the_form_param_takes(capsys):
    from clbench.strategy.contract import available
    from clbench.strategy.search import declared

    assert main(["strategies"]) == 0
    shown = "\n" + capsys.readouterr().out
    for name, cls in available().items():
        for parameter, space in declared(cls).items():
            listed = shown.split(f"\n{name} ")[1].split("\n")[2]
            assert f"{parameter} in {space}" in listed  # under the strategy's own entry
            assert parse_space(str(space), parameter) == space  # as `--param NAME=SPACE` would take it


def test_trials_are_drawn_against_naive_on_their_own_seeds_and_their_trade_off_is_plotted(tmp_path):
    """A trial ran on seed 0: naive on seed 0 is the line it must clear, not the mean over seeds that differ by
    points; and the frontier figure shows forgetting against learning accuracy for every trial."""
    from clbench.report.tuning import naive_validation

    study = optuna.create_study(direction="maximize")
    for number, (value, lam) in enumerate(((0.60, 10.0), (0.62, 100.0))):
        trial = _finished_trial(number, [value], lam)
        trial.user_attrs["validation"] |= {"valid/average_forgetting_frac": 0.1, "valid/learning_accuracy_frac": 0.7}
        study.add_trial(trial)
    naive = [(0, 0.64), (1, 0.58), (2, 0.59)]
    finals = pd.DataFrame(
        [{"role": "naive", "strategy": "naive", "seed": seed, "valid/average_accuracy_frac": accuracy,
          "valid/average_forgetting_frac": 0.15, "valid/learning_accuracy_frac": 0.72} for seed, accuracy in naive]
    )  # fmt: skip
    reference, label = naive_validation(finals, (0,))
    assert reference["valid/average_accuracy_frac"] == 0.64 and label == "naive fine-tuning, seed 0"
    reference, label = naive_validation(finals, (7,))  # no final on the trials' seed: the mean, said so
    assert reference["valid/average_accuracy_frac"] == pytest.approx((0.64 + 0.58 + 0.59) / 3) and "mean" in label

    report = _ewc_report(
        study,
        [("average_accuracy", "maximize")],
        trial_seeds=(0,),
        objective_metrics={"average_accuracy": "valid/average_accuracy_frac"},
    )
    written = write_summary(report, tmp_path / "summary")
    assert (tmp_path / "summary" / "frontier.png") in written
    assert "`frontier.png` (forgetting against learning accuracy)" in (tmp_path / "summary" / "summary.md").read_text()
