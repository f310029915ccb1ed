"""`ConditionalVAE`: the class-conditional VAE as a LightningModule (loss, logging, sampling).

Batches are `(images, grades)` with images (B, C, S, S) uint8 or float in [0, 1]. With
`num_classes=0` the VAE is unconditional (the paper's reading: one VAE per grade).
Hyperparameters are primitives only (the optimiser and scheduler are `_partial_` config
dictionaries), so `ConditionalVAE.load_from_checkpoint(path)` needs no other argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from drvae.metrics.latent import LatentMoments, gaussian_kl
from drvae.models.components.conditioning import LabelEmbedding
from drvae.models.components.conv_vae import Conditioning, Decoder, Encoder, Norm, Upsample
from drvae.models.components.grade_probe import GradeProbe
from drvae.models.components.hierarchical_vae import (
    HierarchicalEncoder,
    TopDownDecoder,
    image_noise,
)
from drvae.models.optim import configure_optimizers
from drvae.models.vae_loss import (
    Reconstruction,
    Warmup,
    beta_at,
    bits_per_dim,
    kl_with_free_bits,
    reconstruction_floor,
    reconstruction_loss,
)

Architecture = Literal["conv", "hierarchical"]
TERMS = (
    "loss",
    "recon",
    "recon_gap",
    "kl",
    "elbo",
    "bpd",
    "grade_loss",
)  # logged as train/..., val/...
CHECKPOINT_KIND = "drvae.ConditionalVAE/1"  # stored in every checkpoint; checked on load
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def to_unit(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is taken as already in [0, 1]."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


class ConditionalVAE(L.LightningModule):
    """A VAE whose encoder and decoder are conditioned on the DR grade.

    Args:
        image_size: square input size; `2**depth` must divide it.
        num_classes: number of grades to condition on; 0 for an unconditional VAE.
        architecture: "conv" (the paper's plain convolutional VAE, `components.conv_vae`)
            or "hierarchical" (residual blocks, a flat top latent of `latent_dim` above a
            spatial latent of `spatial_channels` at S / 2**spatial_depth, conditional
            GroupNorm in every block: `components.hierarchical_vae`).
        latent_dim, width, depth: the architecture (the top latent's size for hierarchical).
        norm, upsample, conditioning: the conv architecture's (hierarchical: always
            conditional GroupNorm and nearest-neighbour upsampling).
        upsample: the decoder's upsampling, "transposed" (4x4 stride-2 transposed convs) or
            "nearest" (nearest-neighbour then 3x3 conv: no checkerboard artefacts).
        spatial_channels, spatial_depth: the hierarchical architecture's spatial latent.
        grade_loss_weight: weight of an auxiliary grade loss (0 = off, the paper's loss):
            a small probe CNN learns to grade the real images, and the reconstructions
            must be graded as their true grade by it (`components.grade_probe`).
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
        architecture: Architecture = "conv",
        spatial_channels: int = 8,
        spatial_depth: int = 2,
        grade_loss_weight: float = 0.0,
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
            num_classes=num_classes,
            label_embedding=label_embedding,
            embed_dim=embed_dim,
        )
        self.hierarchical = architecture == "hierarchical"
        if self.hierarchical:
            self.encoder = HierarchicalEncoder(**arch, spatial_depth=spatial_depth)
            self.decoder = TopDownDecoder(
                **arch, spatial_depth=spatial_depth, spatial_channels=spatial_channels
            )
        elif architecture == "conv":
            conv = dict(norm=norm, conditioning=conditioning)
            self.encoder = Encoder(**arch, **conv)
            self.decoder = Decoder(**arch, **conv, upsample=upsample)
        else:
            raise ValueError(f"architecture must be 'conv' or 'hierarchical', got {architecture!r}")
        if grade_loss_weight < 0 or (grade_loss_weight and not num_classes):
            raise ValueError(
                f"grade_loss_weight must be >= 0 and needs num_classes > 0; got "
                f"{grade_loss_weight} with num_classes {num_classes}"
            )
        self.grade_probe = GradeProbe(num_classes) if grade_loss_weight else None
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
        """(B, C, S, S) in [0, 1] -> logits (B, C, S, S), the top latent's mu (B, latent)
        and the KL of every latent element (B, latent [+ spatial elements])."""
        labels = self._labels(grades)
        if not self.hierarchical:
            mu, logvar = self.encoder(x, labels)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation
            return self.decoder(z, labels), mu, gaussian_kl(mu, logvar)
        mu, logvar, features = self.encoder.features(x, labels)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits, kl_lower = self.decoder(z, labels, features)
        return logits, mu, torch.cat([gaussian_kl(mu, logvar), kl_lower], dim=1)

    @property
    def beta(self) -> float:
        h = self.hparams
        return beta_at(self.global_step, h.beta, h.kl_warmup, h.kl_warmup_steps, h.kl_cycles)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, grades = batch
        x = to_unit(images)
        logits, mu, kl_per_dim = self(x, grades)  # kl_per_dim: (B, latent elements)
        recon = reconstruction_loss(logits, x, self.hparams.reconstruction)  # (B,)
        kl = kl_per_dim.sum(dim=1)  # (B,)
        beta = self.beta
        loss = (recon + beta * kl_with_free_bits(kl_per_dim, self.hparams.free_bits)).mean()
        grade_loss = self._grade_loss(x, logits, grades)
        if grade_loss is not None:
            loss = loss + self.hparams.grade_loss_weight * grade_loss
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
            **({"grade_loss": grade_loss} if grade_loss is not None else {}),
        }
        for name, value in terms.items():
            self._means(stage)[name].update(value.detach(), x.shape[0])
        if stage == "train":  # one Lightning log call per step: each costs about 1 ms
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _grade_loss(self, x: Tensor, logits: Tensor, grades: Tensor) -> Tensor | None:
        """The probe's cross-entropy on the real images (trains the probe) plus on the
        reconstructions through the frozen probe (trains the decoder)."""
        if self.grade_probe is None:
            return None
        real = F.cross_entropy(self.grade_probe(x), grades)
        decoded = F.cross_entropy(self.grade_probe.frozen(torch.sigmoid(logits)), grades)
        return real + decoded

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
            self.parameters(),
            optimizer,
            self.hparams.scheduler,
            "val/loss",
            total_steps=lambda: int(self.trainer.estimated_stepping_batches),
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
        spatial: Tensor | None = None,
    ) -> Tensor:
        """Decode given (top) latents z (B, latent_dim) into (B, C, S, S) in [0, 1]; a
        hierarchical VAE's spatial latent is `spatial` (B, K, S', S') when given, else drawn
        from its prior at `temperature` with `generator`."""
        labels = self._labels(self._grade_tensor(grades))
        z = z.to(self.device)
        if not self.hierarchical:
            return torch.sigmoid(self.decoder(z, labels))
        if spatial is not None:
            return torch.sigmoid(self.decoder.decode_spatial(z, spatial.to(self.device), labels))
        logits, _ = self.decoder(z, labels, temperature=temperature, generator=generator)
        return torch.sigmoid(logits)

    @torch.no_grad()
    def posterior_latents(
        self, x: Tensor, grades: Tensor | Sequence[int] | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Each latent level's posterior mean and log-variance for images x (B, C, S, S):
        the top latent's (B, latent_dim), then a hierarchical VAE's spatial one (B, K, S',
        S'), read at the top latent's mean. What a second-stage model of the aggregate
        posterior learns from (Dai & Wipf 2019)."""
        x = to_unit(x.to(self.device))
        labels = self._labels(self._grade_tensor(grades) if grades is not None else None)
        if not self.hierarchical:
            return [self.encoder(x, labels)]
        mu, logvar, features = self.encoder.features(x, labels)
        return [(mu, logvar), self.decoder.spatial_posterior(mu, labels, features)]

    @torch.no_grad()
    def sample_posterior(
        self,
        x: Tensor,
        grades: Tensor | Sequence[int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        lower: torch.Generator | None = None,
    ) -> Tensor:
        """Decode a draw from each image's posterior, z ~ N(mu, T^2 sigma^2) at every level
        (a hierarchical VAE's spatial latent from `lower`), conditioned on `grades`: a
        variation of each image. x: (B, C, S, S) uint8 or [0, 1]; returns (B, C, S, S) in
        [0, 1]. The noise is drawn image by image: the i-th draw ignores the batch size."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        x = to_unit(x.to(self.device))
        labels = self._labels(self._grade_tensor(grades))
        if self.hierarchical:
            mu, logvar, features = self.encoder.features(x, labels)
        else:
            (mu, logvar), features = self.encoder(x, labels), None
        z = mu + temperature * image_noise(mu, generator) * (0.5 * logvar).exp()
        if not self.hierarchical:
            return torch.sigmoid(self.decoder(z, labels))
        logits, _ = self.decoder(z, labels, features, temperature, lower)
        return torch.sigmoid(logits)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, grades: Tensor | Sequence[int] | None = None) -> Tensor:
        """Decode the posterior mean of each image: (B, C, S, S) in [0, 1]."""
        x = to_unit(x.to(self.device))
        labels = self._labels(self._grade_tensor(grades) if grades is not None else None)
        if not self.hierarchical:
            mu, _ = self.encoder(x, labels)
            return torch.sigmoid(self.decoder(mu, labels))
        mu, _, features = self.encoder.features(x, labels)
        logits, _ = self.decoder(mu, labels, features, sample_posterior=False)
        return torch.sigmoid(logits)

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
        line, so grade_a -> grade_b can be watched too; a hierarchical VAE blends the
        encoder's features for its spatial latent too, so both ends are the reconstructions.
        Returns (steps, C, S, S) in [0, 1].
        """
        k = self.hparams.num_classes
        if k and (grade_a is None or grade_b is None):
            raise ValueError("a conditional VAE needs grade_a and grade_b to interpolate")
        pair = to_unit(torch.stack([x_a, x_b]).to(self.device))
        grades = self._grade_tensor([grade_a, grade_b]) if k else None
        labels = self._labels(grades)
        if self.hierarchical:
            mu, _, features = self.encoder.features(pair, labels)  # (2, latent), (2, C, S', S')
        else:
            mu, _ = self.encoder(pair, labels)  # (2, latent)
        t = torch.linspace(0, 1, steps, device=self.device)[:, None]  # (steps, 1)
        z = (1 - t) * mu[0] + t * mu[1]  # (steps, latent)
        labels = None
        if k:
            onehot = torch.nn.functional.one_hot(grades, k).float()  # (2, K)
            labels = (1 - t) * onehot[0] + t * onehot[1]  # (steps, K) soft grades
        if not self.hierarchical:
            return torch.sigmoid(self.decoder(z, labels))
        t4 = t[:, :, None, None]  # (steps, 1, 1, 1)
        blend = (1 - t4) * features[0] + t4 * features[1]  # (steps, C, S', S')
        logits, _ = self.decoder(z, labels, blend, sample_posterior=False)
        return torch.sigmoid(logits)
