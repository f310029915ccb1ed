"""Torch datasets over the cache and the DataModule: exact images, grades and splits."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from conftest import write_aptos  # tests/ is on sys.path

from drvae.data.cache import build_cache
from drvae.data.dataset import FundusDataModule, ImageArray, worker_context
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


def test_pickling_sends_the_cache_file_not_its_pixels(tmp_path: Path) -> None:
    """DDP's spawned processes and DataLoader workers receive the DataModule pickled: they
    must map the cache file themselves, not get a copy of every image."""
    cache = cached(tmp_path, n=200)
    splits = make_splits(cache.records, seed=0)
    dm = FundusDataModule(cache, splits, batch_size=4)
    train = dm.train_dataset()
    for thing in (cache, dm, train):
        assert len(pickle.dumps(thing)) < cache.images.nbytes / 4
    copy = pickle.loads(pickle.dumps(train))
    assert isinstance(copy.images, np.memmap)
    assert np.array_equal(copy.images, cache.images)
    assert [int(g) for _, g in copy] == [int(g) for _, g in train]
    in_memory = ImageArray(np.array(cache.images), cache.grades)  # not a file: sent whole
    assert np.array_equal(pickle.loads(pickle.dumps(in_memory)).images, cache.images)


def test_loader_workers_are_forked_where_the_os_can() -> None:
    assert worker_context(0) is None
    if sys.platform == "linux":
        assert worker_context(2) == "fork"
