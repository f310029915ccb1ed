"""Checksums of a finished folder's files, checked before the folder is trusted again.

`checksums.json` lists every file's size, modification time and SHA-256. A file whose size
differs (truncated) or that is missing is corrupt. Its content is hashed again when it is
small (up to `FULL_HASH_BYTES`) or when its modification time changed, as git's index does:
rehashing a many-GB image cache in every job of a sweep would cost more than the jobs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHECKSUMS = "checksums.json"
FULL_HASH_BYTES = 64 * 2**20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: Path) -> None:
    """Record every file under `folder` in `folder/checksums.json` (call it last)."""
    entries = {}
    for path in _files(folder):
        stat = path.stat()
        entries[path.relative_to(folder).as_posix()] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256_file(path),
        }
    (folder / CHECKSUMS).write_text(json.dumps(entries, indent=1))


def _problem(path: Path, entry: dict[str, Any]) -> str | None:
    if not path.is_file():
        return "missing"
    stat = path.stat()
    if stat.st_size != entry["size"]:
        return f"{stat.st_size} bytes where {entry['size']} were written"
    rehash = stat.st_size <= FULL_HASH_BYTES or stat.st_mtime_ns != entry["mtime_ns"]
    if rehash and sha256_file(path) != entry["sha256"]:
        return "content changed (SHA-256 differs)"
    return None


def corruption(folder: Path) -> str | None:
    """Why `folder`'s files cannot be trusted, or None when they match their checksums."""
    record = folder / CHECKSUMS
    try:
        entries = json.loads(record.read_text())
    except (OSError, ValueError):
        return f"{record} is missing or unreadable"
    for name, entry in entries.items():
        problem = _problem(folder / name, entry)
        if problem:
            return f"{folder / name}: {problem}"
    return None
