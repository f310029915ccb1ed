"""Both eyes of a patient combined by a rule learnt on validation, against the fixed blend of
`classifier.model.fellow_eye` (weight 0.5: the two eyes' mean): is a learnt combination worth
a config option? A probe on finished regression runs, no retraining.

    .venv/bin/python experiments/grader_baselines/fellow_stack.py RUN_DIR [...]

For each run, the regressed grade of every validation and test image (`ensemble.checkpoint_scores`)
is combined with its fellow eye's (its own where the fellow eye is not in the split) by each
rule of `RULES`; the learnt ones are a least-squares fit of the true grade on validation, and
their grade thresholds are fitted on 5-fold cross-fitted validation predictions, so that no
threshold sees a prediction of its own image. Prints one JSON line per run and rule: the
validation QWK the thresholds were fitted on and the test metrics (`ensemble.graded`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ensemble import checkpoint_scores, graded  # this folder: the script's directory is on sys.path
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_predict
from tta_rescore import finished_run

from drvae.models.fellow_eye import with_fellow

Features = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (own, fellow's) -> (N, F)
RULES: dict[str, tuple[Features, bool]] = {  # name -> (features, learnt)
    "own": (lambda own, other: own[:, None], False),
    "mean": (lambda own, other: ((own + other) / 2)[:, None], False),
    "linear(own, fellow)": (lambda own, other: np.c_[own, other], True),
    "linear(own, fellow, max)": (lambda a, b: np.c_[a, b, np.maximum(a, b)], True),
}


def combined(run: Path) -> list[dict]:
    checkpoint, dm = finished_run(run)
    inputs = {}
    for split, (ids, own, grades) in checkpoint_scores(run, checkpoint, dm, tta=False).items():
        fellow = torch.as_tensor(dm.fellow_index(split))
        other = with_fellow(torch.as_tensor(own)[:, None], fellow, 1.0)[:, 0].numpy()
        inputs[split] = ids, own, other, grades  # other: the fellow eye's, else its own
    rows = []
    for name, (features, learnt) in RULES.items():
        (v_ids, v_own, v_other, v_grades), (t_ids, t_own, t_other, t_grades) = inputs.values()
        x_val, x_test = features(v_own, v_other), features(t_own, t_other)
        if learnt:
            model = LinearRegression().fit(x_val, v_grades)
            val_pred = cross_val_predict(LinearRegression(), x_val, v_grades, cv=5)
            test_pred = model.predict(x_test)
            extra = {"coefficients": [round(float(c), 3) for c in model.coef_]}
        else:
            val_pred, test_pred, extra = x_val[:, 0], x_test[:, 0], {}
        val_pred, test_pred = (np.asarray(p, dtype=np.float32) for p in (val_pred, test_pred))
        summary, _, _ = graded((v_ids, val_pred, v_grades), (t_ids, test_pred, t_grades))
        rows.append({"run": str(run), "rule": name, **extra, **summary})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":  # the cache's worker processes re-import this module
    for folder in sys.argv[1:]:
        combined(Path(folder))
