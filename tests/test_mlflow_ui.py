"""Runs compared in the MLflow UI, for real: a sweep over HTTP to a live `mlflow server`, read back through the
REST API the UI uses, and the UI's runs page rendered in headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from clbench.config import PRESETS
from clbench.sweep import PARENT_TAG, SweepSpec, sweep

EXPERIMENT = "ui-test"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 and a free port, over its own SQLite store."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "art")]
    log = (home / "server.log").open("w")
    process = subprocess.Popen(command, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(home / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def swept_over_http(server: str, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    config = PRESETS["tiny"]
    config = replace(config, data=replace(config.data, root=str(tiny_root)))
    spec = SweepSpec(("naive", "replay"), (0,), config, grid=(("scenario.fraction", ("0.5", "1")),))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("client"))
        result = sweep(spec, jobs=2, experiment=EXPERIMENT, tracking_uri=server, progress=False, out=io.StringIO())
    assert result.count("FINISHED") == 4
    return result


def _api(server: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    url = f"{server}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_parent_and_child_runs_carry_what_the_ui_compares_on(server: str, swept_over_http):
    experiment = _api(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    parent = _api(server, "runs/get", run_id=swept_over_http.parent_run_id)["run"]
    assert parent["info"]["status"] == "FINISHED"
    parent_params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert parent_params["sweep.strategies"] == "naive,replay"
    assert parent_params["sweep.grid.scenario.fraction"] == "0.5,1"
    parent_metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert parent_metrics["sweep/experience0_trained"] <= 1 and parent_metrics["sweep/cells_failed"] == 0

    found = _api(
        server,
        "runs/search",
        {
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.`{PARENT_TAG}` = '{swept_over_http.parent_run_id}'",
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
        for name in ("final_accuracy/CLEVR", "final_accuracy/CLEVR-Humans", "forgetting/CLEVR", "bwt"):
            assert 0 <= abs(metrics[name]) <= 1
        assert "film/after_CLEVR-Humans/CLEVR/all/gamma_negative_share" in metrics
        assert "film_drift/CLEVR/all/gamma_mean_abs_change" in metrics
    assert cells == {(s, f, "0") for s in ("naive", "replay") for f in ("0.5", "1.0")}

    artifacts = _api(server, "artifacts/list", run_id=swept_over_http.parent_run_id, path="report")
    assert "report/accuracy_vs_fraction.png" in {f["path"] for f in artifacts["files"]}


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (CI installs Debian's chromium)")
def test_the_ui_lists_the_sweep_in_headless_chromium(server: str, swept_over_http, tmp_path: Path):
    experiment = _api(server, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]
    page = f"{server}/#/experiments/{experiment['experiment_id']}/runs"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    command += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000", "--dump-dom", page]
    text = ""
    for _ in range(3):  # the single-page app may need a second look on a loaded machine
        dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
        text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S)).split())
        if "matching runs" in text:
            break
    assert "sweep 2×2×1" in text  # the parent run, with its four cells nested under it
    assert "5 matching runs" in text
