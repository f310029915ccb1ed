"""Shared fixtures: each public DR dataset in miniature, in its exact published layout.

Every image is a real (tiny) image file, so the readers' `ImageFinder` finds it and
`inspect` can read its header. Label files are written byte for byte, quirks included
(byte-order marks, trailing spaces in headers, trailing empty columns, blank lines, CRLF).
Each fixture returns a `Layout`: the root to hand to the reader, the label files, and what a
correct reader must find there.

Below them, the helpers several test modules share (the tiny pipeline config, a tiny image
cache, fake report jobs, the real datasets' folder): no test module imports another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

BOM = "\ufeff"
IDRID = "B. Disease Grading"
IDRID_IMAGES = f"{IDRID}/1. Original Images"
IDRID_LABELS = f"{IDRID}/2. Groundtruths"
IDRID_TRAIN_CSV = f"{IDRID_LABELS}/a. IDRiD_Disease Grading_Training Labels.csv"
IDRID_TEST_CSV = f"{IDRID_LABELS}/b. IDRiD_Disease Grading_Testing Labels.csv"


@dataclass
class Layout:
    """A dataset written to disk, and the answers a reader must give for it."""

    source: str  # the reader to use
    root: Path
    labels: list[Path]  # the label files (CSV / TXT / NPZ), in the order the reader reads them
    rows: int  # data rows over all label files (or images, for the folder layout)
    per_grade: dict[int, int]
    n_patients: int
    splits: dict[str, int] = field(default_factory=dict)
    excluded: int = 0  # rows the dataset's own rules exclude (ungradable)
    options: dict[str, str] = field(default_factory=dict)  # reader options it needs

    @property
    def label(self) -> Path:
        return self.labels[0]

    def image(self, relative: str | Path) -> Path:
        """Write a real image at `root / relative`."""
        return write_image(self.root / relative)

    def append(self, text: str, label: Path | None = None) -> int:
        """Append to a label file (the last one by default); the line number `text` starts at."""
        label = label or self.labels[-1]
        first = len(label.read_bytes().splitlines()) + 1
        append_text(label, text)
        return first

    def rewrite(self, text: str, label: Path | None = None) -> Path:
        """Replace a label file's content (the first one by default)."""
        return write_text(label or self.labels[0], text)

    def rewrite_npz(self, **override: np.ndarray | None) -> Path:
        """Rewrite the .npz with some arrays replaced, or dropped (None)."""
        with np.load(self.labels[0]) as npz:
            arrays = {key: npz[key] for key in npz.files}
        arrays.update(override)
        np.savez_compressed(self.labels[0], **{k: v for k, v in arrays.items() if v is not None})
        return self.labels[0]


def write_image(path: Path, colour: tuple[int, int, int] = (150, 70, 30)) -> Path:
    """A real 8x8 RGB image, its format taken from the extension (.png/.jpg/.jpeg/.tif)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    """Exactly these characters, as UTF-8, with no newline translation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def append_text(path: Path, text: str) -> None:
    with path.open("ab") as f:
        f.write(text.encode("utf-8"))


def count(grades: list[int]) -> dict[int, int]:
    return {g: grades.count(g) for g in range(5)}


# --- APTOS 2019 -------------------------------------------------------------------------

APTOS = [
    ("000c1434d8d7", 2),
    ("001639a390f0", 4),
    ("0024cdab0c1e", 1),
    ("002c21358ce6", 0),
    ("005b95c28852", 0),
    ("0083ee8054ee", 4),
    ("0097f532ac9f", 0),
    ("00a8624548a9", 2),
    ("00b74780d31d", 3),
    ("00cb6555d108", 0),
]


def build_aptos(root: Path, extension: str) -> Layout:
    text = "id_code,diagnosis\n" + "".join(f"{i},{g}\n" for i, g in APTOS)
    csv = write_text(root / "train.csv", text)
    for image_id, _ in APTOS:
        write_image(root / "train_images" / f"{image_id}{extension}")
    grades = [g for _, g in APTOS]
    return Layout("aptos", root, [csv], len(APTOS), count(grades), n_patients=len(APTOS))


@pytest.fixture
def aptos(tmp_path: Path) -> Layout:
    """`train.csv` (id_code,diagnosis) + `train_images/<id_code>.png`, as Kaggle released it."""
    return build_aptos(tmp_path.resolve() / "aptos2019", ".png")


@pytest.fixture
def aptos_jpg(tmp_path: Path) -> Layout:
    """The same with `train_images/<id_code>.jpg`, as the common re-encoded copies have it."""
    return build_aptos(tmp_path.resolve() / "aptos2019_jpg", ".jpg")


# --- EyePACS (Kaggle 2015) --------------------------------------------------------------

EYEPACS = [
    ("10_left", 0),
    ("10_right", 0),
    ("13_left", 0),
    ("13_right", 1),
    ("15_left", 2),
    ("15_right", 2),
    ("16_left", 4),
    ("17_right", 3),
    ("19_left", 0),
]


@pytest.fixture
def eyepacs(tmp_path: Path) -> Layout:
    """`trainLabels.csv` (image,level; image = <patient>_<left|right>) + `train/<image>.jpeg`;
    patients 10, 13 and 15 with both eyes, 16, 17 and 19 with one."""
    root = tmp_path.resolve() / "eyepacs"
    text = "image,level\n" + "".join(f"{i},{g}\n" for i, g in EYEPACS)
    csv = write_text(root / "trainLabels.csv", text)
    for image, _ in EYEPACS:
        write_image(root / "train" / f"{image}.jpeg")
    grades = [g for _, g in EYEPACS]
    return Layout("eyepacs", root, [csv], len(EYEPACS), count(grades), n_patients=6)


# --- IDRiD "B. Disease Grading" ---------------------------------------------------------

IDRID_TRAIN = [("IDRiD_001", 3, 2), ("IDRiD_002", 3, 2), ("IDRiD_003", 2, 2)]
IDRID_TRAIN += [("IDRiD_004", 3, 2), ("IDRiD_005", 4, 0), ("IDRiD_006", 0, 0)]
IDRID_TEST = [("IDRiD_001", 4, 2), ("IDRiD_002", 4, 2), ("IDRiD_003", 1, 0)]


def idrid_csv(rows: list[tuple[str, int, int]]) -> str:
    """As released: BOM, CRLF, a trailing space in the last header cell, trailing empty
    columns on the rows, a blank line in the middle and empty-column lines at the end."""
    head = f"{BOM}Image name,Retinopathy grade,Risk of macular edema \r\n"
    body = [f"{name},{grade},{dme},,,,\r\n" for name, grade, dme in rows]
    body.insert(2, "\r\n")
    return head + "".join(body) + ",,,,,,\r\n\r\n"


@pytest.fixture
def idrid(tmp_path: Path) -> Layout:
    """Both official parts, numbered from IDRiD_001 independently (the same names in both)."""
    root = tmp_path.resolve() / "idrid"
    train_csv = write_text(root / IDRID_TRAIN_CSV, idrid_csv(IDRID_TRAIN))
    test_csv = write_text(root / IDRID_TEST_CSV, idrid_csv(IDRID_TEST))
    for part, rows in (("a. Training Set", IDRID_TRAIN), ("b. Testing Set", IDRID_TEST)):
        for name, _, _ in rows:
            write_image(root / IDRID_IMAGES / part / f"{name}.jpg")
    grades = [g for _, g, _ in IDRID_TRAIN + IDRID_TEST]
    n = len(grades)
    splits = {"train": len(IDRID_TRAIN), "test": len(IDRID_TEST)}
    return Layout("idrid", root, [train_csv, test_csv], n, count(grades), n, splits)


# --- Messidor-2 -------------------------------------------------------------------------

# (file name in the release, name in the CSV, grade cell, dme cell, gradable cell)
MESSIDOR2 = [
    ("20051020_43808_0100_PP.png", "20051020_43808_0100_PP.png", "0", "0", "1"),
    ("20051020_43832_0100_PP.png", "20051020_43832_0100_PP.png", "1", "0", "1"),
    ("20051021_51342_0100_PP.tif", "20051021_51342_0100_PP.tif", "2", "1", "1"),
    ("IM002385.JPG", "IM002385.JPG", "2", "0", "1"),
    ("IM002386.JPG", "IM002386.jpg", "4", "1", "1"),  # the CSV and the disk disagree on case
    ("IM002390.JPG", "IM002390.JPG", "3", "1", "1"),
    ("IM003718.JPG", "IM003718.JPG", "", "", "0"),  # ungradable, no grade given
    ("20051207_61880_0400_PP.png", "20051207_61880_0400_PP.png", "1", "0", "0"),  # ungradable
]
MESSIDOR2_GRADABLE = [int(g) for _, _, g, _, ok in MESSIDOR2 if ok == "1"]


@pytest.fixture
def messidor2(tmp_path: Path) -> Layout:
    """The adjudicated grades (Krause et al.), `messidor_data.csv`, beside the release's
    `IMAGES/` folder of mixed .png/.JPG/.tif files; two ungradable rows."""
    root = tmp_path.resolve() / "messidor2"
    head = "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
    body = "".join(f"{name},{g},{dme},{ok}\n" for _, name, g, dme, ok in MESSIDOR2)
    csv = write_text(root / "messidor_data.csv", head + body)
    for file, *_ in MESSIDOR2:
        write_image(root / "IMAGES" / file)
    n = len(MESSIDOR2_GRADABLE)
    return Layout(
        "messidor2", root, [csv], len(MESSIDOR2), count(MESSIDOR2_GRADABLE), n, excluded=2
    )


@pytest.fixture
def messidor2_export(tmp_path: Path) -> Layout:
    """The common re-export: `id_code,diagnosis,adjudicated_dme,adjudicated_gradable` with
    the (converted) images beside the CSV."""
    root = tmp_path.resolve() / "messidor2_export"
    head = "id_code,diagnosis,adjudicated_dme,adjudicated_gradable\n"
    rows = [(Path(f).stem + ".png", g, dme, ok) for f, _, g, dme, ok in MESSIDOR2]
    csv = write_text(root / "messidor_data.csv", head + "".join(",".join(r) + "\n" for r in rows))
    for name, *_ in rows:
        write_image(root / name)
    n = len(MESSIDOR2_GRADABLE)
    return Layout("messidor2", root, [csv], len(rows), count(MESSIDOR2_GRADABLE), n, excluded=2)


# --- DDR --------------------------------------------------------------------------------

DDR = {
    "train": [
        ("007-0004-000.jpg", 0),
        ("007-0005-000.jpg", 2),
        ("20170413102628830.jpg", 5),  # ungradable
        ("20170413102705839.jpg", 1),
        ("007-0007-000.jpg", 4),
    ],
    "valid": [("007-0025-000.jpg", 0), ("20170627170651362.jpg", 3)],
    "test": [("007-0044-000.jpg", 2), ("007-0045-000.jpg", 5), ("20170308102608345.jpg", 0)],
}


@pytest.fixture
def ddr(tmp_path: Path) -> Layout:
    """`DR_grading/{train,valid,test}.txt` with `<file> <grade>` lines and the folders
    `train/ valid/ test/`; grade 5 is ungradable."""
    root = tmp_path.resolve() / "ddr"
    release = root / "DR_grading"
    labels = []
    for part, rows in DDR.items():
        labels.append(write_text(release / f"{part}.txt", "".join(f"{f} {g}\n" for f, g in rows)))
        for name, _ in rows:
            write_image(release / part / name)
    graded = [(part, g) for part, rows in DDR.items() for _, g in rows if g != 5]
    splits = {"train": 4, "val": 2, "test": 2}
    n_rows = sum(len(rows) for rows in DDR.values())
    grades = [g for _, g in graded]
    return Layout("ddr", root, labels, n_rows, count(grades), len(graded), splits, excluded=2)


# --- RetinaMNIST ------------------------------------------------------------------------

RETINAMNIST = {
    "train": [0, 0, 0, 1, 2, 2, 3, 3, 4, 0],
    "val": [0, 2, 3],
    "test": [1, 0, 4, 2, 0],
}


def write_npz(path: Path, parts: dict[str, list[int]]) -> Path:
    """A MedMNIST-style .npz: `<part>_images` (n, 28, 28, 3) uint8 and `<part>_labels`
    (n, 1) uint8."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for part, labels in parts.items():
        arrays[f"{part}_images"] = rng.integers(0, 256, (len(labels), 28, 28, 3), np.uint8)
        arrays[f"{part}_labels"] = np.array(labels, np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def retinamnist(tmp_path: Path) -> Layout:
    root = tmp_path.resolve() / "retinamnist"
    npz = write_npz(root / "retinamnist.npz", RETINAMNIST)
    grades = [g for labels in RETINAMNIST.values() for g in labels]
    splits = {part: len(labels) for part, labels in RETINAMNIST.items()}
    return Layout("retinamnist", root, [npz], len(grades), count(grades), len(grades), splits)


# --- a user's own CSV, and a folder per grade -------------------------------------------

GENERIC_OPTIONS = {
    "csv": "meta/labels.csv",
    "image_column": "file",
    "label_column": "dr",
    "image_dir": "imgs",
    "patient_column": "pid",
    "eye_column": "eye",
    "split_column": "split",
}
GENERIC = [
    # file, dr, pid, eye, split
    ("p1_a.png", "0", "p1", "L", "train"),
    ("p1_b.png", "1", "p1", "R", "train"),
    ("p2_a.png", "2", "p2", "OS", "val"),
    ("p2_b.png", "2", "p2", "od", "val"),
    ("p3_a.png", "4", "p3", "left", "test"),
    ("batch2/p4_a.png", "3", "p4", "Right", "TEST"),  # a sub-folder of image_dir is fine
]


@pytest.fixture
def generic_csv(tmp_path: Path) -> Layout:
    """`meta/labels.csv` with the columns file,dr,pid,eye,split and images under `imgs/`."""
    root = tmp_path.resolve() / "own"
    text = "file,dr,pid,eye,split\n" + "".join(",".join(row) + "\n" for row in GENERIC)
    csv = write_text(root / GENERIC_OPTIONS["csv"], text)
    for name, *_ in GENERIC:
        write_image(root / "imgs" / name)
    grades = [int(row[1]) for row in GENERIC]
    splits = {"train": 2, "val": 2, "test": 2}
    return Layout(
        "csv", root, [csv], len(GENERIC), count(grades), 4, splits, options=dict(GENERIC_OPTIONS)
    )


FOLDER = {0: ["a.png", "b.png", "c.jpg"], 1: ["d.png"], 2: ["e.png", "f.jpeg"], 3: [], 4: ["g.png"]}


@pytest.fixture
def folder(tmp_path: Path) -> Layout:
    """`root/0..4/*.png|.jpg` (grade 3 present but empty), plus a hidden file to ignore."""
    root = tmp_path.resolve() / "by_grade"
    for grade, names in FOLDER.items():
        (root / str(grade)).mkdir(parents=True)
        for name in names:
            write_image(root / str(grade) / name)
    write_text(root / "0" / ".DS_Store", "not an image")
    per_grade = {g: len(names) for g, names in FOLDER.items()}
    n = sum(per_grade.values())
    return Layout("folder", root, [], n, per_grade, n)


@pytest.fixture
def torch_one_thread():
    """Tiny tensors: one intra-op thread is fastest, and far faster when the cores are busy
    (OpenMP threads spin against other processes); restored after each test."""
    import torch  # here, not at the top: most tests never need torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet_trainer(**overrides):
    """A one-epoch CPU Lightning Trainer that writes and prints nothing unless told to."""
    import lightning as L  # here, not at the top: most tests never need Lightning

    settings = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**settings, **overrides})


# --- helpers shared by several test modules ----------------------------------------------
# `from conftest import X` gets this very module (no tests/__init__.py: pytest's prepend mode)
# torch, Hydra and drvae are imported inside the helpers: tests that never need them stay light.

GRADES = range(5)
SIZE = 32  # the side of the tiny test images (cache, synthetic sets, classifier inputs)
MODEL = "test_resnet"  # timm's smallest ResNet (~0.4 M parameters)

# The pipeline at its smallest: simulated data, a tiny VAE and classifier, one epoch.
TINY = [
    "data.n_images=300",
    "data.image_size=32",
    "data.decode_workers=1",
    "vae.model.width=8",
    "vae.model.latent_dim=8",
    "vae.model.depth=3",
    "vae.batch_size=32",
    "vae.images.per_grade=2",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "classifier.model.model_name=test_resnet",
    "classifier.batch_size=32",
    "rebalance.per_grade=4",
    "seed=1",
]


def config(cache: Path, out: Path, *overrides: str):
    """The composed root config: TINY (less its data size with a real data source), the
    stage cache and the run folder, then `overrides`."""
    from hydra import compose, initialize_config_module

    real = any(o.startswith("data=") and o != "data=simulated" for o in overrides)
    tiny = [o for o in TINY if not (real and o.startswith("data.n_"))]
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=[*tiny, f"paths.cache_dir={cache}", f"paths.output_dir={out}", *overrides],
        )


def write_aptos(root: Path, n: int = 12) -> Path:
    """A tiny APTOS-layout dataset with distinct images."""
    import csv

    (root / "train_images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (root / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id_code", "diagnosis"])
        for i in range(n):
            image = rng.integers(30, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "train_images" / f"img{i:03d}.png")
            writer.writerow([f"img{i:03d}", i % 5])
    return root


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    """A preprocessed cache of 40 APTOS-layout images at SIZE pixels."""
    from drvae.data.cache import build_cache
    from drvae.data.preprocess import PreprocessConfig
    from drvae.data.readers import read_dataset

    root = tmp_path_factory.mktemp("rebalance")
    records = read_dataset("aptos", write_aptos(root / "aptos", 40)).records
    return build_cache(records, PreprocessConfig(size=SIZE), root / "cache", workers=1)


@pytest.fixture(scope="module")
def tiny_splits(tiny_cache):
    from drvae.data.splits import make_splits

    return make_splits(tiny_cache.records, seed=0)


def real_counts(cache, splits) -> dict[int, int]:
    from drvae.data.dataset import FundusDataModule

    return FundusDataModule(cache, splits).dataset("train").per_grade()


def synthetic_set(plan, seed: int = 0):
    """A FixedSynthetic of random images (not in the cache), `plan.synthetic[g]` of grade g."""
    from drvae.data.dataset import FixedSynthetic

    grades = np.repeat(list(GRADES), [plan.synthetic[g] for g in GRADES])
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(grades), SIZE, SIZE, 3), dtype=np.uint8)
    return FixedSynthetic(images, grades)


def synthetic_images(results: dict) -> dict[str, str]:
    """File -> SHA-256 of a run's synthetic set: its images and labels (not its times)."""
    import json

    folder = Path(results["stages"]["generate"]["path"])
    sums = json.loads((folder / "checksums.json").read_text())
    return {k: v["sha256"] for k, v in sums.items() if k.startswith("images/") or k == "labels.csv"}


def images_uint8(n: int, size: int = SIZE, seed: int = 0):
    """(n, 3, size, size) uint8 noise images, seeded."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def loader(n: int, seed: int, shuffle: bool = False):
    """A DataLoader of `images_uint8(n, seed=seed)` graded 0, 1, 2, 3, 4, 0, ..., batches of 8."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    grades = torch.arange(n) % 5
    return DataLoader(TensorDataset(images_uint8(n, seed=seed), grades), 8, shuffle=shuffle)


# The test split of the report's fake jobs: the same grades in every job.
TEST_GRADES = np.repeat(np.arange(5), [40, 20, 20, 10, 10])


def metrics_of(predicted: np.ndarray) -> dict[str, float]:
    """The test metrics of predictions of TEST_GRADES, as the classifier reports them."""
    from drvae.report.stats import confusion_counts, confusion_metrics

    counts = confusion_counts(TEST_GRADES, predicted, np.arange(len(TEST_GRADES))[None], 5)
    return {name: float(v[0]) for name, v in confusion_metrics(counts).items()}


def write_job(
    folder: Path,
    overrides: list[str],
    qwk: float | None,
    rebalance: dict[str, Any] | None = None,
    predicted: np.ndarray | None = None,
    synthetic: Path | None = None,
) -> None:
    """A finished job (qwk, or the metrics of `predicted` with its test_predictions.csv),
    or with qwk None a job that left only Hydra's folder."""
    import json

    import torch

    from drvae.run_folder import write_predictions

    (folder / ".hydra").mkdir(parents=True)
    if qwk is None and predicted is None:
        return
    seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
    strategy = next((o.split("=")[1] for o in overrides if o.startswith("rebalance=")), "none")
    rebalance = rebalance or {"methods": [strategy], "per_grade": 100}
    job_config = {"seed": seed, "rebalance": rebalance, "data": {"image_size": 16}}
    metrics = {"test/qwk": qwk, "test/recall_grade1": 0.5, "test/accuracy": 0.8}
    grades = TEST_GRADES
    if predicted is not None:
        metrics = metrics_of(predicted)
        probs = np.full((len(grades), 5), 0.1)
        probs[np.arange(len(grades)), predicted] = 0.6
        ids = [f"img{i}" for i in range(len(grades))]
        write_predictions(
            folder / "test_predictions.csv", ids, torch.tensor(probs), torch.tensor(grades)
        )
    matrix = np.zeros((5, 5), int)
    np.add.at(matrix, (grades, grades if predicted is None else predicted), 1)
    stages = {
        "classifier": {"val_metrics": {"val/loss": 1.0 - qwk if qwk else 0.4, "val/accuracy": 0.7},
                       "confusion_matrix": matrix.tolist()},
        "generate": {"path": str(synthetic)} if synthetic else {"skipped": "no synthetic"},
    }  # fmt: skip
    counts = {"train_real": {"0": 10, "1": 2}, "train_synthetic": {"0": 0, "1": 8}}
    results = {"overrides": overrides, "config": job_config, "metrics": metrics, "stages": stages}
    (folder / "results.json").write_text(json.dumps({**results, "counts": counts}))


# The real datasets, where present (README: Datasets); tests that need one are marked `data`.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_dataset(name: str) -> Path:
    """`DATA / name`, or the test is skipped (with the reason) when it is absent."""
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"real dataset {root} not found (the datasets live in ../shared/data)")
    return root
