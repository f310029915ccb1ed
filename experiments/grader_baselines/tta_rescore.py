"""Re-score a finished run's classifier with and without test-time augmentation, and (a
regression or ordinal head) with plain rounding in place of the thresholds fitted on validation.

TTA (`classifier.model.tta=true`) changes no weight, so retraining to measure it would waste
the CPU: this loads the run's checkpoint, lets validation refit the grade thresholds on
the (augmented) validation outputs, then tests. Same data, split and preprocessing as the run.

    .venv/bin/python experiments/grader_baselines/tta_rescore.py RUN_DIR [RUN_DIR ...]

(RUN_DIR: a run folder or a committed copy of one; its classifier checkpoint must still
be in the stage cache.)

Prints one JSON line per run and setting: tta false, tta true (both with the thresholds
refitted on validation), then tta false with the thresholds 0.5, 1.5, 2.5, 3.5 (`fitted`
false: what the fitting adds over rounding the regressed or expected grade).
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
    checkpoint = Path(results["stages"].get("classifier", {}).get("path", ""))
    if not checkpoint.is_file():
        raise SystemExit(
            f"{run / 'results.json'}: stages.classifier.path {str(checkpoint)!r} is not a file "
            "(a run without a classifier, or its stage cache was removed)"
        )
    data = prepare_data(cfg.data, StageStore(cfg.paths.cache_dir), set_configs(cfg, "train_sets"))
    return checkpoint, _datamodule(cfg, data, RebalancePlan.make(["none"], None, "total", {}), None)


def rescore(run: Path) -> list[dict]:
    checkpoint, dm = finished_run(run)
    rows = []
    for tta, fitted in ((False, True), (True, True), (False, False)):
        model = load_classifier(checkpoint)
        if not fitted and model.hparams.head not in THRESHOLDED:
            continue  # the classification head has no thresholds
        model.hparams.tta = tta
        model.hparams.fit_thresholds = fitted
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
                "val/qwk": round(val["val/qwk"], 4),
                **{f"test/{k}": round(test[f"test/{k}"], 4) for k in KEYS},
                "thresholds": [round(t, 3) for t in model.thresholds.tolist()],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":  # the cache's worker processes re-import this module
    for folder in sys.argv[1:]:
        rescore(Path(folder))
