"""Build a folder once, atomically, under a file lock.

The folder is built under a temporary name (`<name>.tmp-<pid>`) and renamed into place only
when complete, so a crash never leaves a folder that looks finished. Concurrent processes
wanting the same folder wait on `<name>.lock` instead of building it twice; leftovers of a
killed build are removed under the lock (a killed process runs no clean-up). Every file's
checksum is recorded before the rename (`drvae.integrity`), and a finished folder whose files
no longer match (truncated, overwritten, deleted) is rebuilt, never used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from drvae.integrity import corruption, write_checksums


def build_once(folder: Path, done: Callable[[Path], bool], build: Callable[[Path], None]) -> bool:
    """Make sure `folder` is finished (`done(folder)`), calling `build(tmp)` if it is not.

    Returns True when the folder was already there (reused), False when this call built it.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if done(folder):
            problem = corruption(folder)
            if problem is None:
                return True
            print(f"drvae: {folder} is corrupt ({problem}); rebuilding it", file=sys.stderr)
        for leftover in [folder, *folder.parent.glob(f"{folder.name}.tmp-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        try:
            build(tmp)
            write_checksums(tmp)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return False


def write_atomic(path: Path, write: Callable[[Path], None]) -> str:
    """`write(tmp)` to a temporary name beside `path` (same suffix, for writers that read
    the format from it), then rename it over `path`: readers (and a rerun) see the old file
    or the new one, never half of one. Returns the file name."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.name


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (`write_atomic`)."""
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))
