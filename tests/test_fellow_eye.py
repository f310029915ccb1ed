"""Grading a patient's two eyes together (`classifier.model.fellow_eye`): the pairing, the
blend and its fitted weight, and a run on EyePACS-layout data that records and applies it."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from conftest import config, quiet_trainer  # tests/ is on sys.path
from omegaconf import OmegaConf
from PIL import Image

from drvae.data.dataset import FundusDataModule
from drvae.data.readers import read_dataset
from drvae.data.records import fellow_eyes
from drvae.data.simulator import simulate_dataset
from drvae.errors import ConfigError
from drvae.metrics.thresholds import fit_thresholds, qwk, to_grades
from drvae.models.checkpoints import load_classifier
from drvae.models.fellow_eye import WEIGHTS, fit_fellow_weight, with_fellow
from drvae.models.grading_heads import grade_scores
from drvae.pipeline.classifier_stage import model_key_material
from drvae.pipeline.data import prepare_data
from drvae.pipeline.run import run
from drvae.pipeline.store import StageStore
from drvae.run_folder import RESULTS, read_predictions


def test_each_eye_finds_its_fellow(eyepacs) -> None:
    records = read_dataset("eyepacs", eyepacs.root).records
    fellow = fellow_eyes(records)
    names = [r.image_id for r in records]
    found = {names[i]: names[j] for i, j in enumerate(fellow) if j >= 0}
    other = {"left": "right", "right": "left"}
    assert found == {f"{p}_{a}": f"{p}_{b}" for p in (10, 13, 15) for a, b in other.items()}
    # a subset without one of the eyes: the other has no fellow there
    assert fellow_eyes([r for r in records if r.image_id != "10_right"]).tolist().count(-1) == 4


def test_images_without_eyes_have_no_fellow(aptos) -> None:
    assert (fellow_eyes(read_dataset("aptos", aptos.root).records) == -1).all()


def pairs(n_patients: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grades of n patients' two eyes (the same grade) and each eye's fellow position."""
    grades = torch.from_numpy(np.random.default_rng(seed).integers(0, 5, n_patients)).repeat(2)
    half = torch.arange(n_patients)
    fellow = torch.cat([half + n_patients, half])
    return grades, fellow


def test_the_blend_mixes_only_paired_rows() -> None:
    outputs = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    fellow = torch.tensor([1, 0, -1])
    blended = with_fellow(outputs, fellow, 0.25)
    assert torch.allclose(blended, torch.tensor([[1.5, 0.5], [2.5, 1.5], [5.0, 5.0]]))


def test_a_fellow_eye_with_the_same_grade_gets_weight_and_helps() -> None:
    grades, fellow = pairs(400, seed=0)
    noise = torch.from_numpy(np.random.default_rng(1).normal(0, 0.9, len(grades))).float()
    outputs = (grades.float() + noise)[:, None]  # a noisy regressed grade
    weight, cuts = fit_fellow_weight("regression", outputs, grades, fellow, None)
    assert weight > 0
    alone = outputs[:, 0].numpy()
    blended = with_fellow(outputs, fellow, weight)[:, 0].numpy()
    kappa_alone = qwk(grades.numpy(), to_grades(alone, fit_thresholds(alone, grades.numpy())))
    assert qwk(grades.numpy(), to_grades(blended, cuts.numpy())) > kappa_alone


def test_a_fellow_eye_that_misleads_gets_no_weight() -> None:
    grades, fellow = pairs(300, seed=2)
    truth = grades.clone()
    truth[len(grades) // 2 :] = 4 - truth[len(grades) // 2 :]  # the fellow's grade reversed
    logits = torch.nn.functional.one_hot(truth, 5).float() * 3  # a sure, right classifier
    weight, cuts = fit_fellow_weight("classification", logits, truth, fellow, None)
    assert (weight, cuts) == (0.0, None)


def test_fixed_thresholds_are_kept() -> None:
    grades, fellow = pairs(100, seed=3)
    given = torch.tensor([0.5, 1.5, 2.5, 3.5])
    _, cuts = fit_fellow_weight("regression", grades[:, None].float(), grades, fellow, given)
    assert cuts is given


def test_the_key_is_unchanged_while_the_blend_is_off(tmp_path: Path) -> None:
    cfg = config(tmp_path / "cache", tmp_path / "out")
    material = model_key_material(cfg.classifier.model)
    assert "fellow_eye" not in material and "tta" in material
    cfg.classifier.model.fellow_eye = True
    assert model_key_material(cfg.classifier.model)["fellow_eye"] is True


def write_eyepacs(sim: Path, root: Path) -> dict[str, str]:
    """The simulated images as an EyePACS-layout set, two images of one grade per patient:
    image id -> its fellow's id."""
    rows = list(csv.reader((sim / "train.csv").open()))[1:]
    by_grade: dict[str, list[str]] = {}
    for image, grade in rows:
        by_grade.setdefault(grade, []).append(image)
    (root / "train").mkdir(parents=True)
    labels, fellow = ["image,level"], {}
    for grade, images in by_grade.items():
        for k, (a, b) in enumerate(zip(images[::2], images[1::2], strict=False)):
            patient = f"{grade}{k:03d}"
            for eye, image in (("left", a), ("right", b)):
                Image.open(sim / "train_images" / f"{image}.png").save(
                    root / "train" / f"{patient}_{eye}.jpeg", quality=95
                )
                labels.append(f"{patient}_{eye},{grade}")
            fellow |= {f"{patient}_left": f"{patient}_right", f"{patient}_right": f"{patient}_left"}
    (root / "trainLabels.csv").write_text("\n".join(labels) + "\n")
    return fellow


@pytest.fixture(scope="module")
def eyes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("fellow")
    simulate_dataset(root / "sim", n=240, size=32, seed=0, workers=1)
    fellow = write_eyepacs(root / "sim", root / "eyepacs")
    common = ["data=eyepacs", f"data.root={root / 'eyepacs'}", "rebalance=none"]
    common += ["classifier.model.head=regression", "classifier.model.fellow_eye=true"]
    out = root / "run"
    run(config(root / "cache", out, *common))
    return {"out": out, "fellow": fellow, "root": root, "common": common}


def test_the_run_records_the_blend_and_its_pairs(eyes: dict) -> None:
    stage = json.loads((eyes["out"] / RESULTS).read_text())["stages"]["classifier"]
    blend = stage["fellow_eye"]
    assert blend["weight"] in WEIGHTS
    assert blend["n_paired"]["val"] > 0 and blend["n_paired"]["test"] > 0
    assert load_classifier(Path(stage["path"])).fellow_weight == blend["weight"]


def test_test_predictions_are_the_blended_ones(eyes: dict) -> None:
    """The kept checkpoint re-tested reproduces the run's per-image predictions, and at a
    forced weight its scores are the blend of each eye's outputs with its fellow's."""
    results = json.loads((eyes["out"] / RESULTS).read_text())
    stage = results["stages"]["classifier"]
    cfg = OmegaConf.create(results["config"])
    data = prepare_data(cfg.data, StageStore(cfg.paths.cache_dir), {})
    dm = FundusDataModule(data.cache, data.splits, batch_size=32)
    model = load_classifier(Path(stage["path"]))
    quiet_trainer().test(model, datamodule=dm, verbose=False)
    ids, _, written = read_predictions(Path(stage["predictions"]))
    assert torch.allclose(model.test_predictions()[0], torch.as_tensor(written).float(), atol=1e-5)
    fellow = torch.as_tensor(dm.fellow_index("test"))
    assert ids == [data.cache.records[i].image_id for i in dm.indices("test")]
    assert all(ids[j] == eyes["fellow"][ids[i]] for i, j in enumerate(fellow.tolist()) if j >= 0)
    model.fellow_weight = 0.5
    quiet_trainer().test(model, datamodule=dm, verbose=False)
    dm.setup("test")
    with torch.inference_mode():
        outputs = torch.cat([model.evaluate(x) for x, _ in dm.test_dataloader()]).float()
    expected = grade_scores("regression", with_fellow(outputs, fellow, 0.5), model.thresholds)
    assert torch.allclose(model.test_predictions()[0], expected[0], atol=1e-5)
    alone = grade_scores("regression", outputs, model.thresholds)[0]
    assert not torch.allclose(expected[0], alone, atol=1e-3)


def test_a_source_without_eyes_is_refused(tmp_path: Path, eyes: dict) -> None:
    sim = eyes["root"] / "sim"
    overrides = ["data=aptos", f"data.root={sim}", "rebalance=none"]
    overrides.append("classifier.model.fellow_eye=true")
    cfg = config(tmp_path / "cache", tmp_path / "out", *overrides)
    with pytest.raises(ConfigError, match=r"classifier.model.fellow_eye=true.*'aptos'"):
        run(cfg)


def grader_script(name: str) -> ModuleType:
    """A script of experiments/grader_baselines, imported as when run: its siblings importable."""
    folder = str(Path(__file__).parents[1] / "experiments" / "grader_baselines")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(folder)


@pytest.mark.slow  # 10 s; an experiment script's, not the framework's default path
def test_the_learnt_combination_probe_starts_from_the_products_blend(eyes: dict) -> None:
    """experiments/grader_baselines/fellow_stack.py: its "own" rule scores as each eye alone
    does in `tta_rescore.py`, its "mean" as the product's blend at weight 0.5 (thresholds
    fitted on validation both ways), and each learnt rule reports one coefficient per input."""
    fellow_stack = grader_script("fellow_stack")
    rows = {row["rule"]: row for row in fellow_stack.combined(eyes["out"])}
    alone = sys.modules["tta_rescore"].rescore(eyes["out"], ((False, True, False),))[0]
    assert list(rows) == list(fellow_stack.RULES)
    for key in ("val/qwk", "test/qwk"):
        assert rows["own"][key] == pytest.approx(alone[key], abs=1e-3)
    scores = sys.modules["ensemble"].member_scores(eyes["out"], tta=False)
    _, dm = sys.modules["tta_rescore"].finished_run(eyes["out"])
    dm.setup("test")
    blended = {}
    for split, (_, own, _) in scores.items():
        fellow = torch.as_tensor(dm.fellow_index(split))
        blended[split] = with_fellow(torch.as_tensor(own)[:, None], fellow, 0.5)[:, 0].numpy()
    cuts = fit_thresholds(blended["val"], scores["val"][2])
    expected = qwk(scores["test"][2], to_grades(blended["test"], cuts))
    assert rows["mean"]["test/qwk"] == pytest.approx(expected, abs=1e-3)
    assert len(rows["linear(own, fellow)"]["coefficients"]) == 2
    assert len(rows["linear(own, fellow, max)"]["coefficients"]) == 3


@pytest.mark.slow  # 15 s; an experiment script's, not the framework's default path
def test_the_feature_probe_reads_the_heads_input_and_scores_every_rule(eyes: dict) -> None:
    """experiments/grader_baselines/fellow_features.py: the features it reads are what the
    network's head turns into the regressed grade, its "mean" rule scores as fellow_stack's,
    and every learnt rule is scored against the mean on the same test images."""
    probe = grader_script("fellow_features")
    checkpoint, dm = sys.modules["tta_rescore"].finished_run(eyes["out"])
    model = load_classifier(checkpoint).eval()
    dm.setup("test")
    split = probe.split_outputs(model, dm, "test")
    with torch.inference_mode():
        head = model.net.get_classifier()(torch.as_tensor(split["features"]))[:, 0]
    assert np.allclose(head.numpy(), split["score"], atol=1e-4)
    assert (split["fellow"] == dm.fellow_index("test")).all()
    rows = {row["rule"]: row for row in probe.combined(eyes["out"])}
    assert list(rows) == ["mean", "own", *probe.RULES]
    stacked = {row["rule"]: row for row in grader_script("fellow_stack").combined(eyes["out"])}
    for rule in ("mean", "own"):
        assert rows[rule]["test/qwk"] == pytest.approx(stacked[rule]["test/qwk"], abs=1e-3)
    assert rows["ridge(own, fellow features), train"]["n_inputs"] == 2 * split["features"].shape[1]
    assert all("against_mean" in rows[rule] for rule in rows if rule != "mean")
