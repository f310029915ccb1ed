"""Both eyes of a patient combined from the network's image features by a learnt model (the
last step of several EyePACS 2015 competition solutions: a small model over both eyes'
pooled features), against the fixed mean of the two eyes' regressed grades that
`classifier.model.fellow_eye` gives. A probe on finished regression runs, no retraining.

    .venv/bin/python experiments/grader_baselines/fellow_features.py RUN_DIR [...]

For each run, the classifier's pooled features (the input of its head) and regressed grade
are computed once for every training, validation and test image, unaugmented. Each rule of
`RULES` maps an eye and its fellow eye (its own where the fellow eye is not in the split) to a
grade score: a ridge regression on standardised features, fitted either on the training
images (their features come from a network that saw them, as those solutions did; the
penalty is chosen on validation MSE) or on the validation images (5-fold cross-fitted, penalty
by internal cross-validation), or a one-hidden-layer network fitted on the training images.
Grade thresholds are fitted on validation predictions no rule was fitted on. Prints one JSON
line per run and rule (`ensemble.graded`'s metrics), each with its paired bootstrap
difference from the mean rule on the same test images (`against_mean`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from ensemble import graded, paired_delta  # this folder: the script's directory is on sys.path
from sklearn.base import RegressorMixin
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import cross_val_predict
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tta_rescore import finished_run

from drvae.data.dataset import FundusDataModule
from drvae.models.checkpoints import load_classifier
from drvae.models.classifier import GradeClassifier
from drvae.models.fellow_eye import with_fellow

ALPHAS = np.logspace(-1, 5, 13)
SPLITS = ("train", "val", "test")
Split = dict[str, np.ndarray]  # features (N, F), score (N,), grade (N,), fellow (N,)
Inputs = Callable[[Split], np.ndarray]  # a split -> (N, F') inputs of a rule
SplitInputs = dict[str, np.ndarray]  # split name -> that split's inputs
Data = dict[str, Split]  # split name -> its features, scores, grades and fellows
RULES: dict[str, tuple[Inputs, str]] = {  # name -> (inputs, fitted on)
    "ridge(own features), train": (lambda s: s["features"], "train"),
    "ridge(own, fellow features), train": (lambda s: _paired(s), "train"),
    "ridge(own, fellow features), val": (lambda s: _paired(s), "val"),
    "mlp(own, fellow features), train": (lambda s: _paired(s), "train-mlp"),
}


def _paired(split: Split) -> np.ndarray:
    fellow = torch.as_tensor(split["fellow"])
    other = with_fellow(torch.as_tensor(split["features"]), fellow, 1.0).numpy()
    return np.c_[split["features"], other]


def split_outputs(model: GradeClassifier, dm: FundusDataModule, split: str) -> Split:
    """The head's input (pooled features) and output (regressed grade) for every image of
    `split`, in loader order, with the position of each image's fellow eye."""
    captured: list[torch.Tensor] = []
    hook = model.net.get_classifier().register_forward_hook(
        lambda module, inputs, output: captured.append(inputs[0].float())
    )
    loader = dm._loader(dm.dataset(split))
    with torch.inference_mode():
        parts = [(model.evaluate(x)[:, 0].float(), y) for x, y in loader]
    hook.remove()
    scores, grades = (torch.cat(p).numpy() for p in zip(*parts, strict=True))
    features = torch.cat(captured).numpy()
    return {
        "features": features,
        "score": scores,
        "grade": grades,
        "fellow": dm.fellow_index(split),
    }


def chosen_on_val(
    estimator: Callable[[float], RegressorMixin],
    penalties: Iterable[float],
    x: SplitInputs,
    data: Data,
) -> tuple[np.ndarray, np.ndarray, float]:
    """`estimator(penalty)` on standardised inputs, fitted on the training images for each
    penalty; the one with the lowest validation MSE: its validation and test predictions, and
    its penalty."""
    fits = {}
    for penalty in penalties:
        model = make_pipeline(StandardScaler(), estimator(penalty))
        model.fit(x["train"], data["train"]["grade"])
        val = model.predict(x["val"])
        fits[penalty] = mean_squared_error(data["val"]["grade"], val), val, model.predict(x["test"])
    best = min(fits, key=lambda p: fits[p][0])
    return fits[best][1], fits[best][2], best


def ridge_on_train(x: SplitInputs, data: Data) -> tuple[np.ndarray, np.ndarray, float]:
    return chosen_on_val(lambda alpha: Ridge(alpha=alpha), ALPHAS, x, data)


def mlp_on_train(x: SplitInputs, data: Data) -> tuple[np.ndarray, np.ndarray, float]:
    """One hidden layer of 64 units, early stopping on 10% of the training images."""
    return chosen_on_val(
        lambda alpha: MLPRegressor(
            hidden_layer_sizes=(64,), alpha=alpha, early_stopping=True, max_iter=300, random_state=0
        ),
        (1e-2, 1.0, 10.0),
        x,
        data,
    )


def ridge_on_val(x: SplitInputs, data: Data) -> tuple[np.ndarray, np.ndarray, float]:
    """A ridge fitted on the validation images: 5-fold cross-fitted validation predictions
    (for the thresholds), test predictions from the fit on all of them, and its penalty."""
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    val = cross_val_predict(model, x["val"], data["val"]["grade"], cv=5)
    model.fit(x["val"], data["val"]["grade"])
    return val, model.predict(x["test"]), float(model[-1].alpha_)


FITS = {"train": ridge_on_train, "val": ridge_on_val, "train-mlp": mlp_on_train}


def combined(run: Path) -> list[dict]:
    checkpoint, dm = finished_run(run)
    model = load_classifier(checkpoint).eval()
    model.hparams.tta = False
    if model.hparams.head != "regression":
        raise SystemExit(f"{run}: classifier.model.head is {model.hparams.head!r}, not regression")
    dm.setup("test")
    data = {split: split_outputs(model, dm, split) for split in SPLITS}
    ids = {split: [dm.cache.records[i].image_id for i in dm.indices(split)] for split in SPLITS}

    baseline: list[torch.Tensor] = []  # the mean rule's test grade scores
    rows: list[dict] = []

    def scored(rule: str, val: np.ndarray, test: np.ndarray, extra: dict) -> None:
        summary, probs, grades = graded(
            (ids["val"], val.astype(np.float32), data["val"]["grade"]),
            (ids["test"], test.astype(np.float32), data["test"]["grade"]),
        )
        if baseline:
            extra["against_mean"] = paired_delta(probs, baseline[0], grades.numpy())
        else:
            baseline.append(probs)
        rows.append({"run": str(run), "rule": rule, **extra, **summary})
        print(json.dumps(rows[-1]), flush=True)

    fellow = {s: torch.as_tensor(data[s]["fellow"]) for s in SPLITS}
    mean = {
        s: with_fellow(torch.as_tensor(data[s]["score"])[:, None], fellow[s], 0.5)[:, 0]
        for s in SPLITS
    }
    scored("mean", mean["val"].numpy(), mean["test"].numpy(), {})
    scored("own", data["val"]["score"], data["test"]["score"], {})
    for name, (inputs, fitted) in RULES.items():
        x = {split: inputs(data[split]) for split in SPLITS}
        val, test, alpha = FITS[fitted](x, data)
        scored(name, val, test, {"alpha": round(float(alpha), 3), "n_inputs": x["val"].shape[1]})
    return rows


if __name__ == "__main__":  # the cache's worker processes re-import this module
    for folder in sys.argv[1:]:
        combined(Path(folder))
