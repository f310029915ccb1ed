"""Lightning callbacks: image grids and figures, logged to whichever logger is in use."""

from drvae.callbacks.confusion import ConfusionMatrixLogger
from drvae.callbacks.image_logging import log_image
from drvae.callbacks.vae_images import VAEImageGrid

__all__ = ["ConfusionMatrixLogger", "VAEImageGrid", "log_image"]
