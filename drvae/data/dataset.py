"""Torch datasets over the preprocessing cache, and the DataModule that serves the splits.

Only the TRAIN split is ever rebalanced (`drvae.data.rebalance`): oversampled duplicates of
real images and synthetic images join it; validation and test stay real and untouched.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, get_worker_info

from drvae.data.cache import CachedDataset, from_mapped_state, mapped_state
from drvae.data.rebalance import RebalancePlan, oversample_indices
from drvae.data.records import NUM_GRADES, fellow_eyes
from drvae.data.splits import Splits, at_most_per_grade

# An albumentations transform (or anything called the same way): image=(S, S, 3) uint8.
Augment = Callable[..., dict]


class ImageArray(Dataset):
    """`(image (3, S, S) uint8, grade)` for `images[indices[i]]`, augmented if asked.

    Images stay uint8 until they reach the model (4x less to copy between processes);
    the model scales and normalises them.
    """

    def __init__(
        self,
        images: np.ndarray,
        grades: np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        augment: Augment | None = None,
    ) -> None:
        self.images = images  # (N, S, S, 3) uint8, possibly memory-mapped
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.grades = np.asarray(grades)[self.indices]
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = np.array(self.images[self.indices[i]])  # (S, S, 3), a writable copy
        if self.augment is not None:
            image = np.ascontiguousarray(self.augment(image=image)["image"])
        return torch.from_numpy(image).permute(2, 0, 1), int(self.grades[i])  # (3, S, S)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "images": mapped_state(self.images)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, images=from_mapped_state(state["images"]))

    def per_grade(self) -> dict[int, int]:
        counts = Counter(self.grades.tolist())
        return {g: counts.get(g, 0) for g in range(NUM_GRADES)}


def reseed_augment(seed: int, worker_id: int) -> None:
    """DataLoader `worker_init_fn` (with `seed` bound): each worker's albumentations pipeline
    gets its own seed, derived from the loader's (seed, epoch), instead of a copy of the
    main process's."""
    dataset = get_worker_info().dataset
    for part in getattr(dataset, "datasets", [dataset]):
        if hasattr(part.augment, "set_random_seed"):
            part.augment.set_random_seed((seed + worker_id) % 2**32)


class EpochShuffle(Sampler[int]):
    """A permutation of the dataset that depends on `seed` alone: the same however many
    times the loader is iterated (Lightning may start an epoch's iterator more than once)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed))
        return iter(order.tolist())


class EpochBalanced(EpochShuffle):
    """`n` draws with replacement, each image weighted by its grade's count to the power
    `-power` (a class-balanced sampler, as the DR competition solutions used): at power 1
    every grade is equally likely, rare grades seen as often as grade 0 without any image
    being added; at 0.5 a grade's share follows the square root of its count; at 0 the
    natural frequencies. Depends on `seed` alone, like EpochShuffle."""

    def __init__(self, grades: np.ndarray, seed: int, power: float = 1.0) -> None:
        super().__init__(len(grades), seed)
        counts = np.bincount(grades, minlength=NUM_GRADES)
        self.weights = torch.from_numpy(counts[grades] ** -float(power)).double()  # (N,)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        drawn = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        return iter(drawn.tolist())


SAMPLERS = {"shuffle": EpochShuffle, "balanced": EpochBalanced}


def balance_power(start: float, end: float | None, epoch: int, epochs: int) -> float:
    """The balanced sampler's power at `epoch` of `epochs`: `start`, or moved linearly to
    `end` by the last epoch (the EyePACS 2015 solutions' balanced-then-natural sampling)."""
    if end is None:
        return start
    if epochs < 1:
        raise ValueError(
            "classifier.balance_power_end needs a bounded classifier.trainer.max_epochs, "
            f"got {epochs}"
        )
    return start + (end - start) * min(epoch / max(epochs - 1, 1), 1.0)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's training order and augmentation."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def worker_context(num_workers: int) -> str | None:
    """DataLoader workers are forked where the OS can: a process that DDP spawned would
    otherwise spawn them too, each re-importing torch (seconds per loader)."""
    if num_workers and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return None


def dataset_grades(dataset: Dataset) -> np.ndarray:
    """(N,) grades of an ImageArray or a ConcatDataset of them, in index order."""
    parts = getattr(dataset, "datasets", [dataset])
    return np.concatenate([part.grades for part in parts]).astype(np.int64)


class SyntheticSource(Protocol):
    """Synthetic training images for an epoch: a fixed set, or fresh decoder samples."""

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 images and their (N,) grades."""
        ...


class FixedSynthetic:
    """The same synthetic images every epoch (a set the generate stage wrote)."""

    def __init__(self, images: np.ndarray, grades: np.ndarray) -> None:
        self.images, self.grades = images, grades

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.grades


class FundusDataModule(L.LightningDataModule):
    """Train / val / test loaders over a cached dataset and its splits.

    `plan` rebalances the training split: `synthetic` supplies its synthetic images, and the
    oversampled duplicates are drawn with `seed`. `augment` applies to every training image,
    real or synthetic. `grades` restricts every split to those grades (one VAE per grade).
    `sampler` orders the training images each epoch: "shuffle" (a permutation) or
    "balanced" (drawn with replacement, every grade equally often); val and test are in order.
    `balance` = (power, power at the last epoch or None) weighs the balanced draws
    (`EpochBalanced`, `balance_power`).
    """

    def __init__(
        self,
        cache: CachedDataset,
        splits: Splits,
        batch_size: int = 64,
        num_workers: int = 0,
        grades: Sequence[int] | None = None,
        plan: RebalancePlan | None = None,
        synthetic: SyntheticSource | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        train_per_grade: tuple[int, int] | None = None,
        sampler: str = "shuffle",
        balance: tuple[float, float | None] = (1.0, None),
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(
                f"classifier.sampler / vae.sampler: expected one of {list(SAMPLERS)}, "
                f"got {sampler!r}"
            )
        self.sampler, self.balance = sampler, balance
        # (n, seed): at most n real training images per grade, chosen with seed
        self.train_per_grade = train_per_grade
        self.cache, self.splits = cache, splits
        self.batch_size, self.num_workers = batch_size, num_workers
        self.grades = None if grades is None else set(grades)
        self.cache_grades = cache.grades  # (N,), built from the records once
        self.plan, self.synthetic, self.augment, self.seed = plan, synthetic, augment, seed
        if plan is not None and any(plan.synthetic.values()) and synthetic is None:
            raise ValueError("the rebalancing adds synthetic images, but no source was given")

    def indices(self, split: str) -> np.ndarray:
        indices = getattr(self.splits, split)
        if self.grades is not None:
            indices = indices[np.isin(self.cache_grades[indices], sorted(self.grades))]
        if split == "train" and self.train_per_grade is not None:
            grades = self.cache_grades[indices]
            indices = at_most_per_grade(indices, grades, *self.train_per_grade)
        return indices

    def fellow_index(self, split: str) -> np.ndarray:
        """(N,) per image of `split` in loader order, the position of the same patient's
        other eye in that split; -1 where it is not there (`records.fellow_eyes`)."""
        return fellow_eyes([self.cache.records[i] for i in self.indices(split)])

    def dataset(self, split: str) -> ImageArray:
        """The real images of a split, unaugmented (what val and test always are)."""
        return ImageArray(self.cache.images, self.cache_grades, self.indices(split))

    def train_dataset(self, epoch: int = 0) -> Dataset:
        """Real training images, plus the plan's oversampled and synthetic ones, augmented."""
        indices = self.indices("train")
        if self.plan is not None and not any(self.plan.real.values()):
            indices = indices[:0]  # a synthetic-only plan (`RebalancePlan.synthetic_only`)
        if self.plan is not None:
            grades = self.cache_grades[indices]
            extra = oversample_indices(indices, grades, self.plan.oversampled, self.seed)
            indices = np.concatenate([indices, extra])
        real = ImageArray(self.cache.images, self.cache_grades, indices, self.augment)
        if self.synthetic is None:
            return real
        images, grades = self.synthetic.draw(epoch)
        return ConcatDataset([real, ImageArray(images, grades, augment=self.augment)])

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.plan is not None:
            print(self.plan.table())

    def _loader(self, dataset: Dataset, sampler: EpochShuffle | None = None) -> DataLoader:
        """A loader in order (val, test), or in `sampler`'s order for training."""
        train = sampler is not None
        seed = sampler.seed if train else self.seed
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=partial(reseed_augment, seed) if self.augment is not None else None,
            drop_last=train and len(dataset) > self.batch_size,  # no batch of 1 for BatchNorm
            multiprocessing_context=worker_context(self.num_workers),
            # Its own generator: drawing workers' base seeds leaves the global RNG alone.
            generator=torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> DataLoader:
        """The epoch's training loader. Its order and augmentation are seeded by (seed,
        epoch), so a trainer that rebuilds it each epoch (drvae's do) gives epoch k the same
        batches whether or not the fit was stopped and resumed before it."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        seed = epoch_seed(self.seed, epoch)
        if hasattr(self.augment, "set_random_seed"):  # albumentations ignores global seeds
            self.augment.set_random_seed(seed)
        dataset = self.train_dataset(epoch)
        if self.sampler == "balanced":
            epochs = self.trainer.max_epochs if self.trainer is not None else 1
            power = balance_power(*self.balance, epoch, epochs if epochs is not None else -1)
            return self._loader(dataset, EpochBalanced(dataset_grades(dataset), seed, power))
        return self._loader(dataset, EpochShuffle(len(dataset), seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"))
