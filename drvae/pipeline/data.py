"""The data the stages share: read the dataset, cache it preprocessed, split it.

The `simulated` source first writes the embedded simulator's dataset into the stage store
(once per n_images, size, fractions and seed), then reads it like APTOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from drvae.data.cache import CachedDataset, build_cache
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import READERS, read_dataset
from drvae.data.records import DataError
from drvae.data.splits import Splits, make_splits
from drvae.pipeline.store import StageResult, StageStore, config_key, plain

SOURCES = ("simulated", *READERS)


@dataclass
class PreparedData:
    """The cached images, their splits, and a key over everything that determined them."""

    cache: CachedDataset
    splits: Splits
    key: str
    image_size: int

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


def prepare_data(cfg: DictConfig, store: StageStore) -> PreparedData:
    """Read, cache and split the dataset `cfg` (the `data` config node) describes."""
    root, source = _root_and_source(cfg, store)
    result = read_dataset(source, root, on_error=cfg.on_error, **plain(cfg.options))
    if result.problems:
        print(f"data: skipping {len(result.problems)} bad row(s), e.g. {result.problems[0]}")
    preprocess = PreprocessConfig(size=cfg.image_size, **plain(cfg.preprocess))
    cache = build_cache(
        result.records, preprocess, store.root / "preprocessed", cfg.workers, cfg.on_error
    )
    split = plain(cfg.split)
    splits = make_splits(
        cache.records,
        val_fraction=split["val_fraction"],
        test_fraction=split["test_fraction"],
        seed=split["seed"],
        use_official=split["use_official"],
        n_folds=split["n_folds"],
        fold=split["fold"],
    )
    key = config_key("data", cache.manifest["key"], split)
    return PreparedData(cache, splits, key, cfg.image_size)
