"""The `drvae` pipeline (stages vae, generate, classifier) end to end on tiny simulated data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
from conftest import TINY, config  # tests/ is on sys.path
from omegaconf import OmegaConf
from PIL import Image

from drvae.data.readers import read_dataset
from drvae.data.records import DataError
from drvae.errors import ConfigError
from drvae.integrity import sha256_file
from drvae.models.checkpoints import CheckpointError
from drvae.models.latent_samplers import GaussianMixtureSampler, PosteriorSampler
from drvae.pipeline.generate_stage import generate_key, per_grade_counts
from drvae.pipeline.run import run, source_commit
from drvae.pipeline.sampler_stage import FittedSampler
from drvae.pipeline.store import StageResult
from drvae.pipeline.synthetic_sources import DecoderSynthetic


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stage-cache")


@pytest.fixture(scope="module")
def first(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("run1")
    return run(config(cache_dir, out))


def test_results_name_every_stage(first: dict) -> None:
    vae, generate = first["stages"]["vae"], first["stages"]["generate"]
    assert Path(vae["path"]).name == "vae.ckpt" and Path(vae["path"]).is_file()
    assert set(vae["metrics"]) >= {"val/recon", "val/kl", "val/elbo", "val/bpd"}
    assert vae["metrics"]["val/elbo"] == pytest.approx(
        -(vae["metrics"]["val/recon"] + vae["metrics"]["val/kl"]), rel=1e-3
    )
    for stage in (vae, generate):
        assert len(stage["key"]) == 64 and stage["seconds"] >= 0 and stage["reused"] is False
    assert sum(first["data"]["counts"]["train"].values()) > 150


def test_synthetic_set_reads_like_data_and_traces_its_checkpoint(first: dict) -> None:
    folder = Path(first["stages"]["generate"]["path"])
    result = read_dataset("synthetic", folder)
    assert len(result.records) == 20 and all(r.synthetic for r in result.records)
    assert result.per_grade() == {g: 4 for g in range(5)}
    manifest = json.loads((folder / "manifest.json").read_text())
    checkpoint = Path(first["stages"]["vae"]["path"])
    assert set(manifest["checkpoint_sha256"].values()) == {sha256_file(checkpoint)}
    assert manifest["seed"] == 1 and manifest["temperature"] == 1.0
    assert {"created", "drvae_version", "config"} <= set(manifest)
    with Image.open(result.records[0].path) as image:
        assert image.size == (32, 32)


def test_results_json_is_written(first: dict) -> None:
    out = Path(first["config"]["paths"]["output_dir"])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["stages"]["generate"]["key"] == first["stages"]["generate"]["key"]
    assert on_disk["versions"]["torch"] == "2.14.1"
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if commit.returncode == 0:  # the tests run from a drvae checkout: the run names its commit
        assert on_disk["versions"]["drvae_commit"].removesuffix("-dirty") == commit.stdout.strip()
    assert (out / "logs" / "vae" / "metrics.csv").is_file()
    assert (out / "logs" / "vae" / "images" / "vae_samples_epoch000.png").is_file()


def test_source_commit_names_the_checkout_and_whether_it_was_clean(tmp_path: Path) -> None:
    assert source_commit(tmp_path) is None  # not a checkout: no commit claimed
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    assert source_commit(tmp_path) == git("rev-parse", "HEAD")
    git("add", "pyproject.toml")
    assert source_commit(tmp_path) == git("rev-parse", "HEAD") + "-dirty"


def test_results_hold_test_metrics_counts_and_the_classifier(first: dict) -> None:
    metrics = first["metrics"]
    names = ["qwk", "macro_f1", "balanced_accuracy", "accuracy", "auroc"]
    names += ["referable_sensitivity", "referable_specificity", "referable_sensitivity_at_spec80"]
    names += [f"{m}_grade{g}" for m in ("recall", "precision") for g in range(5)]
    assert {f"test/{n}" for n in names} <= set(metrics)
    assert all(0 <= v <= 1 for k, v in metrics.items() if k != "test/qwk")
    counts, data = first["counts"], first["data"]["counts"]
    assert counts["train_real"] == data["train"] and counts["test"] == data["test"]
    assert counts["train_synthetic"] == dict.fromkeys(range(5), 4)
    assert counts["train_oversampled"] == dict.fromkeys(range(5), 0)
    classifier = first["stages"]["classifier"]
    assert Path(classifier["path"]).is_file() and classifier["reused"] is False
    matrix = np.array(classifier["confusion_matrix"])  # rows: true grade
    assert matrix.sum(axis=1).tolist() == [data["test"][g] for g in range(5)]
    assert classifier["train_images"] == sum(data["train"].values()) + 20
    out = Path(first["config"]["paths"]["output_dir"]) / "logs" / "classifier"
    assert (out / "images" / "test_confusion_matrix.csv").is_file()


def test_a_second_run_reuses_finished_stages(first: dict, cache_dir: Path, tmp_path: Path) -> None:
    again = run(config(cache_dir, tmp_path))
    for name in ("vae", "generate", "classifier"):
        assert again["stages"][name]["reused"] is True
        assert again["stages"][name]["key"] == first["stages"][name]["key"]
    assert again["stages"]["vae"]["metrics"] == first["stages"]["vae"]["metrics"]


def test_a_reused_classifier_reads_no_synthetic_image(
    first: dict, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drvae.pipeline.run as run_module

    def refuse(*args, **kwargs) -> None:
        raise AssertionError("synthetic images read for a classifier that is reused")

    monkeypatch.setattr(run_module, "read_synthetic_images", refuse)
    again = run(config(cache_dir, tmp_path))
    assert again["stages"]["classifier"]["reused"] is True


def test_generate_alone_from_the_stored_vae(first: dict, cache_dir: Path, tmp_path: Path) -> None:
    result = run(config(cache_dir, tmp_path, "stages=[generate]", "generate.per_grade={4: 3}"))
    assert "vae" not in result["stages"]
    assert result["stages"]["generate"]["per_grade"] == {"4": 3}  # JSON keys


def test_counts_extend_a_grade_without_changing_its_first_images(
    first: dict, cache_dir: Path, tmp_path: Path
) -> None:
    ckpt = first["stages"]["vae"]["path"]
    sets = []
    for i, count in enumerate((2, 5)):
        over = [
            "stages=[generate]",
            f"generate.checkpoint={ckpt}",
            f"generate.per_grade={{3: {count}}}",
        ]
        result = run(config(cache_dir, tmp_path / str(i), *over))
        sets.append(Path(result["stages"]["generate"]["path"]))
    for name in ("syn_g3_000000.png", "syn_g3_000001.png"):
        a, b = (np.asarray(Image.open(s / "images" / name)) for s in sets)
        assert np.array_equal(a, b)


def test_another_seed_gives_other_images(first: dict, cache_dir: Path, tmp_path: Path) -> None:
    ckpt = first["stages"]["vae"]["path"]
    over = ["stages=[generate]", f"generate.checkpoint={ckpt}", "generate.seed=7"]
    other = Path(run(config(cache_dir, tmp_path, *over))["stages"]["generate"]["path"])
    base = Path(first["stages"]["generate"]["path"])
    a, b = (np.asarray(Image.open(s / "images" / "syn_g0_000000.png")) for s in (base, other))
    assert not np.array_equal(a, b)


def test_a_gmm_sampled_set_records_its_sampler_and_fit(
    first: dict, cache_dir: Path, tmp_path: Path
) -> None:
    ckpt = first["stages"]["vae"]["path"]
    over = ["stages=[generate]", f"generate.checkpoint={ckpt}", "generate.per_grade=3"]
    over += ["generate.sampler=gmm", "generate.gmm.components=2"]
    result = run(config(cache_dir, tmp_path, *over))
    folder = Path(result["stages"]["generate"]["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    sha = GaussianMixtureSampler.load(folder / "sampler.npz").sha256()
    assert manifest["sampler"] == {
        "name": "gmm",
        "components": 2,
        "min_images_per_component": 10,
        "covariance_type": "full",
        "state": "sampler.npz",
        "state_sha256": sha,
    }
    assert manifest["sampler_data"] == result["data"]["key"]  # fitted on its train split
    assert result["stages"]["sampler"]["state_sha256"] == sha
    prior = json.loads(Path(first["stages"]["generate"]["path"], "manifest.json").read_text())
    assert prior["sampler"] == {"name": "prior"} and "sampler_data" not in prior
    # the online source draws from the same fit
    s = result["stages"]["sampler"]
    stage = StageResult("sampler", s["key"], Path(s["path"]), True, 0.0, s)
    gmm = {k: v for k, v in manifest["sampler"].items() if not k.startswith("state")}
    fitted = FittedSampler(gmm, result["data"]["key"], stage)
    vaes, counts = dict.fromkeys(range(5), Path(ckpt)), {1: 3, 4: 2}
    source = DecoderSynthetic(vaes, counts, 1.0, 1, 8, fitted)
    images, _ = source.draw(0)
    assert images.shape == (5, 32, 32, 3) and np.array_equal(images, source.draw(0)[0])
    assert not np.array_equal(images, DecoderSynthetic(vaes, counts, 1.0, 1, 8).draw(0)[0])


def test_a_posterior_sampled_set_records_the_training_images_it_varies(
    first: dict, cache_dir: Path, tmp_path: Path
) -> None:
    ckpt = first["stages"]["vae"]["path"]
    over = ["stages=[generate]", f"generate.checkpoint={ckpt}", "generate.per_grade=3"]
    result = run(config(cache_dir, tmp_path, *over, "generate.sampler=posterior"))
    folder = Path(result["stages"]["generate"]["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    state = PosteriorSampler.load(folder / "sampler.npz")
    assert manifest["sampler"] == {
        "name": "posterior",
        "state": "sampler.npz",
        "state_sha256": state.sha256(),
    }
    train = {int(g): n for g, n in first["data"]["counts"]["train"].items()}
    assert {g: len(r) for g, r in state.rows.items()} == train  # every training image, by grade
    assert {int(g): n for g, n in result["stages"]["sampler"]["train_images"].items()} == train
    # the online source draws from the same training images
    s = result["stages"]["sampler"]
    stage = StageResult("sampler", s["key"], Path(s["path"]), True, 0.0, s)
    vaes, counts = dict.fromkeys(range(5), Path(ckpt)), {1: 3, 4: 2}
    images = np.zeros((max(int(r.max()) for r in state.rows.values()) + 1, 32, 32, 3), np.uint8)
    fitted = FittedSampler({"name": "posterior"}, result["data"]["key"], stage, images)
    source = DecoderSynthetic(vaes, counts, 1.0, 1, 8, fitted)
    drawn, grades = source.draw(0)
    assert drawn.shape == (5, 32, 32, 3) and grades.tolist() == [1, 1, 1, 4, 4]
    assert np.array_equal(drawn, source.draw(0)[0])


def test_the_prior_sampler_leaves_generate_keys_as_they_were(tmp_path: Path) -> None:
    ckpt = tmp_path / "vae.ckpt"
    ckpt.write_text("vae")
    g = OmegaConf.create({"temperature": 1.0, "seed": 0, "device": "cpu", "sampler": "prior"})
    before_samplers = "e322f14016942fc9fdfdfa6a725e585fef6e85244f238bdee442270320f2b368"
    assert generate_key({3: ckpt}, {3: 5}, g)[0] == before_samplers


def test_an_earlier_run_is_never_overwritten(first: dict, cache_dir: Path) -> None:
    out = Path(first["config"]["paths"]["output_dir"])
    with pytest.raises(ConfigError, match="never overwritten"):
        run(config(cache_dir, out))


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("generate.per_grade={9: 3}", ConfigError, "grade 9 is outside 0-4"),
        ("generate.per_grade=0", ConfigError, "must be a positive integer"),
        ("generate.per_grade={2: -1}", ConfigError, "must be a positive integer"),
        ("generate.per_grade=many", ConfigError, "expected an int or a mapping"),
        ("generate.temperature=0", ConfigError, "generate.temperature must be > 0"),
        ("generate.sampler=vamp", ConfigError, "generate.sampler: expected one of"),
        ("generate.gmm.components=0", ConfigError, "generate.gmm.components: expected an int"),
        ("stages=[vae,classify]", ConfigError, "unknown or empty"),
        ("vae.model.depth=6", ConfigError, "not divisible by 2\\*\\*depth"),
        ("vae.model.norm=layer", ConfigError, "norm must be one of"),
        ("data=aptos", DataError, "data.root"),
        ("generate.checkpoint=/nonexistent/vae.ckpt", CheckpointError, "checkpoint not found"),
        ("rebalance.per_grade=-5", ConfigError, "rebalance.per_grade: expected a count >= 0"),
        ("optimized_metric=test/qwk", ConfigError, "optimized_metric: expected a validation"),
        ("rebalance.per_grade={7: 3}", ConfigError, "grade 7 is outside 0-4"),
        ("rebalance.per_grade=most", ConfigError, "unknown strategy 'most'"),
        ("rebalance.methods=[smote]", ConfigError, "rebalance.methods: unknown"),
        ("rebalance.methods=[oversample,synthetic]", ConfigError, "one source of added"),
        ("rebalance.synthetic_source=disk", ConfigError, "rebalance.synthetic_source"),
        ("classifier.model.model_name=nonet", ConfigError, "classifier: Unknown model"),
        (
            "classifier.model.pretrained=/no/weights.pth",
            ConfigError,
            "is not a file; give a local weights file",
        ),
        ("classifier.model.loss=hinge", ConfigError, "classifier: loss 'hinge'"),
        ("stages=[vae,classifier]", ConfigError, "need generate in stages"),
    ],
)
def test_bad_input_is_refused_before_any_work(
    tmp_path: Path, override: str, error: type, match: str
) -> None:
    cache = tmp_path / "cache"
    overrides = [override] if override != "data=aptos" else [override, "data.root=null"]
    with pytest.raises(error, match=match):
        run(config(cache, tmp_path / "out", *overrides))
    assert not cache.exists()  # nothing was simulated, cached or trained


def test_a_checkpoint_that_does_not_fit_the_data_is_refused(first: dict, tmp_path: Path) -> None:
    ckpt = first["stages"]["vae"]["path"]
    over = ["stages=[generate]", f"generate.checkpoint={ckpt}", "data.image_size=64"]
    with pytest.raises(CheckpointError, match=r"32 px images but data\.image_size is 64"):
        run(config(tmp_path / "cache", tmp_path / "out", *over))
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_text("not a checkpoint")
    over = ["stages=[generate]", f"generate.checkpoint={foreign}"]
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        run(config(tmp_path / "cache", tmp_path / "out", *over))


def test_per_grade_counts_vocabulary() -> None:
    assert per_grade_counts(3) == {g: 3 for g in range(5)}
    assert per_grade_counts({"4": 2, 1: 5}) == {1: 5, 4: 2}
    with pytest.raises(ConfigError, match="no grade requested"):
        per_grade_counts({})


def test_unconditional_vae_trains_one_model_per_grade(cache_dir: Path, tmp_path: Path) -> None:
    result = run(config(cache_dir, tmp_path, "vae.model.num_classes=0", "rebalance.per_grade=2"))
    checkpoints = result["stages"]["vae"]["checkpoints"]
    assert sorted(checkpoints) == [f"vae_grade{g}.ckpt" for g in range(5)]
    manifest = json.loads(Path(result["stages"]["generate"]["path"], "manifest.json").read_text())
    assert len(set(manifest["checkpoint_sha256"].values())) == 5  # each grade its own VAE


def test_an_interrupted_generation_leaves_no_set(
    first: dict, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drvae.pipeline.generate_stage as generate_stage

    def crash(folder: Path, *args, **kwargs) -> None:
        (folder / "images").mkdir()
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(generate_stage, "write_synthetic_set", crash)
    ckpt = first["stages"]["vae"]["path"]
    over = ["stages=[generate]", f"generate.checkpoint={ckpt}", "generate.per_grade=1"]
    with pytest.raises(KeyboardInterrupt):
        run(config(cache_dir, tmp_path, *over))
    folders = list((cache_dir / "generate").iterdir())
    assert not [f for f in folders if ".tmp-" in f.name]
    assert all((f / "stage.json").is_file() for f in folders if f.is_dir())


def test_a_synthetic_set_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image_id,grade\nsyn_g0_000000,0\n")
    with pytest.raises(DataError, match="not a finished synthetic set"):
        read_dataset("synthetic", tmp_path)


@pytest.mark.slow  # 24 s; drvae's command line runs by default in the sweep, secrets and
# reliability tests, its exit code 2 and error line in test_reliability
def test_command_line(tmp_path: Path) -> None:
    """The command line of the README, run as a user runs it."""
    cmd = [
        sys.executable, "-m", "drvae.pipeline.main", "stages=[vae,generate]", "data=simulated",
        "data.n_images=300", "data.image_size=32", "trainer.max_epochs=1",
        "generate.per_grade=4", "seed=1", f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["stages"]["generate"]["n_images"] == 20
    bad = subprocess.run(
        [*cmd[:3], "generate.per_grade={9: 3}", f"hydra.run.dir={tmp_path / 'bad'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "drvae: error: generate.per_grade: grade 9 is outside 0-4" in bad.stderr


@pytest.mark.slow  # 17 s; the VAE's reuse across counts runs by default in process
# (test_a_new_synthetic_count_reuses_the_vae), a multirun in the W&B sweep test
def test_a_sweep_over_counts_trains_the_vae_once(tmp_path: Path) -> None:
    """`drvae -m rebalance.per_grade=2,3`: two jobs, one VAE training, two synthetic sets,
    two classifiers, and the comparison table at the end."""
    cmd = [
        sys.executable, "-m", "drvae.pipeline.main", "-m", *TINY[:-2], "rebalance.per_grade=2,3",
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = [json.loads((tmp_path / "sweep" / j / "results.json").read_text()) for j in "01"]
    assert [job["stages"]["vae"]["reused"] for job in jobs] == [False, True]
    assert len({job["stages"]["vae"]["key"] for job in jobs}) == 1
    assert [job["stages"]["generate"]["n_images"] for job in jobs] == [10, 15]
    assert [sum(job["counts"]["train_synthetic"].values()) for job in jobs] == [10, 15]
    assert len({job["stages"]["classifier"]["key"] for job in jobs}) == 2
    assert "| qwk |" in done.stdout and "rebalance.per_grade=2" in done.stdout


@pytest.mark.parametrize("override", ["trainer.fast_dev_run=true", "trainer.limit_val_batches=0"])
def test_without_monitored_validation_the_last_weights_are_kept(
    cache_dir: Path, tmp_path: Path, override: str
) -> None:
    result = run(config(cache_dir, tmp_path, override, "stages=[vae]"))
    assert Path(result["stages"]["vae"]["path"]).is_file()


def test_a_new_synthetic_count_reuses_the_vae(first: dict, cache_dir: Path, tmp_path: Path) -> None:
    other = run(config(cache_dir, tmp_path, "rebalance.per_grade={3: 6, 4: 2}"))
    assert other["stages"]["vae"] == {**first["stages"]["vae"], "reused": True, "seconds": ANY}
    assert other["stages"]["generate"]["reused"] is False
    assert other["counts"]["train_synthetic"] == {0: 0, 1: 0, 2: 0, 3: 6, 4: 2}


def test_a_larger_generated_set_serves_smaller_counts(
    first: dict, cache_dir: Path, tmp_path: Path
) -> None:
    """generate.per_grade=6 is written once; rebalance.per_grade=4 takes its first images,
    which are the images a set of 4 per grade holds."""
    big = run(config(cache_dir, tmp_path, "generate.per_grade=6"))
    assert big["stages"]["generate"]["n_images"] == 30
    assert big["counts"]["train_synthetic"] == dict.fromkeys(range(5), 4)
    assert big["metrics"] == first["metrics"]  # same 4 images per grade, same classifier


def test_no_rebalancing_skips_the_vae(cache_dir: Path, tmp_path: Path) -> None:
    result = run(config(cache_dir, tmp_path, "rebalance=none"))
    assert "skipped" in result["stages"]["vae"] and "skipped" in result["stages"]["generate"]
    assert sum(result["counts"]["train_synthetic"].values()) == 0
    assert result["rebalance"] == {
        "methods": ["none"],
        "class_weights": None,
        "synthetic_source": "generated",
        "confidence_filter": None,
    }


def test_oversampling_and_class_weights(cache_dir: Path, tmp_path: Path) -> None:
    result = run(
        config(cache_dir, tmp_path, "rebalance.methods=[oversample,class_weight]",
               "rebalance.per_grade=not majority")
    )  # fmt: skip
    real, added = result["counts"]["train_real"], result["counts"]["train_oversampled"]
    largest = max(real.values())
    assert {g: real[g] + added[g] for g in range(5)} == dict.fromkeys(range(5), largest)
    assert result["rebalance"]["class_weights"] == pytest.approx([1.0] * 5)  # now balanced
    assert "skipped" in result["stages"]["vae"]


def test_online_synthetic_images_need_no_generate_stage(
    first: dict, cache_dir: Path, tmp_path: Path
) -> None:
    over = ["rebalance=synthetic_online", "classifier.trainer.max_epochs=2"]
    result = run(config(cache_dir, tmp_path, *over))
    assert result["stages"]["vae"]["reused"] is True  # the VAE's trainer did not change
    assert "skipped" in result["stages"]["generate"]
    assert result["counts"]["train_synthetic"] == dict.fromkeys(range(5), 4)
    assert result["stages"]["classifier"]["key"] != first["stages"]["classifier"]["key"]
    assert result["stages"]["classifier"]["epochs"] == 2


def test_online_images_are_fresh_each_epoch_and_reproducible(first: dict) -> None:
    vae = Path(first["stages"]["vae"]["path"])
    source = DecoderSynthetic(dict.fromkeys(range(5), vae), {1: 3, 4: 2}, 1.0, 0, 8)
    images, grades = source.draw(0)
    assert images.shape == (5, 32, 32, 3) and grades.tolist() == [1, 1, 1, 4, 4]
    assert np.array_equal(images, source.draw(0)[0])
    assert not np.array_equal(images, source.draw(1)[0])


def test_synthetic_images_for_a_grade_without_training_images_are_refused(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    fractions = "data.fractions=[0.6,0.2,0.1,0.1,0.0]"
    with pytest.raises(ConfigError, match=r"grade\(s\) \[4\], which have no training images"):
        run(config(cache, tmp_path / "out", fractions))
    assert not (cache / "vae").exists()  # refused before any training


def test_the_classifier_key_follows_the_pretrained_file_content(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from drvae.data.rebalance import RebalancePlan
    from drvae.pipeline.classifier_stage import classifier_key

    weights = tmp_path / "weights.pth"
    cfg = config(tmp_path, tmp_path, f"classifier.model.pretrained={weights}")
    data = SimpleNamespace(key="data")
    plan = RebalancePlan.make(["none"], 0, "added", dict.fromkeys(range(5), 1))
    keys = []
    for content in (b"first weights", b"other weights"):
        weights.write_bytes(content)
        keys.append(classifier_key(cfg, data, plan, None))
    assert keys[0] != keys[1]  # same path, new content: never a stale stage
