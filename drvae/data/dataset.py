"""Torch datasets over the preprocessing cache, and the DataModule that serves the splits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from drvae.data.cache import CachedDataset
from drvae.data.records import NUM_GRADES
from drvae.data.splits import Splits


class CachedImages(Dataset):
    """`(image (3, S, S) uint8, grade)` for the cache entries at `indices`.

    Images stay uint8 until they reach the model (4x less to copy between processes);
    the model scales them to [0, 1].
    """

    def __init__(self, cache: CachedDataset, indices: Sequence[int] | np.ndarray) -> None:
        self.images = cache.images  # (N, S, S, 3) uint8, memory-mapped
        self.indices = np.asarray(indices, dtype=np.int64)
        self.grades = cache.grades[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = np.array(self.images[self.indices[i]])  # (S, S, 3), a writable copy
        return torch.from_numpy(image).permute(2, 0, 1), int(self.grades[i])  # (3, S, S)

    def per_grade(self) -> dict[int, int]:
        counts = Counter(self.grades.tolist())
        return {g: counts.get(g, 0) for g in range(NUM_GRADES)}


class FundusDataModule(L.LightningDataModule):
    """Train / val / test loaders over a cached dataset and its splits.

    `grades` restricts every split to those grades (one unconditional VAE per grade).
    """

    def __init__(
        self,
        cache: CachedDataset,
        splits: Splits,
        batch_size: int = 64,
        num_workers: int = 0,
        grades: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.cache, self.splits = cache, splits
        self.batch_size, self.num_workers = batch_size, num_workers
        self.grades = None if grades is None else set(grades)

    def dataset(self, split: str) -> CachedImages:
        indices = getattr(self.splits, split)
        if self.grades is not None:
            indices = indices[np.isin(self.cache.grades[indices], sorted(self.grades))]
        return CachedImages(self.cache, indices)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,  # no batch of 1 for BatchNorm
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
