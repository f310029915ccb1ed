"""RetinaMNIST (MedMNIST v2, from DeepDRiD): `retinamnist.npz` with its official splits."""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from drvae.data.readers.common import parse_grade
from drvae.data.records import DataError, ProblemLog, ReadResult, Record

PARTS = ("train", "val", "test")
# What numpy raises on a damaged file or member: a bad zip, bad deflate data, a truncated or
# unparseable array header (the last through `tokenize`), a pickled object array.
DAMAGED = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
)


def _find_npz(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(root.glob("retinamnist*.npz"))
    if not found:
        raise DataError(f"{root}: no retinamnist*.npz found")
    return found[0]


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        npz = np.load(path)
    except DAMAGED as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: one array (.npy), not an .npz archive of images and labels")
    return npz


def _array(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    """One array of the archive; a damaged or pickled (object) one is a DataError."""
    try:
        return npz[key]
    except DAMAGED as error:
        raise DataError(f"{path}: cannot read {key} ({error}); expected a numeric array") from None


def _load_part(npz: np.lib.npyio.NpzFile, path: Path, part: str) -> np.ndarray:
    """A part's labels, checked against its images: uint8 (n, H, W[, 3]) and n numbers."""
    missing = [key for key in (f"{part}_images", f"{part}_labels") if key not in npz.files]
    if missing:
        raise DataError(
            f"{path}: missing array(s) {missing}; expected {part}_images and {part}_labels"
        )
    images, labels = _array(npz, path, f"{part}_images"), _array(npz, path, f"{part}_labels")
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)
    if images.dtype != np.uint8 or not shape_ok or 0 in images.shape[1:]:
        raise DataError(
            f"{path}: {part}_images is {images.dtype} {images.shape}; "
            "expected uint8 (n, H, W) or (n, H, W, 3)"
        )
    if labels.dtype.kind not in "iuf" or labels.ndim == 0 or labels.shape[1:] not in ((), (1,)):
        raise DataError(
            f"{path}: {part}_labels is {labels.dtype} {labels.shape}; "
            "expected numbers, (n,) or (n, 1)"
        )
    labels = labels.reshape(-1)
    if len(images) != len(labels):
        raise DataError(
            f"{path}: {part}_images has shape {images.shape} but {part}_labels has "
            f"{len(labels)} labels; expected (n, H, W[, 3]) and n labels"
        )
    return labels


def read_retinamnist(root: Path, log: ProblemLog) -> ReadResult:
    path = _find_npz(root)
    npz = _open(path)
    records: list[Record] = []
    with npz:
        for part in PARTS:
            labels = _load_part(npz, path, part)
            for i, label in enumerate(labels):
                origin = f"{path}:{part}_labels[{i}]"
                grade = parse_grade(str(label), origin, log, "label")
                if grade is None:
                    continue
                image_id = f"{part}/{i}"
                records.append(
                    Record(
                        image_id,
                        path,
                        grade,
                        image_id,
                        "retinamnist",
                        origin,
                        split=part,
                        array_key=f"{part}_images",
                        index=i,
                    )
                )
    return ReadResult(records)
