"""DDR: `train.txt` / `valid.txt` / `test.txt` with lines `<file> <grade>`; grade 5 ungradable."""

from __future__ import annotations

from pathlib import Path

from drvae.data.readers.common import ImageFinder, UniqueIds, keep, parse_grade, require_file
from drvae.data.records import DataError, ProblemLog, ReadResult, Record

PARTS = {"train": "train", "valid": "val", "test": "test"}
UNGRADABLE = "5"


def _find_release(root: Path) -> Path:
    for candidate in (root, root / "DR_grading"):
        if (candidate / "train.txt").is_file():
            return candidate
    raise DataError(
        f"{root}: not a DDR grading folder; expected train.txt, valid.txt, test.txt "
        "and the folders train/, valid/, test/ (in it or in DR_grading/)"
    )


def read_ddr(root: Path, log: ProblemLog) -> ReadResult:
    release = _find_release(root)
    result = ReadResult([])
    ids = UniqueIds(log)
    for part, split in PARTS.items():
        listing = require_file(release / f"{part}.txt", f"DDR {part} list")
        finder = ImageFinder(release / part)
        try:
            text = listing.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise DataError(f"{listing}: not UTF-8 text ({error}); expected a UTF-8 list") from None
        # split("\n"), not splitlines(): that also breaks at \f, \x1c, \x85, \u2028..., which
        # editors do not count as line breaks, and the line numbers reported would be off
        for number, line in enumerate(text.split("\n"), start=1):
            origin = f"{listing}:{number}"
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                log.report(origin, f"expected '<file> <grade>', got {line.strip()!r}")
                continue
            name, text = fields
            if text == UNGRADABLE:
                result.excluded["ungradable (grade 5)"] += 1
                continue
            grade = parse_grade(text, origin, log)
            path = None if grade is None else finder.find(name, origin, log)
            if grade is None or path is None:
                continue
            record = Record(path.stem, path, grade, path.stem, "ddr", origin, split=split)
            keep(result.records, record, ids)
    return result
