"""Re-score a finished run's classifier with and without test-time augmentation, and (a
regression or ordinal head) with plain rounding in place of the thresholds fitted on validation.

TTA (`classifier.model.tta=true`) changes no weight, so retraining to measure it would waste
the CPU: this loads the run's checkpoint, lets validation refit the grade thresholds on
the (augmented) validation outputs, then tests. Same data, split and preprocessing as the run.

    .venv/bin/python experiments/grader_baselines/tta_rescore.py [--fellow-eye] RUN_DIR [...]

(RUN_DIR: a run folder or a committed copy of one; its classifier checkpoint must still
be in the stage cache.)

Prints one JSON line per run and setting: tta false, tta true (both with the thresholds
refitted on validation), then tta false with the thresholds 0.5, 1.5, 2.5, 3.5 (`fitted`
false: what the fitting adds over rounding the regressed or expected grade). With
`--fellow-eye` (EyePACS: every image is <patient>_<left|right>), instead: each eye alone,
then both eyes graded together (`classifier.model.fellow_eye=true`: the fellow eye's weight
and the thresholds fitted on validation), without TTA. The checkpoint is the one
the run kept, chosen by each eye's validation QWK alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from drvae.data.dataset import FundusDataModule
from drvae.data.rebalance import RebalancePlan
from drvae.metrics.thresholds import DEFAULT_THRESHOLDS
from drvae.models.checkpoints import load_classifier
from drvae.models.grading_heads import THRESHOLDED
from drvae.pipeline.classifier_stage import _datamodule
from drvae.pipeline.data import prepare_data, set_configs
from drvae.pipeline.store import StageStore

KEYS = (
    "qwk",
    "referable_sensitivity",
    "referable_specificity",
    "balanced_accuracy",
    "referable_auroc",
    "referable_sensitivity_at_spec80",
)


def finished_run(run: Path) -> tuple[Path, FundusDataModule]:
    """A finished run's classifier checkpoint and its data (same split and preprocessing)."""
    results = json.loads((run / "results.json").read_text())
    cfg = OmegaConf.create(results["config"])  # the run's resolved config
    if "workers" in cfg.data:  # runs from before data.workers became data.decode_workers
        cfg.data.decode_workers = cfg.data.pop("workers")
    checkpoint = Path(results["stages"].get("classifier", {}).get("path", ""))
    if not checkpoint.is_file():
        raise SystemExit(
            f"{run / 'results.json'}: stages.classifier.path {str(checkpoint)!r} is not a file "
            "(a run without a classifier, or its stage cache was removed)"
        )
    data = prepare_data(cfg.data, StageStore(cfg.paths.cache_dir), set_configs(cfg, "train_sets"))
    return checkpoint, _datamodule(cfg, data, RebalancePlan.make(["none"], None, "total", {}), None)


SETTINGS = ((False, True, False), (True, True, False), (False, False, False))  # tta, fitted, fellow
FELLOW_SETTINGS = ((False, True, False), (False, True, True))


def rescore(run: Path, settings: tuple[tuple[bool, bool, bool], ...] = SETTINGS) -> list[dict]:
    checkpoint, dm = finished_run(run)
    rows = []
    for tta, fitted, fellow in settings:
        model = load_classifier(checkpoint)
        if not fitted and model.hparams.head not in THRESHOLDED:
            continue  # the classification head has no thresholds
        model.hparams.tta = tta
        model.hparams.fit_thresholds = fitted
        model.hparams.fellow_eye = fellow
        if not fitted:
            model.thresholds = torch.tensor(DEFAULT_THRESHOLDS)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        val = trainer.validate(model, datamodule=dm, verbose=False)[0]
        test = trainer.test(model, datamodule=dm, verbose=False)[0]
        rows.append(
            {
                "run": str(run),
                "tta": tta,
                "fitted": fitted,
                **({"fellow_eye": fellow, "fellow_weight": model.fellow_weight} if fellow else {}),
                "val/qwk": round(val["val/qwk"], 4),
                **{f"test/{k}": round(test[f"test/{k}"], 4) for k in KEYS},
                "thresholds": [round(t, 3) for t in model.thresholds.tolist()],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":  # the cache's worker processes re-import this module
    fellow_eye = "--fellow-eye" in sys.argv[1:]
    for folder in (a for a in sys.argv[1:] if a != "--fellow-eye"):
        rescore(Path(folder), FELLOW_SETTINGS if fellow_eye else SETTINGS)
