"""Reader for the synthetic sets the generate stage writes (see `drvae.data.synthetic`)."""

from __future__ import annotations

import json
from pathlib import Path

from drvae.data.readers.common import ImageFinder, UniqueIds, keep, parse_grade, read_csv_rows
from drvae.data.records import DataError, ProblemLog, ReadResult, Record
from drvae.data.synthetic import MANIFEST, read_manifest


def _promised_images(root: Path) -> object:
    """The image count the manifest promises; a damaged manifest is a DataError."""
    try:
        return read_manifest(root)["n_images"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(
            f"{root / MANIFEST}: damaged manifest ({error!r}); expected a JSON object with "
            "n_images: delete the set to regenerate it"
        ) from None


def read_synthetic(root: Path, log: ProblemLog) -> ReadResult:
    """A synthetic set written by `write_synthetic_set`; each image is its own 'patient'."""
    n_images = _promised_images(root)
    finder = ImageFinder(root / "images")
    records: list[Record] = []
    ids = UniqueIds(log)
    for origin, row in read_csv_rows(root / "labels.csv", ["image_id", "grade"], log):
        grade = parse_grade(row["grade"], origin, log)
        path = None if grade is None else finder.find(row["image_id"], origin, log)
        if grade is None or path is None:
            continue
        image_id = row["image_id"]
        record = Record(image_id, path, grade, image_id, "synthetic", origin, synthetic=True)
        keep(records, record, ids)
    if len(records) + len(log.problems) != n_images:
        raise DataError(
            f"{root / 'labels.csv'}: {len(records)} rows but the manifest says "
            f"{n_images} images; the set is damaged, delete it to regenerate"
        )
    return ReadResult(records)
