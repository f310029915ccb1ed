"""Readers for a user's own layout: a CSV with configurable columns, or a folder per grade."""

from __future__ import annotations

import os
from pathlib import Path

from drvae.data.readers.common import (
    IMAGE_EXTENSIONS,
    ImageFinder,
    UniqueIds,
    keep,
    parse_grade,
    read_csv_rows,
)
from drvae.data.records import NUM_GRADES, SPLITS, DataError, ProblemLog, ReadResult, Record

EYES = {"left": "left", "l": "left", "os": "left", "right": "right", "r": "right", "od": "right"}


def read_csv(
    root: Path,
    log: ProblemLog,
    csv: str = "labels.csv",
    image_column: str = "image",
    label_column: str = "grade",
    image_dir: str | None = None,
    patient_column: str | None = None,
    eye_column: str | None = None,
    split_column: str | None = None,
) -> ReadResult:
    """A CSV of image names and grades; images in `image_dir` (default: beside the CSV).

    Optional columns give the patient (else each image is its own patient), the eye
    (left/right, L/R, OS/OD) and an official split (train/val/test).
    """
    labels = root / csv
    finder = ImageFinder(root / image_dir if image_dir else labels.parent)
    optional = [c for c in (patient_column, eye_column, split_column) if c]
    records: list[Record] = []
    ids = UniqueIds(log)
    for origin, row in read_csv_rows(labels, [image_column, label_column, *optional], log):
        grade = parse_grade(row[label_column], origin, log, label_column)
        path = None if grade is None else finder.find(row[image_column], origin, log)
        if grade is None or path is None:
            continue  # one problem per row: its first fault
        eye = EYES.get(row[eye_column].lower(), "?") if eye_column else None
        split = row[split_column].lower() if split_column else None
        if patient_column and not row[patient_column]:
            log.report(origin, f"{patient_column} is empty; expected a patient id")
        elif eye == "?":
            log.report(origin, f"{eye_column} {row[eye_column]!r} is not left/right")
        elif split is not None and split not in SPLITS:
            log.report(origin, f"{split_column} {row[split_column]!r} is not one of {SPLITS}")
        else:
            image_id = row[image_column]
            patient = row[patient_column] if patient_column else image_id
            keep(records, Record(image_id, path, grade, patient, "csv", origin, eye, split), ids)
    return ReadResult(records)


def read_folder(root: Path, log: ProblemLog) -> ReadResult:
    """`root/<grade>/<image>` with one sub-folder per grade, 0 to 4."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    expected = {str(g) for g in range(NUM_GRADES)}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in expected]
    if unknown:
        raise DataError(f"{root}: sub-folders {unknown} are not grades; expected only 0-4")
    records: list[Record] = []
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            path = folder / name
            if name.startswith(".") or path.is_dir():
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                log.report(str(path), f"not an image file; expected one of {IMAGE_EXTENSIONS}")
                continue
            image_id = f"{folder.name}/{name}"
            records.append(Record(image_id, path, int(folder.name), image_id, "folder", str(path)))
    return ReadResult(records)
