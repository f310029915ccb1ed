"""`drvae-report`: the comparison table over a folder of runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drvae.report.collect import collect, job_labels
from drvae.report.table import main, report


def write_job(folder: Path, overrides: list[str], qwk: float | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    if qwk is None:  # a failed job: Hydra made its folder, no results.json
        return
    counts = {"train_real": {"0": 10, "1": 2}, "train_synthetic": {"0": 0, "1": 8}}
    results = {"overrides": overrides, "metrics": {"test/qwk": qwk, "test/recall_grade1": 0.5}}
    (folder / "results.json").write_text(json.dumps({**results, "counts": counts}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    settings = [("none", 0, 0.50), ("none", 1, 0.60), ("synthetic", 0, 0.70)]
    settings += [("synthetic", 1, 0.74)]
    for i, (strategy, seed, qwk) in enumerate(settings):
        write_job(tmp_path / str(i), ["data=eyepacs", f"rebalance={strategy}", f"seed={seed}"], qwk)
    write_job(tmp_path / "10", ["data=eyepacs", "rebalance=oversample", "seed=0"], None)
    return tmp_path


def test_jobs_are_found_in_numeric_order_and_labelled_by_what_differs(sweep: Path) -> None:
    jobs = collect(sweep)
    assert [j.folder.name for j in jobs] == ["0", "1", "2", "3", "10"]
    done = [j for j in jobs if j.results]
    assert job_labels(done)[0] == "rebalance=none seed=0"  # data=eyepacs is shared: left out


def test_report_has_each_job_the_mean_across_seeds_and_the_failed_jobs(sweep: Path) -> None:
    text = report(sweep)
    assert "| qwk | 0.500 | 0.600 | 0.700 | 0.740 |" in text
    assert "| recall_grade1 |" in text and "| train_synthetic per grade | 0/8 |" in text
    assert "| qwk | 0.550 ± 0.071 | 0.720 ± 0.028 |" in text  # mean ± sample std, n=2
    assert "unfinished or failed jobs" in text and str(sweep / "10") in text


def test_an_empty_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no job folder" in capsys.readouterr().err
