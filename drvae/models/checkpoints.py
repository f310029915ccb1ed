"""Load drvae checkpoints safely (`weights_only=True`), refusing files that are not drvae's
or not of the kind asked for (a VAE where a classifier is expected, and the reverse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drvae.models import classifier, vae
from drvae.models.classifier import GradeClassifier
from drvae.models.vae import ConditionalVAE


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, not a drvae VAE, or does not fit the data."""


KINDS = {vae.CHECKPOINT_KIND: "VAE", classifier.CHECKPOINT_KIND: "grading classifier"}


def read_checkpoint(path: str | Path, kind: str = vae.CHECKPOINT_KIND) -> dict[str, Any]:
    """The checkpoint's contents, loaded without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a foreign or damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    found = checkpoint.get("drvae") if isinstance(checkpoint, dict) else None
    if found != kind:
        what = f"a drvae {KINDS[found]}" if found in KINDS else "not a drvae checkpoint"
        raise CheckpointError(f"{path}: expected a drvae {KINDS[kind]} checkpoint, found {what}")
    return checkpoint


def vae_hparams(path: str | Path) -> dict[str, Any]:
    return dict(read_checkpoint(path)["hyper_parameters"])


def check_vae_fits(path: str | Path, image_size: int, grades: list[int]) -> dict[str, Any]:
    """Refuse a VAE whose image size differs from the data's or that lacks a needed grade."""
    hparams = vae_hparams(path)
    if hparams["image_size"] != image_size:
        raise CheckpointError(
            f"{path}: the VAE was trained on {hparams['image_size']} px images but "
            f"data.image_size is {image_size}"
        )
    k = hparams["num_classes"]
    missing = [g for g in grades if k and not 0 <= g < k]
    if missing:
        raise CheckpointError(
            f"{path}: the VAE knows grades 0-{k - 1}; grade(s) {missing} were requested"
        )
    return hparams


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> ConditionalVAE:
    """The VAE rebuilt from its checkpoint alone, in eval mode."""
    checkpoint = read_checkpoint(path)  # refuses foreign files with a clear message
    vae = ConditionalVAE(**checkpoint["hyper_parameters"])  # what load_from_checkpoint does
    vae.load_state_dict(checkpoint["state_dict"])
    return vae.to(device).eval()


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> GradeClassifier:
    """The grading classifier rebuilt from its checkpoint alone, in eval mode."""
    checkpoint = read_checkpoint(path, classifier.CHECKPOINT_KIND)
    # The trained weights are in the state dict: the pretrained file is not needed again.
    model = GradeClassifier(**{**checkpoint["hyper_parameters"], "pretrained": None})
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)  # what is kept beside the weights (thresholds)
    return model.to(device).eval()
