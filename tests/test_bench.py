"""The benchmark harness: what it derives and writes (the timings themselves are benchmarks,
measured by `make bench`, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drvae.bench.__main__ import main, targets

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_targets_are_derived_and_marked_met_or_not() -> None:
    benchmarks = {
        "vae_training_128px": {"vae_overhead_ratio": 0.5},
        "vae_training_64px": {"vae_overhead_ratio": 0.95},  # the default size wins
        "classifier_training_64px": {
            "classifier_overhead_ratio": 0.8,
            "drvae_images_per_second": 200.0,
        },
        "loader": {"cached_images_per_second_64px": 1000.0},
        "sweep": {"sweep_cost_ratio": 1.15},
    }
    out = targets(benchmarks)
    assert out["vae_overhead_ratio"] == {"value": 0.95, "target": ">= 0.9", "met": True}
    assert out["classifier_overhead_ratio"]["met"] is False
    assert out["loader_vs_model_ratio"]["value"] == 5.0  # 1000 / 200
    assert out["loader_vs_model_ratio"]["met"] is False
    assert out["sweep_cost_ratio"]["met"] is True  # <= 1.15
    assert out["cache_build_speedup"] == {"value": None, "target": ">= 4.0", "met": None}


@pytest.mark.slow  # about 45 s: two model sizes, both sides, five epochs each
def test_a_quick_run_writes_results_and_the_targets_table(tmp_path: Path) -> None:
    main(["--quick", "--only", "classifier", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    figures = results["benchmarks"]["classifier_training_64px"]
    assert figures["drvae_images_per_second"] > 0 and figures["hand_written_images_per_second"] > 0
    assert results["targets"]["classifier_overhead_ratio"]["value"] > 0
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| classifier_overhead_ratio |" in table and "| vae_overhead_ratio | None |" in table


def test_a_merged_group_keeps_where_each_row_was_measured(tmp_path: Path, monkeypatch) -> None:
    """`--only` merges into the earlier results: the earlier rows keep their own machine,
    the new ones name this one, so a table never credits one machine with another's figures."""
    import platform

    import drvae.bench.__main__ as bench

    earlier = {"data_row": {"seconds": 1.0, "measured_on": "2026-01-01, old-machine, cpu"}}
    (tmp_path / "results.json").write_text(json.dumps({"benchmarks": earlier}))
    monkeypatch.setattr(bench, "run_group", lambda *a: {"overhead_row": {"seconds": 2.0}})
    main(["--only", "overhead", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["benchmarks"]
    assert rows["data_row"]["measured_on"] == "2026-01-01, old-machine, cpu"
    assert platform.platform() in rows["overhead_row"]["measured_on"]
    assert "| measured_on | 2026-01-01, old-machine, cpu |" in (tmp_path / "RESULTS.md").read_text()


def test_an_unknown_group_is_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "vae,gpus"])
    assert "unknown group(s) ['gpus']" in capsys.readouterr().err


def test_peak_memory_sees_an_allocation_inside_the_block() -> None:
    """The kernel's high-water mark, reset at the block's start: a 100 MB block freed at
    once is counted exactly, with no sampling to miss it; one freed before is not."""
    import numpy as np

    from drvae.bench.memory import PeakMemory, reset_peak, rss_mb

    if not reset_peak():
        pytest.skip("this kernel cannot reset the peak resident memory (/proc/self/clear_refs)")
    earlier = np.ones((200, 2**20), dtype=np.uint8)  # 200 MB, touched and freed before
    del earlier
    before = rss_mb()
    with PeakMemory() as peak:
        block = np.ones((100, 2**20), dtype=np.uint8)  # 100 MB, touched
        del block
    figures = peak.figures()
    assert "peak_is_lifetime" not in figures
    assert before + 90 <= figures["peak_rss_mb"] < before + 190
