"""`GradeClassifier`: a timm CNN grading DR (0-4) as a LightningModule.

Batches are `(images (B, 3, S, S) uint8, grades (B,))`. The module scales the images to
[0, 1], resizes them to the model's input size if it differs, and normalises them with the
mean and std of timm's data config for the model. Hyperparameters are primitives only, so
`drvae.models.checkpoints.load_classifier(path)` rebuilds it from the file alone (without
the pretrained-weights file, which the trained state dict supersedes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from drvae.data.records import NUM_GRADES
from drvae.errors import ConfigError
from drvae.metrics.grading import confusion_matrix, grading_metrics
from drvae.models.classifier_loss import make_loss
from drvae.models.optim import configure_optimizers
from drvae.models.vae import to_unit

CHECKPOINT_KIND = "drvae.GradeClassifier/1"  # stored in every checkpoint; checked on load
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


class PretrainedWeightsError(ConfigError):
    """`pretrained` names no readable local weights file (drvae never downloads)."""


def create_timm_model(
    model_name: str, num_classes: int, pretrained: str | None, drop_rate: float
) -> torch.nn.Module:
    """`timm.create_model`, with pretrained weights only from the local file `pretrained`."""
    if not pretrained:
        return timm.create_model(model_name, num_classes=num_classes, drop_rate=drop_rate)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"classifier.model.pretrained: {path} is not a file; drvae loads pretrained weights "
            "only from a local file (.pth, .bin or .safetensors), it never downloads them"
        )
    try:
        return timm.create_model(
            model_name,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path)},
            num_classes=num_classes,  # timm drops a head of another size and starts it afresh
            drop_rate=drop_rate,
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise PretrainedWeightsError(
            f"classifier.model.pretrained: {path} does not hold {model_name} weights ({error})"
        ) from None


class GradeClassifier(L.LightningModule):
    """A timm model with its loss, torchmetrics grading metrics and optimiser.

    Args:
        model_name: any `timm.list_models()` name (e.g. resnet18, efficientnet_b0).
        image_size: the size of the images the data delivers.
        input_size: the model's input size: None keeps `image_size`; "timm" takes the
            model's default from timm's data config; an int resizes to it.
        pretrained: a local weights file; None trains from scratch.
        loss: "ce" (cross-entropy) or "focal"; `class_weights` weighs either per grade.
        label_smoothing: cross-entropy label smoothing (0 = off).
        focal_gamma: focusing exponent of the focal loss.
        drop_rate: dropout before the classifier head.
        channels_last: NHWC memory format (faster convolutions on CPU and on tensor cores).
        compile: `torch.compile` the network for training (in place: checkpoints unchanged).
        optimizer, scheduler: `_partial_` config dictionaries for hydra's `instantiate`.
        monitor: the validation metric the scheduler (if any) watches.
    """

    def __init__(
        self,
        model_name: str = "resnet10t",
        image_size: int = 64,
        num_classes: int = NUM_GRADES,
        input_size: int | str | None = None,
        pretrained: str | None = None,
        loss: str = "ce",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        drop_rate: float = 0.0,
        channels_last: bool = True,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        monitor: str = "val/qwk",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = create_timm_model(model_name, num_classes, pretrained, drop_rate)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.memory_format)
        data_config = timm.data.resolve_model_data_config(self.net)
        self.input_size = self._input_size(input_size, image_size, data_config)
        self.register_buffer("mean", torch.tensor(data_config["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data_config["std"]).view(1, 3, 1, 1))
        self.criterion = make_loss(loss, class_weights, label_smoothing, focal_gamma)
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.metrics = torch.nn.ModuleDict(
            {s: grading_metrics(f"{s}/", num_classes) for s in ("val", "test")}
        )
        self.losses = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.confusion = torch.nn.ModuleDict(
            {s: confusion_matrix(num_classes) for s in ("val", "test")}
        )
        self.last_confusion: dict[str, Tensor] = {}  # per stage, the last epoch's matrix
        self.test_outputs: list[tuple[Tensor, Tensor]] = []  # (probabilities, grades) batches

    @staticmethod
    def _input_size(value: int | str | None, image_size: int, data_config: dict) -> int:
        if value is None:
            return image_size
        if value == "timm":
            return int(data_config["input_size"][-1])
        if isinstance(value, int) and value > 0:
            return value
        raise ValueError(f"input_size: expected null, 'timm' or a positive int, got {value!r}")

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net.compile()

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, S, S) uint8 -> (B, K) logits
        x = to_unit(images)
        if x.shape[-1] != self.input_size:
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, grades = batch
        logits = self(images)
        loss = self.criterion(logits, grades)
        self.train_accuracy(logits, grades)
        # one Lightning log call per step (each costs about 1 ms); accuracy at epoch end
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_accuracy.update_called:
            self.log("train/accuracy", self.train_accuracy.compute(), sync_dist=True)
        self.train_accuracy.reset()

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, grades = batch
        logits = self(images)
        self.losses[stage].update(self.criterion(logits, grades), len(grades))
        probs = logits.float().softmax(dim=1)  # (B, K)
        self.metrics[stage].update(probs, grades)
        self.confusion[stage].update(probs, grades)
        if stage == "test":  # kept for the per-image predictions (paired comparisons)
            self.test_outputs.append((probs.detach().cpu(), grades.detach().cpu()))

    def _epoch_end(self, stage: str) -> None:
        values = self.metrics[stage].compute()  # torchmetrics syncs DDP processes' states
        qwk = values.pop(f"{stage}/qwk")
        self.log_dict(values, sync_dist=True)  # equal on every process: a no-op mean
        self.log(f"{stage}/qwk", qwk, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/loss", self.losses[stage].compute(), prog_bar=True, sync_dist=True)
        self.losses[stage].reset()
        self.last_confusion[stage] = self.confusion[stage].compute().cpu()
        self.metrics[stage].reset()
        self.confusion[stage].reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def test_predictions(self) -> tuple[Tensor, Tensor]:
        """The last test epoch's (N, K) probabilities and (N,) grades, in loader order."""
        probs, grades = zip(*self.test_outputs, strict=True)
        return torch.cat(probs), torch.cat(grades)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self(images).float().softmax(dim=1)  # (B, K) grade probabilities

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure_optimizers(
            self.parameters(), hp.optimizer or DEFAULT_OPTIMIZER, hp.scheduler, hp.monitor
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["drvae"] = CHECKPOINT_KIND
