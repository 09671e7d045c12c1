"""Scenarios as plugins: the registry, a user's scenario file, each built-in scenario end to end, N experiences
(a 5×5 accuracy matrix), resume at any experience, and the experience-0 cache shared by what it depends on."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from clbench.cli import main
from clbench.config import PRESETS, RunConfig
from clbench.evaluation import names as metric_names
from clbench.run.build import build_benchmark
from clbench.run.loop import run
from clbench.scenario.contract import available, load
from clbench.strategy.contract import instantiate, resolve
from clbench.training import checkpoints
from tests.cogent_fixture import write_cogent_fixture
from tests.test_resume import _clbench, _final_weights

TYPES = ("exist", "count", "compare_integer", "query_attribute", "compare_attribute")

# A user's scenario: CLEVR train cut into two halves by image, both tested on CLEVR val.
HALVES = '''
from dataclasses import dataclass

from clbench import Scenario
from clbench.scenario.assembly import Part, assemble, vocabulary
from clbench.data.clevr import DatasetRoot, read_clevr_questions


@dataclass
class Halves(Scenario):
    """CLEVR train in two halves by image index."""

    split_at: int = 20

    def experience_names(self):
        return ("first half", "second half")

    def build(self, context):
        root = DatasetRoot.locate(context.root)
        train = read_clevr_questions(root.clevr, "train")
        val = read_clevr_questions(root.clevr, "val")
        vocab = vocabulary(train)
        halves = [
            [r for r in train if r.image_index < self.split_at],
            [r for r in train if r.image_index >= self.split_at],
        ]
        names = self.experience_names()
        parts = [Part(n, h, vocab) for n, h in zip(names, halves)]
        tests = [Part(n, val, vocab) for n in names]
        files = [root.clevr / "questions" / "CLEVR_train_questions.json"]
        return assemble(context, root.clevr, parts, tests, files=files, first_vocab_size=len(vocab))
'''


@pytest.fixture()
def tiny(tiny_root: Path) -> RunConfig:
    config = PRESETS["tiny"]
    return replace(config, data=replace(config.data, root=str(tiny_root)))


def _metrics(store: str, run_id: str) -> dict[str, float]:
    return MlflowClient(store).get_run(run_id).data.metrics


def test_the_built_in_scenarios_are_listed_with_parameters_and_experiences(capsys):
    assert {"clevr-humans", "cogent", "question-types"} <= set(available())
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "CLEVR → CLEVR-Humans" in out and "CoGenT-A → CoGenT-B" in out
    assert "scenario.order='exist,count,compare_integer,query_attribute,compare_attribute'" in out
    assert "scenario.pool_images=None" in out


@pytest.mark.slow  # test_readme.py runs the README's user scenario through the same door in the default suite
def test_a_scenario_in_a_users_file_runs_and_is_logged(tiny_root: Path, tmp_path: Path, tracking_store: str, capsys):
    path = tmp_path / "halves.py"
    path.write_text(HALVES)
    store = tracking_store
    args = ["run", "--scenario", f"{path}:Halves", "--set", "scenario.split_at=25", "--preset", "tiny"]
    assert main([*args, "--data", str(tiny_root), "--tracking-uri", store, "--no-progress"]) == 0
    assert "first half" in capsys.readouterr().out
    [run_] = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("Halves").experiment_id])
    assert run_.data.params["scenario"] == "Halves" and run_.data.params["scenario.split_at"] == "25"
    assert run_.data.params["scenario.experiences"] == "first half,second half"
    assert metric_names.accuracy("second half", "first half") in run_.data.metrics


def test_question_types_logs_a_five_by_five_matrix(tiny: RunConfig, tracking_store: str):
    result = run(
        tiny, instantiate(resolve("naive"), {}), load("question-types"), tracking_uri=tracking_store, progress=False
    )
    assert list(result.accuracy.index) == list(TYPES) == list(result.accuracy.columns)
    metrics = _metrics(tracking_store, result.run_id)
    logged = [name for name in metrics if name.startswith("accuracy_frac/after_")]
    assert len(logged) == 25
    assert metrics[metric_names.accuracy("count", "exist")] == pytest.approx(result.accuracy.loc["count", "exist"])
    assert set(result.forgetting) == set(TYPES[:-1])
    assert metrics[metric_names.AVERAGE_FORGETTING] == pytest.approx(sum(result.forgetting.values()) / 4)
    matrix = result.accuracy.to_numpy()
    assert metrics[metric_names.backward_transfer("count")] == pytest.approx(matrix[4, 1] - matrix[1, 1])
    assert result.forgetting["count"] == pytest.approx(matrix[1:4, 1].max() - matrix[4, 1])
    assert result.per_type.empty  # one type per test set: the matrix says it all


def test_question_types_in_groups_trains_each_group_and_tests_every_type(tiny: RunConfig, tracking_store: str):
    scenario = load("question-types", {"order": "yesno,wh"})
    bench = build_benchmark(tiny, scenario, progress=False)
    assert bench.experience_names == ("yesno", "wh")
    groups = ({"exist", "compare_integer", "compare_attribute"}, {"query_attribute", "count"})
    for experience, expected in zip(bench.train_stream, groups, strict=True):
        assert {bench.type_names[t] for t in experience.dataset.question_type} == expected
    result = run(tiny, instantiate(resolve("naive"), {}), scenario, tracking_uri=tracking_store, progress=False)
    assert result.accuracy.shape == (2, 2)
    assert set(result.per_type.columns) == {"exist", "count", "compare_integer", "query_attribute", "compare_attribute"}


def test_cogent_on_the_hand_written_fixture_runs(tmp_path: Path, tracking_store: str):
    root = write_cogent_fixture(tmp_path / "cogent")
    config = replace(PRESETS["tiny"], data=replace(PRESETS["tiny"].data, root=str(root)))
    scenario = load("cogent", {"pool_images": "2"})
    bench = build_benchmark(config, scenario, progress=False)
    pool = {r for r in bench.train_datasets[1].rows.tolist()}
    test_b = {r for r in bench.test_datasets[1].rows.tolist()}
    assert pool and test_b and not pool & test_b  # no valB image is in both the pool and the test
    assert bench.sizes["pool/images"] == 2 and bench.sizes["test/CoGenT-B"] + bench.sizes["pool/questions"] == 12
    result = run(config, instantiate(resolve("ewc"), {}), scenario, tracking_uri=tracking_store, progress=False)
    assert list(result.accuracy.index) == ["CoGenT-A", "CoGenT-B"]
    assert result.accuracy.notna().all().all()


def test_cogent_on_its_generated_world(tracking_store: str):
    config = PRESETS["tiny"]
    result = run(config, instantiate(resolve("naive"), {}), load("cogent"), tracking_uri=tracking_store, progress=False)
    assert result.sizes["pool/images"] == 48 // 5
    params = MlflowClient(tracking_store).get_run(result.run_id).data.params
    assert params["scenario"] == "cogent" and params["scenario.fraction"] == "1.0"


def test_a_smaller_fraction_fine_tunes_on_a_subset_of_a_larger_ones_pool(tmp_path: Path):
    root = write_cogent_fixture(tmp_path / "cogent")
    config = replace(PRESETS["tiny"], data=replace(PRESETS["tiny"].data, root=str(root)))
    small, full = (
        build_benchmark(config, load("cogent", {"fraction": f, "pool_images": "2"}), False) for f in ("0.5", "1")
    )
    assert len(small.train_datasets[1]) < len(full.train_datasets[1])
    assert (
        small.fingerprint == full.fingerprint
        and small.test_datasets[1].rows.tolist() == full.test_datasets[1].rows.tolist()
    )


def test_experience0_is_shared_by_what_it_depends_on_and_nothing_else(tiny: RunConfig):
    def key(scenario) -> str:
        return checkpoints.experience0_key(tiny, "data", checkpoints.scenario_identity(scenario))

    same_start = key(load("question-types", {"order": "exist,count"})) == key(
        load("question-types", {"order": "exist,query_attribute+count"})
    )
    assert same_start
    assert key(load("question-types", {"order": "exist,count"})) != key(
        load("question-types", {"order": "count,exist"})
    )
    assert key(load("cogent", {"fraction": "0.1"})) == key(load("cogent", {"fraction": "1", "pool_images": "7"}))
    assert key(load("clevr-humans", {"fraction": "0.1"})) == key(load("clevr-humans"))
    assert key(load("clevr-humans")) != key(load("cogent"))


def test_more_epoch_values_than_experiences_is_refused_and_fewer_repeat_the_last(tiny: RunConfig, tracking_store):
    from clbench.core.errors import ConfigError

    config = replace(tiny, train=replace(tiny.train, epochs=(1, 0, 0)))
    with pytest.raises(ConfigError, match="gives 3 values but the scenario has 2 experiences"):
        run(config, instantiate(resolve("naive"), {}), tracking_uri=tracking_store, progress=False)
    assert replace(tiny.train, epochs=(2, 1)).epochs_of(4) == 1


INTERRUPTED_AT_THREE = """
import os
import signal
from dataclasses import dataclass

from avalanche.training.plugins import SupervisedPlugin

from clbench.strategies.ewc import EWC


class SignalInExperienceThree(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.iterations = 0

    def after_training_iteration(self, strategy, **kwargs):
        if strategy.experience.current_experience == 3:
            self.iterations += 1
            if os.environ.get("CLBENCH_TEST_SIGNAL") and self.iterations == 3:
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class InterruptedEWC(EWC):
    def plugins(self, model):
        return [*super().plugins(model), SignalInExperienceThree()]
"""


@pytest.mark.slow  # 50 s: three runs in subprocesses; the default suite's 2-experience twin is in test_resume.py
def test_a_five_experience_run_killed_in_experience_three_resumes_to_the_same_end(tiny_root: Path, tmp_path: Path):
    plugin = tmp_path / "interrupted.py"
    plugin.write_text(INTERRUPTED_AT_THREE)
    stores = {name: f"sqlite:///{tmp_path / name}.db" for name in ("reference", "killed")}

    def args(store: str) -> list[str]:
        return [
            "run", "--scenario", "question-types", "--strategy", f"{plugin}:InterruptedEWC", "--preset", "tiny",
            "--data", str(tiny_root), "--epochs", "1,1,1,2,1", "--tracking-uri", store, "--experiment", "five",
            "--no-progress",
        ]  # fmt: skip

    done = _clbench(args(stores["reference"]), tmp_path / "cache-reference", tmp_path)
    assert done.returncode == 0, done.stderr
    cache = tmp_path / "cache"
    killed = _clbench(args(stores["killed"]), cache, tmp_path, signal_name="SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    [path] = (cache / "checkpoints" / "runs").glob("*.pt")
    assert len(torch.load(path, weights_only=True)["boundaries"]) == 3
    resumed = _clbench(["run", "--resume", "--no-progress"], cache, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "at experience 3 (query_attribute)" in resumed.stderr

    results = {}
    for name, store in stores.items():
        client = MlflowClient(store)
        [finished] = client.search_runs([client.get_experiment_by_name("five").experiment_id])
        assert finished.info.status == "FINISHED"
        prefixes = ("accuracy_frac/", "forgetting_frac/", "film/")
        compared = {k: v for k, v in finished.data.metrics.items() if k.startswith(prefixes)}
        results[name] = (compared, _final_weights(store, finished.info.run_id, tmp_path / name))
    assert len(results["reference"][0]) >= 25 and results["killed"][0] == results["reference"][0]
    reference, got = results["reference"][1], results["killed"][1]
    assert all(torch.equal(reference[k], got[k]) for k in reference)


@pytest.mark.slow  # 26 s: a whole sweep; the default suite sweeps twice elsewhere (test_sweep, the Ray cluster)
def test_a_sweep_over_two_orders_shares_experience0_by_first_type_and_reports_order_sensitivity(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--scenario", "question-types", "--tracking-uri", store]
    orders = "exist,count;exist,count+query_attribute;count,exist"
    argv = ["sweep", *common, "--preset", "tiny", "--data", str(tiny_root), "--strategies", "naive", "--seeds", "0"]
    assert main([*argv, "--grid", f"scenario.order={orders}", "--jobs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 cells finished" in out and "experience 0 trained 2×" in out  # two orders start with exist
    assert main(["report", *common, "--out", str(tmp_path / "results")]) == 0
    folder = tmp_path / "results" / "question-types"
    assert {"summary.md", "accuracy_matrix.png", "forgetting.png", "order_sensitivity.csv"} <= {
        p.name for p in folder.iterdir()
    }
    summary = (folder / "summary.md").read_text()
    assert "## Order sensitivity" in summary and "count,exist" in summary
    table = pd.read_csv(folder / "order_sensitivity.csv", index_col=[0, 1])
    client = MlflowClient(store)
    [run_] = [
        r
        for r in client.search_runs([client.get_experiment_by_name("question-types").experiment_id])
        if r.data.params.get("scenario.order") == "count,exist"
    ]
    assert table.loc[("count,exist", "naive"), "average accuracy_mean"] == pytest.approx(
        run_.data.metrics[metric_names.AVERAGE_ACCURACY]
    )


def test_a_scenario_whose_build_disagrees_with_its_names_is_refused(tiny: RunConfig, tracking_store, tmp_path):
    from clbench.core.errors import ConfigError

    path = tmp_path / "halves.py"
    liar = "\n\nclass Liar(Halves):\n    def build(self, context):\n        bench = super().build(context)\n"
    liar += "        bench.experience_names = ('x', 'y')\n        return bench\n"
    path.write_text(HALVES + liar)
    with pytest.raises(ConfigError, match="announced experiences"):
        run(tiny, instantiate(resolve("naive"), {}), load(f"{path}:Liar"), tracking_uri=tracking_store, progress=False)
