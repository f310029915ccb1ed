"""The audit stage in the pipeline and `drvae-audit` on an existing set, on constructed
cases: copies of training images are flagged as memorised, wrong grades lower the class
consistency, and every figure and number lands where the README says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, config

from drvae.data.synthetic import write_synthetic_set
from drvae.errors import ConfigError
from drvae.pipeline.run import run

AUDIT = ("audit.per_grade=6", "audit.bootstrap=20", "audit.kid_subsets=5")
PLOTS = {"class_consistency.png", "distances.png", "memorisation.png", "closest_pairs.png"}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    cache = tmp_path_factory.mktemp("audit-cache")
    out = tmp_path_factory.mktemp("audit-run")
    stages = "stages=[vae,generate,classifier,audit]"
    return run(config(cache, out, stages, "rebalance.per_grade=6", *AUDIT)), cache


def copies_of_training_images(results: dict, cache: Path, folder: Path, shift: int) -> Path:
    """A 'synthetic' set made of real training images, labelled with their grade + shift."""
    from drvae.data.cache import open_cache
    from drvae.data.splits import make_splits

    data = open_cache(Path(results["data"]["cache"]))
    split = results["config"]["data"]["split"]
    keys = ("val_fraction", "test_fraction", "seed", "use_official", "n_folds", "fold")
    splits = make_splits(data.records, **{k: split[k] for k in keys})
    train = splits.train[:40]
    grades = (data.grades[train] + shift) % 5
    checkpoint = results["stages"]["vae"]["path"]
    manifest = {"checkpoints": dict.fromkeys(range(5), checkpoint), "note": "copies"}
    write_synthetic_set(folder, np.asarray(data.images[train]), grades.tolist(), manifest)
    return folder


def test_the_audit_reports_every_measure_with_its_plots(audited) -> None:
    results, _ = audited
    audit, stage = results["audit"], results["stages"]["audit"]
    report = json.loads((Path(stage["path"]) / "audit.json").read_text())
    assert PLOTS | {"vae_kl.png"} <= {p.name for p in Path(stage["path"]).glob("*.png")}
    assert report["counts"]["synthetic"] == [6, 6, 6, 6, 6]
    assert set(report["grades"]) == {"pooled", "0", "1", "2", "3", "4"}
    pooled = report["grades"]["pooled"]["distances"]
    for name in ("synthetic", "heldout"):  # synthetic beside the real-vs-real reference
        assert pooled[name]["frechet"]["low"] <= pooled[name]["frechet"]["median"]
        assert set(pooled[name]) >= {"kid", "precision", "recall", "density", "coverage"}
    assert set(report["grades"]["4"]["ms_ssim"]) == {"synthetic", "train"}
    (health,) = report["vae_health"].values()
    assert len(health["kl_per_dimension"]) == health["latent_dim"] == 8
    assert set(audit["tstr_ratio"]) == set(audit["trts_ratio"]) == {"accuracy", "qwk"}
    assert 0 <= audit["memorisation"]["share_below_p5"] <= 1
    assert results["stages"]["audit"]["reused"] is False
    # the fidelity stage, run by the audit: in results.json, audit.json and the audit's key
    assert audit["fidelity"] == report["fidelity"] and Path(audit["fidelity"]["grid"]).is_file()
    assert results["stages"]["fidelity"]["reused"] is False
    assert report["fidelity"]["pooled"]["synthetic"]["n"] == 30


def test_drvae_audit_flags_copies_of_training_images(audited, tmp_path: Path) -> None:
    """`drvae-audit` on a set of exact copies: every image sits at distance 0 from a
    training image, below the held-out 1st percentile."""
    results, cache = audited
    folder = copies_of_training_images(results, cache, tmp_path / "copies", shift=0)
    cmd = [
        sys.executable, "-c", "from drvae.pipeline.main import audit; audit()", *TINY, *AUDIT,
        f"audit.synthetic={folder}", "audit.tstr=false", f"paths.cache_dir={cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    audit = json.loads((tmp_path / "run" / "results.json").read_text())["audit"]
    memorised = audit["memorisation"]
    assert memorised["share_below_p1"] == 1.0 and memorised["synthetic_median"] == 0.0
    assert memorised["heldout_median"] > 0
    assert audit["memorisation_features"]["share_below_p1"] == 1.0  # copies in features too
    assert audit["tstr_ratio"] is None


def test_wrong_grades_lower_the_class_consistency(audited, tmp_path: Path) -> None:
    results, cache = audited
    consistency = {}
    for shift in (0, 2):
        folder = copies_of_training_images(results, cache, tmp_path / f"set{shift}", shift)
        overrides = ("stages=[audit]", f"audit.synthetic={folder}", "audit.tstr=false", *AUDIT)
        done = run(config(cache, tmp_path / f"run{shift}", *overrides))
        consistency[shift] = done["audit"]
    right, wrong = consistency[0], consistency[2]
    assert wrong["class_consistency_accuracy"] < right["class_consistency_accuracy"]
    assert wrong["class_consistency_qwk"] <= right["class_consistency_qwk"]


def test_accepted_keeps_the_first_confident_images_of_each_grade() -> None:
    from drvae.data.dataset import FixedSynthetic
    from drvae.pipeline.confidence import accepted

    images = np.arange(8)[:, None, None, None] * np.ones((8, 2, 2, 3), np.uint8)  # image i = i
    grades = np.array([0, 0, 0, 0, 4, 4, 4, 4])
    p = np.array([0.9, 0.1, 0.8, 0.95, 0.2, 0.7, 0.3, 0.9])
    chosen, stats = accepted(FixedSynthetic(images, grades), p, {0: 2, 4: 3}, threshold=0.5)
    assert chosen.images[:, 0, 0, 0].tolist() == [0, 2, 5, 7]  # grade 4 is one short
    assert stats == {
        0: {"generated": 4, "accepted": 3, "needed": 2},
        4: {"generated": 4, "accepted": 2, "needed": 3},
    }


def test_confidence_filtering_trains_on_confident_images_only(audited, tmp_path: Path) -> None:
    """rebalance.min_confidence: every synthetic training image passes the real-trained
    classifier's threshold; an unreachable threshold is refused, naming the key."""
    _, cache = audited
    low = run(
        config(cache, tmp_path / "low", "rebalance.per_grade=6", "rebalance.min_confidence=0.1")
    )
    stats = low["rebalance"]["confidence_filter"]["per_grade"]
    assert low["counts"]["train_synthetic"] == dict.fromkeys(range(5), 6)
    assert all(s["accepted"] >= s["needed"] == 6 for s in stats.values())
    assert low["stages"]["generate"]["n_images"] >= 60  # candidates: at least twice the need
    with pytest.raises(ConfigError, match=r"rebalance.min_confidence=0.999: after generating 2x"):
        run(config(cache, tmp_path / "high", "rebalance.per_grade=6",
                   "rebalance.min_confidence=0.999", "rebalance.max_generated=2"))  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("audit.synthetic=/nonexistent", "audit.synthetic: /nonexistent is not a finished"),
        ("audit.per_grade=0", "audit.per_grade must be a positive integer"),
        ("audit.fidelity_grid=0", "audit.fidelity_grid must be a positive integer"),
        ("rebalance.min_confidence=1.5", "rebalance.min_confidence: expected 0 < p <= 1"),
        ("rebalance.max_generated=1", "rebalance.max_generated: expected an int >= 2"),
    ],
)
def test_bad_audit_settings_are_refused_before_any_work(tmp_path: Path, override, message):
    cfg = config(tmp_path / "cache", tmp_path / "run", "stages=[vae,audit]", override)
    if override.startswith("rebalance"):
        cfg = config(tmp_path / "cache", tmp_path / "run", "rebalance.min_confidence=0.5", override)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "cache").exists()
