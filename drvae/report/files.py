"""Write the report's files atomically: readers (and a rerun of the report) see the old
file or the new one, never half of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], None]) -> str:
    """`write(tmp)` to a temporary name beside `path` (same suffix, for writers that read
    the format from it), then rename it over `path`; returns the file name."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.name
