"""bf16 mixed precision (what trainer=gpu and trainer=ddp use) on the CPU: Lightning's
autocast runs there too, so an op that refuses autocast fails here, not first on a GPU."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import quiet_trainer  # tests/ is on sys.path

from drvae.bench.training import image_dataset, image_loader
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


def test_the_classifier_trains_in_bf16_mixed_precision_and_grades_as_in_float32() -> None:
    """bf16 computes the network, float32 keeps the weights and the scores: the trained
    weights are float32 and have moved, bf16 grades the images as float32 does (within bf16
    rounding), and the logged balanced accuracy is the validation confusion matrix's."""
    model = GradeClassifier("test_resnet", image_size=32)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    metrics = fit_bf16(model)
    trained = dict(model.named_parameters())
    assert all(p.dtype == torch.float32 for p in trained.values())
    assert any(not torch.equal(p, start[name]) for name, p in trained.items())
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    images = image_dataset(16, 32).tensors[0]
    model.eval()
    with torch.no_grad():
        full = model.grade_probabilities(model.evaluate(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.evaluate(images)
        half = model.grade_probabilities(logits.float())
    assert logits.dtype == torch.bfloat16  # autocast reaches the network
    torch.testing.assert_close(half, full, atol=2e-3, rtol=0)
    matrix = model.last_confusion["val"].double()
    present = matrix.sum(dim=1) > 0
    recall = matrix.diagonal()[present] / matrix.sum(dim=1)[present]
    assert metrics["val/balanced_accuracy"] == pytest.approx(recall.mean().item(), abs=1e-6)


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
