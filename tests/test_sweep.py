"""Sweeps on the tiny dataset: parent/child runs, experience 0 trained once per seed, resuming, failed cells,
and a report whose numbers are the runs' numbers."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from clbench.cli import main
from clbench.config import PRESETS
from clbench.engines.sweep import CELL_TAG, ERROR_TAG, PARENT_TAG, SweepSpec, sweep
from clbench.report.runs import load_sweep
from clbench.report.summary import build_report

EXPERIMENT = "sweep-test"

FAILING_STRATEGY = """
import os
from dataclasses import dataclass

from avalanche.training.plugins import SupervisedPlugin

from clbench import Strategy


class Explode(SupervisedPlugin):
    def before_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == 1 and os.environ.get("CLBENCH_TEST_EXPLODE"):
            raise RuntimeError("boom in experience 1")


@dataclass
class Exploding(Strategy):
    name = "exploding"
    state = "boundaries"  # it keeps no state: a retry continues from its checkpoint

    def plugins(self, model):
        return [Explode()]
"""


def _spec(
    tiny_root: Path, strategies=("naive", "ewc"), fractions=("0.5", "1"), seeds=(0, 1), references=False
) -> SweepSpec:
    config = PRESETS["tiny"]
    config = replace(config, data=replace(config.data, root=str(tiny_root)))
    config = replace(config, eval=replace(config.eval, references=references))
    return SweepSpec(tuple(strategies), tuple(seeds), config, grid=(("scenario.fraction", tuple(fractions)),))


@pytest.fixture(scope="module")
def swept(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """One 2 × 2 × 2 sweep with 2 jobs and an empty experience-0 cache, shared by the tests below."""
    home = tmp_path_factory.mktemp("sweep")
    store = f"sqlite:///{home / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLBENCH_CACHE_DIR", str(home / "cache"))
        patch.chdir(home)  # artifacts land beside the store
        spec = _spec(tiny_root, references=True)
        result = sweep(spec, jobs=2, experiment=EXPERIMENT, tracking_uri=store, progress=False, out=io.StringIO())
        yield spec, result, store, home


def test_sweep_trains_experience0_once_per_seed_in_a_parent_run(swept):
    spec, result, store, _ = swept
    assert result.count("FINISHED") == 8 and result.count("FAILED") == 0
    assert result.experience0_trained == 2  # seeds 0 and 1; the other six cells start from the cache
    client = MlflowClient(store)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.strategies"] == "naive,ewc"
    assert parent.data.params["sweep.grid.scenario.fraction"] == "0.5,1"
    assert parent.data.metrics["sweep/experience0_trained"] == 2
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'"
    )
    assert sorted(c.data.tags[CELL_TAG] for c in children) == sorted(c.key for c in spec.cells())
    trained = [c for c in children if c.data.params["experience0.cached"] == "False"]
    assert sorted(c.data.params["seed"] for c in trained) == ["0", "1"]
    # every cell of a seed started from the same CLEVR model
    for seed in ("0", "1"):
        before = {c.data.metrics["accuracy_frac/after_CLEVR/CLEVR"] for c in children if c.data.params["seed"] == seed}
        assert len(before) == 1


def test_rerunning_the_same_sweep_skips_finished_cells(swept, monkeypatch):
    spec, first, store, home = swept
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(home / "cache"))
    monkeypatch.chdir(home)
    again = sweep(spec, jobs=1, experiment=EXPERIMENT, tracking_uri=store, progress=False, out=io.StringIO())
    assert again.parent_run_id == first.parent_run_id
    assert again.count("SKIPPED") == 8 and again.count("FINISHED") == 0 and again.experience0_trained == 0
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    children = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{first.parent_run_id}'")
    assert len(children) == 8


def test_report_files_hold_the_numbers_of_the_runs(swept, tmp_path: Path):
    _, result, store, _ = swept
    runs = load_sweep(EXPERIMENT, tracking_uri=store)
    assert runs.parent_id == result.parent_run_id
    written = build_report(runs, tmp_path / "report")
    names = {p.name for p in written}
    assert {"summary.md", "accuracy_vs_fraction.png", "forgetting.png", "per_type_accuracy.png"} <= names
    assert {"accuracy_matrix.png", "accuracy_matrix.csv", "final.csv"} <= names
    assert {"gamma_beta.png", "gamma_beta_drift.csv", "forgetting.csv", "per_type_accuracy.csv"} <= names
    client = MlflowClient(store)
    children = [client.get_run(o.run_id) for o in result.outcomes]
    table = pd.read_csv(tmp_path / "report" / "accuracy_vs_fraction.csv", index_col=[0, 1])
    forgetting = pd.read_csv(tmp_path / "report" / "forgetting.csv", index_col=[0, 1])
    matrices = pd.read_csv(tmp_path / "report" / "accuracy_matrix.csv", index_col=[0, 1])
    for strategy in ("naive", "ewc"):
        for fraction in (0.5, 1.0):
            cell = [
                c.data.metrics
                for c in children
                if c.data.params["strategy"] == strategy and float(c.data.params["scenario.fraction"]) == fraction
            ]
            humans = pd.Series([m["accuracy_frac/after_CLEVR-Humans/CLEVR-Humans"] for m in cell])
            forgot = pd.Series([m["forgetting_frac/CLEVR"] for m in cell])
            assert table.loc[(strategy, fraction), "new_after_mean"] == pytest.approx(humans.mean())
            assert table.loc[(strategy, fraction), "new_after_std"] == pytest.approx(humans.std())
            assert forgetting.loc[(strategy, fraction), "CLEVR_mean"] == pytest.approx(forgot.mean())
            assert table.loc[(strategy, fraction), "n"] == 2
            if fraction == 1.0:  # the matrices are at the largest fraction
                assert matrices.loc[(strategy, "CLEVR-Humans"), "CLEVR"] == pytest.approx(
                    pd.Series([m["accuracy_frac/after_CLEVR-Humans/CLEVR"] for m in cell]).mean()
                )
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| naive" in summary and "![accuracy vs fraction](accuracy_vs_fraction.png)" in summary
    assert "95 % confidence interval" in summary and "paired t-test across seeds" in summary
    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert "report/accuracy_vs_fraction.png" in logged and "report/summary.md" in logged
    assert not any(p.name.startswith(".report-") for p in (tmp_path / "report").iterdir())


@pytest.mark.slow  # 36 s: three sweeps; the default suite sweeps in the tests above and in test_next_commands.py
def test_a_failed_cell_is_recorded_the_sweep_goes_on_and_a_rerun_resumes_it(
    tiny_root, tmp_path, tracking_store, monkeypatch, capsys
):
    plugin = tmp_path / "exploding.py"
    plugin.write_text(FAILING_STRATEGY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLBENCH_TEST_EXPLODE", "1")
    store = tracking_store
    command = ["sweep", "--preset", "tiny", "--data", str(tiny_root), "--no-progress", "--tracking-uri", store]
    command += ["--experiment", EXPERIMENT, "--strategies", f"{plugin}:Exploding,naive", "--fractions", "1"]
    command += ["--seeds", "0", "--no-references"]
    assert main(command) == 1  # a failed cell: the sweep goes on, and says so in its exit code
    out = capsys.readouterr().out
    assert "1 cells finished, 0 skipped (done before), 1 failed" in out and "boom in experience 1" in out
    client = MlflowClient(store)

    def cells() -> dict[str, object]:
        """The cells' runs by strategy (a cell's tag starts with the strategy as given: `file.py:Class`)."""
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        runs = client.search_runs([experiment], f"tags.`{CELL_TAG}` != ''")
        return {run.data.tags[CELL_TAG].split("|")[0].split(":")[-1]: run for run in runs}

    failed = cells()
    assert failed["Exploding"].info.status == "FAILED" and "boom" in failed["Exploding"].data.tags[ERROR_TAG]
    assert failed["naive"].info.status == "FINISHED"

    monkeypatch.delenv("CLBENCH_TEST_EXPLODE")  # the cause is fixed: the same sweep again
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "1 cells finished, 1 skipped (done before), 0 failed" in out  # naive is not run again
    assert "experience 0 trained 0×" in out  # the retry continued from its checkpoint
    retried = cells()
    assert retried["Exploding"].info.run_id == failed["Exploding"].info.run_id  # in its own run
    assert retried["Exploding"].info.status == "FINISHED"


def test_sweep_cli_exits_2_on_bad_lists(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["sweep", "--preset", "tiny", "--data", str(tiny_root), "--no-progress", "--experiment", EXPERIMENT]
    for bad, message in [
        (["--fractions", "0.5,1.5"], "outside (0, 1]"),
        (["--seeds", "0,x"], "not int"),
        (["--strategies", "naive,ewcc"], "did you mean"),
        (["--jobs", "0"], "--jobs 0"),
        (["--seeds", "1,1"], "repeats"),
    ]:
        assert main([*common, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was written


def test_report_without_a_sweep_says_how_to_make_one(swept, tmp_path, capsys):
    _, _, store, _ = swept
    assert main(["report", "--tracking-uri", store, "--experiment", "nothing-here", "--out", str(tmp_path / "o")]) == 2
    assert "no sweep found in MLflow experiment 'nothing-here'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_report_measures_intervals_and_the_paired_comparison(swept, tmp_path: Path):
    _, result, store, home = swept
    written = {p.name for p in build_report(load_sweep(EXPERIMENT, tracking_uri=store), tmp_path)}
    assert {"measures.csv", "comparison_with_naive.csv", "area_under_fraction_curve.csv"} <= written
    assert {"continual_eval.png", "continual_eval.csv", "type_forgetting.png", "stability_plasticity.png"} <= written
    client = MlflowClient(store)
    cells = {
        (run.data.params["strategy"], float(run.data.params["scenario.fraction"]), int(run.data.params["seed"])): run
        for run in (client.get_run(o.run_id) for o in result.outcomes)
    }

    # intervals: t(0.975, 1 degree of freedom) = 12.7062 times the standard error of two seeds
    final = pd.read_csv(tmp_path / "final.csv", index_col=0)
    humans = pd.Series([cells[("ewc", 1.0, s)].data.metrics["final_accuracy_frac/CLEVR-Humans"] for s in (0, 1)])
    assert final.loc["ewc", "final CLEVR-Humans_ci"] == pytest.approx(12.7062 * humans.std() / 2**0.5, rel=1e-4)

    # ewc against naive, paired by seed
    comparison = pd.read_csv(tmp_path / "comparison_with_naive.csv", index_col=0)
    forgetting = "average_forgetting_frac"
    forgot = {s: {k: cells[(k, 1.0, s)].data.metrics[forgetting] for k in ("ewc", "naive")} for s in (0, 1)}
    expected = sum(f["ewc"] - f["naive"] for f in forgot.values()) / 2
    assert comparison.loc["ewc", "forgetting_difference"] == pytest.approx(expected, abs=1e-12)
    assert comparison.loc["ewc", "forgetting_n"] == 2

    # the measures are the cells' means; the references were trained once per fraction and seed, and cached
    measures = pd.read_csv(tmp_path / "measures.csv", index_col=0)
    for name, metric in (("forward transfer", "forward_transfer_frac"), ("WC-ACC", "continual/wc_acc_frac")):
        values = [cells[("naive", 1.0, s)].data.metrics[metric] for s in (0, 1)]
        assert measures.loc["naive", f"{name}_mean"] == pytest.approx(sum(values) / 2)
    references = sorted(p.name.split("-")[0] for p in (home / "cache" / "checkpoints" / "references").glob("*.json"))
    assert references == ["joint"] * 4 + ["scratch"] * 4  # 2 fractions × 2 seeds, not once per cell

    # the continual-evaluation curves in the report are the runs' own stepped metrics
    curves = pd.read_csv(tmp_path / "continual_eval.csv")
    run = cells[("ewc", 1.0, 1)]
    history = client.get_metric_history(run.info.run_id, "continual_accuracy_frac/during_CLEVR-Humans/CLEVR")
    mine = curves[(curves["strategy"] == "ewc") & (curves["seed"] == 1)]
    assert sorted(zip(mine["iteration"], mine["accuracy"], strict=True)) == sorted((m.step, m.value) for m in history)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks on this platform")
def test_pool_workers_share_the_cores_the_sweep_may_use_not_the_machines():
    """A sweep started under `taskset -c 0` gives its one worker one thread, not one per core of the machine."""
    import subprocess
    import sys

    code = "from clbench.core.cores import usable_cores; print(usable_cores())"
    pinned = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )  # fmt: skip
    assert pinned.stdout.strip() == "1"


def test_one_report_over_two_sweeps_of_the_same_settings_and_none_over_different_ones(
    swept, tmp_path, monkeypatch, capsys
):
    spec, result, store, home = swept
    monkeypatch.chdir(home)
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(home / "cache"))  # experience 0 comes from the shared cache
    quiet = {"jobs": 1, "tracking_uri": store, "progress": False, "out": io.StringIO()}
    later = sweep(replace(spec, strategies=("replay",), seeds=(0,)), experiment="sweep-test-later", **quiet)
    other = replace(spec, strategies=("replay",), seeds=(0,), grid=(("scenario.fraction", ("1",)),))
    odd = sweep(replace(other, strategy_sets={"mem_size": "20"}), experiment="sweep-test-odd", **quiet)
    assert later.count("FINISHED") == 2 and odd.count("FINISHED") == 1

    report = ["report", "--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(tmp_path / "out")]
    assert main([*report, "--sweep", f"{result.parent_run_id},{later.parent_run_id}"]) == 0
    folder = tmp_path / "out" / "clevr-humans"
    final = pd.read_csv(folder / "final.csv")
    assert set(final["strategy"]) == {"naive", "ewc", "replay"}
    summary = (folder / "summary.md").read_text()
    assert f"2 sweeps of the same settings, parent runs `{result.parent_run_id}`, `{later.parent_run_id}`" in summary
    assert "10 finished cells: 3 strategies" in summary  # 8 from the first sweep, 2 from the later one
    client = MlflowClient(store)
    for parent in (result.parent_run_id, later.parent_run_id):
        assert "report/summary.md" in {a.path for a in client.list_artifacts(parent, "report")}

    capsys.readouterr()
    assert (
        main([*report, "--out", str(tmp_path / "refused"), "--sweep", f"{result.parent_run_id},{odd.parent_run_id}"])
        == 2
    )
    err = capsys.readouterr().err
    assert "were run with different settings (strategy.mem_size)" in err and "Traceback" not in err
    assert not (tmp_path / "refused").exists()


EDITED_STRATEGY = """
from dataclasses import dataclass

from clbench import Strategy


@dataclass
class Gentle(Strategy):
    name = "gentle"
    state = "boundaries"
    strength: float = {default}

    def plugins(self, model):
        return []
"""


def test_a_finished_cell_whose_strategy_default_changed_runs_again(swept, tmp_path, monkeypatch):
    spec, _, store, home = swept
    monkeypatch.chdir(home)
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(home / "cache"))
    plugin = tmp_path / "gentle.py"
    one = replace(spec, strategies=(f"{plugin}:Gentle",), seeds=(0,), grid=(("scenario.fraction", ("1",)),))
    quiet = {"jobs": 1, "experiment": "sweep-test-edited", "tracking_uri": store, "progress": False}

    plugin.write_text(EDITED_STRATEGY.format(default=1.0))
    assert sweep(one, out=io.StringIO(), **quiet).count("FINISHED") == 1
    assert sweep(one, out=io.StringIO(), **quiet).count("SKIPPED") == 1  # unchanged: the finished cell stands

    plugin.write_text(EDITED_STRATEGY.format(default=2.5))  # the user edits the default between two sweeps
    told = io.StringIO()
    again = sweep(one, out=told, **quiet)
    assert again.count("FINISHED") == 1 and again.count("SKIPPED") == 0
    assert "1 finished cells ran a strategy whose parameters changed since; rerunning them" in told.getvalue()
    [outcome] = again.outcomes
    assert MlflowClient(store).get_run(outcome.run_id).data.params["strategy.strength"] == "2.5"


def test_strategies_that_train_the_first_experience_themselves_are_named_apart_not_averaged_in():
    from clbench.evaluation import names
    from clbench.report.runs import SweepRuns
    from clbench.report.summary import _after_first

    first, later = names.accuracy("CLEVR", "CLEVR"), names.accuracy("CLEVR", "CLEVR-Humans")
    rows = [  # strategy, seed, accuracy on CLEVR and on CLEVR-Humans after the first experience
        ("naive", 0, 0.876, 0.40),
        ("naive", 1, 0.876, 0.40),
        ("ewc", 0, 0.876, 0.40),
        ("er-ace", 0, 0.50, 0.30),
        ("er-ace", 1, 0.52, 0.32),
        ("joint", 0, float("nan"), float("nan")),
    ]
    cells = pd.DataFrame(rows, columns=["strategy", "seed", first, later])
    cells["experiences"] = cells["tests"] = "CLEVR,CLEVR-Humans"
    cells[names.majority_baseline("CLEVR")] = 0.303
    cells[names.majority_baseline("CLEVR-Humans")] = 0.232
    line = _after_first(SweepRuns("parent", "experiment", "", cells))[2]
    assert line.startswith("CLEVR 87.6 % (majority answer 30.3 %), CLEVR-Humans 40.0 % (majority answer 23.2 %)")
    assert "for the 2 strategies that start from one model" in line
    assert "er-ace CLEVR 51.0 %, CLEVR-Humans 31.0 %" in line  # its own model, its seeds' mean
    assert "joint: no model after the first experience alone" in line
