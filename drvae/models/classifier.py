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
from timm.data import Mixup
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from drvae.data.records import NUM_GRADES
from drvae.errors import ConfigError
from drvae.metrics.grading import confusion_matrix, grading_metrics
from drvae.metrics.thresholds import DEFAULT_THRESHOLDS, fit_thresholds
from drvae.models.classifier_loss import make_loss
from drvae.models.fellow_eye import fit_fellow_weight, with_fellow
from drvae.models.grading_heads import (
    THRESHOLDED,
    grade_score,
    grade_scores,
    head_loss,
    head_outputs,
    soft_target_loss,
)
from drvae.models.optim import configure_optimizers
from drvae.models.vae import to_unit

CHECKPOINT_KIND = "drvae.GradeClassifier/1"  # stored in every checkpoint; checked on load
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


class PretrainedWeightsError(ConfigError):
    """`classifier.model.pretrained` names weights that cannot be had: no such local file,
    a file of another model, or a hub download that failed (offline)."""


HUB_PREFIX = "hf-hub:"  # timm's own spelling of a Hugging Face hub model id


def create_timm_model(
    model_name: str, num_classes: int, pretrained: str | bool | None, drop_rate: float
) -> torch.nn.Module:
    """`timm.create_model` from scratch, from a local weights file, or (opt-in: `true`, or a
    `hf-hub:` id) from timm's hub cache, which downloads where the machine is online."""
    settings = {"num_classes": num_classes, "drop_rate": drop_rate}  # timm starts a new head
    if not pretrained:
        return timm.create_model(model_name, **settings)
    if pretrained is True or str(pretrained).startswith(HUB_PREFIX):
        return _from_hub(model_name if pretrained is True else str(pretrained), settings)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"classifier.model.pretrained: {path} is not a file; give a local weights file "
            f"(.pth, .bin or .safetensors), true (timm's hub weights for {model_name}) or a "
            f"'{HUB_PREFIX}<id>' model id"
        )
    try:
        return timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **settings
        )
    except (RuntimeError, KeyError, ValueError) as error:
        raise PretrainedWeightsError(
            f"classifier.model.pretrained: {path} does not hold {model_name} weights ({error})"
        ) from None


def _from_hub(name: str, settings: dict[str, Any]) -> torch.nn.Module:
    """timm's pretrained weights through its hub cache (downloaded once, then offline)."""
    try:
        return timm.create_model(name, pretrained=True, **settings)
    except (OSError, RuntimeError, ValueError) as error:  # offline: huggingface_hub's OSErrors
        raise PretrainedWeightsError(
            f"classifier.model.pretrained: could not get timm's pretrained weights for {name} "
            f"({type(error).__name__}: {str(error)[:200]}). Offline, download them where the "
            "machine is online (they land in timm's hub cache, ~/.cache/huggingface) or give a "
            "local weights file: classifier.model.pretrained=/path/to/weights.safetensors"
        ) from None


def make_mixup(
    settings: dict[str, Any] | None, head: str, loss: str, num_classes: int, smoothing: float
) -> Mixup | None:
    """timm's Mixup / CutMix for training batches, or None. Every head learns the blended
    grades (`soft_target_loss`); the classification head only with the "ce" loss (the
    focal loss has no soft-label form), and label smoothing only there."""
    if not settings:
        return None
    if head == "classification" and loss != "ce":
        raise ConfigError(
            f"classifier.model.mixup needs loss=ce with head=classification (soft-label "
            f"cross-entropy), got loss={loss!r}"
        )
    smoothing = smoothing if head == "classification" else 0.0
    return Mixup(**{"label_smoothing": smoothing, **settings, "num_classes": num_classes})


class GradeClassifier(L.LightningModule):
    """A timm model with its loss, torchmetrics grading metrics and optimiser.

    Args:
        model_name: any `timm.list_models()` name (e.g. resnet18, efficientnet_b0).
        image_size: the size of the images the data delivers.
        input_size: the model's input size: None keeps `image_size`; "timm" takes the
            model's default from timm's data config; an int resizes to it.
        pretrained: None trains from scratch; a local weights file; True (timm's hub
            weights for `model_name`) or an "hf-hub:<id>": timm fetches them, online.
        head: "classification", "regression" or "ordinal" (`drvae.models.grading_heads`).
        fit_thresholds: regression and ordinal heads: refit the grade thresholds on the
            validation images after each validation epoch, to maximise QWK (kept in the
            checkpoint); false keeps 0.5 / 1.5 / 2.5 / 3.5.
        loss: the classification head's, "ce" (cross-entropy) or "focal"; `class_weights`
            weighs any head's loss per grade.
        label_smoothing: cross-entropy label smoothing (0 = off).
        focal_gamma: focusing exponent of the focal loss.
        drop_rate: dropout before the classifier head.
        channels_last: NHWC memory format (faster convolutions on CPU and on tensor cores).
        compile: `torch.compile` the network for training (in place: checkpoints unchanged).
        tta: test-time augmentation: validation, test and predictions average the outputs
            over the 8 flips and quarter turns of each image (8x the evaluation cost).
        fellow_eye: grade a patient's two eyes together in validation and test: each
            image's outputs are blended with its fellow eye's, the weight fitted on the
            validation images (`drvae.models.fellow_eye`; kept in the checkpoint). Needs a
            `FundusDataModule` (it knows patients and eyes) and one process.
        mixup: None, or timm `Mixup` settings (mixup_alpha, cutmix_alpha, prob,
            switch_prob, ...): training batches are blended image with image and learnt
            against the blended grades (the regression head: their mean grade; the
            ordinal head: their P(grade > k)); with the classification head, "ce" only.
        optimizer, scheduler: `_partial_` config dictionaries for hydra's `instantiate`.
        monitor: the validation metric the scheduler (if any) watches.
    """

    def __init__(
        self,
        model_name: str = "resnet10t",
        image_size: int = 64,
        num_classes: int = NUM_GRADES,
        input_size: int | str | None = None,
        pretrained: str | bool | None = None,
        head: str = "classification",
        fit_thresholds: bool = True,
        loss: str = "ce",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        drop_rate: float = 0.0,
        channels_last: bool = True,
        compile: bool = False,
        tta: bool = False,
        fellow_eye: bool = False,
        mixup: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        monitor: str = "val/qwk",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        outputs = head_outputs(head, num_classes)
        self.net = create_timm_model(model_name, outputs, pretrained, drop_rate)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.memory_format)
        data_config = timm.data.resolve_model_data_config(self.net)
        self.input_size = self._input_size(input_size, image_size, data_config)
        self.register_buffer("mean", torch.tensor(data_config["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data_config["std"]).view(1, 3, 1, 1))
        self.criterion = make_loss(loss, class_weights, label_smoothing, focal_gamma)
        self.mixup = make_mixup(mixup, head, loss, num_classes, label_smoothing)
        weights = None if class_weights is None else torch.tensor(class_weights).float()
        self.register_buffer("class_weights", weights)
        # Regression cut points: not a buffer, so that weight averaging (EMA) leaves them be;
        # saved in and restored from the checkpoint by the hooks below.
        self.thresholds = torch.tensor(DEFAULT_THRESHOLDS)
        self.fellow_weight = 0.0  # fellow_eye: the fellow eye's share, fitted on validation
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.metrics = torch.nn.ModuleDict(
            {s: grading_metrics(f"{s}/", num_classes) for s in ("val", "test")}
        )
        self.losses = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.confusion = torch.nn.ModuleDict(
            {s: confusion_matrix(num_classes) for s in ("val", "test")}
        )
        self.last_confusion: dict[str, Tensor] = {}  # per stage, the last epoch's matrix
        self.epoch_outputs: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
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

    def evaluate(self, images: Tensor) -> Tensor:  # (B, 3, S, S) uint8 -> (B, K) outputs
        """The outputs graded at validation, test and prediction: with `tta`, their mean
        over the 8 flips and quarter turns of the image (a fundus has no up or left)."""
        if not self.hparams.tta:
            return self(images)
        turns = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
        views = torch.cat([*turns, *(t.flip(3) for t in turns)])  # (8B, 3, S, S)
        return self(views).float().unflatten(0, (8, len(images))).mean(dim=0)

    def loss(self, outputs: Tensor, grades: Tensor) -> Tensor:
        if self.hparams.head == "classification":
            return self.criterion(outputs, grades)
        return head_loss(self.hparams.head, outputs, grades, self.class_weights)

    def grade_probabilities(self, outputs: Tensor) -> Tensor:
        """(B, K) grade scores from the network's outputs; their argmax is the final grade."""
        return grade_scores(self.hparams.head, outputs, self.thresholds)[0]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, grades = batch
        if self.mixup is not None and len(grades) % 2 == 0:  # timm pairs the batch off
            mixed, targets = self.mixup(to_unit(images), grades)
            loss = soft_target_loss(self.hparams.head, self(mixed), targets, self.class_weights)
        else:
            outputs = self(images)
            loss = self.loss(outputs, grades)
            self.train_accuracy(self.grade_probabilities(outputs.detach()), grades)
        # one Lightning log call per step (each costs about 1 ms); accuracy at epoch end
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_accuracy.update_called:
            self.log("train/accuracy", self.train_accuracy.compute(), sync_dist=True)
        self.train_accuracy.reset()

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, grades = batch
        outputs = self.evaluate(images)
        self.losses[stage].update(self.loss(outputs, grades), len(grades))
        # scored at the epoch's end: the grade thresholds may be refitted first
        self.epoch_outputs[stage].append((outputs.detach().float(), grades.detach()))

    def _refit_thresholds(self, outputs: Tensor, grades: Tensor) -> None:
        """The cut points that maximise QWK on every process's validation outputs."""
        if self.trainer.world_size > 1:  # the DistributedSampler pads: equal shapes
            outputs, grades = (self.all_gather(t).flatten(0, 1) for t in (outputs, grades))
        score = grade_score(self.hparams.head, outputs)
        fitted = fit_thresholds(score.cpu().numpy(), grades.cpu().numpy())
        self.thresholds = torch.tensor(fitted)

    def _fellow_index(self, stage: str, n: int) -> Tensor | None:
        """fellow_eye: (n,) the fellow eye's position among the stage's n outputs, or -1."""
        if not self.hparams.fellow_eye:
            return None
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.trainer.world_size > 1 or not hasattr(datamodule, "fellow_index"):
            raise ConfigError(
                "classifier.model.fellow_eye=true needs one process and drvae's "
                "FundusDataModule (it knows each image's patient and eye); set it to false"
            )
        index = torch.as_tensor(datamodule.fellow_index(stage)[:n])
        return torch.where(index < n, index, -1)  # a prefix of the split (limit_*_batches)

    def _fit_fellow(self, outputs: Tensor, grades: Tensor, fellow: Tensor) -> None:
        """The fellow eye's weight (and thresholds, when fitted) that maximise validation QWK."""
        refit = self.hparams.head in THRESHOLDED and self.hparams.fit_thresholds
        fixed = None if refit else self.thresholds
        self.fellow_weight, thresholds = fit_fellow_weight(
            self.hparams.head, outputs.cpu(), grades.cpu(), fellow, fixed
        )
        if thresholds is not None:
            self.thresholds = thresholds

    def _score_epoch(self, stage: str) -> None:
        outputs_list = self.epoch_outputs[stage]
        self.epoch_outputs[stage] = []
        if not outputs_list:
            return
        outputs, grades = (torch.cat(parts) for parts in zip(*outputs_list, strict=True))
        hp = self.hparams
        fellow = self._fellow_index(stage, len(grades))
        if fellow is not None and stage == "val":
            self._fit_fellow(outputs, grades, fellow)
        elif stage == "val" and hp.head in THRESHOLDED and hp.fit_thresholds:
            self._refit_thresholds(outputs, grades)
        if fellow is not None:
            outputs = with_fellow(outputs, fellow.to(outputs.device), self.fellow_weight)
        probs = self.grade_probabilities(outputs)  # (N, K); argmax = final grade
        self.metrics[stage].update(probs, grades)
        self.confusion[stage].update(probs, grades)
        if stage == "test":  # kept for the per-image predictions (paired comparisons)
            self.test_outputs.append((probs.cpu(), grades.cpu()))

    def _epoch_end(self, stage: str) -> None:
        self._score_epoch(stage)
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
        return self.grade_probabilities(self.evaluate(images))  # (B, K); argmax = its grade

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure_optimizers(
            self.parameters(),
            hp.optimizer or DEFAULT_OPTIMIZER,
            hp.scheduler,
            hp.monitor,
            total_steps=lambda: int(self.trainer.estimated_stepping_batches),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["drvae"] = CHECKPOINT_KIND
        checkpoint["grade_thresholds"] = self.thresholds.tolist()
        checkpoint["fellow_eye_weight"] = self.fellow_weight

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "grade_thresholds" in checkpoint:  # absent from checkpoints before the heads
            self.thresholds = torch.tensor(checkpoint["grade_thresholds"])
        self.fellow_weight = checkpoint.get("fellow_eye_weight", 0.0)
