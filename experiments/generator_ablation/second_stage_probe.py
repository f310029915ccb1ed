"""New latents instead of training images' ones: a second-stage VAE (Dai & Wipf 2019).

The posterior sampler's samples carry their grade but are near copies of training images
(`sim128_e60/`); the learnt prior p(z2 | z1, grade) gives noise that the judge reads as
lesions. Dai & Wipf fit a second, small VAE to the first one's aggregate posterior and
sample the first decoder through it: new latents where the first stage's were trained.
This probe fits one, conditioned on the grade, to both latent levels of a run's
hierarchical VAE (z1 flat, z2 spatial; each training image's posterior sampled afresh at
every step, standardised per channel; Gaussian decoder with a learnt variance per level,
Dai & Wipf's gamma), samples 100 images per grade from it, and reports the run's judge's
class consistency and the audit's pixel memorisation figures, as `blend_probe.py` does;
and, to tell a second stage that cannot hold the lesions from one whose prior misses them,
the judge's recall on the second stage's reconstructions of training images' latents.

The second stages (the first argument):
  flat     u (128) -> MLP -> z1 and an 8 x 8 map -> convolutions up to z2 (Dai & Wipf's
           shape: a small flat latent)
  spatial  u (4 x S'/2 x S'/2) -> convolutions -> z2, and z1 from u (room for lesions'
           positions)
  spatial_full  the same with u at z2's own size, 4 x S' x S' (a quarter of z2's
           channels): the least compression
  spatial_full_gamma02  the same with gamma fixed at 0.2 (reconstruction weighted 25x):
           does a second stage made to keep the lesions still sample them?

    .venv/bin/python experiments/generator_ablation/second_stage_probe.py \
        flat|spatial|spatial_full|spatial_full_gamma02 RUN_DIR [OUT.jsonl]

(RUN_DIR: a run folder of a hierarchical VAE with `audit_reference` and `vae` stages, or a
committed copy of one; its checkpoints must still be in the stage cache.) Prints one JSON
line for the reconstructions, then one per temperature, and writes OUT.png beside OUT
(rows: grades 0-4, samples at T 1). Seeded: a rerun on the same machine repeats them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from probe_run import ProbeRun  # beside this script: python puts its folder on the path
from torch import Tensor, nn
from torchvision.utils import save_image

from drvae.data.records import NUM_GRADES
from drvae.pipeline.sampler_stage import train_rows

STEPS, BATCH, LR, WIDTH = 3000, 64, 1e-3, 64
PER_GRADE, SEED, GRID = 100, 0, 8
TEMPERATURES = (1.0, 0.7)


class Conditioned(nn.Module):
    """Grade planes and Dai & Wipf's learnt decoder variance (log gamma per level), or a
    fixed one (`gamma`: the weight of reconstruction against KL, as a beta-VAE's)."""

    def __init__(self, gamma: float | None = None) -> None:
        super().__init__()
        if gamma is None:
            self.log_gamma = nn.Parameter(torch.zeros(2))
        else:
            self.register_buffer("log_gamma", torch.full((2,), math.log(gamma)))

    @staticmethod
    def planes(grades: Tensor, side: int) -> Tensor:
        onehot = F.one_hot(grades, NUM_GRADES).float()
        return onehot[:, :, None, None].expand(-1, -1, side, side)

    def nll(self, z1: Tensor, z2: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
        """Gaussian negative log-likelihood (B,) of both levels, up to a constant."""
        total = torch.zeros(len(z1))
        for z, r, log_g in ((z1, r1, self.log_gamma[0]), (z2, r2, self.log_gamma[1])):
            total = total + (0.5 * (z - r).pow(2) / (2 * log_g).exp() + log_g).flatten(1).sum(1)
        return total

    def loss(self, z1: Tensor, z2: Tensor, grades: Tensor) -> Tensor:
        mu, logvar = self.encode(z1, z2, grades)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)
        return (self.nll(z1, z2, *self.generate(u, grades)) + kl).mean()


class Flat(Conditioned):
    def __init__(self, d1: int, c2: int, side: int, u_dim: int = 128) -> None:
        super().__init__()
        self.side, self.u_shape = side // 4, (u_dim,)
        flat = WIDTH * self.side**2
        self.down = nn.Sequential(
            nn.Conv2d(c2 + NUM_GRADES, WIDTH, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, WIDTH, 3, 2, 1), nn.SiLU(),
        )  # fmt: skip
        self.to_u = nn.Sequential(
            nn.Linear(flat + d1 + NUM_GRADES, 512), nn.SiLU(), nn.Linear(512, 2 * u_dim)
        )
        self.from_u = nn.Sequential(
            nn.Linear(u_dim + NUM_GRADES, 512), nn.SiLU(), nn.Linear(512, d1 + flat)
        )
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(WIDTH + NUM_GRADES, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(WIDTH, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, c2, 3, 1, 1),
        )  # fmt: skip
        self.d1 = d1

    def encode(self, z1: Tensor, z2: Tensor, grades: Tensor) -> tuple[Tensor, Tensor]:
        h = self.down(torch.cat([z2, self.planes(grades, z2.shape[-1])], 1)).flatten(1)
        onehot = F.one_hot(grades, NUM_GRADES).float()
        return self.to_u(torch.cat([h, z1, onehot], 1)).chunk(2, 1)

    def generate(self, u: Tensor, grades: Tensor) -> tuple[Tensor, Tensor]:
        out = self.from_u(torch.cat([u, F.one_hot(grades, NUM_GRADES).float()], 1))
        h = out[:, self.d1 :].view(-1, WIDTH, self.side, self.side)
        return out[:, : self.d1], self.up(torch.cat([h, self.planes(grades, self.side)], 1))


class Spatial(Conditioned):
    def __init__(
        self,
        d1: int,
        c2: int,
        side: int,
        channels: int = 4,
        stride: int = 2,
        gamma: float | None = None,
    ) -> None:
        super().__init__(gamma)
        self.small, self.stride = side // stride, stride  # u's side
        self.u_shape = (channels, self.small, self.small)
        self.z1_plane = nn.Linear(d1, self.small**2)
        self.down = nn.Sequential(
            nn.Conv2d(c2 + NUM_GRADES + 1, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, WIDTH, 3, stride, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, 2 * channels, 3, 1, 1),
        )  # fmt: skip
        self.up = nn.Sequential(
            nn.Conv2d(channels + NUM_GRADES, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Upsample(scale_factor=stride), nn.Conv2d(WIDTH, WIDTH, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(WIDTH, c2, 3, 1, 1),
        )  # fmt: skip
        flat = channels * self.small**2
        self.to_z1 = nn.Sequential(nn.Linear(flat + NUM_GRADES, 256), nn.SiLU(), nn.Linear(256, d1))

    def encode(self, z1: Tensor, z2: Tensor, grades: Tensor) -> tuple[Tensor, Tensor]:
        plane = self.z1_plane(z1).view(-1, 1, self.small, self.small)
        plane = F.interpolate(plane, scale_factor=self.stride)  # up to z2's size
        return self.down(torch.cat([z2, self.planes(grades, z2.shape[-1]), plane], 1)).chunk(2, 1)

    def generate(self, u: Tensor, grades: Tensor) -> tuple[Tensor, Tensor]:
        z2 = self.up(torch.cat([u, self.planes(grades, self.small)], 1))
        onehot = F.one_hot(grades, NUM_GRADES).float()
        return self.to_z1(torch.cat([u.flatten(1), onehot], 1)), z2


KINDS = {
    "flat": Flat,
    "spatial": Spatial,
    "spatial_full": partial(Spatial, stride=1),
    "spatial_full_gamma02": partial(Spatial, stride=1, gamma=0.2),
}


def posteriors(vae, images: np.ndarray, rows: dict[int, np.ndarray]) -> tuple[list, Tensor]:
    """Both levels' posterior (mean, log-variance) of every training image, and its grade."""
    grades = torch.as_tensor(np.concatenate([[g] * len(r) for g, r in rows.items()]))
    index = np.concatenate(list(rows.values()))
    parts = []
    for start in range(0, len(index), 64):
        x = torch.from_numpy(images[index[start : start + 64]]).permute(0, 3, 1, 2)
        parts.append(vae.posterior_latents(x, grades[start : start + 64]))
    levels = [[torch.cat([p[i][j] for p in parts]) for j in (0, 1)] for i in (0, 1)]
    return levels, grades


def fit(model: Conditioned, levels: list, grades: Tensor, scale: list) -> list[float]:
    """Train on fresh posterior draws, standardised per channel; the loss every 500 steps."""
    optimiser = torch.optim.Adam(model.parameters(), LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, STEPS)
    losses = []
    for step in range(STEPS):
        i = torch.randint(len(grades), (BATCH,))
        z = [
            (mu[i] + torch.randn_like(mu[i]) * (0.5 * logvar[i]).exp() - m) / s
            for (mu, logvar), (m, s) in zip(levels, scale, strict=True)
        ]
        loss = model.loss(*z, grades[i])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 500 == 0 or step == STEPS - 1:
            losses.append(round(loss.item(), 1))
    return losses


@torch.no_grad()
def sample(model: Conditioned, vae, scale: list, temperature: float) -> np.ndarray:
    """PER_GRADE images per grade, (5 * PER_GRADE, S, S, 3) uint8, grade by grade."""
    generator = torch.Generator().manual_seed(SEED + 1)
    grades = torch.arange(NUM_GRADES).repeat_interleave(PER_GRADE)
    u = torch.randn(len(grades), *model.u_shape, generator=generator) * temperature
    return decode(vae, *model.generate(u, grades), grades, scale)


@torch.no_grad()
def reconstruct(
    model: Conditioned, vae, levels: list, grades: Tensor, scale: list
) -> tuple[np.ndarray, Tensor]:
    """The second stage's reconstructions of up to PER_GRADE training images' posterior
    means per grade, decoded by the first stage: what survives the second stage at all.
    Returns the images and their grades."""
    rng = np.random.default_rng(SEED)
    picked = np.concatenate(
        [rng.permutation(np.flatnonzero(grades == g))[:PER_GRADE] for g in range(NUM_GRADES)]
    )
    (mu1, _), (mu2, _) = levels
    (m1, s1), (m2, s2) = scale
    u, _ = model.encode((mu1[picked] - m1) / s1, (mu2[picked] - m2) / s2, grades[picked])
    return decode(vae, *model.generate(u, grades[picked]), grades[picked], scale), grades[picked]


def decode(vae, r1: Tensor, r2: Tensor, grades: Tensor, scale: list) -> np.ndarray:
    """The first stage's images (N, S, S, 3) uint8 of standardised latents (r1, r2)."""
    (m1, s1), (m2, s2) = scale
    z1, z2 = r1 * s1 + m1, r2 * s2 + m2
    x = torch.cat(
        [
            vae.decode_latent(z1[i : i + 50], grades[i : i + 50], spatial=z2[i : i + 50])
            for i in range(0, len(grades), 50)
        ]
    )
    return (x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def main(kind: str, run: Path, out: Path | None) -> None:
    probe = ProbeRun.load(run)
    rows = train_rows(probe.data, range(NUM_GRADES))
    levels, grades = posteriors(probe.vae, probe.data.cache.images, rows)
    (mu1, _), (mu2, _) = levels
    scale = [
        (mu1.mean(0), mu1.std(0) + 1e-3),
        (mu2.mean((0, 2, 3), keepdim=True)[0], mu2.std((0, 2, 3), keepdim=True)[0] + 1e-3),
    ]
    torch.manual_seed(SEED)
    model = KINDS[kind](mu1.shape[1], mu2.shape[1], mu2.shape[-1])
    start = time.perf_counter()
    losses = fit(model, levels, grades, scale)
    seconds = round(time.perf_counter() - start)
    model.eval()
    x, true = reconstruct(model, probe.vae, levels, grades, scale)
    lines = [
        {
            "run": str(run),
            "second_stage": kind,
            "set": "second-stage reconstructions of training images' posterior means",
            "n": len(x),
            **probe.graded(true, x),
        }
    ]
    print(json.dumps(lines[-1]), flush=True)
    requested = torch.arange(NUM_GRADES).repeat_interleave(PER_GRADE)
    for temperature in TEMPERATURES:
        x = sample(model, probe.vae, scale, temperature)
        lines.append(
            {
                "run": str(run),
                "second_stage": kind,
                "set": "samples, u ~ N(0, T^2 I)",
                "steps": STEPS,
                "fit_seconds": seconds,
                "loss_every_500_steps": losses,
                "gamma": [round(g, 3) for g in model.log_gamma.exp().tolist()],
                "temperature": temperature,
                "n": len(x),
                **probe.graded(requested, x),
                "memorisation": probe.memorised(x),
            }
        )
        print(json.dumps(lines[-1]), flush=True)
        if out is not None and temperature == 1.0:
            picked = np.concatenate([x[g * PER_GRADE : g * PER_GRADE + GRID] for g in range(5)])
            grid = torch.from_numpy(picked).permute(0, 3, 1, 2).float() / 255
            save_image(grid, out.with_suffix(".png"), nrow=GRID, padding=2)
    if out is not None:
        out.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":  # the cache's worker processes re-import this module
    if len(sys.argv) < 3 or sys.argv[1] not in KINDS:
        raise SystemExit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
