"""RetinaMNIST (MedMNIST v2, from DeepDRiD): `retinamnist.npz` with its official splits."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from drvae.data.readers.common import parse_grade
from drvae.data.records import DataError, ProblemLog, ReadResult, Record

PARTS = ("train", "val", "test")


def _find_npz(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(root.glob("retinamnist*.npz"))
    if not found:
        raise DataError(f"{root}: no retinamnist*.npz found")
    return found[0]


def _load_part(npz: np.lib.npyio.NpzFile, path: Path, part: str) -> tuple[tuple, np.ndarray]:
    """The shape of a part's images and its labels, checked against each other."""
    missing = [key for key in (f"{part}_images", f"{part}_labels") if key not in npz.files]
    if missing:
        raise DataError(
            f"{path}: missing array(s) {missing}; expected {part}_images and {part}_labels"
        )
    images, labels = npz[f"{part}_images"], npz[f"{part}_labels"].reshape(-1)
    if images.ndim not in (3, 4) or len(images) != len(labels):
        raise DataError(
            f"{path}: {part}_images has shape {images.shape} but {part}_labels has "
            f"{len(labels)} labels; expected (n, H, W[, 3]) and n labels"
        )
    return images.shape, labels


def read_retinamnist(root: Path, log: ProblemLog) -> ReadResult:
    path = _find_npz(root)
    try:
        npz = np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    records: list[Record] = []
    with npz:
        for part in PARTS:
            _, labels = _load_part(npz, path, part)
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
