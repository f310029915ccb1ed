"""The data the stages share: read the dataset, cache it preprocessed, split it.

The `simulated` source first writes the embedded simulator's dataset into the stage store
(once per n_images, size, fractions and seed), then reads it like APTOS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from drvae.config import plain
from drvae.data.cache import CachedDataset, build_cache
from drvae.data.duplicates import (
    NEAR_DISTANCE,
    ImageHashes,
    describe,
    dropped,
    duplicate_groups,
    group_labels,
    hash_records,
    matches,
)
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import READERS, read_dataset
from drvae.data.records import DataError, Record
from drvae.data.splits import Splits, make_splits
from drvae.errors import ConfigError
from drvae.pipeline.store import StageResult, StageStore, config_key

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
    train_sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each added

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
        counts = simulate_dataset(tmp / "data", workers=cfg.decode_workers, progress=True, **params)
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


def set_config(cfg: DictConfig, group: str, name: str) -> DictConfig:
    """The `data` node with the source, root and options of `cfg[group][name]` (a test or
    training set beside `data`): same size, preprocessing, workers and error handling."""
    entry = cfg[group][name]
    if not isinstance(entry, DictConfig) or not entry.get("source"):
        raise ConfigError(
            f"{group}.{name}: expected source and root, e.g. "
            f"+{group}.{name}.source=eyepacs +{group}.{name}.root=PATH"
        )
    node = plain(cfg.data)
    node.update(source=entry.source, root=entry.get("root"), options=plain(entry.get("options")))
    node["options"] = node["options"] or {}
    return OmegaConf.create(node)


def set_configs(cfg: DictConfig, group: str) -> dict[str, DictConfig]:
    """Every set of `group` (`test_sets`, `train_sets`) by name; a set without a source or
    root is refused before any work."""
    nodes = {str(name): set_config(cfg, group, str(name)) for name in cfg.get(group) or {}}
    for name, node in nodes.items():
        if node.source != "simulated" and not node.get("root"):
            raise ConfigError(f"{group}.{name}.root: the {node.source} dataset needs a folder")
    return nodes


def read_records(cfg: DictConfig, store: StageStore) -> list[Record]:
    """The records of the dataset `cfg` (a `data`-like node) describes."""
    root, source = _root_and_source(cfg, store)
    result = read_dataset(source, root, on_error=cfg.on_error, **plain(cfg.options))
    if result.problems:
        print(f"data: skipping {len(result.problems)} bad row(s), e.g. {result.problems[0]}")
    return result.records


def cache_records(records: list[Record], cfg: DictConfig, store: StageStore) -> CachedDataset:
    """These records, preprocessed as `cfg` (a `data`-like node) says, in the cache."""
    preprocess = PreprocessConfig(size=cfg.image_size, **plain(cfg.preprocess))
    return build_cache(
        records, preprocess, store.root / "preprocessed", cfg.decode_workers, cfg.on_error
    )


def cache_dataset(cfg: DictConfig, store: StageStore) -> CachedDataset:
    """Read the dataset `cfg` (a `data`-like node) describes and cache it preprocessed."""
    return cache_records(read_records(cfg, store), cfg, store)


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


def _renamed(records: list[Record], name: str) -> list[Record]:
    """A training set's records under `name/`: ids unique beside `data`'s, no official split."""
    return [
        replace(r, image_id=f"{name}/{r.image_id}", origin=f"{name}: {r.origin}", split=None)
        for r in records
    ]


def _main_splits(
    cfg: DictConfig, cache: CachedDataset, hashes: ImageHashes, n_main: int
) -> tuple[Splits, dict[str, Any], tuple]:
    """The splits of `data`'s own images (the first `n_main` of the cache): duplicate images
    kept on one side, or dropped, as `data.duplicates` says; what was found and done; and
    what the key needs beyond the cache's."""
    policy, distance = cfg.get("duplicates", "keep"), cfg.get("duplicate_distance", NEAR_DISTANCE)
    records = cache.records[:n_main]
    own = hashes if n_main == len(cache) else hashes.subset(range(n_main))
    groups = duplicate_groups(own, distance)
    left_out = dropped(groups, records, policy)
    kept = np.array([i for i in range(n_main) if i not in left_out], dtype=np.int64)
    labels = group_labels(groups, records)
    split = plain(cfg.split)
    splits = make_splits(
        [records[i] for i in kept],
        val_fraction=split["val_fraction"],
        test_fraction=split["test_fraction"],
        seed=split["seed"],
        use_official=split["use_official"],
        n_folds=split["n_folds"],
        fold=split["fold"],
        groups=[labels[i] for i in kept],
    )
    splits = Splits(kept[splits.train], kept[splits.val], kept[splits.test])
    found = describe(groups, records)
    duplicates = {k: found[k] for k in ("n_duplicate_groups", "n_conflicting_groups")}
    duplicates.update(policy=policy, distance=distance, n_dropped=len(left_out))
    if groups:
        print(f"data: {duplicates}")
    # Without duplicates or training sets the splits are what they were before either was
    # looked for: so is the key, and stages stored under it stay valid.
    material = (policy, distance) if groups or n_main < len(cache) else ()
    return splits, duplicates, (split, *material)


def _training_additions(
    cache: CachedDataset, splits: Splits, hashes: ImageHashes, n_main: int, distance: int
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """The training sets' images (cache indices from `n_main` on) that may join the training
    split: not of a validation or test patient (same source and patient id: EyePACS subsets
    share Kaggle's ids), not a copy of a validation or test image. Per set, what was done."""
    records = cache.records
    held = np.concatenate([splits.val, splits.test])
    patients = {(records[i].source, records[i].patient) for i in held}
    extra = np.arange(n_main, len(cache))
    copies = matches(hashes.subset(extra), hashes.subset(held), distance)
    added, summary = [], {}
    for i in extra:
        name = records[i].image_id.split("/", 1)[0]
        entry = summary.setdefault(
            name, {"n_images": 0, "n_added": 0, "n_held_out_patient": 0, "n_held_out_copy": 0}
        )
        entry["n_images"] += 1
        if (records[i].source, records[i].patient) in patients:
            entry["n_held_out_patient"] += 1
        elif int(i) in copies:
            entry["n_held_out_copy"] += 1
        else:
            entry["n_added"] += 1
            added.append(int(i))
    return np.array(added, dtype=np.int64), summary


def prepare_data(
    cfg: DictConfig, store: StageStore, train_sets: Mapping[str, DictConfig] | None = None
) -> PreparedData:
    """Read, cache and split the dataset `cfg` (the `data` config node) describes. The images
    of `train_sets` (name -> a `data`-like node, `set_configs(cfg, "train_sets")`) are cached
    with it and join its training split only (`_training_additions`)."""
    records = read_records(cfg, store)
    extra = [
        r
        for name, node in (train_sets or {}).items()
        for r in _renamed(read_records(node, store), name)
    ]
    cache = cache_records(records + extra, cfg, store)  # data's own images first, in order
    extra_ids = {r.image_id for r in extra}
    n_main = sum(r.image_id not in extra_ids for r in cache.records)
    hashes = stored_hashes(cache, store, cfg.decode_workers)
    splits, duplicates, material = _main_splits(cfg, cache, hashes, n_main)
    added_by_set: dict[str, dict[str, Any]] = {}
    if extra:
        distance = cfg.get("duplicate_distance", NEAR_DISTANCE)
        added, added_by_set = _training_additions(cache, splits, hashes, n_main, distance)
        print(f"data: training sets {added_by_set}")
        splits = Splits(np.sort(np.concatenate([splits.train, added])), splits.val, splits.test)
    key = config_key("data", cache.manifest["key"], *material)
    return PreparedData(cache, splits, key, cfg.image_size, hashes, duplicates, added_by_set)
