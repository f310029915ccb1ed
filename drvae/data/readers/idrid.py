"""IDRiD "B. Disease Grading", in the official release layout, official train/test split kept."""

from __future__ import annotations

from pathlib import Path

from drvae.data.readers.common import ImageFinder, UniqueIds, keep, parse_grade, read_csv_rows
from drvae.data.records import DataError, ProblemLog, ReadResult, Record

IMAGES = "1. Original Images"
LABELS = "2. Groundtruths"
PARTS = {
    "train": ("a. Training Set", "a. IDRiD_Disease Grading_Training Labels.csv"),
    "test": ("b. Testing Set", "b. IDRiD_Disease Grading_Testing Labels.csv"),
}


def _find_release(root: Path) -> Path:
    """The folder holding "1. Original Images": `root` itself or its "B. Disease Grading"."""
    for candidate in (root, root / "B. Disease Grading"):
        if (candidate / IMAGES).is_dir():
            return candidate
    raise DataError(
        f"{root}: not an IDRiD Disease Grading folder; expected '{IMAGES}/' and "
        f"'{LABELS}/' in it or in 'B. Disease Grading/'"
    )


def read_idrid(root: Path, log: ProblemLog) -> ReadResult:
    """Both official parts; ids are prefixed by the part ("test/IDRiD_001") because IDRiD
    numbers its training and testing images from 1 independently."""
    release = _find_release(root)
    records: list[Record] = []
    ids = UniqueIds(log)
    for split, (image_dir, label_file) in PARTS.items():
        finder = ImageFinder(release / IMAGES / image_dir)
        labels = release / LABELS / label_file
        for origin, row in read_csv_rows(labels, ["Image name", "Retinopathy grade"], log):
            grade = parse_grade(row["Retinopathy grade"], origin, log, "Retinopathy grade")
            path = None if grade is None else finder.find(row["Image name"], origin, log)
            if grade is None or path is None:
                continue
            image_id = f"{split}/{path.stem}"
            record = Record(image_id, path, grade, image_id, "idrid", origin, split=split)
            keep(records, record, ids)
    return ReadResult(records)
