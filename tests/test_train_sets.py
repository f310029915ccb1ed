"""Training sets beside `data` (`train_sets.NAME`): their images join the training split
only, less any image of a validation or test patient or a copy of a validation or test
image; validation and test stay `data`'s own."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import config, real_dataset  # tests/ is on sys.path

from drvae.data.simulator import simulate_dataset
from drvae.errors import ConfigError
from drvae.pipeline.data import PreparedData, prepare_data, set_configs
from drvae.pipeline.run import run
from drvae.pipeline.store import StageStore

N_MAIN, N_MORE = 200, 60


def _ids(data: PreparedData, split: str) -> set[str]:
    return {data.cache.records[int(i)].image_id for i in getattr(data.splits, split)}


def _add(more: Path, main: Path, image_id: str, new_id: str) -> None:
    """Copy `main`'s image `image_id` into `more` as `new_id`, with its grade."""
    rows = dict(csv.reader((main / "train.csv").open()))
    shutil.copyfile(
        main / "train_images" / f"{image_id}.png", more / "train_images" / f"{new_id}.png"
    )
    with (more / "train.csv").open("a") as f:
        f.write(f"{new_id},{rows[image_id]}\n")


def _prefix_ids(folder: Path, prefix: str) -> None:
    """Rename every image of a simulated set: the simulator numbers each set from 0."""
    rows = list(csv.reader((folder / "train.csv").open()))
    for image_id, _ in rows[1:]:
        images = folder / "train_images"
        (images / f"{image_id}.png").rename(images / f"{prefix}{image_id}.png")
    renamed = [rows[0], *([prefix + i, g] for i, g in rows[1:])]
    with (folder / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows(renamed)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("train_sets")
    simulate_dataset(root / "main", n=N_MAIN, size=32, seed=0, workers=1)
    simulate_dataset(root / "more", n=N_MORE, size=32, seed=7, workers=1)
    _prefix_ids(root / "more", "m_")
    common = ["data=aptos", f"data.root={root / 'main'}", "rebalance=none", "stages=[classifier]"]
    cache = root / "cache"
    alone = prepare_data(config(cache, root / "o", *common).data, StageStore(cache))
    test_id, val_id, train_id = (sorted(_ids(alone, s))[0] for s in ("test", "val", "train"))
    more = root / "more"
    _add(more, root / "main", test_id, "copy_of_test")  # a copy: held out
    _add(more, root / "main", val_id, val_id)  # a val patient's image (APTOS: id = patient)
    _add(more, root / "main", train_id, "copy_of_train")  # a copy of a training image: kept
    added = [*common, "+train_sets.more.source=aptos", f"+train_sets.more.root={more}"]
    cfg = config(cache, root / "run", *added)
    return {
        "alone": alone,
        "with": prepare_data(cfg.data, StageStore(cache), set_configs(cfg, "train_sets")),
        "results": run(cfg),
    }


def test_validation_and_test_stay_the_datas_own(sets: dict) -> None:
    alone, joined = sets["alone"], sets["with"]
    for split in ("val", "test"):
        assert _ids(joined, split) == _ids(alone, split)
    assert joined.key != alone.key


def test_the_sets_images_join_training_less_held_out_patients_and_copies(sets: dict) -> None:
    alone, joined = sets["alone"], sets["with"]
    added = _ids(joined, "train") - _ids(alone, "train")
    assert _ids(alone, "train") <= _ids(joined, "train")
    assert all(i.startswith("more/") for i in added)
    assert "more/copy_of_train" in added
    assert not {"more/copy_of_test", *(f"more/{i}" for i in _ids(alone, "val"))} & added
    assert joined.train_sets == {
        "more": {
            "n_images": N_MORE + 3,
            "n_added": N_MORE + 1,
            "n_held_out_patient": 1,
            "n_held_out_copy": 1,
        }
    }
    assert len(added) == N_MORE + 1


def test_a_run_trains_on_them_and_says_so(sets: dict) -> None:
    results = sets["results"]
    assert results["data"]["train_sets"] == sets["with"].train_sets
    trained = sum(results["counts"]["train_real"].values())
    assert trained == len(sets["with"].splits.train) == len(sets["alone"].splits.train) + N_MORE + 1


def test_a_training_set_without_a_source_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "out", "rebalance=none", f"+train_sets.x.root={tmp_path}")
    with pytest.raises(ConfigError, match=r"train_sets\.x: expected source and root"):
        run(cfg)


@pytest.mark.data
@pytest.mark.slow
def test_eyepacs128_joins_eyepacs64_training_without_its_held_out_patients(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module

    small, large = real_dataset("eyepacs64"), real_dataset("eyepacs128")
    common = ["data=eyepacs", f"data.root={small}", "data.image_size=32"]
    added = ["+train_sets.more.source=eyepacs", f"+train_sets.more.root={large}"]
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*common, *added, f"paths.cache_dir={tmp_path}"])
    alone = prepare_data(cfg.data, StageStore(tmp_path))
    joined = prepare_data(cfg.data, StageStore(tmp_path), set_configs(cfg, "train_sets"))
    counts = joined.train_sets["more"]
    assert counts["n_images"] == 6678 and counts["n_held_out_patient"] > 0
    assert counts["n_added"] + counts["n_held_out_patient"] + counts["n_held_out_copy"] == 6678
    records = joined.cache.records
    held = {records[int(i)].patient for i in (*joined.splits.val, *joined.splits.test)}
    new = [
        records[int(i)] for i in joined.splits.train if records[int(i)].image_id.startswith("more/")
    ]
    assert len(new) == counts["n_added"] and not {r.patient for r in new} & held
    for split in ("val", "test"):
        assert _ids(joined, split) == _ids(alone, split)
