"""Average the regressed grade of several finished runs' classifiers (the competition
solutions' last lever) and score the mean like one regression grader: thresholds fitted on
the validation images to maximise QWK, then the test split.

    .venv/bin/python experiments/grader_baselines/ensemble.py [--tta] OUT_DIR RUN_DIR RUN_DIR [...]

Every RUN_DIR must be a regression-head run on the same dataset and split (its classifier
checkpoint still in the stage cache); each is fed its own preprocessing and input size.
Writes OUT_DIR/test_predictions.csv (the ensemble's, same format as a run's) and
OUT_DIR/ensemble.json: each member's and the ensemble's validation QWK and test metrics
(drvae's own `grading_metrics`), and the ensemble's paired bootstrap difference (95% CI,
1,000 resamples of the test images, as `drvae-report`) against the member with the best
validation QWK: the single model one would have kept without the ensemble. With `--tta`
every member's outputs are first averaged over the 8 flips and quarter turns of each image
(`classifier.model.tta=true`), members and ensemble alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tta_rescore import finished_run  # this folder: the script's own directory is on sys.path

from drvae.atomic import write_json
from drvae.data.dataset import FundusDataModule
from drvae.metrics.grading import grading_metrics
from drvae.metrics.thresholds import fit_thresholds
from drvae.models.checkpoints import load_classifier
from drvae.models.grading_heads import grade_scores
from drvae.report.stats import Bootstrap, confusion_counts, confusion_metrics
from drvae.run_folder import write_predictions

KEYS = (
    "qwk",
    "balanced_accuracy",
    "referable_sensitivity",
    "referable_specificity",
    "referable_auroc",
    "referable_sensitivity_at_spec80",
)
DELTAS = ("test/qwk", "test/balanced_accuracy", "test/referable_sensitivity")
Scores = dict[str, tuple[list[str], np.ndarray, np.ndarray]]  # split -> (ids, scores, grades)


def member_scores(run: Path, tta: bool) -> Scores:
    """The run's classifier's regressed grade on every validation and test image."""
    return checkpoint_scores(run, *finished_run(run), tta)


def checkpoint_scores(run: Path, checkpoint: Path, dm: FundusDataModule, tta: bool) -> Scores:
    """`member_scores` for a run whose checkpoint and data (`finished_run`) are at hand."""
    model = load_classifier(checkpoint).eval()
    model.hparams.tta = tta
    if model.hparams.head != "regression":
        raise SystemExit(f"{run}: classifier.model.head is {model.hparams.head!r}, not regression")
    dm.setup("test")
    out = {}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        with torch.inference_mode():
            parts = [(model.evaluate(x)[:, 0].float(), y) for x, y in loader]
        scores, grades = (torch.cat(p).numpy() for p in zip(*parts, strict=True))
        ids = [dm.cache.records[i].image_id for i in dm.indices(split)]
        out[split] = ids, scores, grades
    return out


def graded(val: tuple, test: tuple) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Thresholds fitted on `val`'s scores; the metrics, and test's (N, 5) scores, (N,) grades."""
    thresholds = torch.tensor(fit_thresholds(val[1], val[2]))
    scored = {}
    for split, (_, scores, grades) in (("val", val), ("test", test)):
        probs, _ = grade_scores("regression", torch.as_tensor(scores)[:, None], thresholds)
        metrics = grading_metrics("")
        metrics.update(probs, torch.as_tensor(grades))
        computed = metrics.compute()
        scored[split] = probs, {k: round(float(computed[k]), 4) for k in KEYS}
    test_probs, test_metrics = scored["test"]
    summary = {"val/qwk": scored["val"][1]["qwk"], **{f"test/{k}": test_metrics[k] for k in KEYS}}
    summary["thresholds"] = [round(t, 3) for t in thresholds.tolist()]
    return summary, test_probs, torch.as_tensor(test[2])


def paired_delta(ensemble: torch.Tensor, single: torch.Tensor, grades: np.ndarray) -> dict:
    """Ensemble minus single model on the test images, and its 95% interval on the same
    bootstrap resamples of them."""

    def differences(sample: np.ndarray) -> dict[str, np.ndarray]:
        a, b = (
            confusion_metrics(confusion_counts(grades, p.argmax(1).numpy(), sample, p.shape[1]))
            for p in (ensemble, single)
        )
        return {m: a[m] - b[m] for m in DELTAS}

    whole = differences(np.arange(len(grades))[None])  # the test set itself, one "resample"
    resampled = differences(Bootstrap().index(len(grades)))
    return {
        m: {
            "delta": round(float(whole[m][0]), 4),
            "ci": [round(float(v), 4) for v in np.nanpercentile(resampled[m], [2.5, 97.5])],
        }
        for m in DELTAS
    }


def main(out_dir: Path, runs: list[Path], tta: bool = False) -> None:
    if (out_dir / "ensemble.json").exists():  # never overwrite an earlier ensemble's outputs
        raise SystemExit(f"{out_dir / 'ensemble.json'} exists: choose another OUT_DIR")
    members = {str(run): member_scores(run, tta) for run in runs}
    first = next(iter(members.values()))
    for name, scores in members.items():
        for split in ("val", "test"):
            if scores[split][0] != first[split][0]:
                raise SystemExit(f"{name}: its {split} images differ from {runs[0]}'s")
    rows, probs = {}, {}
    for name, s in members.items():
        rows[name], probs[name], _ = graded(s["val"], s["test"])
        print(json.dumps({"member": name, **rows[name]}), flush=True)
    mean = {}
    for split, (ids, _, grades_) in first.items():
        mean[split] = ids, np.mean([m[split][1] for m in members.values()], axis=0), grades_
    summary, ensemble_probs, grades = graded(mean["val"], mean["test"])
    best = max(rows, key=lambda name: rows[name]["val/qwk"])
    summary["against"] = best
    summary["delta_ci"] = paired_delta(ensemble_probs, probs[best], grades.numpy())
    print(json.dumps({"ensemble": list(members), **summary}), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "test_predictions.csv", mean["test"][0], ensemble_probs, grades)
    report = {"tta": tta, "members": rows, "ensemble": summary}
    write_json(out_dir / "ensemble.json", report)


if __name__ == "__main__":  # the cache's worker processes re-import this module
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tta", action="store_true", help="average over 8 flips/quarter turns")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    main(args.out_dir, args.runs, args.tta)
