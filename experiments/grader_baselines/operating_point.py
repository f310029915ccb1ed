"""Referable DR at the screening operating point, from the per-image test predictions a run
wrote (`test_predictions.csv`): drvae's own metric, for runs that predate it in results.json.

    .venv/bin/python experiments/grader_baselines/operating_point.py CSV [CSV ...]

Prints one JSON line per file: test QWK, referable AUROC (score p2 + p3 + p4) and the best
referable sensitivity on that ROC curve at specificity >= 0.80 (its threshold read off the
same images: a property of the ranking, not a decision the grader made).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from drvae.metrics.grading import grading_metrics
from drvae.run_folder import read_predictions

KEYS = ("qwk", "referable_auroc", "referable_sensitivity_at_spec80")


def operating_point(path: Path) -> dict:
    _, grades, probs = read_predictions(path)
    metrics = grading_metrics("")
    metrics.update(torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(grades))
    computed = metrics.compute()
    return {"predictions": str(path), **{k: round(float(computed[k]), 4) for k in KEYS}}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(json.dumps(operating_point(Path(name))))
