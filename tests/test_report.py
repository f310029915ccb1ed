"""`drvae-report`: the comparison report over a folder of runs (a sweep)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_GRADES, metrics_of, write_job  # tests/ is on sys.path
from omegaconf import OmegaConf
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, recall_score

from drvae.data.synthetic import write_synthetic_set
from drvae.report.collect import NothingToReport, collect, job_labels, settings
from drvae.report.hydra_callback import PrintComparison
from drvae.report.stats import (
    Bootstrap,
    deltas,
    find_baseline,
)
from drvae.report.table import compare, main, report, write_report


def write_failed(folder: Path, error: str) -> None:
    (folder / ".hydra").mkdir(parents=True)
    failure = {"error": error, "type": "DataError", "traceback": "Traceback ..."}
    (folder / "failed.json").write_text(json.dumps(failure))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    settings = [("none", 0, 0.50), ("none", 1, 0.60), ("synthetic", 0, 0.70)]
    settings += [("synthetic", 1, 0.74)]
    for i, (strategy, seed, qwk) in enumerate(settings):
        write_job(tmp_path / str(i), ["data=eyepacs", f"rebalance={strategy}", f"seed={seed}"], qwk)
    write_failed(tmp_path / "10", "data.root: /nowhere has no images")
    write_job(tmp_path / "11", ["data=eyepacs", "rebalance=oversample", "seed=0"], None)
    return tmp_path


@pytest.fixture
def count_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ablation over synthetic counts with per-image predictions and a synthetic set."""
    tmp_path = tmp_path_factory.mktemp("counts")
    images = np.random.default_rng(0).integers(0, 255, (15, 16, 16, 3), dtype=np.uint8)
    write_synthetic_set(tmp_path / "set", images, np.repeat(np.arange(5), 3), {})
    rng = np.random.default_rng(1)
    for i, (count, seed) in enumerate((c, s) for c in (0, 100, "not majority") for s in (0, 1)):
        wrong = rng.random(len(TEST_GRADES)) < 0.3
        predicted = np.where(wrong, rng.integers(0, 5, len(TEST_GRADES)), TEST_GRADES)
        write_job(
            tmp_path / "sweep" / str(i),
            ["experiment=ablate_synthetic_counts", f"rebalance.per_grade={count}", f"seed={seed}"],
            None,
            rebalance={"methods": ["synthetic"], "per_grade": count},
            predicted=predicted,
            synthetic=tmp_path / "set" if count else None,
        )
    return tmp_path / "sweep"


def test_jobs_are_found_in_numeric_order_and_labelled_by_what_differs(sweep: Path) -> None:
    jobs = collect(sweep)
    assert [j.folder.name for j in jobs] == ["0", "1", "2", "3", "10", "11"]
    done = [j for j in jobs if j.results]
    assert job_labels(done)[0] == "rebalance=none seed=0"  # data=eyepacs is shared: left out
    assert list(settings(jobs)) == ["rebalance=none", "rebalance=synthetic"]  # seeds apart
    assert jobs[4].failure["type"] == "DataError" and jobs[5].failure is None


def test_where_a_job_wrote_does_not_split_a_setting(tmp_path: Path) -> None:
    """A seed rerun with its stage cache elsewhere (paths.cache_dir) and its progress bar off
    is still the same setting: the seeds pool, and no label names a path."""
    write_job(tmp_path / "0", ["rebalance=none", "paths.cache_dir=/old", "seed=0"], 0.5)
    write_job(
        tmp_path / "1", ["rebalance=none", "trainer.enable_progress_bar=false", "seed=1"], 0.6
    )
    write_job(tmp_path / "2", ["rebalance=synthetic", "seed=0"], 0.7)
    groups = settings(collect(tmp_path))
    assert {k: len(v) for k, v in groups.items()} == {"rebalance=none": 2, "rebalance=synthetic": 1}
    assert job_labels(collect(tmp_path))[:2] == ["rebalance=none seed=0", "rebalance=none seed=1"]


def test_report_has_the_mean_across_seeds_the_failed_and_the_missing_jobs(sweep: Path) -> None:
    text, written = write_report(sweep)
    assert "| metric | rebalance=none (baseline) | rebalance=synthetic |" in text
    assert "| qwk | 0.550 ± 0.071 | 0.720 ± 0.028 |" in text  # mean ± sample std, n=2
    assert "| n (seeds) | 2 | 2 |" in text and "| val/loss | 0.450 ± 0.071 |" in text
    assert "| qwk | 0.500 | 0.600 | 0.700 | 0.740 |" in text  # per job
    assert "| train_synthetic per grade | 0/8 |" in text
    assert "- `10`: DataError: data.root: /nowhere has no images" in text
    assert "Missing or unfinished" in text and "- `11`" in text
    assert (sweep / "report.md").read_text() == text
    assert {p.name for p in written} >= {"report.md", "report.csv", "recall_per_grade.png"}


def test_a_metric_some_seeds_lack_says_over_how_many_it_is_averaged(tmp_path: Path) -> None:
    """A seed run before a metric existed has no value for it: the mean is over the others
    and says so, rather than passing for the mean over every seed."""
    for seed, qwk in enumerate((0.5, 0.6, 0.7)):
        write_job(tmp_path / str(seed), ["rebalance=none", f"seed={seed}"], qwk)
    old = tmp_path / "0" / "results.json"
    results = json.loads(old.read_text())
    del results["metrics"]["test/accuracy"]
    old.write_text(json.dumps(results))
    text, _ = write_report(tmp_path)
    assert "| qwk | 0.600 ± 0.100 |" in text  # every seed has it: no count
    assert "| accuracy | 0.800 ± 0.000 (n=2) |" in text


def test_a_setting_that_adds_nothing_is_the_baseline(sweep: Path, count_sweep: Path) -> None:
    assert find_baseline(settings(collect(sweep)))[0] == "rebalance=none"
    assert find_baseline(settings(collect(count_sweep)))[0] == "rebalance.per_grade=0"
    groups = settings(collect(sweep))
    del groups["rebalance=none"]
    label, note = find_baseline(groups)
    assert label is None and "no baseline column" in note


def test_metrics_from_confusion_counts_are_scikit_learns() -> None:
    rng = np.random.default_rng(2)
    predicted = np.where(
        rng.random(len(TEST_GRADES)) < 0.4, rng.integers(0, 5, len(TEST_GRADES)), TEST_GRADES
    )
    ours = metrics_of(predicted)
    assert ours["test/qwk"] == pytest.approx(
        cohen_kappa_score(TEST_GRADES, predicted, weights="quadratic")
    )
    assert ours["test/macro_f1"] == pytest.approx(f1_score(TEST_GRADES, predicted, average="macro"))
    assert ours["test/balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(TEST_GRADES, predicted)
    )
    recalls = recall_score(TEST_GRADES, predicted, average=None)
    assert [ours[f"test/recall_grade{g}"] for g in range(5)] == pytest.approx(recalls)


def paired_sweep(tmp_path: Path, better: np.ndarray, base: np.ndarray, csv_too: bool = True):
    for seed in (0, 1):
        for i, (strategy, predicted) in enumerate((("none", base), ("synthetic", better))):
            folder = tmp_path / f"{seed}{i}"
            write_job(folder, [f"rebalance={strategy}", f"seed={seed}"], None, predicted=predicted)
            if not csv_too and strategy == "synthetic":
                (folder / "test_predictions.csv").unlink()
    groups = settings(collect(tmp_path))
    boot = Bootstrap(300)
    return deltas(groups["rebalance=synthetic"], groups["rebalance=none"], boot, ("test/qwk",))


def test_identical_predictions_differ_by_zero_with_a_zero_interval(tmp_path: Path) -> None:
    found, why = paired_sweep(tmp_path, (TEST_GRADES + 1) % 5, (TEST_GRADES + 1) % 5)
    d = found["test/qwk"]
    assert why is None and (d.delta, d.low, d.high) == (0, 0, 0) and not d.excludes_zero


def test_a_setting_better_on_every_image_has_an_interval_above_zero(tmp_path: Path) -> None:
    found, why = paired_sweep(tmp_path, TEST_GRADES, np.clip(TEST_GRADES + 1, 0, 4))
    d = found["test/qwk"]
    assert why is None and d.delta > 0 and d.low > 0 and d.excludes_zero


def test_no_interval_without_the_predictions(tmp_path: Path) -> None:
    found, why = paired_sweep(tmp_path, TEST_GRADES, np.clip(TEST_GRADES + 1, 0, 4), csv_too=False)
    assert found["test/qwk"].delta > 0 and found["test/qwk"].low is None
    assert "no test_predictions.csv in" in why
    text, _ = write_report(tmp_path, 50)
    assert "[n/a]" in text and "CI n/a for rebalance=synthetic: no test_predictions.csv" in text


def test_a_count_sweep_writes_its_csv_and_figures(count_sweep: Path) -> None:
    text, written = write_report(count_sweep, 200)
    rows = list(csv.DictReader((count_sweep / "report.csv").open()))
    assert list(rows[0]) == ["setting", "metric", "n", "mean", "std", "delta", "ci_low", "ci_high"]
    row = next(
        r for r in rows if r["setting"] == "rebalance.per_grade=100" and r["metric"] == "test/qwk"
    )
    found = compare(count_sweep, 200)
    d = found.deltas["rebalance.per_grade=100"]["test/qwk"]
    assert row["n"] == "2" and float(row["delta"]) == pytest.approx(d.delta, abs=1e-5)
    assert float(row["ci_low"]) <= float(row["delta"]) <= float(row["ci_high"])
    assert len(rows) == 3 * len({r["metric"] for r in rows})
    names = {"metric_vs_count.png", "recall_per_grade.png", "confusion_matrices.png", "samples.png"}
    assert names <= {p.name for p in written}
    for name in names:
        with Image.open(count_sweep / name) as image:
            image.verify()
        assert f"]({name})" in text
    assert "rebalance.per_grade=0 (its rebalancing adds nothing)" in text


def test_a_sweep_of_strategies_has_no_count_plot(sweep: Path) -> None:
    text, written = write_report(sweep)
    assert "metric_vs_count.png" not in {p.name for p in written}
    assert not (sweep / "metric_vs_count.png").exists()
    assert "skipped metric_vs_count.png" in text
    assert "skipped samples.png" in text


@pytest.mark.parametrize("case", ["empty", "absent", "all failed"])
def test_nothing_to_compare_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    if case == "all failed":
        write_failed(tmp_path / "0", "boom")
    folder = tmp_path / "nowhere" if case == "absent" else tmp_path
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"drvae-report: error: {folder}") and err.count("\n") == 1
    expected = {"empty": "no job folder", "absent": "no such folder", "all failed": "1 failed"}
    assert expected[case] in err


def test_the_callback_reports_then_fails_when_a_job_failed(
    sweep: Path, capsys: pytest.CaptureFixture
) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as exit_info:
        PrintComparison().on_multirun_end(config=config)
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert "| qwk | 0.550 ± 0.071 |" in out and (sweep / "report.md").is_file()
    assert f"drvae: 2 of 6 jobs failed: {sweep / '10'}, {sweep / '11'}" in err


def test_the_callback_survives_a_report_that_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_failed(tmp_path / "0", "boom")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as exit_info:
        PrintComparison().on_multirun_end(config=config)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "drvae: the report failed:" in err
    assert "drvae: 1 of 1 jobs failed" in err


def test_jobs_without_test_metrics_still_get_a_report(tmp_path: Path) -> None:
    """A sweep of VAEs alone (stages=[vae]): no test metrics, no figure, no error."""
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / "results.json").write_text(json.dumps({"overrides": [], "stages": {}}))
    text, written = write_report(tmp_path)
    assert "no finished job with test metrics" in text
    assert "skipped recall_per_grade.png" in text and [p.name for p in written][2:] == []


def test_the_markdown_alone_writes_nothing(sweep: Path) -> None:
    assert "| qwk | 0.550 ± 0.071 | 0.720 ± 0.028 |" in report(sweep)
    assert not (sweep / "report.md").exists() and not list(sweep.glob("*.png"))


def test_a_baseline_chosen_by_label_compares_settings_that_all_add_nothing(
    tmp_path: Path,
) -> None:
    """Two graders, neither rebalancing: no baseline by default; `--baseline` names one and
    the other gets its paired interval (better on every image: above zero)."""
    for seed in (0, 1):
        for i, (grader, predicted) in enumerate(
            (("resnet10t", np.clip(TEST_GRADES + 1, 0, 4)), ("dr_recipe", TEST_GRADES))
        ):
            overrides = [f"classifier={grader}", "rebalance=none", f"seed={seed}"]
            write_job(tmp_path / f"{seed}{i}", overrides, None, predicted=predicted)
    assert compare(tmp_path, 200).baseline is None
    found = compare(tmp_path, 200, baseline="classifier=resnet10t")
    assert found.baseline == "classifier=resnet10t"
    assert found.deltas["classifier=dr_recipe"]["test/qwk"].low > 0
    with pytest.raises(NothingToReport, match="settings: classifier=dr_recipe; classifier=res"):
        compare(tmp_path, 200, baseline="classifier=nope")
