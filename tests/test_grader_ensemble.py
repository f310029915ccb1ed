"""experiments/grader_baselines/ensemble.py: the mean of several regression graders, scored
like one."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import config

from drvae.pipeline.run import run

SCRIPT = Path(__file__).parents[1] / "experiments" / "grader_baselines" / "ensemble.py"
RECIPE = ("classifier=dr_recipe", "classifier.model.head=regression", "rebalance=none")


def ensemble_module():
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: it imports tta_rescore
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("ensemble", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predictions(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(row["image"], row["predicted"]) for row in csv.DictReader(f)]


@pytest.mark.slow  # 12 s; an experiment script's, not the framework's default path
def test_an_ensemble_of_a_run_with_its_copy_is_that_run(tmp_path: Path) -> None:
    """Members score as their runs did (thresholds refitted on validation); two identical
    members average to the same grades image by image; an earlier output folder and another
    split are refused."""
    results = run(config(tmp_path / "cache", tmp_path / "a", *RECIPE))
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    ensemble = ensemble_module()
    ensemble.main(tmp_path / "out", [tmp_path / "a", tmp_path / "copy"])
    report = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    member = report["members"][str(tmp_path / "a")]
    for key in ("test/qwk", "test/balanced_accuracy", "test/referable_auroc"):
        assert member[key] == pytest.approx(results["metrics"][key], abs=1e-3)
        assert report["ensemble"][key] == pytest.approx(member[key], abs=1e-6)
    assert report["ensemble"]["delta_ci"]["test/qwk"] == {"delta": 0.0, "ci": [0.0, 0.0]}
    ran = predictions(tmp_path / "a" / "test_predictions.csv")
    assert predictions(tmp_path / "out" / "test_predictions.csv") == ran
    with pytest.raises(SystemExit, match="exists"):  # an earlier ensemble is kept
        ensemble.main(tmp_path / "out", [tmp_path / "a"])

    run(config(tmp_path / "cache", tmp_path / "b", *RECIPE, "data.n_images=250"))
    with pytest.raises(SystemExit, match="images differ"):
        ensemble.main(tmp_path / "out2", [tmp_path / "a", tmp_path / "b"])


@pytest.mark.slow  # 7 s; an experiment script's, not the framework's default path
def test_tta_members_score_as_the_runs_own_tta_rescoring(tmp_path: Path) -> None:
    """`--tta` averages each member's outputs over the flips and quarter turns: a one-member
    ensemble then scores as Lightning's own validate-and-test with `tta=true` does."""
    run(config(tmp_path / "cache", tmp_path / "a", *RECIPE))
    ensemble = ensemble_module()
    ensemble.main(tmp_path / "out", [tmp_path / "a"], tta=True)
    report = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    assert report["tta"] is True
    member = report["members"][str(tmp_path / "a")]
    plain, augmented, _ = sys.modules["tta_rescore"].rescore(tmp_path / "a")
    assert augmented["tta"] and not plain["tta"]
    for key in ("val/qwk", "test/qwk", "test/referable_auroc"):
        assert member[key] == pytest.approx(augmented[key], abs=1e-3)
    assert member["thresholds"] == pytest.approx(augmented["thresholds"], abs=1e-3)
