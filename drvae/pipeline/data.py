"""The data the stages share: read the dataset, cache it preprocessed, split it.

The `simulated` source first writes the embedded simulator's dataset into the stage store
(once per n_images, size, fractions and seed), then reads it like APTOS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from drvae.data.cache import CachedDataset, build_cache
from drvae.data.duplicates import (
    NEAR_DISTANCE,
    ImageHashes,
    describe,
    dropped,
    duplicate_groups,
    group_labels,
    hash_records,
)
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import READERS, read_dataset
from drvae.data.records import DataError
from drvae.data.splits import Splits, make_splits
from drvae.pipeline.store import StageResult, StageStore, config_key, plain

SOURCES = ("simulated", *READERS)
HASHES = "hashes.json"


@dataclass
class PreparedData:
    """The cached images, their splits, and a key over everything that determined them;
    `hashes` of every cached image, and what was found and done about duplicates."""

    cache: CachedDataset
    splits: Splits
    key: str
    image_size: int
    hashes: ImageHashes | None = None
    duplicates: dict[str, Any] = field(default_factory=dict)

    def per_grade(self) -> dict[str, dict[int, int]]:
        return self.splits.per_grade(self.cache.records)


def simulate(cfg: DictConfig, store: StageStore) -> StageResult:
    """The simulated dataset, written once into the stage store."""
    from drvae.data.simulator import DEFAULT_GRADE_FRACTIONS, simulate_dataset

    fractions: Sequence[float] = plain(cfg.fractions) or DEFAULT_GRADE_FRACTIONS
    params = {
        "n": cfg.n_images,
        "size": cfg.simulate_size,
        "seed": cfg.simulate_seed,
        "fractions": list(fractions),
    }

    def build(tmp: Path) -> dict[str, Any]:
        counts = simulate_dataset(tmp / "data", workers=cfg.workers, progress=True, **params)
        return {"per_grade": counts, **params}

    return store.run("simulated", config_key("simulated", params), build)


def _root_and_source(cfg: DictConfig, store: StageStore) -> tuple[Path, str]:
    if cfg.source == "simulated":
        return simulate(cfg, store).path / "data", "aptos"
    if cfg.source not in READERS:
        raise DataError(f"data.source: unknown source {cfg.source!r}; expected one of {SOURCES}")
    if not cfg.get("root"):
        raise DataError(f"data.root: the {cfg.source} dataset needs a folder (data.root=PATH)")
    return Path(str(cfg.root)), cfg.source


def cache_dataset(cfg: DictConfig, store: StageStore) -> CachedDataset:
    """Read the dataset `cfg` (a `data`-like node) describes and cache it preprocessed."""
    root, source = _root_and_source(cfg, store)
    result = read_dataset(source, root, on_error=cfg.on_error, **plain(cfg.options))
    if result.problems:
        print(f"data: skipping {len(result.problems)} bad row(s), e.g. {result.problems[0]}")
    preprocess = PreprocessConfig(size=cfg.image_size, **plain(cfg.preprocess))
    return build_cache(
        result.records, preprocess, store.root / "preprocessed", cfg.workers, cfg.on_error
    )


def stored_hashes(cache: CachedDataset, store: StageStore, workers: int) -> ImageHashes:
    """The cached images' hashes (from their source files), computed once per cache."""

    def build(tmp: Path) -> dict[str, Any]:
        hashes, problems = hash_records(cache.records, workers)
        if problems:  # the cache decoded them: the files changed since
            raise DataError(f"{problems[0]}; rebuild the cache")
        (tmp / HASHES).write_text(json.dumps(asdict(hashes)))
        return {"n_images": len(hashes.exact)}

    folder = store.run("hashes", config_key("hashes", cache.manifest["key"]), build).path
    return ImageHashes(**json.loads((folder / HASHES).read_text()))


def prepare_data(cfg: DictConfig, store: StageStore) -> PreparedData:
    """Read, cache and split the dataset `cfg` (the `data` config node) describes: duplicate
    images kept on one side of the split, or dropped, as `data.duplicates` says."""
    cache = cache_dataset(cfg, store)
    policy, distance = cfg.get("duplicates", "keep"), cfg.get("duplicate_distance", NEAR_DISTANCE)
    hashes = stored_hashes(cache, store, cfg.workers)
    groups = duplicate_groups(hashes, distance)
    left_out = dropped(groups, cache.records, policy)
    kept = np.array([i for i in range(len(cache)) if i not in left_out], dtype=np.int64)
    labels = group_labels(groups, cache.records)
    split = plain(cfg.split)
    splits = make_splits(
        [cache.records[i] for i in kept],
        val_fraction=split["val_fraction"],
        test_fraction=split["test_fraction"],
        seed=split["seed"],
        use_official=split["use_official"],
        n_folds=split["n_folds"],
        fold=split["fold"],
        groups=[labels[i] for i in kept],
    )
    splits = Splits(kept[splits.train], kept[splits.val], kept[splits.test])
    found = describe(groups, cache.records)
    duplicates = {k: found[k] for k in ("n_duplicate_groups", "n_conflicting_groups")}
    duplicates.update(policy=policy, distance=distance, n_dropped=len(left_out))
    if groups:
        print(f"data: {duplicates}")
    # Without duplicates the splits are what they were before duplicates were looked for:
    # so is the key, and stages stored under it stay valid.
    material = (policy, distance) if groups else ()
    key = config_key("data", cache.manifest["key"], split, *material)
    return PreparedData(cache, splits, key, cfg.image_size, hashes, duplicates)
