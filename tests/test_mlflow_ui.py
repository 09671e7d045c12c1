"""Runs compared in the MLflow UI, for real: the sweep on a Ray cluster (`tests.services`) logs over HTTP to a
live `mlflow server`; read back through the REST API the UI uses, and the UI's pages rendered in headless
Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from clbench.report.tracking import KIND_TAG, PARENT_TAG
from tests.services import RAY_EXPERIMENT

EXPERIMENT = RAY_EXPERIMENT
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def server(mlflow_server: str) -> str:
    return mlflow_server


@pytest.fixture(scope="module")
def swept_over_http(swept_on_ray, mlflow_server: str) -> str:
    """The parent run of the sweep on the Ray cluster: its cells logged to the server over HTTP, one of them
    after losing its worker mid-way."""
    from mlflow import MlflowClient

    assert swept_on_ray.exit_code == 0, swept_on_ray.output[-3000:]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return client.search_runs([experiment], f"tags.`{KIND_TAG}` = 'sweep'")[0].info.run_id


def _api(server: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    url = f"{server}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# Avalanche's own metric streams (its names: accuracies as fractions, losses) and clbench's per-type accuracy
# in the same form; every other name says its unit, or is a share, a rate, a count or a γ/β statistic.
_AVALANCHE = ("Top1_Acc_", "Loss_", "Acc_QType/", "StreamBWT/", "ExperienceBWT/", "StreamForgetting/",
              "ExperienceForgetting/")  # fmt: skip
_UNIT = re.compile(r"_(frac|s|bytes|h)(/|$)|_share$|_rate(/|$)|_iterations/|_questions$|/channels$|^film(_drift)?/")


def says_its_unit(name: str) -> bool:
    return name.startswith(_AVALANCHE) or bool(_UNIT.search(name.removeprefix("valid/")))


@pytest.mark.slow  # a sweep on a Ray cluster through an MLflow server: 70 s to make (shared with test_ray.py)
def test_parent_and_child_runs_carry_what_the_ui_compares_on(server: str, swept_over_http):
    experiment = _api(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    parent = _api(server, "runs/get", run_id=swept_over_http)["run"]
    assert parent["info"]["status"] == "FINISHED"
    parent_params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert parent_params["sweep.strategies"] == "naive,ewc"
    assert parent_params["sweep.grid.scenario.fraction"] == "0.5,1"
    parent_metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert parent_metrics["sweep/experience0_trained"] <= 1 and parent_metrics["sweep/cells_failed"] == 0

    found = _api(
        server,
        "runs/search",
        {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.`{PARENT_TAG}` = '{swept_over_http}'",
            "max_results": 100,
        },
    )["runs"]
    assert len(found) == 4
    cells = set()
    for run in found:
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        cells.add((params["strategy"], params["scenario.fraction"], params["seed"]))
        assert run["info"]["status"] == "FINISHED"
        for name in ("final_accuracy_frac/CLEVR", "final_accuracy_frac/CLEVR-Humans", "forgetting_frac/CLEVR"):
            assert 0 <= abs(metrics[name]) <= 1
        assert -1 <= metrics["bwt_frac"] <= 1
        assert [name for name in metrics if not says_its_unit(name)] == []
        assert "film/after_CLEVR-Humans/CLEVR/all/gamma_negative_share" in metrics
        assert "film_drift/CLEVR/all/gamma_mean_abs_change" in metrics
    assert cells == {(s, f, "0") for s in ("naive", "ewc") for f in ("0.5", "1.0")}

    artifacts = _api(server, "artifacts/list", run_id=swept_over_http, path="report")
    assert "report/accuracy_vs_fraction.png" in {f["path"] for f in artifacts["files"]}


def _render(page: str, profile: Path, expect: str) -> tuple[str, str]:
    """The page as headless Chromium renders it: (DOM, its visible text). The single-page app may need a second
    look on a loaded machine, so it is loaded again until `expect` shows (three tries)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    command += [f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=30000"]
    dom = text = ""
    for _ in range(3):
        dom = subprocess.run([*command, "--dump-dom", page], capture_output=True, text=True, timeout=180).stdout
        text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S)).split())
        if expect in text:
            break
    return dom, text


def _printed_address(text: str) -> str:
    found = re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\d+/runs\?\S+)", text)
    assert found, f"no runs-table address in {text!r}"
    return found[1]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (CI installs Debian's chromium)")
@pytest.mark.slow  # on the Ray sweep (70 s to make); the default suite's browser test opens the UI on its own runs
def test_the_ui_lists_the_sweep_in_headless_chromium(server: str, swept_over_http, tmp_path: Path, capsys):
    from clbench.cli import main

    assert main(["ui", "--tracking-uri", server, "--experiment", EXPERIMENT]) == 0  # a server is its own UI
    address = _printed_address(capsys.readouterr().out)
    assert "workflowType=machine_learning" in address  # the runs table, not the GenAI overview
    _, text = _render(address, tmp_path, "matching runs")
    assert "sweep 2×2×1" in text  # the parent run, with its four cells nested under it
    assert "5 matching runs" in text
    assert "Columns to compare on" in text and "continual/wc_acc_frac" in text  # the experiment's description, first
    assert "final_accuracy_frac/CLEVR" in text and "average_forgetting_frac" in text  # the columns compared, shown


def test_ui_runs_mlflow_through_its_own_interpreter_and_opens_on_the_runs_table(tiny_root, tmp_path, monkeypatch):
    """`.venv/bin/python -m clbench ui` from a shell whose PATH has no `mlflow`, as a newcomer types it; the address
    it prints opens the runs table with the runs' names and their accuracy and forgetting columns."""
    from clbench.cli import main
    from tests.services import clbench_ui

    monkeypatch.chdir(tmp_path)
    data = ["--preset", "tiny", "--data", str(tiny_root), "--epochs", "0", "--no-progress"]
    assert main(["run", "--strategy", "ewc", "--set", "ewc_lambda=500", *data]) == 0
    assert main(["run", "--strategy", "ewc", *data]) == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **{k: v for k, v in os.environ.items() if "CLBENCH" in k}}
    with clbench_ui([], tmp_path / "ui.log", env, cwd=tmp_path) as printed:
        address = _printed_address(printed)
        assert re.match(r"http://127\.0\.0\.1:\d+/#/experiments/", address), address
        if CHROMIUM is None:
            pytest.skip("no Chromium installed (CI installs Debian's chromium)")
        _, text = _render(address, tmp_path / "profile", "matching runs")
        assert "ewc(ewc_lambda=500) · clevr-humans · fraction=1 · seed=0" in text  # two λ told apart by name
        assert "ewc · clevr-humans · fraction=1 · seed=0" in text
        assert "2 matching runs" in text and "Traces 0" not in text
        for column in ("final_accuracy_frac/CLEVR", "final_accuracy_frac/CLEVR-Humans", "average_forgetting_frac"):
            assert column in text


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (CI installs Debian's chromium)")
@pytest.mark.slow  # on the Ray sweep (70 s to make); the default suite's browser test opens the UI on its own runs
def test_a_run_shows_its_continual_evaluation_chart(server: str, swept_over_http, tmp_path: Path):
    experiment = _api(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]["experiment_id"]
    name = "naive · clevr-humans · fraction=1 · seed=0"  # what the run is, in its name
    found = _api(
        server,
        "runs/search",
        {"experiment_ids": [experiment], "filter": f"attributes.run_name = '{name}'", "max_results": 1},
    )["runs"]
    assert found, f"no run named {name!r}"
    run_id = found[0]["info"]["run_id"]
    key = "continual_accuracy_frac/during_CLEVR-Humans/CLEVR"
    history = _api(server, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
    last_step = max(int(m.get("step", 0)) for m in history)
    assert len(history) >= 3 and last_step > 0  # its first iteration, every `eval.every`, and its last

    # the run's page lists the chart under its section ...
    _, text = _render(f"{server}/#/experiments/{experiment}/runs/{run_id}/model-metrics", tmp_path, "Model metrics")
    assert name in text
    assert "continual_accuracy_frac/during_CLEVR-Humans" in text

    # ... and the chart itself plots the curve against the step (the page the chart's "expand" link opens)
    quoted = urllib.parse.quote(json.dumps(key), safe="")
    query = f"runs={json.dumps([run_id])}&metric={quoted}&experiments={json.dumps([experiment])}"
    query += f"&plot_metric_keys={urllib.parse.quote(json.dumps([key]), safe='')}"
    query += "&plot_layout={}&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=true"
    query += "&deselected_curves=[]&last_linear_y_axis_range=[]"
    dom, text = _render(f"{server}/#/metric?{query}", tmp_path, "Step")
    assert 'class="main-svg"' in dom  # Plotly drew the chart
    assert f"{name} ({key})" in text  # its one curve: this run's
    assert f"(step={last_step})" in text  # the latest point is at the experience's last iteration
