"""Messidor-2 with the adjudicated grades (Krause et al.) or the common re-export of them."""

from __future__ import annotations

import csv
from pathlib import Path

from drvae.data.readers.common import ImageFinder, UniqueIds, keep, parse_grade, read_csv_rows
from drvae.data.records import DataError, ProblemLog, ReadResult, Record

# (image column, grade column) of each known schema; both carry `adjudicated_gradable`.
SCHEMAS = (("image_id", "adjudicated_dr_grade"), ("id_code", "diagnosis"))


def _header(path: Path) -> set[str]:
    """The names in a CSV's first non-blank row (as `read_csv_rows` finds it), or none."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        try:
            row = next((r for r in csv.reader(f) if any(c.strip() for c in r)), [])
        except csv.Error:  # not a CSV: not the grades
            return set()
    return {h.strip() for h in row}


def _find_labels(root: Path) -> tuple[Path, tuple[str, str]]:
    """The first CSV in `root` whose header matches a known schema."""
    for path in sorted(root.glob("*.csv")):
        header = _header(path)
        for schema in SCHEMAS:
            if {*schema, "adjudicated_gradable"} <= header:
                return path, schema
    expected = " or ".join(f"{a},{b},adjudicated_dme,adjudicated_gradable" for a, b in SCHEMAS)
    raise DataError(
        f"{root}: no Messidor-2 grades CSV found; expected a .csv with columns {expected}"
    )


def read_messidor2(root: Path, log: ProblemLog) -> ReadResult:
    """Ungradable images (adjudicated_gradable = 0) are excluded and counted.

    Messidor-2 ships no patient ids in this CSV, so each image is its own patient.
    """
    labels, (image_col, grade_col) = _find_labels(root)
    finder = ImageFinder(root / "IMAGES", root)
    result = ReadResult([])
    ids = UniqueIds(log)
    for origin, row in read_csv_rows(labels, [image_col, grade_col, "adjudicated_gradable"], log):
        gradable = row["adjudicated_gradable"]
        if gradable not in ("0", "1", "0.0", "1.0"):
            log.report(origin, f"adjudicated_gradable {gradable!r} is not 0 or 1")
            continue
        if float(gradable) == 0:
            result.excluded["ungradable (adjudicated_gradable=0)"] += 1
            continue
        grade = parse_grade(row[grade_col], origin, log, grade_col)
        path = None if grade is None else finder.find(row[image_col], origin, log)
        if grade is None or path is None:
            continue
        image_id = Path(row[image_col]).stem
        keep(result.records, Record(image_id, path, grade, image_id, "messidor2", origin), ids)
    return result
