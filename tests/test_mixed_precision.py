"""bf16 mixed precision (what trainer=gpu and trainer=ddp use) on the CPU: Lightning's
autocast runs there too, so an op that refuses autocast fails here, not first on a GPU."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import quiet_trainer  # tests/ is on sys.path

from drvae.bench.training import image_loader
from drvae.models.classifier import GradeClassifier
from drvae.models.vae import ConditionalVAE

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def fit_bf16(model: L.LightningModule) -> dict[str, float]:
    loader = image_loader(16, 32, 8, "cpu")
    trainer = quiet_trainer(precision="bf16-mixed")
    trainer.fit(model, loader, loader)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_the_vae_trains_and_validates_in_bf16_mixed_precision() -> None:
    metrics = fit_bf16(ConditionalVAE(image_size=32, depth=3, width=8, latent_dim=4))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["val/recon_gap"] >= 0  # the BCE floor, computed in float32


def test_the_classifier_trains_and_validates_in_bf16_mixed_precision() -> None:
    metrics = fit_bf16(GradeClassifier("test_resnet", image_size=32))
    assert 0.0 <= metrics["val/balanced_accuracy"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_the_vae_logs_every_term_per_epoch_for_train_and_val() -> None:
    """The terms are epoch means from torchmetrics (one Lightning log call per step)."""
    model = ConditionalVAE(image_size=32, depth=3, width=8, latent_dim=4)
    metrics = fit_bf16(model)
    for stage in ("train", "val"):
        for term in ("recon", "recon_gap", "kl", "elbo", "bpd", "active_units"):
            assert f"{stage}/{term}" in metrics
        elbo = -(metrics[f"{stage}/recon"] + metrics[f"{stage}/kl"])
        assert metrics[f"{stage}/elbo"] == pytest.approx(elbo, rel=1e-3)
    assert {"train/loss_step", "train/loss_epoch", "val/loss", "train/beta"} <= set(metrics)
    assert not model.val_means["elbo"].update_called  # reset after logging
