"""Property-based tests: the dataset readers fed random and malformed label files.

Whatever the input, a reader either reads it exactly (every data row a record: nothing dropped,
nothing added) or refuses it with drvae's own `DataError`, naming the file and, for a bad row,
its line; never another exception. With `on_error="skip"` every non-blank data row becomes
exactly one record, one problem or one counted exclusion. An image name that leaves the dataset
root is refused even where a real file waits for it outside.

The generated label files carry the quirks of real ones: a byte-order mark, CRLF, blank lines,
quoted cells with commas, quotes and line breaks, padded cells, unicode names, short rows and
extra columns. Each example gets a fresh directory, nested so that escaping names can hit real
files (`bait`) above the dataset root. `DRVAE_FUZZ_SCALE=20` tries twenty times as many
examples (about two minutes on two busy cores instead of ten seconds).
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import (  # tests/ is on sys.path
    BOM,
    DDR,
    EYEPACS,
    IDRID_IMAGES,
    IDRID_TEST,
    IDRID_TEST_CSV,
    IDRID_TRAIN,
    IDRID_TRAIN_CSV,
    MESSIDOR2,
    build_aptos,
    idrid_csv,
    write_image,
    write_npz,
    write_text,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drvae.data.preprocess import load_image
from drvae.data.readers import read_dataset
from drvae.data.readers.common import IMAGE_EXTENSIONS
from drvae.data.records import DataError, ReadResult
from drvae.data.synthetic import write_synthetic_set


def fuzz(examples: int) -> settings:
    """Hypothesis settings; DRVAE_FUZZ_SCALE=20 (say) searches twenty times as many examples."""
    return settings(
        max_examples=round(examples * float(os.environ.get("DRVAE_FUZZ_SCALE", "1"))),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- scaffolding ---------------------------------------------------------------------------


@contextmanager
def dataset_root() -> Iterator[Path]:
    """A fresh, empty dataset root three levels below a throw-away directory."""
    with tempfile.TemporaryDirectory(prefix="drvae-fuzz-") as tmp:
        root = Path(tmp).resolve() / "x" / "y" / "data"
        root.mkdir(parents=True)
        yield root


def base_of(root: Path) -> Path:
    return root.parents[2]


@cache
def png_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_image(Path(tmp) / "one.png").read_bytes()


def put_image(path: Path) -> Path:
    """A real 8x8 PNG (whatever the extension says: the readers only look at names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes())
    return path


def attempt(source: str, root: Path, on_error: str, **options: str) -> ReadResult | DataError:
    """The reader's answer: a result, or drvae's own error. Anything else fails the test."""
    try:
        return read_dataset(source, root, on_error, **options)
    except DataError as error:
        return error


def refused(got: ReadResult | DataError, start: str) -> str:
    assert isinstance(got, DataError), f"expected a DataError starting {start!r}, got {got}"
    assert str(got).startswith(start), f"{str(got)!r} does not start with {start!r}"
    return str(got)


def line_breaks(text: str) -> int:
    """Line breaks as Python's csv module counts them (newline="": \\r\\n, \\r or \\n)."""
    return len(re.findall(r"\r\n|\r|\n", text))


def csv_line(cells: list[str], end: str) -> str:
    """One CSV row, quoted as needed. Written with CRLF so that csv quotes a lone \\r or \\n
    in a cell whatever `end` is, then given `end`."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()[:-2] + end


def assert_inside(result: ReadResult, folder: Path) -> None:
    """Every record names a real file inside `folder`, and not the bait in its `C:` folder."""
    for record in result.records:
        path = record.path.resolve()
        assert record.path.is_file()
        assert path.is_relative_to(folder.resolve()), record
        assert not path.is_relative_to((folder / "C:").resolve()), record


# --- the values in a label file ---------------------------------------------------------------

# Grades written the ways label files write them, and ways that are not grades.
GOOD_GRADES = [(t, g) for g in range(5) for t in (str(g), f"{g}.0", f" {g} ", f"{g}.000", f"\t{g}")]
BAD_GRADES = ["", " ", "5", "-1", "2.5", "4.5", "nan", "NaN", "inf", "-inf", "abc", "3a", "1,5"]
BAD_GRADES += ["3 4", "0x1", "None", '"3"', "½", "10", "1e1", "1e400"]
GRADE = st.one_of(
    st.sampled_from(GOOD_GRADES),
    st.sampled_from(GOOD_GRADES),
    st.sampled_from(BAD_GRADES).map(lambda t: (t, None)),
)
PAD = st.sampled_from(["", "", " ", "\t", "  "])

# Characters of image names: any unicode a UTF-8 file holds, line breaks, quotes and commas
# included; no path separators (names get folders explicitly), no NUL, no ':' (a drive).
NAME_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="/\\:\0")


def plain_name(name: str) -> bool:
    """A name a reader gives back unchanged (cells are stripped) and that names no extension."""
    extension = os.path.splitext(name.lower())[1]
    return name == name.strip() and name not in (".", "..") and extension not in IMAGE_EXTENSIONS


NAME = st.text(NAME_CHARS, min_size=1, max_size=10).filter(plain_name)
EYE_NAME = st.builds(
    lambda patient, eye: f"{patient}_{eye}",
    st.text(
        st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="/\\:\0\n"),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["left", "right"]),
).filter(plain_name)

# Names of files that do not exist: too long for the file system, or never written.
MISSING_SPECIAL = ["y" * 300, "x" * 300 + "/y", "z/" * 2100 + "z", ".", "no such", "sub/none"]
BAD_EYEPACS_NAMES = ["10left", "10_LEFT", "x_up", "_left", "10_left_", "left", "10_left.jpeg"]

BASE = "<BASE>"  # the throw-away directory above the root, filled in when the file is written


def escapes(stem: str) -> list[tuple[str, bool]]:
    """Names that leave the image folder, each with whether the refusal must say so (a NUL or
    `~` only has to be refused: neither leaves the root on POSIX)."""
    saying = [
        f"../{stem}",
        f"../../{stem}",
        f"../../../../{stem}",
        f"..\\{stem}",
        f"sub/../../{stem}",
        f"./../{stem}",
        f"{BASE}/{stem}",
        f"{BASE}\\{stem}",
        f"C:\\{stem}",
        f"C:/{stem}",
        f"C:{stem}",
        f"\\\\server\\share\\{stem}",
        f"//server/share/{stem}",
        f"\0/../{stem}",
    ]
    return [(n, True) for n in saying] + [(n, False) for n in (f"~/{stem}", f"{stem}\0")]


def plant_bait(root: Path, images: Path, stem: str, extension: str) -> None:
    """Real image files where escaping names would lead: above the image folder up to the
    throw-away directory, and in a folder called `C:` (a drive on Windows)."""
    base = base_of(root)
    for folder in (*images.parents, images / "C:"):
        if folder.is_relative_to(base):
            put_image(folder / f"{stem}{extension}")


# --- a label CSV and what a correct reader makes of it -----------------------------------------


@dataclass(frozen=True)
class Flavour:
    """A reader of one label CSV: where the labels and images are, its two columns."""

    source: str
    labels: str  # relative to the root
    images: str  # relative to the root
    columns: tuple[str, str]  # image, grade
    extension: str
    eyepacs: bool = False  # image names are <patient>_<left|right>
    options: tuple[tuple[str, str], ...] = ()

    @property
    def bait(self) -> str:
        return "secret_left" if self.eyepacs else "secret"


APTOS = Flavour("aptos", "train.csv", "train_images", ("id_code", "diagnosis"), ".png")
EYEPACS_FLAVOUR = Flavour("eyepacs", "trainLabels.csv", "train", ("image", "level"), ".jpeg", True)
COLUMN = st.text(NAME_CHARS, min_size=1, max_size=8).map(str.strip).filter(bool)


@st.composite
def csv_flavours(draw: st.DrawFn) -> Flavour:
    """The `csv` reader with column names of any characters."""
    image, grade = draw(st.lists(COLUMN, min_size=2, max_size=2, unique=True))
    options = (
        ("csv", "meta/labels.csv"),
        ("image_column", image),
        ("label_column", grade),
        ("image_dir", "imgs"),
    )
    return Flavour("csv", "meta/labels.csv", "imgs", (image, grade), ".jpg", options=options)


@dataclass
class Case:
    """A label file, the image files beside it, and the answer a correct reader gives."""

    text: str
    files: list[str]  # image files to write, relative to the image folder
    kept: list[tuple[str, int, int, str]] = field(default_factory=list)  # id, grade, line, file
    bad: list[tuple[int, str | None]] = field(default_factory=list)  # line, fragment expected
    rows: int = 0  # non-blank data rows


def spellings(name: str, folder: str, flavour: Flavour) -> list[str]:
    """Ways a label file may name the image file `folder/name + extension`."""
    if flavour.eyepacs:
        return [name]
    variants = [name, name + flavour.extension.upper(), name + ".tif"]
    swapped = name.swapcase()
    if swapped.lower() == name.lower() and swapped.casefold() == name.casefold():
        variants.append(swapped)
    return [f"{folder}{sep}{v}" if folder else v for v in variants for sep in ("/", "\\")]


@st.composite
def label_files(draw: st.DrawFn, flavour: Flavour) -> Case:
    names = st.lists(
        EYE_NAME if flavour.eyepacs else NAME,
        min_size=1,
        max_size=4,
        unique_by=(str.lower, str.casefold),
    )
    folders = st.just("") if flavour.eyepacs else st.sampled_from(["", "", "sub", "Batch 2", "ü"])
    pool = [(draw(folders), name) for name in draw(names)]
    files = [f"{folder}/{name}{flavour.extension}".lstrip("/") for folder, name in pool]
    end = draw(st.sampled_from(["\n", "\r\n"]))

    image_column, grade_column = flavour.columns
    extras = draw(st.lists(st.text(NAME_CHARS, max_size=6), max_size=2))
    extras = [e for e in extras if e.strip() not in flavour.columns]
    header = draw(st.permutations([image_column, grade_column, *extras]))
    text = draw(st.sampled_from(["", BOM])) + draw(
        st.sampled_from(["", end, ",," + end, " " + end])
    )
    text += csv_line([draw(PAD) + h + draw(PAD) for h in header], end)

    case = Case("", files)
    claimed: set[int] = set()
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 5)) == 0:  # a blank line: not a row
            text += draw(st.sampled_from(["", " ", ",", " , ,", '""'])) + end
            continue
        kinds = ["pool"] * 4 + ["missing", "escape", "empty"] + ["badname"] * flavour.eyepacs
        kind = draw(st.sampled_from(kinds))
        file, fragment = None, None
        if kind == "pool":
            file = draw(st.integers(0, len(pool) - 1))
            name = draw(st.sampled_from(spellings(pool[file][1], pool[file][0], flavour)))
        elif kind == "missing":
            suffix = "_right" if flavour.eyepacs else ""
            missing = st.text(NAME_CHARS, min_size=1, max_size=6).map(
                f"zz-missing-{{}}{suffix}".format
            )
            name = draw(st.one_of(missing, st.sampled_from([m + suffix for m in MISSING_SPECIAL])))
        elif kind == "escape":
            name, says = draw(st.sampled_from(escapes(flavour.bait)))
            fragment = "escapes the dataset root" if says else None
        elif kind == "badname":
            name = draw(st.sampled_from(BAD_EYEPACS_NAMES))
        else:
            name = ""
        grade_text, grade = draw(GRADE)
        values = {image_column: draw(PAD) + name + draw(PAD), grade_column: grade_text}
        cells = [values.get(h, draw(st.text(NAME_CHARS, max_size=4))) for h in header]
        cells += draw(st.sampled_from([[], [""], ["", ""], ["x"], ["", " 1"]]))
        if draw(st.integers(0, 5)) == 0:  # a short row
            cells = cells[: draw(st.integers(1, len(cells)))]
        line = 1 + line_breaks(text)
        text += csv_line(cells, end)

        if not any(c.strip() for c in cells):
            continue
        case.rows += 1
        present = dict(zip(header, cells, strict=False))
        faults = []
        if any(c.strip() for c in cells[len(header) :]):
            faults.append(None)  # extra cells beyond the header
        if grade is None or grade_column not in present:
            faults.append(None)
        if kind != "pool" or image_column not in present:
            faults.append(fragment if image_column in present else None)
        if not faults and file in claimed:
            faults.append("duplicate")
        if faults:
            case.bad.append((line, faults[0] if len(faults) == 1 else None))
        else:
            claimed.add(file)
            case.kept.append((name, grade, line, files[file]))
    if draw(st.booleans()):
        text = text.removesuffix(end)  # no line break at the end of the file
    case.text = text
    return case


def write_case(root: Path, flavour: Flavour, case: Case) -> Path:
    images = root / flavour.images
    for file in case.files:
        put_image(images / file)
    plant_bait(root, images, flavour.bait, flavour.extension)
    return write_text(root / flavour.labels, case.text.replace(BASE, str(base_of(root))))


def check_against_the_oracle(root: Path, flavour: Flavour, case: Case) -> None:
    label = write_case(root, flavour, case)
    images = root / flavour.images
    expected = [(i, g, f"{label}:{line}", images / f) for i, g, line, f in case.kept]
    for on_error in ("raise", "skip"):
        got = attempt(flavour.source, root, on_error, **dict(flavour.options))
        if not case.rows:
            refused(got, f"{label}: no rows after the header")
        elif on_error == "raise" and case.bad:
            refused(got, f"{label}:{case.bad[0][0]}: ")
        elif not case.kept:
            refused(got, f"{root}: no usable images")
        else:
            assert isinstance(got, ReadResult), got
            assert [(r.image_id, r.grade, r.origin, r.path) for r in got.records] == expected
            assert [p.origin for p in got.problems] == [f"{label}:{n}" for n, _ in case.bad]
            for problem, (_, fragment) in zip(got.problems, case.bad, strict=True):
                assert fragment is None or fragment in problem.message, problem
            assert_inside(got, images)
            if flavour.eyepacs:
                for record in got.records:
                    assert f"{record.patient}_{record.eye}" == record.image_id


H = "id_code,diagnosis\n"


# Shrunk failures, kept. A non-empty cell beyond the header was ignored ("a,1,4" read as 1):
@example(Case(H + "0,0,,x\n", ["0.png"], bad=[(2, None)], rows=1))
# One image under several names made several records:
@example(
    Case(
        H + "a,1\nA,2\na.png,3\nsub\\b,0\nsub/b.jpg,0\n",
        ["a.png", "sub/b.png"],
        kept=[("a", 1, 2, "a.png"), ("sub\\b", 0, 5, "sub/b.png")],
        bad=[(3, "duplicate"), (4, "duplicate"), (6, "duplicate")],
        rows=5,
    )
)
# A row with two faults gave two problems; the reader counts each problem as a bad row:
@example(Case(H + "zz,9\nb,1\n", ["b.png"], kept=[("b", 1, 3, "b.png")], bad=[(2, None)], rows=2))
# A row over two lines was reported at its last line:
@example(
    Case(H + '"a\n",1\nb,x\n', ["a.png"], kept=[("a", 1, 2, "a.png")], bad=[(4, None)], rows=2)
)
# A folder name too long for the file system raised OSError:
@example(Case(H + "x" * 300 + "/a,1\nb,1\n", ["b.png"], [("b", 1, 3, "b.png")], [(2, None)], 2))
# A Windows drive was read as a folder "C:" (on Windows it leaves the root):
@example(
    Case(
        H + "C:\\secret,1\nb,1\n",
        ["b.png"],
        [("b", 1, 3, "b.png")],
        [(2, "escapes the dataset root")],
        2,
    )
)
# An empty name was said to escape the root:
@example(Case(H + ",1\nb,1\n", ["b.png"], [("b", 1, 3, "b.png")], [(2, "image name is empty")], 2))
@fuzz(70)
@given(case=label_files(APTOS))
def test_aptos_label_files_read_exactly_or_refused(case: Case) -> None:
    with dataset_root() as root:
        check_against_the_oracle(root, APTOS, case)


@fuzz(50)
@given(case=label_files(EYEPACS_FLAVOUR))
def test_eyepacs_label_files_read_exactly_or_refused(case: Case) -> None:
    with dataset_root() as root:
        check_against_the_oracle(root, EYEPACS_FLAVOUR, case)


@fuzz(50)
@given(data=st.data(), flavour=csv_flavours())
def test_own_csv_label_files_read_exactly_or_refused(data: st.DataObject, flavour: Flavour) -> None:
    case = data.draw(label_files(flavour))
    with dataset_root() as root:
        check_against_the_oracle(root, flavour, case)


# --- names that leave the image folder --------------------------------------------------------

PIECES = ["..", ".", "", "sub", "secret", "~", "C:", "\0", "...", "a"]
LEADS = ["", "/", "\\", "//", "\\\\", "C:", "C:\\", "c:/", f"{BASE}/", f"{BASE}\\"]


def leaves_the_folder(name: str) -> bool:
    """Absolute, a drive, or a `..` step, whichever separator it is written with."""
    posix = name.replace("\\", "/")
    return posix.startswith("/") or ".." in posix.split("/") or bool(re.match("[A-Za-z]:", name))


def plain_path(name: str) -> str:
    """The name as a relative path: one kind of separator, no empty or `.` steps."""
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


REAL = ["sub/secret.png", ".../secret.png", "~/secret.png"]  # real images inside the folder


@example(lead="", parts=["sub", ".", "secret"], sep="\\")
@example(lead="C:", parts=["secret"], sep="\\")
@fuzz(80)
@given(
    lead=st.sampled_from(LEADS),
    parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=6),
    sep=st.sampled_from(["/", "\\"]),
)
def test_an_image_name_never_reaches_a_file_outside_the_image_folder(
    lead: str, parts: list[str], sep: str
) -> None:
    with dataset_root() as root:
        images = root / "train_images"
        for file in ("a.png", *REAL):
            put_image(images / file)
        plant_bait(root, images, "secret", ".png")
        name = (lead + sep.join(parts)).replace(BASE, str(base_of(root)))
        head = "id_code,diagnosis\na,1\n"
        label = write_text(root / "train.csv", head + csv_line([name, "2"], "\n"))
        real = plain_path(name) + ".png"
        for on_error in ("raise", "skip"):
            got = attempt("aptos", root, on_error)
            if leaves_the_folder(name):
                problem = refused(got, f"{label}:3: ") if on_error == "raise" else got.problems[0]
                assert "escapes the dataset root" in str(problem)
                assert on_error == "raise" or [p.origin for p in got.problems] == [f"{label}:3"]
            elif real in REAL:
                assert isinstance(got, ReadResult), got
                assert [r.path for r in got.records] == [images / "a.png", images / real]
            elif isinstance(got, DataError):
                refused(got, f"{label}:3: ")
            else:
                assert_inside(got, images)
                assert got.records[0].origin == f"{label}:2"


# --- label files of random bytes ----------------------------------------------------------------


def build(source: str, root: Path) -> list[Path]:
    """A small, valid dataset of `source` at `root`; the files a test may damage."""
    if source == "aptos":
        return build_aptos(root, ".png").labels
    if source == "eyepacs":
        for image, _ in EYEPACS:
            put_image(root / "train" / f"{image}.jpeg")
        text = "image,level\n" + "".join(f"{i},{g}\n" for i, g in EYEPACS)
        return [write_text(root / "trainLabels.csv", text)]
    if source == "csv":
        put_image(root / "a.png")
        put_image(root / "sub" / "b.jpg")
        return [write_text(root / "labels.csv", "image,grade\na.png,0\nsub/b,4\n")]
    if source == "idrid":
        for part, rows in (("a. Training Set", IDRID_TRAIN), ("b. Testing Set", IDRID_TEST)):
            for name, _, _ in rows:
                put_image(root / IDRID_IMAGES / part / f"{name}.jpg")
        train = write_text(root / IDRID_TRAIN_CSV, idrid_csv(IDRID_TRAIN))
        return [train, write_text(root / IDRID_TEST_CSV, idrid_csv(IDRID_TEST))]
    if source == "messidor2":
        for file, *_ in MESSIDOR2:
            put_image(root / "IMAGES" / file)
        head = "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
        body = "".join(f"{name},{g},{dme},{ok}\n" for _, name, g, dme, ok in MESSIDOR2)
        return [write_text(root / "messidor_data.csv", head + body)]
    if source == "ddr":
        return [write_ddr_part(root, part, rows) for part, rows in DDR.items()]
    if source == "retinamnist":
        return [write_npz(root / "retinamnist.npz", {"train": [0, 4], "val": [2], "test": [3]})]
    assert source == "synthetic"
    write_synthetic_set(root, np.zeros((3, 8, 8, 3), np.uint8), [0, 1, 2], {})
    return [root / "labels.csv", root / "manifest.json"]


def write_ddr_part(root: Path, part: str, rows: list[tuple[str, int]]) -> Path:
    for name, _ in rows:
        put_image(root / "DR_grading" / part / name)
    return write_text(root / "DR_grading" / f"{part}.txt", "".join(f"{f} {g}\n" for f, g in rows))


SOURCES = ["aptos", "eyepacs", "csv", "idrid", "messidor2", "ddr", "retinamnist", "synthetic"]
MAGIC = [b"", BOM.encode(), b"\xff\xfe", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"\0"]
ODD_FILES = [b"", b"\n\n", b" , ,\r\n", b"id,grade\n", b'"', b'a,"b\n\n', b"{}", b"[]", b"null"]
JUNK = st.one_of(
    st.sampled_from(ODD_FILES),
    st.binary(max_size=300),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=300)).map(b"".join),
    st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda text, codec: text.encode(codec, "replace"),
        st.text(max_size=60),
        st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"]),
    ),
)


@fuzz(150)
@given(
    source=st.sampled_from(SOURCES),
    which=st.integers(0, 2),
    keep_header=st.booleans(),
    junk=JUNK,
)
def test_a_label_file_of_random_bytes_is_read_or_refused(
    source: str, which: int, keep_header: bool, junk: bytes
) -> None:
    with dataset_root() as root:
        files = build(source, root)
        target = files[which % len(files)]
        head = target.read_bytes().split(b"\n")[0] + b"\n" if keep_header else b""
        target.write_bytes(head + junk)
        for on_error in ("raise", "skip"):
            got = attempt(source, root, on_error)
            if isinstance(got, DataError):
                assert str(got).startswith(str(root))  # it names the file, or the dataset
            else:
                assert_inside(got, root)
                assert on_error == "skip" or got.problems == []


# --- IDRiD, Messidor-2, DDR: rows of anything, every one accounted for ---------------------------


def write_table(path: Path, header: list[str], rows: list[list[str]], quirks: tuple) -> dict:
    """Write a CSV (with a BOM, line ends and leading blank lines from `quirks`); its
    non-blank data rows by origin "file:line"."""
    bom, end, lead = quirks
    text = bom + lead + csv_line(header, end)
    found = {}
    for cells in rows:
        line = 1 + line_breaks(text)
        text += csv_line(cells, end)
        if any(c.strip() for c in cells):
            found[f"{path}:{line}"] = cells
    write_text(path, text)
    return found


QUIRKS = st.tuples(
    st.sampled_from(["", BOM]), st.sampled_from(["\n", "\r\n"]), st.sampled_from(["", "\n", ",\n"])
)
ANY_GRADE = st.one_of(
    st.sampled_from([t for t, _ in GOOD_GRADES]),
    st.sampled_from(BAD_GRADES),
    st.text(max_size=3),
)
OTHER_CELL = st.one_of(
    st.sampled_from(["", "", "1", "1", "0", "1.0", "0.0", " 1 ", "2", "yes"]),
    st.text(NAME_CHARS, max_size=3),
)
ESCAPE_NAMES = [name for name, _ in escapes("secret")]


def cell_rows(names: list[str], width: int) -> st.SearchStrategy[list[list[str]]]:
    """Rows of a label CSV: a name (real, escaping, missing or junk), a grade (good or not)
    and `width` further cells more or less, or blank rows."""
    name = st.one_of(
        st.sampled_from(names),
        st.sampled_from(names),
        st.sampled_from(ESCAPE_NAMES),
        st.text(NAME_CHARS, max_size=8),
    )
    row = st.builds(
        lambda n, g, rest: [n, g, *rest],
        name,
        ANY_GRADE,
        st.lists(OTHER_CELL, min_size=max(width - 1, 0), max_size=width + 1),
    )
    blank = st.sampled_from([[], [""], [" ", ""]])
    return st.lists(st.one_of(row, row, row, blank), max_size=8)


def check_accounting(source: str, root: Path, rows: dict, grade: int = 1, name: int = 0) -> None:
    """With `on_error="skip"` every non-blank row (cells by origin in `rows`) is one record, one
    problem or one exclusion, and a record has its row's grade and image; `"raise"` stops at
    the first of those problems, or gives the same records when there is none."""
    skip, stop = attempt(source, root, "skip"), attempt(source, root, "raise")
    if isinstance(skip, DataError):  # every row bad or blank: nothing to train on
        assert re.search("no usable images|no rows after the header", str(skip)), skip
        assert isinstance(stop, DataError) and str(skip).startswith(str(root))
        return
    origins = [r.origin for r in skip.records] + [p.origin for p in skip.problems]
    assert len(origins) == len(set(origins)), "a row with two problems, or kept and reported"
    assert set(origins) <= set(rows)
    assert len(origins) + sum(skip.excluded.values()) == len(rows)
    for record in skip.records:
        cells = rows[record.origin]
        assert record.grade == float(cells[grade])
        assert record.path.stem.lower() in cells[name].lower()
    assert_inside(skip, root)
    if skip.problems:
        refused(stop, f"{skip.problems[0]}")
    else:
        assert isinstance(stop, ReadResult) and stop.records == skip.records


IDRID_NAMES = ["IDRiD_001", "IDRiD_002.jpg", "idrid_003", "IDRiD_001.JPG", "IDRiD_002.png"]
IDRID_NAMES += ["../a. Training Set/IDRiD_004"]  # a real image of the other part


@fuzz(50)
@given(rows=cell_rows(IDRID_NAMES, 2), quirks=QUIRKS)
def test_idrid_rows_of_anything_are_each_read_or_reported(rows: list, quirks: tuple) -> None:
    with dataset_root() as root:
        train, test = build("idrid", root)
        images = root / IDRID_IMAGES / "b. Testing Set"
        plant_bait(root, images, "secret", ".jpg")
        rows = [[c.replace(BASE, str(base_of(root))) for c in r] for r in rows]
        header = ["Image name", "Retinopathy grade", "Risk of macular edema "]
        train_rows = [[n, str(g), str(d)] for n, g, d in IDRID_TRAIN]
        found = write_table(train, header, train_rows, ("", "\n", ""))
        found |= write_table(test, header, rows, quirks)
        check_accounting("idrid", root, found)


MESSIDOR2_NAMES = [name for _, name, *_ in MESSIDOR2] + ["IM002385", "im002390.png"]


@fuzz(50)
@given(rows=cell_rows(MESSIDOR2_NAMES, 2), quirks=QUIRKS)
def test_messidor2_rows_of_anything_are_each_read_or_reported(rows: list, quirks: tuple) -> None:
    with dataset_root() as root:
        (label,) = build("messidor2", root)
        plant_bait(root, root / "IMAGES", "secret", ".png")
        rows = [[c.replace(BASE, str(base_of(root))) for c in r] for r in rows]
        header = ["image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"]
        check_accounting("messidor2", root, write_table(label, header, rows, quirks))


DDR_NAMES = [name for name, _ in DDR["test"]] + ["007-0044-000", "../train/007-0005-000.jpg"]
# Within a line: any character but a line break; \f, \x1c, \x85, \u2028 are not line breaks.
LINE_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\r\n")
DDR_LINE = st.one_of(
    st.builds(
        lambda name, sep, grade, rest: f"{name}{sep}{grade}{rest}",
        st.one_of(st.sampled_from(DDR_NAMES), st.sampled_from(ESCAPE_NAMES)),
        st.sampled_from([" ", "\t", "  ", "\x0c", "\u2028"]),
        st.one_of(
            st.sampled_from(["0", "1", "4", "5", "5.0", "2.5", "x"]),
            st.text(LINE_CHARS, max_size=2),
        ),
        st.sampled_from(["", " ", " 1", "\x85"]),
    ),
    st.text(LINE_CHARS, max_size=12),
)


@fuzz(50)
@given(
    lines=st.lists(DDR_LINE, max_size=8),
    end=st.sampled_from(["\n", "\r\n"]),
    bom=st.sampled_from(["", BOM]),
)
def test_ddr_lines_of_anything_are_each_read_or_reported(
    lines: list[str], end: str, bom: str
) -> None:
    with dataset_root() as root:
        train, valid, test = build("ddr", root)
        plant_bait(root, root / "DR_grading" / "test", "secret", ".jpg")
        base = str(base_of(root))
        lines = [line.replace(BASE, base) for line in lines]
        write_text(test, bom + "".join(line + end for line in lines))
        found = {}
        for listing, texts in ((train, None), (valid, None), (test, lines)):
            texts = texts if texts is not None else listing.read_text().split("\n")
            for number, line in enumerate(texts, start=1):
                if line.split():
                    found[f"{listing}:{number}"] = line.split()
        check_accounting("ddr", root, found)


# --- RetinaMNIST: arrays of any shape and type --------------------------------------------------

DTYPES = [np.uint8, np.uint8, np.int64, np.float32, np.bool_, np.complex64, "U2", object]


@st.composite
def npz_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """The arrays of an .npz: mostly MedMNIST-like, with wrong keys, shapes, types, values."""
    arrays: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        n = draw(st.integers(0, 4))
        shape = draw(st.sampled_from([(n, 4, 4, 3), (n, 4, 4), (n, 4, 4, 1), (n, 0, 4), (n,)]))
        labels = draw(
            st.lists(st.sampled_from([0, 1, 4, 5, -1, 2.5, np.nan]), min_size=n, max_size=n)
        )
        label_shape = draw(st.sampled_from([(n, 1), (n,), (1, n), (n, 1, 1)]))
        image_type, label_type = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
        arrays[f"{part}_images"] = np.zeros(shape, image_type)
        with np.errstate(invalid="ignore"):  # NaN as an integer: whatever numpy makes of it
            arrays[f"{part}_labels"] = np.array(labels).reshape(label_shape).astype(label_type)
        if draw(st.integers(0, 8)) == 0:
            del arrays[draw(st.sampled_from([f"{part}_images", f"{part}_labels"]))]
    return arrays


@fuzz(60)
@given(arrays=npz_arrays(), compressed=st.booleans())
def test_retinamnist_arrays_are_read_exactly_or_refused(
    arrays: dict[str, np.ndarray], compressed: bool
) -> None:
    with dataset_root() as root:
        npz = root / "retinamnist.npz"
        (np.savez_compressed if compressed else np.savez)(npz, **arrays)
        for on_error in ("raise", "skip"):
            got = attempt("retinamnist", root, on_error)
            if isinstance(got, DataError):
                assert str(npz) in str(got) or str(root) in str(got)
                continue
            labels = [arrays[f"{part}_labels"].reshape(-1) for part in ("train", "val", "test")]
            assert len(got.records) + len(got.problems) == sum(len(x) for x in labels)
            for record in got.records:
                part_labels = arrays[f"{record.split}_labels"].reshape(-1)
                assert record.grade == part_labels[record.index]
                assert load_image(record).shape[2] == 3  # what training will do with it
            assert on_error == "skip" or got.problems == []


@fuzz(40)
@given(offset=st.integers(0, 10_000), byte=st.integers(0, 255), compressed=st.booleans())
def test_a_damaged_retinamnist_npz_is_refused(offset: int, byte: int, compressed: bool) -> None:
    with dataset_root() as root:
        npz = root / "retinamnist.npz"
        parts = {"train": [0, 1, 4], "val": [2], "test": [3, 0]}
        if not compressed:
            np.savez(npz, **{k: v for k, v in _medmnist(parts).items()})
        else:
            write_npz(npz, parts)
        data = bytearray(npz.read_bytes())
        data[offset % len(data)] = byte
        npz.write_bytes(bytes(data))
        for on_error in ("raise", "skip"):
            got = attempt("retinamnist", root, on_error)
            assert not isinstance(got, DataError) or str(npz) in str(got)


def _medmnist(parts: dict[str, list[int]]) -> dict[str, np.ndarray]:
    arrays = {}
    for part, labels in parts.items():
        arrays[f"{part}_images"] = np.full((len(labels), 28, 28, 3), 7, np.uint8)
        arrays[f"{part}_labels"] = np.array(labels, np.uint8).reshape(-1, 1)
    return arrays


# --- shrunk failures of the properties above, kept as plain tests --------------------------------


def test_an_unclosed_quote_in_a_large_file_is_a_data_error(tmp_path: Path) -> None:
    """The cell runs on to the end of the file, past csv's field limit: csv.Error escaped."""
    label = write_text(tmp_path / "train.csv", H + '"a,1\n' + "b,1\n" * 40_000)
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=r"not a readable CSV row .*every quote closed") as e:
            read_dataset("aptos", tmp_path, on_error)
        assert str(e.value).startswith(f"{label}:")


def test_a_column_named_twice_is_a_data_error(tmp_path: Path) -> None:
    """Was: the last of the two silently won."""
    put_image(tmp_path / "train_images" / "a.png")
    write_text(tmp_path / "train.csv", "id_code,diagnosis,diagnosis\na,1,4\n")
    with pytest.raises(DataError, match=r"column\(s\) \['diagnosis'\] appear more than once"):
        read_dataset("aptos", tmp_path, "skip")


def test_messidor2_grades_csv_may_start_with_a_blank_line(tmp_path: Path) -> None:
    """Was: "no Messidor-2 grades CSV found", though the rows reader skips the blank line."""
    (label,) = build("messidor2", tmp_path)
    label.write_text("\n" + label.read_text())
    assert len(read_dataset("messidor2", tmp_path).records) == 6


def test_ddr_line_numbers_count_only_line_breaks(tmp_path: Path) -> None:
    """Was: str.splitlines also broke at a form feed, so later lines were misnumbered."""
    *_, test = build("ddr", tmp_path)
    write_text(test, "a\x0cb 1\n007-0045-000.jpg 9\n")
    result = read_dataset("ddr", tmp_path, "skip")
    assert [p.origin for p in result.problems] == [f"{test}:1", f"{test}:2"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "not a readable .npz file"),  # was EOFError
        (b"\x93NUMPY", "not a readable .npz file"),  # was EOFError
        ("npy", "one array (.npy), not an .npz archive"),  # was TypeError (no `with` on it)
        ({"train_labels": np.array([[1]], object)}, "cannot read train_labels"),  # ValueError
        ({"train_images": np.zeros((1, 4, 4), np.float32)}, "expected uint8"),  # was accepted
        ({"train_images": np.zeros((1, 4, 4, 1), np.uint8)}, "(n, H, W, 3)"),  # was accepted
        ({"train_labels": np.array([["1"]])}, "expected numbers"),  # was accepted
        ({"train_labels": np.array([[1, 2]], np.uint8)}, "expected numbers, (n,) or (n, 1)"),
    ],
)
def test_a_retinamnist_npz_of_the_wrong_kind(tmp_path: Path, content, fragment: str) -> None:
    npz = tmp_path / "retinamnist.npz"
    if isinstance(content, bytes):
        npz.write_bytes(content)
    elif content == "npy":
        with npz.open("wb") as f:
            np.save(f, np.zeros(3, np.uint8))
    else:
        np.savez(npz, **{**_medmnist({"train": [1], "val": [2], "test": [3]}), **content})
    with pytest.raises(DataError, match=re.escape(fragment)) as caught:
        read_dataset("retinamnist", tmp_path, "skip")
    assert str(npz) in str(caught.value)


def test_a_damaged_npz_header_is_a_data_error(tmp_path: Path) -> None:
    """A NUL in a compressed member's header: numpy's tokenize.TokenError escaped."""
    npz = write_npz(tmp_path / "retinamnist.npz", {"train": [0, 1, 4], "val": [2], "test": [3, 0]})
    data = bytearray(npz.read_bytes())
    data[121] = 2
    npz.write_bytes(bytes(data))
    with pytest.raises(DataError, match="cannot read"):
        read_dataset("retinamnist", tmp_path)


@pytest.mark.parametrize("manifest", [b"", b"\x80", b"[]", b"{}", BOM.encode() + b"{}"])
def test_a_damaged_synthetic_manifest_is_a_data_error(tmp_path: Path, manifest: bytes) -> None:
    """Was: JSONDecodeError, UnicodeDecodeError, TypeError or KeyError."""
    build("synthetic", tmp_path)
    (tmp_path / "manifest.json").write_bytes(manifest)
    with pytest.raises(DataError, match="damaged manifest") as caught:
        read_dataset("synthetic", tmp_path)
    assert str(tmp_path / "manifest.json") in str(caught.value)
