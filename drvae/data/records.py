"""The one record type every dataset reader yields, and the errors readers raise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

NUM_GRADES = 5
GRADE_NAMES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative")
SPLITS = ("train", "val", "test")

Eye = Literal["left", "right"] | None
OnError = Literal["raise", "skip"]


class DataError(ValueError):
    """Bad input: the message names the file (and row) and says what was expected."""


SHOWN_PROBLEMS = 10  # an error lists this many problems, then a count of the rest


class NoUsableImages(DataError):
    """Every row was bad or excluded: the message lists the problems (the first ten, then a
    count); `problems` and `excluded` keep them all for a caller that reports them itself."""

    def __init__(
        self, root: Path, source: str, problems: list[Problem], excluded: Counter[str]
    ) -> None:
        self.problems, self.excluded = problems, excluded
        lines = [f"{root}: no usable images found for source {source!r}"]
        lines[0] += f" ({len(problems)} problem(s), excluded {dict(excluded)})"
        lines += [f"  {p}" for p in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Record:
    """One graded fundus image.

    `path` is the image file, or the array container (.npz) when `array_key` is set, in which
    case the image is `np.load(path)[array_key][index]`. `origin` says where the record came
    from ("train.csv:17") so that every later error can point the user back at it.
    """

    image_id: str
    path: Path
    grade: int
    patient: str
    source: str
    origin: str
    eye: Eye = None
    split: str | None = None  # the dataset's official split, when it has one
    array_key: str | None = None
    index: int | None = None
    synthetic: bool = False


def fellow_eyes(records: Sequence[Record]) -> np.ndarray:
    """(N,) for each record, the position in `records` of the same patient's other eye (same
    source and patient, the other of left and right); -1 where it is not among them or the
    record has no eye (a source without eyes, e.g. APTOS)."""
    position = {(r.source, r.patient, r.eye): i for i, r in enumerate(records) if r.eye}
    other = {"left": "right", "right": "left"}
    return np.array(
        [position.get((r.source, r.patient, other[r.eye]), -1) if r.eye else -1 for r in records],
        dtype=np.int64,
    )


@dataclass(frozen=True, slots=True)
class Problem:
    """A row that could not be read, and why."""

    origin: str
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


@dataclass
class ReadResult:
    """What a reader found: the records, the rows skipped as bad input, the rows excluded by
    the dataset's own rules (e.g. ungradable images) with a count per reason."""

    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)

    def per_grade(self) -> dict[int, int]:
        counts = Counter(r.grade for r in self.records)
        return {g: counts.get(g, 0) for g in range(NUM_GRADES)}


class ProblemLog:
    """Collects bad rows: raises on the first one (`on_error="raise"`) or records it."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.problems: list[Problem] = []

    def report(self, origin: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{origin}: {message}")
        self.problems.append(Problem(origin, message))
