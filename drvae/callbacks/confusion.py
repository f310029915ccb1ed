"""`ConfusionMatrixLogger`: the classifier's confusion matrices as an image and a table.

It reads the matrix the module computed for the epoch (`GradeClassifier.last_confusion`)
and logs it to every logger: W&B gets an image and a `wandb.Table`, TensorBoard an image and
a Markdown table, any other logger a PNG and a CSV file in `images/` beside its log.
"""

from __future__ import annotations

import csv
import io

import lightning as L
import matplotlib
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from drvae.callbacks.image_logging import log_image, png_folder
from drvae.data.records import GRADE_NAMES

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt


def confusion_image(matrix: np.ndarray, title: str) -> np.ndarray:
    """(H, W, 3) uint8 heat map: rows true grade, columns predicted; colour = row share."""
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if rows[i, j] > 0.5 else "black"
        ax.text(j, i, str(int(count)), ha="center", va="center", color=colour, fontsize=9)
    ticks = range(len(matrix))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted grade", ylabel="true grade", title=title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return np.array(Image.open(buffer).convert("RGB"))


def confusion_rows(matrix: np.ndarray) -> list[list]:
    """Table rows: true grade, its name, then the count predicted as each grade."""
    return [[g, GRADE_NAMES[g], *map(int, row)] for g, row in enumerate(matrix)]


COLUMNS = ["true_grade", "name", *[f"predicted_{g}" for g in range(len(GRADE_NAMES))]]


class ConfusionMatrixLogger(L.Callback):
    """Logs the validation matrix every `every_n_epochs` epochs and the test matrix."""

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        matrix = pl_module.last_confusion.get(stage)
        if matrix is None or not trainer.is_global_zero:
            return
        matrix = matrix.numpy()
        key = f"{stage}/confusion_matrix"
        log_image(trainer, key, confusion_image(matrix, f"{stage}, epoch {trainer.current_epoch}"))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"{key}_table", columns=COLUMNS, data=confusion_rows(matrix))
            elif isinstance(logger, TensorBoardLogger):
                lines = ["| " + " | ".join(map(str, r)) + " |" for r in confusion_rows(matrix)]
                header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
                text = header + "\n" + "\n".join(lines)
                logger.experiment.add_text(key, text, trainer.global_step)
            else:
                path = png_folder(logger, trainer) / f"{stage}_confusion_matrix.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("w", newline="") as f:
                    csv.writer(f).writerows([COLUMNS, *confusion_rows(matrix)])
