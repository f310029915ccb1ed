"""Duplicate images: found by `drvae-data inspect` (byte-identical, re-encoded, resized copies),
kept on one side of the split, or dropped, as `data.duplicates` says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from drvae.config import plain
from drvae.data.cli import main
from drvae.data.duplicates import ImageHashes, duplicate_groups, pixel_hashes
from drvae.pipeline.data import prepare_data
from drvae.pipeline.store import StageStore, config_key

N_DISTINCT = 24


def photo(seed: int, size: int = 96) -> Image.Image:
    """A smooth random colour image: distinct seeds give distinct perceptual hashes."""
    coarse = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.BICUBIC)


# (id, grade, official split, how the file is made: ("png", seed) or a copy of another id)
COPIES = [
    ("a_copy", 4, "test", ("bytes", "p0")),  # byte-identical, conflicting grade
    ("b_tif", 1, "val", ("tif", "p1")),  # lossless re-encoding: the same pixels
    ("b_jpg", 1, "test", ("jpeg", "p1")),  # lossy re-encoding
    ("c_small", 2, "train", ("resized", "p2")),  # resized to 3/4 and JPEG-encoded
    ("c_big", 3, "test", ("bytes", "c_small")),  # a copy of the copy, another grade
]
GROUPS = [["p0", "a_copy"], ["p1", "b_tif", "b_jpg"], ["p2", "c_small", "c_big"]]


def write_dataset(root: Path) -> Path:
    """A csv dataset (file, grade, patient, split): 24 distinct photographs and 5 copies."""
    images, rows = root / "images", []
    images.mkdir(parents=True)
    for i in range(N_DISTINCT):
        photo(i).save(images / f"p{i}.png")
        rows.append((f"p{i}.png", i % 5, f"pat{i}", ("train", "val", "test")[i % 3]))
    for image_id, grade, split, (how, of) in COPIES:
        source = next(images.glob(f"{of}.*"))
        extension = {"bytes": source.suffix, "tif": ".tif"}.get(how, ".jpg")
        name = image_id + extension
        if how == "bytes":
            shutil.copyfile(source, images / name)
        elif how == "resized":
            Image.open(source).resize((72, 72), Image.BICUBIC).save(images / name, quality=80)
        else:
            Image.open(source).save(images / name, **({"quality": 85} if how == "jpeg" else {}))
        rows.append((name, grade, f"pat_{image_id}", split))
    text = "file,grade,patient,split\n" + "".join(f"{f},{g},{p},{s}\n" for f, g, p, s in rows)
    (root / "labels.csv").write_text(text)
    return root


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("copies"))


OPTIONS = ["csv=labels.csv", "image_column=file", "image_dir=images"]
OPTIONS += ["patient_column=patient", "split_column=split"]


def inspect(root: Path, capsys, *extra: str) -> dict:
    argv = ["inspect", "--source", "csv", "--root", str(root), "--json", "--workers", "1"]
    argv += [arg for option in OPTIONS for arg in ("--option", option)]
    assert main([*argv, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _stem(image_id: str) -> str:
    return image_id.rsplit(".", 1)[0]


def test_inspect_finds_every_group_of_copies(copies: Path, capsys) -> None:
    summary = inspect(copies, capsys)
    found = [[_stem(i) for i in group["ids"]] for group in summary["duplicates"]]
    assert found == GROUPS
    assert summary["duplicates"][1]["splits"] == ["val", "val", "test"]  # p1 is seed 1: val
    assert summary["duplicates"][0]["grades"] == [0, 4]
    assert summary["n_duplicate_groups"] == 3
    assert summary["n_conflicting_groups"] == 2  # a_copy and c_big disagree; b agrees


def test_exact_hashes_see_through_the_encoding(copies: Path) -> None:
    png = np.asarray(Image.open(copies / "images" / "p1.png").convert("RGB"))
    tif = np.asarray(Image.open(copies / "images" / "b_tif.tif").convert("RGB"))
    jpg = np.asarray(Image.open(copies / "images" / "b_jpg.jpg").convert("RGB"))
    assert pixel_hashes(png)[0] == pixel_hashes(tif)[0] != pixel_hashes(jpg)[0]


def test_at_distance_minus_one_only_the_exact_copies_group(copies: Path, capsys) -> None:
    summary = inspect(copies, capsys, "--near-distance", "-1")
    found = [[_stem(i) for i in group["ids"]] for group in summary["duplicates"]]
    assert found == [["p0", "a_copy"], ["p1", "b_tif"], ["c_small", "c_big"]]


def test_inspect_as_text_lists_the_groups(copies: Path, capsys) -> None:
    argv = ["inspect", "--source", "csv", "--root", str(copies), "--workers", "1"]
    assert main([*argv, *(a for o in OPTIONS for a in ("--option", o))]) == 0
    out = capsys.readouterr().out
    assert "duplicate groups: 3 (2 with conflicting grades)" in out
    assert "p0.png (grade 0, train), a_copy.png (grade 4, test)" in out


def test_groups_need_no_transitive_chain_beyond_their_links() -> None:
    hashes = ImageHashes(
        ["x", "y", "x", "z"], ["00" * 32, "ff" * 32, "0f" * 32, "ff" * 32], [0, 1, 2, 3]
    )
    assert duplicate_groups(hashes, 0) == [[0, 2], [1, 3]]


def data_config(root: Path, cache: Path, *overrides: str):
    options = [f"data.options.{o}" for o in OPTIONS[1:]]
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        cfg = compose(
            "config",
            [
                "data=csv",
                f"data.root={root}",
                "data.image_size=32",
                "data.decode_workers=1",
                f"paths.cache_dir={cache}",
                *(f"++{o}" for o in options),
                *overrides,
            ],
        )
    return cfg


def _split_of(data) -> dict[str, str]:
    return {
        _stem(data.cache.records[int(i)].image_id): name
        for name in ("train", "val", "test")
        for i in getattr(data.splits, name)
    }


@pytest.mark.parametrize("use_official", [True, False])
def test_no_duplicate_group_crosses_the_splits(copies: Path, tmp_path: Path, use_official) -> None:
    cfg = data_config(copies, tmp_path, f"data.split.use_official={use_official}")
    data = prepare_data(cfg.data, StageStore(tmp_path))
    side = _split_of(data)
    assert len(side) == N_DISTINCT + len(COPIES)
    for group in GROUPS:
        assert len({side[i] for i in group}) == 1, (group, side)
    if use_official:  # p0 (official train) joins its copy's test side
        assert side["p0"] == "test"
    assert data.duplicates["n_duplicate_groups"] == 3


def test_drop_conflicting_leaves_out_the_disagreeing_groups(copies: Path, tmp_path: Path) -> None:
    cfg = data_config(copies, tmp_path, "data.duplicates=drop_conflicting")
    data = prepare_data(cfg.data, StageStore(tmp_path))
    side = _split_of(data)
    assert not {"p0", "a_copy", "p2", "c_small", "c_big"} & set(side)
    assert {"p1", "b_tif", "b_jpg"} <= set(side)
    assert data.duplicates["n_dropped"] == 5
    dropped = prepare_data(
        data_config(copies, tmp_path, "data.duplicates=drop").data, StageStore(tmp_path)
    )
    assert {"p1", "b_tif", "b_jpg"} & set(_split_of(dropped)) == {"p1"}
    assert dropped.key != data.key


def test_without_duplicates_the_data_key_is_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "distinct"
    write_dataset(root)
    rows = (root / "labels.csv").read_text().splitlines()[: N_DISTINCT + 1]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")  # the photographs, no copies
    prepared = [
        prepare_data(data_config(root, tmp_path, f"data.duplicates={p}").data, StageStore(tmp_path))
        for p in ("keep", "drop")
    ]
    split = plain(data_config(root, tmp_path).data.split)
    before = config_key("data", prepared[0].cache.manifest["key"], split)  # the key's old form
    assert [d.key for d in prepared] == [before, before]
