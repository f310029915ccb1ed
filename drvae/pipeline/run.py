"""Run the configured stages in order and write the run's `results.json`."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drvae.atomic import write_json
from drvae.callbacks.safeguards import TrainingDiverged
from drvae.config import plain
from drvae.data.dataset import FixedSynthetic, SyntheticSource
from drvae.data.rebalance import RebalancePlan
from drvae.data.records import DataError
from drvae.data.synthetic import read_manifest, read_synthetic_images
from drvae.errors import ConfigError
from drvae.models.checkpoints import CheckpointError
from drvae.pipeline.audit_stage import run_audit_stage
from drvae.pipeline.checks import check_config
from drvae.pipeline.classifier_stage import run_classifier_stage
from drvae.pipeline.confidence import confident_synthetic
from drvae.pipeline.data import PreparedData, prepare_data, set_configs
from drvae.pipeline.external import score_external
from drvae.pipeline.fidelity_stage import run_fidelity_stage
from drvae.pipeline.generate_stage import counts_to_generate, generate_key, run_generate_stage
from drvae.pipeline.sampler_stage import FittedSampler, fit_sampler
from drvae.pipeline.store import StageResult, StageStore, config_key
from drvae.pipeline.synthetic_sources import DecoderSynthetic
from drvae.pipeline.vae_stage import run_vae_stage, vae_key
from drvae.run_folder import GRID, PREDICTIONS, RESULTS, vae_checkpoints
from drvae.secrets import redact

USER_ERRORS = (DataError, ConfigError, CheckpointError, TrainingDiverged)
NOTHING_ADDED = "the rebalancing adds no synthetic image"
PACKAGES = ("drvae", "torch", "torchvision", "lightning", "hydra-core", "timm", "torchmetrics")


def versions() -> dict[str, str]:
    """The library versions, and the drvae checkout's git commit where drvae runs from one."""
    found = {name: importlib.metadata.version(name) for name in PACKAGES}
    commit = source_commit()
    return found | {"drvae_commit": commit} if commit else found


SOURCE_ROOT = Path(__file__).resolve().parents[2]


def source_commit(root: Path = SOURCE_ROOT) -> str | None:
    """HEAD of the git checkout drvae's code is in, '-dirty' when tracked files differ from
    it (a run's figures are reproducible from the commit alone only when clean); None for a
    package installed outside a checkout, or without git."""
    if not (root / "pyproject.toml").is_file() or not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def command_overrides() -> list[str]:
    """The overrides the user typed (empty when run outside a Hydra app, e.g. in tests)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@dataclass
class JudgedSet:
    """The synthetic images the audit and the fidelity stage judge, and their origin; the
    images are read only when a stage is built, not when it is reused."""

    folder: Path
    image_size: int
    counts: dict[int, int]
    set_key: str
    checkpoints: dict[int, Path]  # grade -> the VAE it came from

    @cached_property
    def images(self) -> FixedSynthetic:
        return read_synthetic_images(self.folder, self.counts, self.image_size)

    @property
    def key(self) -> str:
        """A key over the set and the counts taken."""
        return config_key(self.set_key, self.counts)

    @property
    def synthetic(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(images, requested grades, key)."""
        return self.images.images, self.images.grades, self.key


class Run:
    """One job: its stages, run in order by `stage_<name>` (the audit and the fidelity stage
    ask for a VAE or a set an earlier stage skipped), what they produced, and its results."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.out = cfg, Path(cfg.paths.output_dir)
        if (self.out / RESULTS).exists():
            raise ConfigError(
                f"{self.out / RESULTS} exists: an earlier run's output is never overwritten"
            )
        self.stages, self.user_vaes = check_config(cfg)
        set_configs(cfg, "test_sets")  # a set without a source or root fails now
        self.train_sets = set_configs(cfg, "train_sets")
        self.store = StageStore(cfg.paths.cache_dir)
        self.results: dict[str, Any] = {"stages": {}}
        self.trained_vaes: dict[int, Path] | None = None  # asked again by the audit
        self.skipped: set[str] = set()
        self.generated: StageResult | None = None
        self.confidence: dict[str, Any] | None = None  # what the confidence filter did
        self.rebalancing: RebalancePlan | None = None  # the classifier's (or generate's) plan
        self.written: tuple[Callable[[], SyntheticSource], str] | None = None  # by generate
        self.synthetic_key: str | None = None  # over the classifier's synthetic images

    def record(self, stage: str, summary: dict[str, Any]) -> None:
        self.results["stages"][stage] = summary

    def plan(self, real: dict[int, int]) -> RebalancePlan:
        """The rebalancing of training counts `real`; refuses impossible targets."""
        r = self.cfg.rebalance
        return RebalancePlan.make(plain(r.methods), plain(r.per_grade), r.count_as, real)

    def vaes(self, data: PreparedData) -> dict[int, Path]:
        """Grade -> VAE checkpoint: the user's, this run's vae stage, or a stored one."""
        if self.user_vaes is not None:
            return self.user_vaes
        if self.trained_vaes is None:
            self.trained_vaes = self._train_or_find_vaes(data)
        return self.trained_vaes

    def _train_or_find_vaes(self, data: PreparedData) -> dict[int, Path]:
        if "vae" in self.stages:
            vae = run_vae_stage(self.cfg, data, self.store, self.out / "logs")
            self.record("vae", vae.summary())
            return vae_checkpoints(vae.info["checkpoints"])
        key = vae_key(self.cfg, data)
        record = self.store.finished("vae", key)
        if record is None:
            raise ConfigError(
                "stages: synthetic images need a VAE; add vae to stages or set "
                "generate.checkpoint=PATH"
            )
        folder = self.store.folder("vae", key)
        files = {n: str(folder / n) for n in record["info"]["checkpoints"]}
        return vae_checkpoints(files)

    def skip(self, stages: tuple[str, ...], why: str) -> None:
        for stage in stages:
            if stage in self.stages:
                self.record(stage, {"skipped": why})
                self.skipped.add(stage)

    def sampler(self, data: PreparedData, checkpoints: dict[int, Path]) -> FittedSampler | None:
        """`generate.sampler` fitted on the train split (None: the prior needs no fit)."""
        fitted = fit_sampler(self.cfg.generate, data, checkpoints, self.store)
        if fitted is not None:
            self.record("sampler", fitted.stage.summary())
        return fitted

    def generate(
        self,
        data: PreparedData,
        checkpoints: dict[int, Path],
        needed: dict[int, int],
        stage: str = "generate",
    ) -> StageResult:
        """Write (or reuse) a synthetic set, recorded in results.json under `stage`."""
        g, sampler = self.cfg.generate, self.sampler(data, checkpoints)
        counts = counts_to_generate(g, needed)
        generated = run_generate_stage(g, counts, checkpoints, self.store, sampler)
        self.record(stage, generated.summary())
        self.generated = generated
        return generated

    def audit_set(self, data: PreparedData) -> tuple[Path, str, dict[int, Path]]:
        """The synthetic set to audit (`audit.synthetic`, this run's set, or one generated
        for the audit), a key over it, and the VAE checkpoints it came from."""
        if self.cfg.audit.synthetic:
            folder = Path(self.cfg.audit.synthetic)
            manifest = read_manifest(folder)
            written = {int(g): Path(p) for g, p in manifest.get("checkpoints", {}).items()}
            return folder, config_key("set", manifest), self.user_vaes or written
        checkpoints = self.vaes(data)
        if self.generated is None:
            train = data.per_grade()["train"]
            wanted = {g: self.cfg.audit.per_grade for g in train if train[g]}
            # a run that skipped generate (online draws, no synthetic image) keeps that record
            skipped = "generate" in self.skipped
            self.generate(data, checkpoints, wanted, "audit_generate" if skipped else "generate")
        return self.generated.path, self.generated.key, checkpoints

    def judged_set(self, data: PreparedData) -> JudgedSet:
        """Up to `audit.per_grade` images of each grade of the set `audit_set` names."""
        folder, set_key, checkpoints = self.audit_set(data)
        available = {int(g): n for g, n in read_manifest(folder)["per_grade"].items() if n}
        counts = {g: min(n, self.cfg.audit.per_grade) for g, n in available.items()}
        return JudgedSet(folder, data.image_size, counts, set_key, checkpoints)

    def judge(self, data: PreparedData) -> StageResult:
        """The classifier trained on real images only, recorded as `audit_reference`."""
        reference = self.reference(data)
        self.record("audit_reference", reference.summary())
        return reference

    def fidelity(
        self, data: PreparedData, judged: JudgedSet, reference: StageResult
    ) -> StageResult:
        """Stage fidelity (drvae.pipeline.fidelity_stage): `audit.fidelity` in results.json,
        and its grid beside it."""
        synthetic = (judged.key, lambda: judged.synthetic[:2])
        args = (self.cfg, data, synthetic, judged.checkpoints, reference, self.store)
        result = run_fidelity_stage(*args)
        summary = result.summary()
        self.record("fidelity", {k: summary[k] for k in ("key", "path", "reused", "seconds")})
        self.results.setdefault("audit", {})["fidelity"] = result.info
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.info["grid"], self.out / GRID)
        return result

    def fidelity_alone(self, data: PreparedData, has_synthetic: bool) -> None:
        """Stage fidelity without the audit; skipped when the classifier got no synthetic
        image (rebalance none, oversample, class_weight) and `audit.synthetic` names no set."""
        if "classifier" in self.stages and not has_synthetic and not self.cfg.audit.synthetic:
            self.skip(("fidelity",), "the rebalancing adds no synthetic image to judge")
            return
        judged = self.judged_set(data)
        self.fidelity(data, judged, self.judge(data))

    def audit(self, data: PreparedData) -> None:
        """Stage audit: the set's fidelity, diversity and privacy (drvae.pipeline.audit_stage)."""
        judged = self.judged_set(data)
        logs, store, reference = self.out / "logs", self.store, self.judge(data)
        fidelity = self.fidelity(data, judged, reference)
        tstr = None
        if self.cfg.audit.tstr:
            plan = RebalancePlan.synthetic_only(judged.counts)
            tstr_key = config_key("tstr", judged.set_key, judged.counts)
            images = judged.images
            tstr = run_classifier_stage(
                self.cfg, data, plan, lambda: images, tstr_key, store, logs, "audit_tstr"
            )
            self.record("audit_tstr", tstr.summary())
        audited = run_audit_stage(
            self.cfg, data, judged.synthetic, judged.checkpoints, reference, tstr, fidelity, store
        )
        summary = audited.summary()
        self.record("audit", {k: summary[k] for k in ("key", "path", "reused", "seconds")})
        self.results["audit"] = audited.info

    # ---------------------------------------------------------------- the stages, in order
    @property
    def needed(self) -> dict[int, int]:
        """Synthetic images per grade the rebalancing adds (none without a plan)."""
        return self.rebalancing.synthetic if self.rebalancing is not None else {}

    def adds_nothing(self) -> bool:
        """The classifier is trained and its rebalancing adds no synthetic image."""
        return "classifier" in self.stages and not any(self.needed.values())

    def stage_vae(self, data: PreparedData) -> None:
        """Train (or reuse) the VAE, unless the classifier gets no synthetic image."""
        if self.adds_nothing():
            self.skip(("vae",), NOTHING_ADDED)
        else:
            self.vaes(data)

    def stage_generate(self, data: PreparedData) -> None:
        """Write (or reuse) the synthetic set: what the rebalancing adds, or generate.per_grade;
        confidence-filtered when rebalance.min_confidence is set."""
        if self.adds_nothing():
            self.skip(("generate",), NOTHING_ADDED)
        elif "classifier" not in self.stages:
            self.generate(data, self.vaes(data), self.needed)
        elif self.cfg.rebalance.synthetic_source == "online":
            self.skip(("generate",), "synthetic images are drawn online")
        elif self.cfg.rebalance.min_confidence is not None:
            checkpoints = self.vaes(data)
            chosen, key, generated, self.confidence = confident_synthetic(
                self.cfg,
                data.image_size,
                checkpoints,
                self.needed,
                self.reference(data),
                self.store,
                self.sampler(data, checkpoints),
            )
            self.record("generate", generated.summary())
            self.generated = generated  # the candidates: what the generator made, unfiltered
            self.written = (lambda: chosen), key
        else:
            generated = self.generate(data, self.vaes(data), self.needed)
            source = partial(read_synthetic_images, generated.path, self.needed, data.image_size)
            self.written = source, generated.key

    def classifier_synthetic(
        self, data: PreparedData
    ) -> tuple[Callable[[], SyntheticSource] | None, str | None]:
        """What makes the classifier's synthetic images (read or loaded only if the classifier
        is trained, not when it is reused) and a key over their origin; (None, None): none."""
        if self.adds_nothing():
            return None, None
        if self.cfg.rebalance.synthetic_source == "online":
            checkpoints, g = self.vaes(data), self.cfg.generate
            sampler = self.sampler(data, checkpoints)
            args = (checkpoints, self.needed, g.temperature, g.seed, g.batch_size, sampler)
            key = generate_key(checkpoints, self.needed, g, sampler)[0]
            return partial(DecoderSynthetic, *args), "online:" + key
        return self.written  # the generate stage ran before (checked before any work)

    def stage_classifier(self, data: PreparedData) -> None:
        synthetic, self.synthetic_key = self.classifier_synthetic(data)
        self.classify(data, self.rebalancing, synthetic, self.synthetic_key)

    def stage_fidelity(self, data: PreparedData) -> None:
        if "audit" not in self.stages:  # the audit judges fidelity itself
            self.fidelity_alone(data, has_synthetic=self.synthetic_key is not None)

    def stage_audit(self, data: PreparedData) -> None:
        self.audit(data)

    def reference(self, data: PreparedData) -> StageResult:
        """The grading classifier trained on real images only (rebalance none): the audit's
        judge and the confidence filter's; one training shared with rebalance=none runs."""
        none = RebalancePlan.make(["none"], 0, "added", data.per_grade()["train"])
        logs = self.out / "logs"
        return run_classifier_stage(
            self.cfg, data, none, None, None, self.store, logs, "audit_reference"
        )

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        data = prepare_data(self.cfg.data, self.store, self.train_sets)
        self.results["data"] = data_summary(data)
        generate_needs_plan = "generate" in self.stages and self.cfg.generate.per_grade is None
        if "classifier" in self.stages or generate_needs_plan:
            self.rebalancing = self.plan(data.per_grade()["train"])  # before any training
        for stage in self.stages:  # in STAGES order
            getattr(self, f"stage_{stage}")(data)
        return self.finish(start)

    def classify(
        self,
        data: PreparedData,
        plan: RebalancePlan,
        synthetic: Callable[[], SyntheticSource] | None,
        synthetic_key: str | None,
    ) -> None:
        """Stage classifier: train (or reuse) it, score the test split and any external set."""
        logs = self.out / "logs"
        result = run_classifier_stage(
            self.cfg, data, plan, synthetic, synthetic_key, self.store, logs
        )
        self.record("classifier", result.summary())
        self.results["metrics"] = result.info["metrics"]
        if "predictions" in result.info:
            self.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.info["predictions"], self.out / PREDICTIONS)
        if self.cfg.get("test_sets"):
            checkpoint = Path(result.info["path"])
            self.results["external"] = score_external(
                self.cfg, data, checkpoint, self.store, self.out
            )
        counts = data.per_grade()
        self.results["counts"] = {**plan.counts(), "val": counts["val"], "test": counts["test"]}
        self.results["rebalance"] = {
            "methods": list(plan.methods) or ["none"],
            "class_weights": plan.class_weights,
            "synthetic_source": self.cfg.rebalance.synthetic_source,
            "confidence_filter": self.confidence,
        }

    def finish(self, start: float) -> dict[str, Any]:
        """What ran it (overrides, config, versions) and how long; results.json written."""
        self.results.update(
            seconds=round(time.perf_counter() - start, 3),
            overrides=redact(command_overrides()),
            config=redact(plain(self.cfg)),
            versions=versions(),
        )
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / RESULTS, self.results)
        print(f"drvae: results in {self.out / RESULTS}")
        return self.results


def data_summary(data: PreparedData) -> dict[str, Any]:
    """results.json `data`: the prepared data's key, cache, counts and what was added."""
    return {
        "key": data.key,
        "cache": str(data.cache.folder),
        "counts": data.per_grade(),
        "duplicates": data.duplicates,
        **({"train_sets": data.train_sets} if data.train_sets else {}),
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stages; returns (and writes) the run's results."""
    return Run(cfg).run()
