"""Samples per grade and reconstructions of the VAE, logged every few validation epochs."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchvision.utils import make_grid

from drvae.callbacks.image_logging import log_image
from drvae.models.vae import to_unit


def to_grid_image(images: Tensor, nrow: int) -> np.ndarray:
    """(B, C, S, S) floats in [0, 1] -> (H, W, 3) uint8 grid with `nrow` images per row."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class VAEImageGrid(L.Callback):
    """Every `every_n_epochs` validation epochs, log two images:

    - `<prefix>/samples`: one row per grade (one row for an unconditional VAE), `per_grade`
      samples each, from a fixed generator so rows are comparable across epochs;
    - `<prefix>/reconstructions`: the first `n_reconstructions` validation images (top)
      above their reconstructions (bottom).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        per_grade: int = 8,
        n_reconstructions: int = 8,
        temperature: float = 1.0,
        seed: int = 0,
        prefix: str = "vae",
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.per_grade = per_grade
        self.n_reconstructions = n_reconstructions
        self.temperature = temperature
        self.seed = seed
        self.prefix = prefix
        self._batch: tuple[Tensor, Tensor] | None = None
        self.logged: list[str] = []  # where the images went (for the run's summary)

    def _due(self, trainer: L.Trainer) -> bool:
        # During fit only: the epoch numbers then name the images truthfully.
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        return fitting and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0 and self.n_reconstructions > 0 and self._due(trainer):
            images, grades = batch
            self._batch = (images[: self.n_reconstructions], grades[: self.n_reconstructions])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._due(trainer) or not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            self._log_samples(trainer, pl_module)
            self._log_reconstructions(trainer, pl_module)
        finally:
            pl_module.train(was_training)

    def _log_samples(self, trainer: L.Trainer, vae: L.LightningModule) -> None:
        rows = vae.hparams.num_classes or 1
        grades = torch.arange(rows).repeat_interleave(self.per_grade)  # (rows * per_grade,)
        generator = torch.Generator().manual_seed(self.seed)
        samples = vae.sample(grades, self.temperature, generator=generator)
        caption = f"epoch {trainer.current_epoch}: one row per grade, T={self.temperature}"
        grid = to_grid_image(samples, nrow=self.per_grade)
        self.logged += log_image(trainer, f"{self.prefix}/samples", grid, caption)

    def _log_reconstructions(self, trainer: L.Trainer, vae: L.LightningModule) -> None:
        if self._batch is None:
            return
        images, grades = self._batch
        originals = to_unit(images)
        recon = vae.reconstruct(images, grades if vae.hparams.num_classes else None)
        both = torch.cat([originals.to(recon.device), recon])  # (2B, C, S, S)
        caption = f"epoch {trainer.current_epoch}: originals (top), reconstructions (bottom)"
        grid = to_grid_image(both, nrow=len(images))
        self.logged += log_image(trainer, f"{self.prefix}/reconstructions", grid, caption)
        self._batch = None
