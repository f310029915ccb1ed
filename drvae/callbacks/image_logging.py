"""Log an image to every logger a Trainer has, by what the logger can do.

W&B gets a `wandb.Image`, TensorBoard an image summary; any other logger (CSV) gets a PNG
file in an `images/` folder beside its log, named by key and epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image


def png_folder(logger: object, trainer: L.Trainer) -> Path:
    log_dir = getattr(logger, "log_dir", None) or trainer.default_root_dir
    return Path(log_dir) / "images"


def log_image(trainer: L.Trainer, key: str, image: np.ndarray, caption: str = "") -> list[str]:
    """Log an (H, W, 3) uint8 image under `key`; returns where it went, one entry per logger."""
    places: list[str] = []
    step, epoch = trainer.global_step, trainer.current_epoch
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], caption=[caption], step=step)
            places.append(f"wandb:{key}")
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, step, dataformats="HWC")
            places.append(f"tensorboard:{key}")
        else:
            folder = png_folder(logger, trainer)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{key.replace('/', '_')}_epoch{epoch:03d}.png"
            Image.fromarray(image).save(path)
            places.append(str(path))
    return places
