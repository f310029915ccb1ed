"""Training throughput through drvae (Lightning) against a minimal hand-written PyTorch loop
on the same model, data and batch size, in the same process: the harness of the VAE and
classifier benchmarks. On CUDA both sides use bf16 autocast, as `trainer=gpu` does."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

# (model, images uint8 on the device, grades) -> the loss the hand-written loop minimises
LossFn = Callable[[torch.nn.Module, Tensor, Tensor], Tensor]


def image_dataset(n: int, size: int) -> TensorDataset:
    """Smooth random images (uint8, (N, 3, S, S)) and grades: the model's cost does not
    depend on content, but the loader's copy of uint8 pixels is as in training."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    images = torch.nn.functional.interpolate(torch.from_numpy(small).float(), size=size)
    return TensorDataset(images.byte(), torch.from_numpy(rng.integers(0, 5, n)))


def image_loader(n: int, size: int, batch: int, device: str) -> DataLoader:
    data = image_dataset(n, size)
    return DataLoader(
        data, batch_size=batch, shuffle=True, drop_last=True, pin_memory=device != "cpu"
    )


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class EpochTimer(L.Callback):
    """Wall time of each training epoch (after the device has finished its work)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device, self.seconds = device, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self._start)


def lightning_epochs(
    model: L.LightningModule, loader: DataLoader, epochs: int, device: str
) -> list[float]:
    """Epoch times of `Trainer.fit` with drvae's module (no validation, logging or saving)."""
    timer = EpochTimer(device)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if device == "cuda" else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return timer.seconds


def plain_epochs(
    model: torch.nn.Module,
    loss_fn: LossFn,
    optimiser: torch.optim.Optimizer,
    loader: DataLoader,
    epochs: int,
    device: str,
) -> list[float]:
    """Epoch times of the minimal PyTorch loop: forward, loss, backward, step."""
    model.to(device).train()
    seconds = []
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        for images, grades in loader:
            images = images.to(device, non_blocking=True)
            grades = grades.to(device, non_blocking=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = loss_fn(model, images, grades)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def compare_training(
    build: Callable[[], L.LightningModule],
    loss_fn: LossFn,
    optimiser: Callable[[torch.nn.Module], torch.optim.Optimizer],
    loader: DataLoader,
    epochs: int,
    device: str,
) -> dict[str, float]:
    """Images/s (median epoch after the first) through drvae and hand-written, and their
    ratio. Each side gets a freshly built model from the same seed."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    drvae_s = statistics.median(lightning_epochs(build(), loader, epochs, device)[1:])
    torch.manual_seed(0)
    model = build()
    plain_s = statistics.median(
        plain_epochs(model, loss_fn, optimiser(model), loader, epochs, device)[1:]
    )
    trained = len(loader) * loader.batch_size
    return {
        "images_per_epoch": trained,
        "drvae_images_per_second": round(trained / drvae_s, 1),
        "hand_written_images_per_second": round(trained / plain_s, 1),
        # what drvae adds to each optimiser step: it decides the ratio on a fast GPU
        "overhead_ms_per_step": round((drvae_s - plain_s) / len(loader) * 1000, 2),
        "ratio": round(plain_s / drvae_s, 3),
        **(
            {"peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
            if device == "cuda"
            else {}
        ),
    }
