"""Readers for the two Kaggle competitions: APTOS 2019 and EyePACS (Kaggle 2015)."""

from __future__ import annotations

import re
from pathlib import Path

from drvae.data.readers.common import ImageFinder, UniqueIds, keep, parse_grade, read_csv_rows
from drvae.data.records import ProblemLog, ReadResult, Record

EYEPACS_NAME = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$")


def read_aptos(root: Path, log: ProblemLog) -> ReadResult:
    """APTOS 2019: `train.csv` (id_code,diagnosis) + `train_images/<id_code>.png|.jpg|.jpeg`.

    APTOS has no patient ids, so each image is its own patient.
    """
    finder = ImageFinder(root / "train_images")
    records: list[Record] = []
    ids = UniqueIds(log)
    for origin, row in read_csv_rows(root / "train.csv", ["id_code", "diagnosis"], log):
        grade = parse_grade(row["diagnosis"], origin, log, "diagnosis")
        path = None if grade is None else finder.find(row["id_code"], origin, log)
        if grade is None or path is None:
            continue  # one problem per row: its first fault
        image_id = row["id_code"]
        record = Record(image_id, path, grade, image_id, "aptos", origin)
        keep(records, record, ids)
    return ReadResult(records)


def read_eyepacs(root: Path, log: ProblemLog) -> ReadResult:
    """EyePACS: `trainLabels.csv` (image,level) + `train/<image>.jpeg`, image = patient_eye."""
    finder = ImageFinder(root / "train")
    records: list[Record] = []
    ids = UniqueIds(log)
    for origin, row in read_csv_rows(root / "trainLabels.csv", ["image", "level"], log):
        match = EYEPACS_NAME.match(row["image"])
        if match is None:
            log.report(origin, f"image {row['image']!r} is not <patient>_<left|right>")
            continue
        grade = parse_grade(row["level"], origin, log, "level")
        path = None if grade is None else finder.find(row["image"], origin, log)
        if grade is None or path is None:
            continue
        eye = match["eye"]
        record = Record(row["image"], path, grade, match["patient"], "eyepacs", origin, eye=eye)
        keep(records, record, ids)
    return ReadResult(records)
