"""The preprocessing cache: every image decoded once into a uint8 array on disk.

A cache folder is named by a key over the dataset's files (names, sizes, mtimes), its labels
and the preprocessing parameters, so any change to either yields a new folder. It is built
in a temporary folder and renamed into place when complete, under a file lock: a crash never
leaves a cache that looks complete, and concurrent jobs wait instead of building it twice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import mmap
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from drvae import __version__
from drvae.atomic import build_once
from drvae.data.preprocess import PreprocessConfig, load_preprocessed
from drvae.data.records import NUM_GRADES, DataError, OnError, Problem, Record
from drvae.data.workers import chunk_size, image_pool

FORMAT_VERSION = 1  # bump when the cached pixels would change for the same key


def mapped_state(images: np.ndarray) -> np.ndarray | tuple:
    """An array as pickling should send it: a whole memory-mapped file as (path, offset,
    shape, dtype), so that a spawned process (DDP, DataLoader workers) maps the file too
    instead of receiving a copy of every pixel; any other array as it is."""
    if isinstance(images, np.memmap) and isinstance(images.base, mmap.mmap):
        return ("memmap", images.filename, images.offset, images.shape, images.dtype.str)
    return images


def from_mapped_state(state: np.ndarray | tuple) -> np.ndarray:
    if isinstance(state, tuple):
        _, filename, offset, shape, dtype = state
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
    return state


@dataclass
class CachedDataset:
    """A finished cache: `images[i]` (size, size, 3) uint8 belongs to `records[i]`."""

    folder: Path
    records: list[Record]
    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    manifest: dict
    reused: bool = True  # False when this call built it

    @property
    def grades(self) -> np.ndarray:
        return np.fromiter((r.grade for r in self.records), dtype=np.int64, count=len(self))

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "images": mapped_state(self.images)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, images=from_mapped_state(state["images"]))


def _fingerprint(record: Record) -> tuple:
    stat = record.path.stat()
    return (
        record.image_id,
        record.grade,
        str(record.path),
        record.array_key,
        record.index,
        stat.st_size,
        stat.st_mtime_ns,
    )


def cache_key(records: Sequence[Record], config: PreprocessConfig) -> str:
    """SHA-256 over what determines the cached pixels and labels."""
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT_VERSION, config.as_dict()]).encode())
    for record in records:
        digest.update(repr(_fingerprint(record)).encode())
    return digest.hexdigest()


def cache_folder(cache_dir: Path, source: str, config: PreprocessConfig, key: str) -> Path:
    return Path(cache_dir) / f"{source}-{config.size}px-{key[:16]}"


def _decode(job: tuple[Record, PreprocessConfig]) -> np.ndarray | str:
    """Worker: the preprocessed image, or the reason it could not be read."""
    record, config = job
    try:
        return load_preprocessed(record, config)
    except (DataError, OSError, ValueError) as error:
        return str(error)


def _decoded(
    records: Sequence[Record], config: PreprocessConfig, workers: int
) -> Iterator[np.ndarray | str]:
    jobs = [(record, config) for record in records]
    if workers <= 1:
        yield from map(_decode, jobs)
        return
    with image_pool(workers) as pool:
        yield from pool.map(_decode, jobs, chunksize=chunk_size(len(jobs), workers))


def _write_images(
    tmp: Path, records: Sequence[Record], config: PreprocessConfig, workers: int, on_error: OnError
) -> tuple[list[Record], list[Problem]]:
    shape = (len(records), config.size, config.size, 3)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    kept: list[Record] = []
    skipped: list[Problem] = []
    decoded = _decoded(records, config, workers)
    bar = tqdm(
        zip(records, decoded, strict=True),
        total=len(records),
        unit="img",
        desc=f"caching {config.size}px",
        mininterval=1.0,
    )
    for record, result in bar:
        if isinstance(result, str):
            if on_error == "raise":
                raise DataError(f"{record.origin}: {result}")
            skipped.append(Problem(record.origin, result))
            continue
        images[len(kept)] = result
        kept.append(record)
    images.flush()
    del images
    if skipped:  # rare: shrink the array to the images that were read
        full = np.load(tmp / "images.npy", mmap_mode="r")
        np.save(tmp / "images.part.npy", full[: len(kept)])
        del full
        os.replace(tmp / "images.part.npy", tmp / "images.npy")
    return kept, skipped


def _write_index(tmp: Path, records: Sequence[Record], skipped: Sequence[Problem]) -> None:
    rows = [{**asdict(r), "path": str(r.path)} for r in records]
    (tmp / "index.json").write_text(json.dumps(rows))
    if skipped:
        with (tmp / "skipped.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["origin", "reason"])
            writer.writerows((p.origin, p.message) for p in skipped)


def _build(
    tmp: Path,
    key: str,
    records: Sequence[Record],
    config: PreprocessConfig,
    workers: int,
    on_error: OnError,
) -> None:
    start = time.perf_counter()
    kept, skipped = _write_images(tmp, records, config, workers, on_error)
    seconds = time.perf_counter() - start
    _write_index(tmp, kept, skipped)
    counts = Counter(r.grade for r in kept)
    manifest = {
        "key": key,
        "preprocessing": config.as_dict(),
        "n_images": len(kept),
        "n_skipped": len(skipped),
        "per_grade": {g: counts.get(g, 0) for g in range(NUM_GRADES)},
        "build_seconds": round(seconds, 3),
        "images_per_second": round(len(records) / max(seconds, 1e-9), 1),
        "workers": workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "drvae_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))  # written last


def _record_from_row(row: dict) -> Record:
    return Record(**{**row, "path": Path(row["path"])})


def open_cache(folder: Path) -> CachedDataset:
    """A finished cache folder (one with a manifest) as a `CachedDataset`."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{folder}: not a finished drvae cache (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    records = [_record_from_row(r) for r in json.loads((folder / "index.json").read_text())]
    images = np.load(folder / "images.npy", mmap_mode="r")
    if len(images) != len(records) or len(records) != manifest["n_images"]:
        raise DataError(
            f"{folder}: images.npy holds {len(images)} images but the index lists "
            f"{len(records)}; delete the folder to rebuild it"
        )
    return CachedDataset(folder, records, images, manifest)


def build_cache(
    records: Sequence[Record],
    config: PreprocessConfig,
    cache_dir: str | Path,
    workers: int | None = None,
    on_error: OnError = "raise",
) -> CachedDataset:
    """The cache for these records and this preprocessing, built unless already there.

    With `on_error="skip"`, unreadable images are left out and listed, with the reason, in
    the cache's `skipped.csv` (and counted in its manifest); otherwise the first one raises.
    """
    if not records:
        raise DataError("no records to cache")
    key = cache_key(records, config)
    folder = cache_folder(Path(cache_dir), records[0].source, config, key)
    workers = workers or os.cpu_count() or 1
    reused = build_once(
        folder,
        lambda f: (f / "manifest.json").is_file(),
        lambda tmp: _build(tmp, key, records, config, workers, on_error),
    )
    cached = open_cache(folder)
    cached.reused = reused
    return cached
