"""Stage-cache integrity: every finished folder carries checksums, and a corrupted or
truncated artefact is detected and rebuilt, never used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import config

from drvae import integrity
from drvae.atomic import build_once
from drvae.integrity import CHECKSUMS, corruption
from drvae.pipeline.run import run


class Builder:
    """Builds a folder with a small and a large file, counting its builds."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self, tmp: Path) -> None:
        self.builds += 1
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 64)
        (tmp / "done.json").write_text("{}")  # the folder's own "finished" marker


def build(folder: Path, builder: Builder) -> bool:
    return build_once(folder, lambda f: (f / "done.json").is_file(), builder)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Builder]:
    folder, builder = tmp_path / "stage", Builder()
    assert build(folder, builder) is False
    return folder, builder


def test_every_file_has_a_checksum(built) -> None:
    folder, _ = built
    entries = json.loads((folder / CHECKSUMS).read_text())
    assert set(entries) == {"sub/weights.bin", "done.json"}
    assert entries["sub/weights.bin"]["size"] == 256 * 64
    assert entries["sub/weights.bin"]["sha256"] == integrity.sha256_file(folder / "sub/weights.bin")
    assert corruption(folder) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
        lambda p: p.write_bytes(b"\xff" + p.read_bytes()[1:]),  # one byte changed, same size
        lambda p: p.unlink(),  # deleted
    ],
    ids=["truncated", "flipped", "deleted"],
)
def test_a_damaged_file_is_detected_and_rebuilt(built, damage, capsys) -> None:
    folder, builder = built
    damage(folder / "sub" / "weights.bin")
    assert "weights.bin" in corruption(folder)
    assert build(folder, builder) is False  # rebuilt, not reused
    assert builder.builds == 2 and corruption(folder) is None
    assert "corrupt" in capsys.readouterr().err


def test_an_intact_folder_is_reused(built) -> None:
    folder, builder = built
    assert build(folder, builder) is True and builder.builds == 1


def test_a_folder_without_checksums_is_not_trusted(built) -> None:
    folder, builder = built
    (folder / CHECKSUMS).unlink()
    assert build(folder, builder) is False and builder.builds == 2


def test_large_files_are_rehashed_when_their_time_changes(built, monkeypatch) -> None:
    folder, _ = built
    monkeypatch.setattr(integrity, "FULL_HASH_BYTES", 0)  # every file counts as large
    path = folder / "sub" / "weights.bin"
    stat = path.stat()
    path.write_bytes(b"\x01" * stat.st_size)  # same size, new content, new time
    assert "SHA-256 differs" in corruption(folder)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corruption(folder) is None  # the trade-off: same size and time are trusted


def test_a_corrupted_stage_artefact_is_rebuilt_by_the_next_run(tmp_path: Path) -> None:
    """Truncate the VAE checkpoint and the image cache: the next run rebuilds both and
    reaches the same results; nothing damaged is loaded."""
    cache = tmp_path / "cache"
    overrides = ("stages=[vae,generate]", "generate.per_grade=3")
    first = run(config(cache, tmp_path / "run1", *overrides))
    checkpoint = Path(first["stages"]["vae"]["path"])
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    (images,) = (cache / "preprocessed").glob("*/images.npy")
    images.write_bytes(images.read_bytes()[:-64])
    second = run(config(cache, tmp_path / "run2", *overrides))
    assert second["stages"]["vae"]["reused"] is False
    assert second["stages"]["vae"]["metrics"] == first["stages"]["vae"]["metrics"]
    assert second["stages"]["generate"]["key"] == first["stages"]["generate"]["key"]
    assert corruption(checkpoint.parent) is None and corruption(images.parent) is None
