"""Torch datasets over the cache and the DataModule: exact images, grades and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from test_cache import write_aptos  # tests/ is on sys.path (rootdir-relative imports)

from drvae.data.cache import build_cache
from drvae.data.dataset import FundusDataModule, ImageArray
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import read_dataset
from drvae.data.splits import make_splits


def cached(tmp_path: Path, n: int = 60):
    records = read_dataset("aptos", write_aptos(tmp_path / "aptos", n)).records
    return build_cache(records, PreprocessConfig(size=16), tmp_path / "cache", workers=1)


def test_items_are_the_cached_pixels_channels_first(tmp_path: Path) -> None:
    cache = cached(tmp_path)
    data = ImageArray(cache.images, cache.grades, [3, 7])
    image, grade = data[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), cache.images[7])
    assert grade == cache.records[7].grade
    image.add_(1)  # a copy: the cache itself can never be written through a batch
    assert np.array_equal(data[1][0].permute(1, 2, 0).numpy(), cache.images[7])


def test_datamodule_serves_each_split_once_and_can_keep_one_grade(tmp_path: Path) -> None:
    cache = cached(tmp_path)
    splits = make_splits(cache.records, seed=0)
    dm = FundusDataModule(cache, splits, batch_size=4)
    sizes = {name: len(dm.dataset(name)) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == len(cache)
    assert sum(len(b[1]) for b in dm.val_dataloader()) == sizes["val"]
    only_four = FundusDataModule(cache, splits, batch_size=4, grades=[4]).dataset("train")
    assert set(only_four.grades.tolist()) == {4}
    assert only_four.per_grade()[4] == dm.dataset("train").per_grade()[4]
