"""The config tree has no traps: every option of a group means something of its own, and a
stage's Trainer takes any Trainer argument without a plus."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from drvae.pipeline.training import make_trainer, stage_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
# Trainer arguments drvae sets itself (conf/stage_trainer.yaml names them)
MANAGED = {
    "logger",
    "callbacks",
    "default_root_dir",
    "enable_checkpointing",
    "reload_dataloaders_every_n_epochs",
    "plugins",
    "barebones",
    "model_registry",
    "enable_autolog_hparams",
}
# groups whose options need a plugin's sweeper or launcher, or Hydra's own node
SKIPPED_GROUPS = {"hydra", "hparams_search", "launcher"}


def composed(*overrides: str):
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        return compose("config", list(overrides))


def group_options() -> dict[str, list[str]]:
    groups = {}
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir()):
        if folder.name not in SKIPPED_GROUPS and not folder.name.startswith("_"):
            groups[folder.name] = sorted(p.stem for p in folder.glob("*.yaml"))
    return groups


@pytest.mark.parametrize("group", sorted(group_options()))
def test_no_two_options_of_a_group_compose_to_the_same_config(group: str) -> None:
    """An option equal to another (rebalance=default was rebalance=none, trainer=cpu was
    trainer=default) is a name to learn for nothing, and a trap when one changes."""
    seen: dict[str, str] = {}
    for option in group_options()[group]:
        cfg = OmegaConf.to_yaml(composed(f"{group}={option}"))
        assert cfg not in seen, f"{group}={option} composes to the same config as {seen[cfg]}"
        seen[cfg] = f"{group}={option}"


def test_every_data_option_names_its_reader() -> None:
    """The shared data keys are not an option: `data=<option>` always has a source."""
    for option in group_options()["data"]:
        assert composed(f"data={option}").data.source == option


def test_stage_trainer_lists_every_trainer_argument_drvae_does_not_set() -> None:
    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    listed = yaml.safe_load((CONF / "stage_trainer.yaml").read_text())
    assert set(listed) == arguments - MANAGED
    assert all(value is None for value in listed.values())  # null: the trainer group's value


def test_a_stage_trainer_argument_needs_no_plus_and_reaches_only_that_stage(
    tmp_path: Path,
) -> None:
    cfg = composed(
        "classifier.trainer.gradient_clip_val=0.5",
        "classifier.trainer.max_time=00:00:05:00",  # not in the trainer group
        "vae.trainer.max_epochs=3",
        "logger=none",
        f"paths.output_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    trainer = make_trainer(cfg, "classifier", "classifier", tmp_path, [])
    assert trainer.gradient_clip_val == 0.5
    assert trainer.fit_loop.max_epochs == cfg.trainer.max_epochs  # the group's
    assert stage_trainer(cfg, "vae").max_epochs == 3
    assert stage_trainer(cfg, "vae").gradient_clip_val is None  # the group's, not the classifier's
    assert "max_time" not in stage_trainer(cfg, "vae")
