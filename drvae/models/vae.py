"""`ConditionalVAE`: the class-conditional VAE as a LightningModule (loss, logging, sampling).

Batches are `(images, grades)` with images (B, C, S, S) uint8 or float in [0, 1]. With
`num_classes=0` the VAE is unconditional (the paper's reading: one VAE per grade).
Hyperparameters are primitives only (the optimiser and scheduler are `_partial_` config
dictionaries), so `ConditionalVAE.load_from_checkpoint(path)` needs no other argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from drvae.models.components.conditioning import LabelEmbedding
from drvae.models.components.conv_vae import Conditioning, Decoder, Encoder, Norm, Upsample
from drvae.models.optim import configure_optimizers
from drvae.models.vae_loss import (
    Reconstruction,
    Warmup,
    beta_at,
    bits_per_dim,
    gaussian_kl,
    kl_with_free_bits,
    reconstruction_floor,
    reconstruction_loss,
)

TERMS = ("loss", "recon", "recon_gap", "kl", "elbo", "bpd")  # logged as train/..., val/...
CHECKPOINT_KIND = "drvae.ConditionalVAE/1"  # stored in every checkpoint; checked on load
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def to_unit(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is taken as already in [0, 1]."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


class LatentMoments:
    """Running mean and variance of mu per latent unit over an epoch (for active units)."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, None, None

    def update(self, mu: Tensor) -> None:
        mu = mu.detach().double()
        total, squares = mu.sum(0), mu.pow(2).sum(0)
        self.n += mu.shape[0]
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares

    def variance(self) -> Tensor | None:
        if self.n < 2:
            return None
        mean = self.total / self.n
        return (self.squares / self.n - mean.pow(2)).clamp(min=0)


class ConditionalVAE(L.LightningModule):
    """A VAE whose encoder and decoder are conditioned on the DR grade.

    Args:
        image_size: square input size; `2**depth` must divide it.
        num_classes: number of grades to condition on; 0 for an unconditional VAE.
        latent_dim, width, depth, norm: the architecture (see `components.conv_vae`).
        upsample: the decoder's upsampling, "transposed" (4x4 stride-2 transposed convs) or
            "nearest" (nearest-neighbour then 3x3 conv: no checkerboard artefacts).
        conditioning: "concat" (label code as channels and concatenated to z) or "film".
        label_embedding: "onehot" or "learned" (an `embed_dim`-dimensional embedding).
        reconstruction: "bce" (pixel-wise binary cross-entropy, the paper's) or "mse".
        beta: weight of the KL term in the loss (1 = the ELBO; see `vae_loss`).
        kl_warmup, kl_warmup_steps, kl_cycles: schedule of beta over optimiser steps.
        free_bits: nats per latent dimension below which KL is not penalised (0 = off).
        active_threshold: a latent unit is active when Var_x(E[z_u | x]) exceeds this
            (Burda et al. 2016).
        compile: `torch.compile` encoder and decoder for training (in place: checkpoints
            unchanged).
        optimizer, scheduler: `_partial_` config dictionaries for hydra's `instantiate`.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        num_classes: int = 5,
        latent_dim: int = 128,
        width: int = 32,
        depth: int = 4,
        norm: Norm = "batch",
        upsample: Upsample = "transposed",
        conditioning: Conditioning = "concat",
        label_embedding: LabelEmbedding = "onehot",
        embed_dim: int = 16,
        reconstruction: Reconstruction = "bce",
        beta: float = 1.0,
        kl_warmup: Warmup = "none",
        kl_warmup_steps: int = 1000,
        kl_cycles: int = 4,
        free_bits: float = 0.0,
        active_threshold: float = 0.01,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.save_hyperparameters()
        arch = dict(
            image_size=image_size,
            channels=channels,
            width=width,
            depth=depth,
            latent_dim=latent_dim,
            norm=norm,
            num_classes=num_classes,
            conditioning=conditioning,
            label_embedding=label_embedding,
            embed_dim=embed_dim,
        )
        self.encoder = Encoder(**arch)
        self.decoder = Decoder(**arch, upsample=upsample)
        reconstruction_loss(torch.zeros(1, 1), torch.zeros(1, 1), reconstruction)  # validates
        beta_at(0, beta, kl_warmup, kl_warmup_steps, kl_cycles)  # validates
        self._moments = {"train": LatentMoments(), "val": LatentMoments()}
        # per stage, the loss terms' running means (a ModuleDict key cannot be "train")
        self.train_means = torch.nn.ModuleDict({t: MeanMetric() for t in TERMS})
        self.val_means = torch.nn.ModuleDict({t: MeanMetric() for t in TERMS})

    # ----------------------------------------------------------------- the model
    def _labels(self, grades: Tensor | None) -> Tensor | None:
        return grades if self.hparams.num_classes else None

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.encoder.compile()
            self.decoder.compile()

    def forward(self, x: Tensor, grades: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, C, S, S) in [0, 1] -> logits (B, C, S, S), mu and logvar (B, latent)."""
        mu, logvar = self.encoder(x, self._labels(grades))
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation
        return self.decoder(z, self._labels(grades)), mu, logvar

    @property
    def beta(self) -> float:
        h = self.hparams
        return beta_at(self.global_step, h.beta, h.kl_warmup, h.kl_warmup_steps, h.kl_cycles)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, grades = batch
        x = to_unit(images)
        logits, mu, logvar = self(x, grades)
        recon = reconstruction_loss(logits, x, self.hparams.reconstruction)  # (B,)
        kl_per_dim = gaussian_kl(mu, logvar)  # (B, latent)
        kl = kl_per_dim.sum(dim=1)  # (B,)
        beta = self.beta
        loss = (recon + beta * kl_with_free_bits(kl_per_dim, self.hparams.free_bits)).mean()
        neg_elbo = recon + kl  # (B,) nats per image, with beta = 1 and no free bits
        self._moments[stage].update(mu)
        floor = reconstruction_floor(x, self.hparams.reconstruction)
        terms = {
            "loss": loss,
            "recon": recon.mean(),
            "recon_gap": (recon - floor).mean(),
            "kl": kl.mean(),
            "elbo": -neg_elbo.mean(),
            "bpd": bits_per_dim(neg_elbo, x[0].numel()).mean(),
        }
        for name, value in terms.items():
            self._means(stage)[name].update(value.detach(), x.shape[0])
        if stage == "train":  # one Lightning log call per step: each costs about 1 ms
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _means(self, stage: str) -> torch.nn.ModuleDict:
        return self.train_means if stage == "train" else self.val_means

    def _log_means(self, stage: str) -> None:
        """Each term's epoch mean (torchmetrics syncs them across DDP processes)."""
        for name, mean in self._means(stage).items():
            if mean.update_called and not (stage == "train" and name == "loss"):
                self.log(f"{stage}/{name}", mean.compute(), sync_dist=True)
            mean.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def _log_active_units(self, stage: str) -> None:
        variance = self._moments[stage].variance()
        self._moments[stage] = LatentMoments()
        if variance is not None:
            active = (variance > self.hparams.active_threshold).sum().float()
            self.log(f"{stage}/active_units", active, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self._log_means("train")
        self.log("train/beta", self.beta)
        self._log_active_units("train")

    def on_validation_epoch_end(self) -> None:
        self._log_means("val")
        self._log_active_units("val")

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer or DEFAULT_OPTIMIZER
        return configure_optimizers(
            self.parameters(), optimizer, self.hparams.scheduler, "val/loss"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["drvae"] = CHECKPOINT_KIND

    # ---------------------------------------------------------------- sampling API
    def _grade_tensor(self, grades: Tensor | Sequence[int]) -> Tensor:
        grades = torch.as_tensor(grades, dtype=torch.long, device=self.device)
        k = self.hparams.num_classes
        if k and ((grades < 0) | (grades >= k)).any():
            raise ValueError(f"grades {grades.unique().tolist()} outside the VAE's 0-{k - 1}")
        return grades

    @torch.no_grad()
    def sample(
        self,
        grades: Tensor | Sequence[int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Decode z ~ N(0, temperature^2 I), one image per entry of `grades`.

        Returns (B, C, S, S) floats in [0, 1]: the decoder's Bernoulli means. For an
        unconditional VAE only the number of grades matters. `generator` (on the CPU)
        makes the draw reproducible whatever device the model is on.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        z = torch.randn(len(grades), self.hparams.latent_dim, generator=generator)
        return self.decode_latent(z * temperature, grades, temperature, generator)

    @torch.no_grad()
    def encode_means(self, x: Tensor, grades: Tensor | Sequence[int] | None = None) -> Tensor:
        """(B, latent_dim) posterior means of the (top) latent: what an aggregate-posterior
        sampler fits (`drvae.models.latent_samplers`)."""
        x = to_unit(x.to(self.device))
        labels = self._labels(self._grade_tensor(grades) if grades is not None else None)
        return self.encoder(x, labels)[0]

    @torch.no_grad()
    def decode_latent(
        self,
        z: Tensor,
        grades: Tensor | Sequence[int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Decode given (top) latents z (B, latent_dim) into (B, C, S, S) in [0, 1]; any
        lower latent level is drawn from its prior at `temperature` with `generator`."""
        grades = self._grade_tensor(grades)
        return torch.sigmoid(self.decoder(z.to(self.device), self._labels(grades)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, grades: Tensor | Sequence[int] | None = None) -> Tensor:
        """Decode the posterior mean of each image: (B, C, S, S) in [0, 1]."""
        x = to_unit(x.to(self.device))
        labels = self._labels(self._grade_tensor(grades) if grades is not None else None)
        mu, _ = self.encoder(x, labels)
        return torch.sigmoid(self.decoder(mu, labels))

    @torch.no_grad()
    def interpolate(
        self,
        x_a: Tensor,
        x_b: Tensor,
        grade_a: int | None = None,
        grade_b: int | None = None,
        steps: int = 8,
    ) -> Tensor:
        """Decode `steps` points on the line between two images' posterior means.

        x_a, x_b: (C, S, S). For a conditional VAE the grade code is blended along the same
        line, so grade_a -> grade_b can be watched too. Returns (steps, C, S, S) in [0, 1].
        """
        k = self.hparams.num_classes
        if k and (grade_a is None or grade_b is None):
            raise ValueError("a conditional VAE needs grade_a and grade_b to interpolate")
        pair = to_unit(torch.stack([x_a, x_b]).to(self.device))
        grades = self._grade_tensor([grade_a, grade_b]) if k else None
        mu, _ = self.encoder(pair, grades)  # (2, latent)
        t = torch.linspace(0, 1, steps, device=self.device)[:, None]  # (steps, 1)
        z = (1 - t) * mu[0] + t * mu[1]  # (steps, latent)
        labels = None
        if k:
            onehot = torch.nn.functional.one_hot(grades, k).float()  # (2, K)
            labels = (1 - t) * onehot[0] + t * onehot[1]  # (steps, K) soft grades
        return torch.sigmoid(self.decoder(z, labels))
