"""Stage `audit`: how faithful, diverse and private a synthetic set is, per grade and pooled.

Every measure compares the synthetic images with the real TRAINING images the VAE learnt
from, and puts beside it the same measure for real HELD-OUT images (val + test): a distance
means something only next to the distance between two real samples. The feature space is the
penultimate layer of the grading classifier trained on real images only (in-domain, offline;
no downloaded Inception weights). The stage folder holds `audit.json` and the plots.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from drvae.config import plain
from drvae.data.records import NUM_GRADES
from drvae.metrics import audit as m
from drvae.metrics.latent import active_units, kl_per_dimension
from drvae.models.checkpoints import load_classifier, load_vae
from drvae.models.classifier_outputs import classifier_outputs
from drvae.models.vae import to_unit
from drvae.pipeline.data import PreparedData
from drvae.pipeline.store import StageResult, StageStore, config_key
from drvae.report.audit_plots import write_plots
from drvae.run_folder import CLASSIFIER

NEAR = ("synthetic", "heldout")  # compared with the training images


class AuditSets:
    """The images the audit compares: synthetic, real training and real held-out."""

    def __init__(self, data: PreparedData, synthetic: np.ndarray, requested: np.ndarray) -> None:
        grades = data.cache.grades
        heldout = np.concatenate([data.splits.val, data.splits.test])
        self.images = {
            "synthetic": synthetic,
            "train": np.asarray(data.cache.images[data.splits.train]),
            "heldout": np.asarray(data.cache.images[heldout]),
        }
        self.grades = {
            "synthetic": requested,
            "train": grades[data.splits.train],
            "heldout": grades[heldout],
        }

    def of(self, name: str, grade: int | None) -> np.ndarray:
        """Indices of a set's images of `grade` (None: all)."""
        grades = self.grades[name]
        return np.arange(len(grades)) if grade is None else np.flatnonzero(grades == grade)


def _distances(feats: dict[str, Tensor], sets: AuditSets, cfg: DictConfig, grade: int | None):
    """Fréchet, KID and PRDC of synthetic vs train beside held-out vs train, each at one
    subset size (80% of the smaller of the two), so the sizes do not decide the comparison."""
    train = feats["train"][sets.of("train", grade)]
    samples = {name: feats[name][sets.of(name, grade)] for name in ("synthetic", "heldout")}
    size = int(0.8 * min(len(v) for v in samples.values()))
    if size < 2 or len(train) < 2:
        return {"subset_size": size, "skipped": "fewer than 2 images to compare"}
    k = max(1, min(cfg.nearest_k, size - 1, len(train) - 1))

    def kid(a: Tensor, b: Tensor) -> float:
        return m.kernel_distance(a, b, cfg.kid_subset_size, cfg.kid_subsets, cfg.seed)[0]

    def prdc(a: Tensor, b: Tensor) -> dict[str, float]:
        return m.prdc(a, b, nearest_k=k)

    stats = {"frechet": m.frechet_distance, "kid": kid, "prdc": prdc}
    return {
        "subset_size": size,
        "n_train": len(train),
        **{
            name: m.subset_statistics(stats, train, sample, size, cfg.bootstrap, cfg.seed)
            for name, sample in samples.items()
        },
    }


def _diversity(sets: AuditSets, cfg: DictConfig, grade: int) -> dict[str, float]:
    """Mean pairwise MS-SSIM within the grade (higher: less diverse)."""
    return {
        name: m.mean_pairwise_ms_ssim(
            sets.images[name][sets.of(name, grade)], cfg.ms_ssim_pairs, cfg.seed
        )
        for name in ("synthetic", "train")
        if len(sets.of(name, grade)) >= 2
    }


def pixel_rows(images: np.ndarray) -> Tensor:
    """uint8 (N, S, S, 3) -> (N, S*S*3) in [0, 1]: the space of the pixel memorisation figures."""
    return torch.from_numpy(images.reshape(len(images), -1)).float() / 255  # (N, S*S*3)


def _memorisation(sets: AuditSets) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Nearest training image (pixel space) of each synthetic and held-out image."""
    train = pixel_rows(sets.images["train"])
    near = {name: m.nearest_neighbours(pixel_rows(sets.images[name]), train) for name in NEAR}
    distances = {name: d for name, (d, _) in near.items()}
    index = near["synthetic"][1]
    return m.memorisation(distances["synthetic"], distances["heldout"]), {
        **distances,
        "synthetic_index": index,
    }


def _vae_health(checkpoints: Mapping[int, Path], sets: AuditSets) -> dict[str, Any]:
    """KL per latent dimension and active units on the held-out real images, per VAE file."""
    health = {}
    for path in sorted(set(checkpoints.values())):
        vae = load_vae(path)
        grades_of = [g for g, p in checkpoints.items() if p == path]
        index = np.flatnonzero(np.isin(sets.grades["heldout"], grades_of))
        images = torch.from_numpy(sets.images["heldout"][index]).permute(0, 3, 1, 2)
        labels = torch.from_numpy(sets.grades["heldout"][index])
        with torch.no_grad():
            mu, logvar = vae.encoder(to_unit(images), labels if vae.hparams.num_classes else None)
        kl = kl_per_dimension(mu, logvar)
        health[path.name] = {
            "kl_per_dimension": [round(float(v), 4) for v in kl],
            "kl_total": round(float(kl.sum()), 3),
            "active_units": active_units(mu, vae.hparams.active_threshold),
            "latent_dim": int(mu.shape[1]),
        }
    return health


def _fidelity(reference: Path, sets: AuditSets, cfg: DictConfig) -> tuple[dict, dict[str, Tensor]]:
    """Class consistency of the synthetic images under the real-trained classifier (which
    is TRTS: train on real, test on synthetic), and every set's features for distances."""
    model = load_classifier(reference)
    outputs = {n: classifier_outputs(model, x, cfg.batch_size) for n, x in sets.images.items()}
    requested = torch.from_numpy(sets.grades["synthetic"])
    consistency = m.class_consistency(requested, outputs["synthetic"][1])
    return consistency, {name: features for name, (features, _) in outputs.items()}


def _per_grade(sets: AuditSets, feats: dict[str, Tensor], cfg: DictConfig) -> dict[str, Any]:
    grades = [g for g in range(NUM_GRADES) if len(sets.of("synthetic", g))]
    return {
        "pooled": {"distances": _distances(feats, sets, cfg, None)},
        **{
            str(g): {
                "distances": _distances(feats, sets, cfg, g),
                "ms_ssim": _diversity(sets, cfg, g),
            }
            for g in grades
        },
    }


def audit_key(
    cfg: DictConfig,
    data: PreparedData,
    synthetic_key: str,
    reference_key: str,
    tstr_key: str | None,
    fidelity_key: str,
) -> str:
    audit = {k: v for k, v in plain(cfg.audit).items() if k != "synthetic"}
    return config_key(
        "audit", data.key, synthetic_key, reference_key, tstr_key, fidelity_key, audit, cfg.seed
    )


def run_audit_stage(
    cfg: DictConfig,
    data: PreparedData,
    synthetic: tuple[np.ndarray, np.ndarray, str],
    checkpoints: Mapping[int, Path],
    reference: StageResult,
    tstr: StageResult | None,
    fidelity: StageResult,
    store: StageStore,
) -> StageResult:
    """Audit (or reuse the audit of) a synthetic set: `synthetic` is (images, requested
    grades, the set's key); `reference` the classifier trained on real images; `tstr` the
    classifier trained on the synthetic images only (or None); `fidelity` the fidelity
    stage of the set (drvae.pipeline.fidelity_stage), reported with the audit."""
    images, requested, synthetic_key = synthetic
    options = DictConfig({**plain(cfg.audit), "seed": cfg.seed})
    tstr_key = tstr.key if tstr else None
    key = audit_key(cfg, data, synthetic_key, reference.key, tstr_key, fidelity.key)

    def build(tmp: Path) -> dict[str, Any]:
        sets = AuditSets(data, images, requested)
        consistency, feats = _fidelity(reference.path / CLASSIFIER, sets, options)
        memorised, near = _memorisation(sets)
        # The same measure in the judge's features: pixel L2 favours blurry samples, which
        # sit near smooth training photographs without copying any of them.
        in_features = [m.nearest_neighbours(feats[n], feats["train"])[0] for n in NEAR]
        report = {
            "counts": {
                name: np.bincount(g, minlength=NUM_GRADES).tolist()
                for name, g in sets.grades.items()
            },
            "class_consistency": consistency,
            "fidelity": fidelity.info,
            "train_real_test_real": reference.info["metrics"],
            "trts_ratio": _ratios(consistency, reference.info["metrics"]),
            "tstr_ratio": _ratios(tstr.info["metrics"], reference.info["metrics"])
            if tstr
            else None,
            "grades": _per_grade(sets, feats, options),
            "memorisation": memorised,
            "memorisation_features": m.memorisation(*in_features),
            "vae_health": _vae_health(checkpoints, sets),
        }
        report["plots"] = write_plots(tmp, report, sets.images, near, options.gallery)
        (tmp / "audit.json").write_text(json.dumps(report, indent=1, default=float))
        return summary(report)

    return store.run("audit", key, build)


def _ratios(metrics: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float | None]:
    """accuracy and QWK of a transfer as a share of train-real/test-real's."""
    out = {}
    for name in ("accuracy", "qwk"):
        value = metrics.get(name, metrics.get(f"test/{name}"))
        base = baseline.get(f"test/{name}")
        out[name] = round(value / base, 4) if value is not None and base else None
    return out


def summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The audit's headline figures, for results.json."""
    pooled = report["grades"]["pooled"]["distances"]
    return {
        "class_consistency_accuracy": report["class_consistency"]["accuracy"],
        "class_consistency_qwk": report["class_consistency"]["qwk"],
        "trts_ratio": report["trts_ratio"],
        "fidelity": report["fidelity"],
        "tstr_ratio": report["tstr_ratio"],
        "subset_size": pooled.get("subset_size"),
        "frechet_synthetic": pooled.get("synthetic", {}).get("frechet"),
        "frechet_heldout": pooled.get("heldout", {}).get("frechet"),
        "memorisation": report["memorisation"],
        "memorisation_features": report["memorisation_features"],
    }
