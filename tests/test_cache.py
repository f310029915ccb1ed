"""The preprocessing cache: decoded once, reused, invalidated, atomic, nothing dropped silently."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_aptos  # tests/ is on sys.path
from PIL import Image

import drvae.data.cache as cache_module
from drvae.data.cache import build_cache, open_cache
from drvae.data.preprocess import PreprocessConfig, load_preprocessed
from drvae.data.readers import read_dataset
from drvae.data.records import DataError


@pytest.fixture
def dataset(tmp_path: Path):
    return read_dataset("aptos", write_aptos(tmp_path / "aptos"))


def test_cache_holds_exactly_the_preprocessed_images(dataset, tmp_path: Path) -> None:
    config = PreprocessConfig(size=16)
    cached = build_cache(dataset.records, config, tmp_path / "cache", workers=1)
    assert cached.images.shape == (12, 16, 16, 3) and cached.manifest["n_images"] == 12
    for record, image in zip(cached.records, cached.images, strict=True):
        assert np.array_equal(image, load_preprocessed(record, config))
    assert cached.grades.tolist() == [i % 5 for i in range(12)]


def test_second_pass_reuses_the_cache_without_decoding(dataset, tmp_path, monkeypatch) -> None:
    config = PreprocessConfig(size=16)
    first = build_cache(dataset.records, config, tmp_path / "cache", workers=1)

    def no_decoding(job):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(cache_module, "_decode", no_decoding)
    second = build_cache(dataset.records, config, tmp_path / "cache", workers=1)
    assert second.folder == first.folder
    assert not first.reused and second.reused
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))


def test_parallel_workers_give_the_same_pixels(dataset, tmp_path: Path) -> None:
    config = PreprocessConfig(size=16)
    one = build_cache(dataset.records, config, tmp_path / "a", workers=1)
    two = build_cache(dataset.records, config, tmp_path / "b", workers=2)
    assert np.array_equal(np.asarray(one.images), np.asarray(two.images))


def test_changing_preprocessing_or_a_file_gives_a_new_cache(dataset, tmp_path: Path) -> None:
    base = build_cache(dataset.records, PreprocessConfig(size=16), tmp_path / "c", workers=1)
    other = build_cache(
        dataset.records, PreprocessConfig(size=16, clahe=True), tmp_path / "c", workers=1
    )
    assert other.folder != base.folder
    changed = dataset.records[0].path
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(changed)
    reread = read_dataset("aptos", changed.parents[1])
    rebuilt = build_cache(reread.records, PreprocessConfig(size=16), tmp_path / "c", workers=1)
    assert rebuilt.folder != base.folder
    assert rebuilt.images[0].max() == 0


def test_a_crash_mid_build_leaves_nothing_that_looks_complete(dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cache_module.load_preprocessed

    def crash_after_five(record, config):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # like a kill: not an image error
        return real(record, config)

    monkeypatch.setattr(cache_module, "load_preprocessed", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_cache(dataset.records, PreprocessConfig(size=16), tmp_path / "cache", workers=1)
    assert not list((tmp_path / "cache").glob("*/manifest.json"))
    assert not list((tmp_path / "cache").glob("*.tmp-*"))
    monkeypatch.setattr(cache_module, "load_preprocessed", real)
    cached = build_cache(dataset.records, PreprocessConfig(size=16), tmp_path / "cache", workers=1)
    assert len(cached) == 12


def test_a_corrupt_image_is_an_error_naming_file_and_row(dataset, tmp_path: Path) -> None:
    dataset.records[3].path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"train\.csv:5: .*img003\.png"):
        build_cache(dataset.records, PreprocessConfig(size=16), tmp_path / "cache", workers=1)


def test_skipping_bad_images_lists_each_one(dataset, tmp_path: Path) -> None:
    dataset.records[3].path.write_bytes(b"garbage")
    cached = build_cache(
        dataset.records, PreprocessConfig(size=16), tmp_path / "cache", workers=2, on_error="skip"
    )
    assert len(cached) == 11 and cached.manifest["n_skipped"] == 1
    assert "img003" not in {r.image_id for r in cached.records}
    rows = list(csv.DictReader((cached.folder / "skipped.csv").open()))
    assert len(rows) == 1 and rows[0]["origin"].endswith("train.csv:5")
    assert len(cached.images) == 11


def test_a_folder_without_manifest_is_never_trusted(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="no manifest"):
        open_cache(tmp_path / "half")


def test_workers_start_cleanly_after_the_caller_used_cv2_threads(dataset, tmp_path: Path) -> None:
    """Forked workers deadlocked in cv2 once the caller had used cv2's thread pool."""
    script = f"""
import cv2, numpy as np
from pathlib import Path
from drvae.data.cache import build_cache
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import read_dataset
if __name__ == "__main__":
    cv2.resize(np.zeros((4000, 4000, 3), np.uint8), (1000, 1000), interpolation=cv2.INTER_AREA)
    records = read_dataset("aptos", {str(dataset.records[0].path.parents[1])!r}).records
    print(len(build_cache(records, PreprocessConfig(size=16), Path({str(tmp_path)!r}), 2)))
"""
    (tmp_path / "job.py").write_text(script)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "job.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12"
