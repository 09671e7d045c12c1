"""`clbench data check`: the report on the real-format fixture, and what a wrong answer looks like."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clbench.core.errors import DataError
from clbench.data import spec
from clbench.data.check import check_dataset

FIXTURE = Path(__file__).parent / "fixtures" / "real_clevr"


def test_fixture_report_shows_full_executor_agreement() -> None:
    report = check_dataset(FIXTURE)
    assert report.executor_agreement == 1.0
    assert report.executed == 10 and report.mismatches == []
    assert report.counts.loc["CLEVR train", "total"] == 6
    assert report.counts.loc["CLEVR val", "count"] == 2
    assert report.counts.loc["CLEVR test", "no program"] == 2
    assert report.counts.loc["Humans train", "total"] == 3
    assert report.counts.loc["Humans val", "total"] == 2
    assert report.answer_balance["compare_integer"] == pytest.approx(2 / 3)  # no, no, yes
    assert report.question_vocab_size > 4
    assert report.grown_vocab_size == report.question_vocab_size  # no Humans word seen 5 times
    text = report.render()
    assert "executor agreement: 100.00 %" in text
    assert "CLEVR train" in text and "Humans val" in text and "question vocabulary" in text


def test_lone_clevr_folder_is_checked_without_humans() -> None:
    report = check_dataset(FIXTURE / spec.CLEVR_DIRNAME)
    assert report.grown_vocab_size is None
    assert not any(name.startswith("Humans") for name in report.counts.index)
    assert report.executor_agreement == 1.0


def test_a_wrong_recorded_answer_shows_below_full_agreement(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    path = root / spec.CLEVR_DIRNAME / "questions" / "CLEVR_val_questions.json"
    data = json.loads(path.read_text())
    data["questions"][3]["answer"] = "cube"  # really a sphere
    path.write_text(json.dumps(data))
    report = check_dataset(root)
    assert report.executor_agreement == pytest.approx(9 / 10)
    [mismatch] = report.mismatches
    assert (mismatch.split, mismatch.question_index, mismatch.recorded, mismatch.executed) == (
        "val",
        3,
        "cube",
        "sphere",
    )
    text = report.render()
    assert "executor agreement: 90.00 %" in text and "'cube'" in text


def test_malformed_dataset_raises_from_the_readers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    (root / spec.CLEVR_DIRNAME / "images" / "val" / "CLEVR_val_000000.png").unlink()
    with pytest.raises(DataError, match=r"CLEVR_val_000000\.png"):
        check_dataset(root)


def test_generated_tiny_dataset_reads_executes_and_caches_like_real_clevr(tmp_path: Path) -> None:
    from clbench.data.cache import prepare_dataset
    from clbench.synth import generate

    root = generate(tmp_path / "tiny", preset="tiny", seed=0, progress=False)
    report = check_dataset(root)
    assert report.executor_agreement == 1.0 and report.executed > 0
    assert {"CLEVR train", "CLEVR val", "Humans train"} <= set(report.counts.index)
    caches = prepare_dataset(root, (16, 16), jobs=1, progress=False, cache_dir=tmp_path / "cache")
    assert set(caches) >= {"train", "val"} and len(caches["train"]) > 0
