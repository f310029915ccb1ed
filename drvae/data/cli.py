"""`drvae-data`: simulate the default dataset, inspect a dataset, build its cache, split it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drvae.data.cache import build_cache
from drvae.data.duplicates import NEAR_DISTANCE
from drvae.data.inspect import find_duplicates, format_summary, summarise, unusable_summary
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import READERS, read_dataset
from drvae.data.records import DataError, NoUsableImages
from drvae.data.splits import make_splits


def _options(pairs: Sequence[str]) -> dict[str, str]:
    """Reader options given as KEY=VALUE (e.g. for the csv reader: image_column=file)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--option {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _read(args: argparse.Namespace, on_error: str = "raise"):
    return read_dataset(args.source, args.root, on_error=on_error, **_options(args.option))


def cmd_simulate(args: argparse.Namespace) -> None:
    from drvae.data.simulator import DEFAULT_GRADE_FRACTIONS, simulate_dataset

    fractions = DEFAULT_GRADE_FRACTIONS
    if args.fractions:
        try:
            fractions = tuple(float(x) for x in args.fractions.split(","))
        except ValueError:
            raise DataError(
                f"--fractions {args.fractions!r}: expected 5 numbers "
                "separated by commas, e.g. 0.7,0.1,0.1,0.05,0.05"
            ) from None
    counts = simulate_dataset(
        Path(args.out),
        n=args.n,
        size=args.size,
        seed=args.seed,
        fractions=fractions,
        workers=args.workers,
        progress=True,
    )
    print(f"wrote {args.n} simulated {args.size}px images to {args.out}: per grade {counts}")


def cmd_inspect(args: argparse.Namespace) -> None:
    try:
        result = _read(args, on_error="skip")
    except NoUsableImages as error:  # --json still gives the problems; the exit status is 2
        if args.json:
            print(json.dumps(unusable_summary(args.source, error), indent=2))
        raise
    summary = summarise(result, check_images=not args.no_images)
    if not args.no_images:  # finding duplicates decodes every image
        duplicates, unreadable = find_duplicates(result.records, args.workers, args.near_distance)
        summary.update(duplicates)
        listed = {p.partition(": ")[0] for p in summary["problems"]}  # their origins
        summary["problems"] += [str(p) for p in unreadable if p.origin not in listed]
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))


def _grades(per_grade: dict) -> str:
    return "  ".join(f"{grade}:{count}" for grade, count in per_grade.items())


def cmd_prepare(args: argparse.Namespace) -> None:
    on_error = "skip" if args.skip_bad else "raise"
    result = _read(args, on_error=on_error)
    if result.problems:
        print(f"skipping {len(result.problems)} bad row(s), e.g. {result.problems[0]}")
    config = PreprocessConfig(
        size=args.size, crop_fov=not args.no_crop, ben_graham=args.ben_graham, clahe=args.clahe
    )
    cache = build_cache(result.records, config, args.cache_dir, args.workers, on_error)
    m = cache.manifest
    print(
        f"cache: {cache.folder}\n  {m['n_images']} images at {args.size} px, per grade "
        f"{_grades(m['per_grade'])}; {m['n_skipped']} skipped\n  "
        f"{'reused: was built' if cache.reused else 'built'} in {m['build_seconds']} s"
        f" ({m['images_per_second']} img/s, {m['workers']} workers) on {m['created']}"
    )


def cmd_split(args: argparse.Namespace) -> None:
    records = _read(args).records
    splits = make_splits(
        records,
        args.val_fraction,
        args.test_fraction,
        args.seed,
        n_folds=args.folds,
        fold=args.fold,
    )
    counts = splits.per_grade(records)
    if args.json:
        print(json.dumps(counts, indent=2))
        return
    print(f"{'split':6s}" + "".join(f"{'grade ' + str(g):>9s}" for g in range(5)) + "    total")
    for name, per_grade in counts.items():
        cells = "".join(f"{n:9d}" for n in per_grade.values())
        print(f"{name:6s}{cells}{sum(per_grade.values()):9d}")


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, choices=sorted(READERS))
    parser.add_argument("--root", required=True, type=Path, help="the dataset's folder")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reader option, e.g. csv=labels.csv image_column=file (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drvae-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated fundus dataset (APTOS layout)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fractions", help="grade 0-4 fractions, e.g. 0.5,0.2,0.15,0.1,0.05")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("inspect", help="per-grade counts, sizes, patients, problems")
    _dataset_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--no-images", action="store_true", help="skip reading the images (and duplicates)"
    )
    p.add_argument("--workers", type=int, default=2, help="decode processes for duplicates")
    p.add_argument(
        "--near-distance",
        type=int,
        default=NEAR_DISTANCE,
        help=f"pHash bits (of 256) near-duplicates may differ by (default {NEAR_DISTANCE}; "
        "-1: exact copies only)",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prepare", help="build the preprocessing cache")
    _dataset_args(p)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    p.add_argument("--no-crop", action="store_true", help="keep the frame (no FOV crop)")
    p.add_argument("--ben-graham", action="store_true", help="Ben Graham normalisation")
    p.add_argument("--clahe", action="store_true", help="CLAHE on lightness")
    p.add_argument("--workers", type=int, default=None, help="decode processes (default: cores)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable rows/images, listing them in the cache's skipped.csv",
    )
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("split", help="per-grade counts of the train/val/test split")
    _dataset_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--folds", type=int, default=None, help="k-fold: number of folds")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--json", action="store_true", help="per-grade counts as JSON")
    p.set_defaults(func=cmd_split)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DataError as error:
        print(f"drvae-data: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
