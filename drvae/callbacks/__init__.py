"""Lightning callbacks: image grids and figures, logged to whichever logger is in use, and
the safeguards every training gets."""

from drvae.callbacks.confusion import ConfusionMatrixLogger
from drvae.callbacks.image_logging import log_image
from drvae.callbacks.safeguards import RandomState, StopOnNonFiniteLoss, TrainingDiverged
from drvae.callbacks.vae_images import VAEImageGrid

__all__ = [
    "ConfusionMatrixLogger",
    "RandomState",
    "StopOnNonFiniteLoss",
    "TrainingDiverged",
    "VAEImageGrid",
    "log_image",
]
