"""Dataset readers: every public DR dataset in its published layout, as one record type."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drvae.data.readers.ddr import read_ddr
from drvae.data.readers.generic import read_csv, read_folder
from drvae.data.readers.idrid import read_idrid
from drvae.data.readers.kaggle import read_aptos, read_eyepacs
from drvae.data.readers.messidor2 import read_messidor2
from drvae.data.readers.retinamnist import read_retinamnist
from drvae.data.readers.synthetic import read_synthetic
from drvae.data.records import DataError, NoUsableImages, OnError, ProblemLog, ReadResult

READERS: dict[str, Callable[..., ReadResult]] = {
    "aptos": read_aptos,
    "eyepacs": read_eyepacs,
    "idrid": read_idrid,
    "messidor2": read_messidor2,
    "ddr": read_ddr,
    "retinamnist": read_retinamnist,
    "csv": read_csv,
    "folder": read_folder,
    "synthetic": read_synthetic,
}


def _option_names(reader: Callable[..., ReadResult]) -> list[str]:
    return list(inspect.signature(reader).parameters)[2:]


def read_dataset(
    source: str, root: str | Path, on_error: OnError = "raise", **options: Any
) -> ReadResult:
    """Read a dataset; bad rows raise `DataError`, or with `on_error="skip"` are listed in
    `ReadResult.problems`. An empty result is always an error: nothing to train on."""
    if source not in READERS:
        raise DataError(f"unknown dataset source {source!r}; expected one of {sorted(READERS)}")
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise DataError(f"{root}: dataset root not found")
    log = ProblemLog(on_error)
    reader = READERS[source]
    try:
        inspect.signature(reader).bind(root, log, **options)
    except TypeError as error:
        raise DataError(f"{source} reader: {error}; it takes {_option_names(reader)}") from None
    result = reader(root, log, **options)
    result.problems = log.problems  # the readers report through the log only
    if not result.records:
        raise NoUsableImages(root, source, result.problems, result.excluded)
    return result


__all__ = ["READERS", "read_dataset"]
