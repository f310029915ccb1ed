"""Shared pieces of the dataset readers: quirk-tolerant CSV rows, grades, safe image paths."""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from drvae.data.records import NUM_GRADES, DataError, ProblemLog, Record

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def read_csv_rows(
    path: Path, required: Sequence[str], log: ProblemLog
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (origin, row) for each non-blank row, origin being "file:line" of its first line.

    Real label files have quirks: a byte-order mark, headers with trailing spaces, trailing
    empty columns and blank lines. Headers and cells are stripped; empty header cells dropped.
    A row with non-empty cells beyond the header is reported, not guessed at.
    """
    require_file(path, "label file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            names = _header(path, reader, required)
            rows, start = 0, reader.line_num + 1
            for row in reader:
                origin, start = f"{path}:{start}", reader.line_num + 1
                if any(c.strip() for c in row):
                    rows += 1
                    cells = _cells(names, row, origin, log)
                    if cells is not None:
                        yield origin, cells
            if not rows:
                raise DataError(f"{path}: no rows after the header; expected one row per image")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error}); expected a UTF-8 CSV") from None
        except csv.Error as error:
            raise DataError(
                f"{path}:{reader.line_num}: not a readable CSV row ({error}); "
                "expected every quote closed"
            ) from None


def _header(path: Path, reader: Iterator[list[str]], required: Sequence[str]) -> list[str]:
    """The stripped names of the first non-blank row, checked to hold each required column once."""
    header = next((row for row in reader if any(c.strip() for c in row)), None)
    if header is None:
        raise DataError(f"{path}: the file is empty; expected a header with {list(required)}")
    names = [h.strip() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        found = [n for n in names if n]
        raise DataError(f"{path}: missing column(s) {missing}; found {found}")
    repeated = [c for c in required if names.count(c) > 1]
    if repeated:
        raise DataError(f"{path}: column(s) {repeated} appear more than once; expected each once")
    return names


def _cells(names: list[str], row: list[str], origin: str, log: ProblemLog) -> dict[str, str] | None:
    """A row's stripped cells by column name; None after reporting cells beyond the header."""
    extra = [c for c in row[len(names) :] if c.strip()]
    if extra:
        log.report(
            origin,
            f"cell(s) {extra} beyond the header's {len(names)} columns; "
            "expected a comma inside a cell to be quoted",
        )
        return None
    row = row + [""] * (len(names) - len(row))  # a short row: its missing cells are empty
    return {n: c.strip() for n, c in zip(names, row, strict=False) if n}


def parse_grade(text: str, origin: str, log: ProblemLog, column: str = "grade") -> int | None:
    """A grade 0-4 from a cell, or None after reporting why it is not one."""
    try:
        value = float(text)
    except ValueError:
        log.report(origin, f"{column} {text!r} is not a number; expected an integer 0-4")
        return None
    if not value.is_integer() or not 0 <= value < NUM_GRADES:
        log.report(origin, f"{column} {text!r} is outside 0-4; expected an integer 0-4")
        return None
    return int(value)


def safe_relative(name: str, origin: str, log: ProblemLog) -> PurePosixPath | None:
    """An image name as a path that stays inside the dataset root, or None after reporting."""
    if not name:
        log.report(origin, "image name is empty; expected a file name")
        return None
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or PureWindowsPath(name).drive:
        log.report(origin, f"image name {name!r} escapes the dataset root")
        return None
    return rel


class ImageDir:
    """A folder's image files by name and by stem (case-insensitive), listed once.

    Listing a folder once is far cheaper than a `stat` per row on 88k-image datasets.
    """

    def __init__(self, folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.folder = folder
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, list[str]] = {}
        for entry in _entries(folder):
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix in extensions and entry.is_file():
                self.by_name[entry.name.lower()] = entry.name
                stem = os.path.splitext(entry.name)[0].lower()
                self.by_stem.setdefault(stem, []).append(entry.name)

    def find(self, name: str) -> Path | None:
        """The file called `name`; failing that, the file with `name`'s stem and an image
        extension (label files often omit it, or name the .png of a converted .tif)."""
        key = name.lower()
        if key in self.by_name:
            return self.folder / self.by_name[key]
        stem = os.path.splitext(key)[0] if os.path.splitext(key)[1] in IMAGE_EXTENSIONS else key
        matches = self.by_stem.get(stem, [])
        return self.folder / sorted(matches)[0] if matches else None


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """A folder's entries; none where no such folder is, or can be (a NUL, a name too long)."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except ValueError:  # a NUL byte in the path
        return []
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return []
        raise DataError(f"{folder}: cannot list the images ({error.strerror})") from None


class ImageFinder:
    """Finds an image name (possibly with sub-folders) in the first of several folders."""

    def __init__(self, *folders: Path) -> None:
        self.folders = folders
        self._dirs: dict[Path, ImageDir] = {}

    def _dir(self, folder: Path) -> ImageDir:
        if folder not in self._dirs:
            self._dirs[folder] = ImageDir(folder)
        return self._dirs[folder]

    def find(self, name: str, origin: str, log: ProblemLog) -> Path | None:
        rel = safe_relative(name, origin, log)
        if rel is None:
            return None
        for folder in self.folders:
            found = self._dir(folder.joinpath(*rel.parts[:-1])).find(rel.name)
            if found is not None:
                return found
        looked = ", ".join(str(f) for f in self.folders)
        log.report(origin, f"image {name!r} not found in {looked}")
        return None


class UniqueIds:
    """Reports an image read twice, with the row where it was first seen: the same id again, or
    the same file under another name ("a" and "A.png", "sub/a" and "sub\\a")."""

    def __init__(self, log: ProblemLog) -> None:
        self.log = log
        self.ids: dict[str, str] = {}
        self.files: dict[Path, str] = {}

    def add(self, record: Record) -> bool:
        first = self.ids.get(record.image_id)
        if first is not None:
            self.log.report(
                record.origin, f"duplicate image id {record.image_id!r} (first at {first})"
            )
            return False
        first = self.files.get(record.path)
        if first is not None:
            self.log.report(
                record.origin,
                f"duplicate image: {record.image_id!r} is the file {record.path.name!r} "
                f"already read at {first}",
            )
            return False
        self.ids[record.image_id] = self.files[record.path] = record.origin
        return True


def keep(records: list[Record], record: Record, ids: UniqueIds) -> None:
    if ids.add(record):
        records.append(record)
