"""Data-loading benchmark: the training loader over the preprocessing cache against a loader
that decodes the source JPEGs every epoch (PIL decode + resize), both with the default
training augmentation, batch size and DataLoader workers, at 64, 128 and 224 px."""

from __future__ import annotations

import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from drvae.bench.data import write_full_resolution
from drvae.data.cache import build_cache
from drvae.data.dataset import Augment, FundusDataModule, reseed_augment
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import read_dataset
from drvae.data.records import Record
from drvae.data.splits import make_splits

CONF = Path(__file__).resolve().parents[1] / "conf"


def default_augment() -> Augment:
    """The classifier's default training augmentation (conf/classifier/resnet10t.yaml)."""
    return instantiate(OmegaConf.load(CONF / "classifier" / "resnet10t.yaml").augment)


class DecodingDataset(Dataset):
    """The naive loader: open, decode and resize each source image on every access."""

    def __init__(self, records: list[Record], size: int, augment: Augment) -> None:
        self.records, self.size, self.augment = records, size, augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.records[i].path) as image:
            rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.ascontiguousarray(self.augment(image=np.array(rgb))["image"])
        return torch.from_numpy(pixels).permute(2, 0, 1), self.records[i].grade


def loader_images_per_second(loader: DataLoader, epochs: int = 3) -> float:
    """Images/s delivered by `loader` (median epoch; the first warms workers and page cache)."""
    seconds, n = [], 0
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for images, _ in loader:
            n += len(images)
        seconds.append(time.perf_counter() - start)
    return n / statistics.median(seconds[1:])


def bench_loader(
    work: Path, n: int, sizes: tuple[int, ...] = (64, 128, 224), workers: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Images/s of the cached training loader and of the decoding loader, per image size,
    with the default `data.num_workers` (0); `workers`: more DataLoader worker counts."""
    root = work / "loader-source"
    if not root.exists():
        write_full_resolution(root, n, width=640, height=512)
    records = read_dataset("aptos", root).records
    figures: dict[str, Any] = {
        "n": n,
        "source": "640x512 JPEG",
        "batch_size": 64,
        "num_workers": 0,
    }
    for size in sizes:
        cache = build_cache(records, PreprocessConfig(size=size), work / "loader-cache", 2)
        splits = make_splits(cache.records, seed=0)
        train = [cache.records[i] for i in splits.train]
        for w in (0, *workers):
            dm = FundusDataModule(cache, splits, 64, w, augment=default_augment())
            cached = loader_images_per_second(dm.train_dataloader())
            decoding = DataLoader(
                DecodingDataset(train, size, default_augment()),
                batch_size=64,
                shuffle=True,
                num_workers=w,
                persistent_workers=w > 0,
                worker_init_fn=partial(reseed_augment, 0),
            )
            decoded = loader_images_per_second(decoding)
            suffix = f"{size}px" + (f"_{w}workers" if w else "")
            figures[f"cached_images_per_second_{suffix}"] = round(cached, 1)
            figures[f"decoding_images_per_second_{suffix}"] = round(decoded, 1)
            figures[f"cache_speedup_{suffix}"] = round(cached / decoded, 1)
    return figures
