"""A dataset's summary: per-grade counts, patients, image sizes, and the problems found."""

from __future__ import annotations

from collections import Counter
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from drvae.data.duplicates import NEAR_DISTANCE, describe, duplicate_groups, hash_records
from drvae.data.preprocess import npz_array
from drvae.data.records import NUM_GRADES, NoUsableImages, Problem, ReadResult, Record


def _image_size(record: Record) -> str:
    """ "WxH" from the file header (no full decode), or from the array's shape."""
    if record.array_key is not None:
        height, width = npz_array(record.path, record.array_key).shape[1:3]
        return f"{width}x{height}"
    with Image.open(record.path) as image:
        return f"{image.width}x{image.height}"


def summarise(result: ReadResult, check_images: bool = True) -> dict[str, Any]:
    """Counts and problems as a JSON-ready dict. With `check_images`, each image's header is
    read, so unreadable files show up as problems (a full decode is `prepare`'s job)."""
    records = result.records
    problems = list(result.problems)
    sizes: Counter[str] = Counter()
    if check_images:
        for record in tqdm(records, desc="reading headers", unit="img", mininterval=1.0):
            try:
                sizes[_image_size(record)] += 1
            except (OSError, UnidentifiedImageError, ValueError) as error:
                problems.append(Problem(record.origin, f"unreadable image {record.path}: {error}"))
    return {
        "source": records[0].source,
        "n_images": len(records),
        "per_grade": result.per_grade(),
        "n_patients": len({r.patient for r in records}),
        "eyes": dict(Counter(r.eye or "unknown" for r in records)),
        "official_splits": dict(Counter(r.split for r in records if r.split)),
        "image_sizes": dict(sizes.most_common()),
        "excluded": dict(result.excluded),
        "problems": [str(p) for p in problems],
    }


def find_duplicates(
    records: list[Record], workers: int, max_distance: int = NEAR_DISTANCE
) -> tuple[dict[str, Any], list[Problem]]:
    """The duplicate groups as `describe` gives them, and the images that did not decode."""
    hashes, problems = hash_records(records, workers)
    return describe(duplicate_groups(hashes, max_distance), records), problems


def unusable_summary(source: str, error: NoUsableImages) -> dict[str, Any]:
    """The summary of a dataset with no usable image: its problems and exclusions, for
    `inspect --json` to print before it exits with status 2."""
    return {
        "source": source,
        "n_images": 0,
        "per_grade": dict.fromkeys(range(NUM_GRADES), 0),
        "excluded": dict(error.excluded),
        "problems": [str(p) for p in error.problems],
        "error": str(error).splitlines()[0],
    }


def format_summary(summary: dict[str, Any], max_problems: int = 20) -> str:
    """The summary as lines a person reads."""
    n = summary["n_images"]
    lines = [f"{summary['source']}: {n} images, {summary['n_patients']} patients"]
    for grade, count in summary["per_grade"].items():
        lines.append(f"  grade {grade}: {count:7d}  ({100 * count / n:5.1f}%)")
    if summary["official_splits"]:
        lines.append(f"  official splits: {summary['official_splits']}")
    sizes = list(summary["image_sizes"].items())
    if sizes:
        shown = ", ".join(f"{s} x{c}" for s, c in sizes[:5])
        lines.append(f"  image sizes: {shown}{' ...' if len(sizes) > 5 else ''}")
    for reason, count in summary["excluded"].items():
        lines.append(f"  excluded: {count} {reason}")
    if "duplicates" in summary:
        lines += _duplicate_lines(summary, max_problems)
    problems = summary["problems"]
    lines.append(f"  problems: {len(problems)}")
    lines += [f"    {p}" for p in problems[:max_problems]]
    if len(problems) > max_problems:
        lines.append(f"    ... and {len(problems) - max_problems} more (see --json)")
    return "\n".join(lines)


def _duplicate_lines(summary: dict[str, Any], most: int) -> list[str]:
    groups = summary["duplicates"]
    lines = [
        f"  duplicate groups: {summary['n_duplicate_groups']} "
        f"({summary['n_conflicting_groups']} with conflicting grades)"
    ]
    for group in groups[:most]:
        members = zip(group["ids"], group["grades"], group["splits"], strict=True)
        cells = [f"{i} (grade {g}{', ' + s if s else ''})" for i, g, s in members]
        lines.append("    " + ", ".join(cells))
    if len(groups) > most:
        lines.append(f"    ... and {len(groups) - most} more (see --json)")
    return lines
