"""Duplicate images: exact copies (the same decoded pixels, whatever the file's encoding) and
near-duplicates (perceptual hashes a few bits apart: a resized or JPEG re-encoded copy).

A group is a connected set of images linked by either relation. Splits keep each group on one
side (`drvae.data.splits`); a group whose grades disagree is "conflicting": one of its labels
is wrong, and `data.duplicates=drop_conflicting` leaves it out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from drvae.data.preprocess import load_image
from drvae.data.records import DataError, Problem, Record
from drvae.data.workers import chunk_size, image_pool

Policy = Literal["keep", "drop_conflicting", "drop"]
POLICIES = ("keep", "drop_conflicting", "drop")
# A 256-bit pHash (hash_size 16). On APTOS, a copy resized to 3/4 and re-encoded as JPEG
# (quality 70) differs from its original by 12 bits (median; 24 at the 95th percentile); two
# distinct photographs by 52 (median distance to the nearest other image). Small images are
# closer: at 16 bits, 8 pairs of different 64 px EyePACS eyes (seen side by side) group; at 8,
# none of EyePACS does, and APTOS keeps 130 of its 131 groups. The 64-bit default hash cannot
# separate them at all: at the distance re-encoded copies need, groups of hundreds form.
HASH_SIZE = 16
NEAR_DISTANCE = 8  # bits (of 256) near-duplicates differ by at most; -1: exact copies only
PAIR_CELLS = 2**22  # (image, image) pairs compared at once (128 MiB of uint64 words)


@dataclass(frozen=True)
class ImageHashes:
    """Per image: a SHA-256 over its decoded pixels and their shape, and its pHash as hex."""

    exact: list[str]
    perceptual: list[str]
    index: list[int]  # the record each row hashes (images that could not be decoded have none)

    def subset(self, indices: Sequence[int]) -> ImageHashes:
        """The rows of these record indices only."""
        wanted = set(int(i) for i in indices)
        rows = [k for k, i in enumerate(self.index) if i in wanted]
        exact, perceptual = [self.exact[k] for k in rows], [self.perceptual[k] for k in rows]
        return ImageHashes(exact, perceptual, [self.index[k] for k in rows])

    def words(self) -> np.ndarray:
        """The pHashes as (N, HASH_SIZE**2 / 64) uint64 words."""
        raw = b"".join(bytes.fromhex(h) for h in self.perceptual)
        words = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        return words.reshape(len(self.perceptual), HASH_SIZE**2 // 64)


def pixel_hashes(pixels: np.ndarray) -> tuple[str, str]:
    """(exact, perceptual) hashes of an RGB uint8 image (H, W, 3)."""
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    phash = imagehash.phash(Image.fromarray(pixels), hash_size=HASH_SIZE)
    return digest.hexdigest(), str(phash)


def _hash_record(record: Record) -> tuple[str, str] | str:
    """Worker: the record's hashes from its full-size decoded pixels, or why it failed."""
    try:
        return pixel_hashes(load_image(record))
    except (DataError, OSError, ValueError) as error:
        return str(error)


def _hashed(records: Sequence[Record], workers: int) -> list[tuple[str, str] | str]:
    if workers <= 1 or len(records) < 64 or records[0].array_key is not None:
        return [_hash_record(r) for r in records]  # an .npz is one file: no pool
    with image_pool(workers) as pool:
        chunk = chunk_size(len(records), workers)
        return list(pool.map(_hash_record, records, chunksize=chunk))


def hash_records(records: Sequence[Record], workers: int = 1) -> tuple[ImageHashes, list[Problem]]:
    """The hashes of every record that decodes, and a problem for each that does not."""
    bar = tqdm(total=len(records), desc="hashing", unit="img", mininterval=1.0)
    results: list[tuple[str, str] | str] = []
    for start in range(0, len(records), 2048):  # in blocks, so the bar moves
        results += _hashed(records[start : start + 2048], workers)
        bar.update(min(2048, len(records) - start))
    bar.close()
    problems = [
        Problem(r.origin, h) for r, h in zip(records, results, strict=True) if isinstance(h, str)
    ]
    kept = [(i, h) for i, h in enumerate(results) if not isinstance(h, str)]
    hashes = ImageHashes([h[0] for _, h in kept], [h[1] for _, h in kept], [i for i, _ in kept])
    return hashes, problems


def near_pairs(words: np.ndarray, max_distance: int, other: np.ndarray | None = None) -> np.ndarray:
    """(P, 2) index pairs whose pHashes ((N, W) uint64 words) differ by at most
    `max_distance` bits: i < j within `words`, or (i in `words`, j in `other`)."""
    against = words if other is None else other
    rows = max(1, PAIR_CELLS // max(len(against), 1))
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(0, len(words), rows):
        block = words[start : start + rows, None, :] ^ against[None, :, :]  # (R, M, W)
        distance = np.bitwise_count(block).sum(axis=2, dtype=np.int32)  # (R, M)
        i, j = np.nonzero(distance <= max_distance)
        i += start
        keep = i < j if other is None else slice(None)
        pairs.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(pairs)


def exact_pairs(exact: Sequence[str]) -> np.ndarray:
    """(P, 2) index pairs linking each image to the first with the same pixels."""
    first: dict[str, int] = {}
    pairs = [(first.setdefault(h, i), i) for i, h in enumerate(exact)]
    return np.array([p for p in pairs if p[0] != p[1]], dtype=np.int64).reshape(-1, 2)


def duplicate_groups(hashes: ImageHashes, max_distance: int = NEAR_DISTANCE) -> list[list[int]]:
    """Groups (sorted record index lists, two or more images) of exact or near duplicates, in
    order of their first image."""
    n = len(hashes.exact)
    pairs = np.concatenate([exact_pairs(hashes.exact), near_pairs(hashes.words(), max_distance)])
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for index, label in zip(hashes.index, labels, strict=True):
        members.setdefault(int(label), []).append(index)
    return [m for m in members.values() if len(m) > 1]


def matches(
    outside: ImageHashes, inside: ImageHashes, max_distance: int = NEAR_DISTANCE
) -> dict[int, int]:
    """Record index of each `outside` image that duplicates an `inside` one -> that one's
    record index (an external test image that is also a training image)."""
    first = dict(zip(inside.exact, inside.index, strict=True))
    found = {i: first[h] for h, i in zip(outside.exact, outside.index, strict=True) if h in first}
    for a, b in near_pairs(outside.words(), max_distance, inside.words()):
        found.setdefault(outside.index[a], inside.index[b])
    return found


def is_conflicting(group: Sequence[int], records: Sequence[Record]) -> bool:
    return len({records[i].grade for i in group}) > 1


def describe(groups: list[list[int]], records: Sequence[Record]) -> dict[str, Any]:
    """The groups as JSON: each group's ids, grades and official splits, and the counts."""
    return {
        "duplicates": [
            {
                "ids": [records[i].image_id for i in g],
                "grades": [records[i].grade for i in g],
                "splits": [records[i].split for i in g],
            }
            for g in groups
        ],
        "n_duplicate_groups": len(groups),
        "n_conflicting_groups": sum(is_conflicting(g, records) for g in groups),
    }


def dropped(groups: list[list[int]], records: Sequence[Record], policy: Policy) -> set[int]:
    """The indices `policy` leaves out: none (keep); every image of a group whose grades
    disagree (drop_conflicting); that, and all but the first image of every other group (drop)."""
    if policy not in POLICIES:
        raise DataError(f"data.duplicates: {policy!r} is not one of {POLICIES}")
    out: set[int] = set()
    for group in groups if policy != "keep" else []:
        if is_conflicting(group, records):
            out.update(group)
        elif policy == "drop":
            out.update(group[1:])
    return out


def group_labels(groups: list[list[int]], records: Sequence[Record]) -> list[str]:
    """Per record, the label splits group by: its patient, or for patients linked by a
    duplicate group, the first of them by name (so without duplicates, the patient itself and
    the same splits as before)."""
    patients = sorted({r.patient for r in records})
    index = {p: i for i, p in enumerate(patients)}
    links = np.array(
        [(index[records[g[0]].patient], index[records[i].patient]) for g in groups for i in g[1:]],
        dtype=np.int64,
    ).reshape(-1, 2)
    n = len(patients)
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first: dict[int, str] = {}
    for patient, label in zip(patients, component, strict=True):
        first.setdefault(int(label), patient)  # patients are sorted: the first is the least
    return [first[int(component[index[r.patient]])] for r in records]
