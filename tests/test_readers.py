"""Dataset readers on miniature copies of each public dataset's published layout.

Good input gives exactly the right records; bad input raises `DataError` naming the file (and
`file:line` for a row) and what was expected; with `on_error="skip"` each bad row is listed
in `result.problems` and the good rows kept, so that nothing is ever dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from drvae.data.inspect import summarise
from drvae.data.readers import READERS, read_dataset
from drvae.data.readers.common import IMAGE_EXTENSIONS
from drvae.data.records import DataError, ReadResult

if TYPE_CHECKING:
    from conftest import Layout

IDRID_TEST_IMAGES = "B. Disease Grading/1. Original Images/b. Testing Set"


def read(layout: Layout, on_error: str = "raise", **options) -> ReadResult:
    return read_dataset(layout.source, layout.root, on_error, **{**layout.options, **options})


def raises(layout: Layout, *fragments: str, on_error: str = "raise", **options) -> str:
    """Reading fails with a `DataError` whose message holds every fragment."""
    with pytest.raises(DataError) as caught:
        read(layout, on_error, **options)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def tiny_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (150, 70, 30)).save(path)


def by_id(result: ReadResult) -> dict:
    return {r.image_id: r for r in result.records}


# --- every reader, good input -----------------------------------------------------------

ALL = [
    "aptos",
    "aptos_jpg",
    "eyepacs",
    "idrid",
    "messidor2",
    "messidor2_export",
    "ddr",
    "retinamnist",
    "generic_csv",
    "folder",
]


@pytest.mark.parametrize("name", ALL)
def test_every_row_becomes_a_record_or_a_counted_exclusion(name: str, request) -> None:
    layout: Layout = request.getfixturevalue(name)
    result = read(layout)
    records = result.records
    assert result.problems == []
    assert result.per_grade() == layout.per_grade
    assert len(records) + sum(result.excluded.values()) == layout.rows
    assert sum(result.excluded.values()) == layout.excluded
    assert len({r.patient for r in records}) == layout.n_patients
    assert Counter(r.split for r in records if r.split) == layout.splits
    assert len({r.image_id for r in records}) == len(records)
    assert len({(r.path, r.array_key, r.index) for r in records}) == len(records)
    for record in records:
        assert record.source == layout.source
        assert record.path.is_file()
        assert record.path.is_relative_to(layout.root)
        assert record.synthetic is False
        if record.array_key is None:
            assert record.path.suffix.lower() in IMAGE_EXTENSIONS
        if layout.labels:  # "file:line", or "file:<part>_labels[i]" for the .npz
            assert any(record.origin.startswith(f"{label}:") for label in layout.labels)
        else:
            assert record.origin == str(record.path)


@pytest.mark.parametrize("name, extension", [("aptos", ".png"), ("aptos_jpg", ".jpg")])
def test_aptos_png_or_jpg_each_image_its_own_patient(name: str, extension: str, request) -> None:
    layout: Layout = request.getfixturevalue(name)
    records = by_id(read(layout))
    assert len(records) == 10
    first = records["000c1434d8d7"]
    assert first.path == layout.root / "train_images" / f"000c1434d8d7{extension}"
    assert (first.grade, first.patient, first.eye, first.split) == (2, "000c1434d8d7", None, None)
    assert first.origin == f"{layout.label}:2"
    assert records["00cb6555d108"].origin == f"{layout.label}:11"
    assert all(r.patient == r.image_id for r in records.values())


def test_eyepacs_patients_and_eyes_come_from_the_image_name(eyepacs: Layout) -> None:
    records = by_id(read(eyepacs))
    assert len(records) == 9
    assert Counter(r.eye for r in records.values()) == {"left": 5, "right": 4}
    assert {r.patient for r in records.values()} == {"10", "13", "15", "16", "17", "19"}
    both = [r for r in records.values() if r.patient == "13"]
    assert {(r.eye, r.grade) for r in both} == {("left", 0), ("right", 1)}
    right = records["13_right"]
    assert right.path == eyepacs.root / "train" / "13_right.jpeg"
    assert right.origin == f"{eyepacs.label}:5"


def test_idrid_keeps_the_official_split_and_the_numbering_of_both_parts(idrid: Layout) -> None:
    records = by_id(read(idrid))
    train_csv, test_csv = idrid.labels
    images = idrid.root / "B. Disease Grading" / "1. Original Images"
    # IDRiD numbers both parts from 001: the same name is two different images.
    train, test = records["train/IDRiD_001"], records["test/IDRiD_001"]
    assert (train.split, train.grade) == ("train", 3)
    assert (test.split, test.grade) == ("test", 4)
    assert train.path == images / "a. Training Set" / "IDRiD_001.jpg"
    assert test.path == images / "b. Testing Set" / "IDRiD_001.jpg"
    assert train.patient != test.patient
    assert Counter(r.split for r in records.values()) == {"train": 6, "test": 3}
    # BOM, CRLF, trailing header space, trailing empty columns and the blank line are all
    # tolerated, and line numbers still count physical lines (row 3 comes after a blank line).
    assert train.origin == f"{train_csv}:2"
    assert records["train/IDRiD_003"].origin == f"{train_csv}:5"
    assert records["test/IDRiD_003"].origin == f"{test_csv}:5"


def test_idrid_root_may_be_the_disease_grading_folder_itself(idrid: Layout) -> None:
    inner = read_dataset("idrid", idrid.root / "B. Disease Grading")
    assert inner.per_grade() == idrid.per_grade


def test_messidor2_excludes_and_counts_ungradable_images(messidor2: Layout) -> None:
    result = read(messidor2)
    records = by_id(result)
    assert result.excluded == {"ungradable (adjudicated_gradable=0)": 2}
    assert "IM003718" not in records and "20051207_61880_0400_PP" not in records
    images = messidor2.root / "IMAGES"
    assert records["20051021_51342_0100_PP"].path == images / "20051021_51342_0100_PP.tif"
    assert records["IM002385"].path == images / "IM002385.JPG"
    # The CSV says IM002386.jpg, the disk has IM002386.JPG.
    assert records["IM002386"].path == images / "IM002386.JPG"
    assert records["IM002386"].grade == 4
    assert records["20051020_43808_0100_PP"].origin == f"{messidor2.label}:2"


def test_messidor2_finds_its_grades_beside_another_non_utf8_csv(messidor2: Layout) -> None:
    # sorted before messidor_data.csv, Latin-1: the header sniffing must not trip on it
    (messidor2.root / "messidor-2.csv").write_bytes(b"Exam;Left;Right\nIM\xe9;a.png;b.png\n")
    assert read(messidor2).per_grade() == messidor2.per_grade


def test_messidor2_reexport_reads_images_beside_the_csv(messidor2_export: Layout) -> None:
    result = read(messidor2_export)
    assert result.excluded == {"ungradable (adjudicated_gradable=0)": 2}
    assert all(r.path.parent == messidor2_export.root for r in result.records)
    assert by_id(result)["IM002390"].grade == 3


def test_ddr_maps_valid_to_val_and_excludes_grade_5(ddr: Layout) -> None:
    result = read(ddr)
    records = by_id(result)
    assert result.excluded == {"ungradable (grade 5)": 2}
    assert "20170413102628830" not in records and "007-0045-000" not in records
    release = ddr.root / "DR_grading"
    val = records["20170627170651362"]
    assert (val.split, val.grade) == ("val", 3)
    assert val.path == release / "valid" / "20170627170651362.jpg"
    assert val.origin == f"{release / 'valid.txt'}:2"
    assert records["007-0007-000"].origin == f"{release / 'train.txt'}:5"
    # The root may also be DR_grading itself.
    assert read_dataset("ddr", release).per_grade() == ddr.per_grade


def test_retinamnist_records_point_into_the_npz_with_official_splits(
    retinamnist: Layout,
) -> None:
    result = read(retinamnist)
    npz_path = retinamnist.label
    records = by_id(result)
    assert [r.grade for r in result.records if r.split == "test"] == [1, 0, 4, 2, 0]
    record = records["val/2"]
    assert (record.split, record.grade, record.array_key, record.index) == (
        "val",
        3,
        "val_images",
        2,
    )
    assert record.path == npz_path
    assert record.origin == f"{npz_path}:val_labels[2]"
    with np.load(npz_path) as npz:
        assert npz["val_images"][record.index].shape == (28, 28, 3)
    assert summarise(result)["image_sizes"] == {"28x28": 18}


def test_retinamnist_root_may_be_the_npz_file(retinamnist: Layout) -> None:
    assert read_dataset("retinamnist", retinamnist.label).per_grade() == retinamnist.per_grade


def test_generic_csv_with_custom_columns(generic_csv: Layout) -> None:
    records = by_id(
        read_dataset(
            "csv",
            generic_csv.root,
            csv="meta/labels.csv",
            image_column="file",
            label_column="dr",
            image_dir="imgs",
            patient_column="pid",
            eye_column="eye",
            split_column="split",
        )
    )
    eyes = {i: r.eye for i, r in records.items()}
    assert eyes == {
        "p1_a.png": "left",
        "p1_b.png": "right",
        "p2_a.png": "left",
        "p2_b.png": "right",
        "p3_a.png": "left",
        "batch2/p4_a.png": "right",
    }
    assert {i: r.patient for i, r in records.items()}["p2_b.png"] == "p2"
    nested = records["batch2/p4_a.png"]
    assert nested.path == generic_csv.root / "imgs" / "batch2" / "p4_a.png"
    assert (nested.split, nested.grade) == ("test", 3)  # "TEST" in the file
    assert records["p1_a.png"].origin == f"{generic_csv.label}:2"


def test_generic_csv_defaults_images_beside_the_csv(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("image,grade\na.png,0\nb,4\n")
    tiny_image(tmp_path / "a.png")
    tiny_image(tmp_path / "b.jpg")
    records = by_id(read_dataset("csv", tmp_path))
    assert {i: (r.grade, r.path.name, r.patient) for i, r in records.items()} == {
        "a.png": (0, "a.png", "a.png"),
        "b": (4, "b.jpg", "b"),
    }


def test_folder_reader_takes_the_grade_from_the_folder(folder: Layout) -> None:
    records = by_id(read(folder))
    assert set(records) == {"0/a.png", "0/b.png", "0/c.jpg", "1/d.png", "2/e.png", "2/f.jpeg"} | {
        "4/g.png"
    }
    assert records["2/f.jpeg"].grade == 2
    assert records["2/f.jpeg"].path == folder.root / "2" / "f.jpeg"
    assert records["4/g.png"].origin == str(folder.root / "4" / "g.png")


# --- one bad row: an error naming file:line, or with on_error="skip" a listed problem ----


@dataclass(frozen=True)
class BadRow:
    case: str
    line: str  # appended to the last label file
    fragments: tuple[str, ...]  # what the message must say
    image: str | None = None  # an image to write for the row, so that only its fault shows
    bait: str | None = None  # a real image, relative to the dataset root, that an unguarded
    # reader would pick up for an escaping name


IMAGE_AT = {
    "aptos": "train_images/{}.png",
    "eyepacs": "train/{}.jpeg",
    "idrid": IDRID_TEST_IMAGES + "/{}.jpg",
    "messidor2": "IMAGES/{}",
    "ddr": "DR_grading/test/{}",
    "generic_csv": "imgs/{}",
}
ESCAPES = ["../secret", "../../secret", "/etc/passwd", "..\\secret", "train_images/../../secret"]

BAD_ROWS: dict[str, list[BadRow]] = {
    "aptos": [
        BadRow(
            "missing-image", "ffffffffffff,1", ("image 'ffffffffffff' not found", "train_images")
        ),
        *(
            BadRow(
                f"grade={g or 'empty'}",
                f"0bad{i:08d},{g}",
                (f"diagnosis {g!r}", "0-4"),
                f"0bad{i:08d}",
            )
            for i, g in enumerate(["7", "-1", "2.5", "abc", "", "nan", "5"])
        ),
        BadRow(
            "duplicate",
            "000c1434d8d7,0",
            ("duplicate image id '000c1434d8d7'", "first at", "train.csv:2"),
        ),
        *(
            BadRow(
                f"escape{i}",
                f"{name},1",
                (f"image name {name!r} escapes the dataset root",),
                bait="secret.png",
            )
            for i, name in enumerate(ESCAPES)
        ),
        BadRow(
            "short-row", "0badshort001", ("diagnosis '' is not a number", "0-4"), "0badshort001"
        ),
    ],
    "eyepacs": [
        BadRow("bad-name", "10left,0", ("image '10left' is not <patient>_<left|right>",), "10left"),
        BadRow("level=5", "20_left,5", ("level '5' is outside 0-4",), "20_left"),
        BadRow("level=x", "20_right,x", ("level 'x' is not a number", "0-4"), "20_right"),
        BadRow(
            "missing-image",
            "21_right,1",
            ("image '21_right' not found", "train"),
        ),
        BadRow("duplicate", "10_left,1", ("duplicate image id '10_left'", "trainLabels.csv:2")),
        BadRow(
            "escape", "../secret_left,0", ("escapes the dataset root",), bait="secret_left.jpeg"
        ),
    ],
    "idrid": [
        BadRow(
            "grade=7", "IDRiD_010,7,0,,,,", ("Retinopathy grade '7' is outside 0-4",), "IDRiD_010"
        ),
        BadRow(
            "missing-image", "IDRiD_011,1,0,,,,", ("image 'IDRiD_011' not found", "b. Testing Set")
        ),
        BadRow("duplicate", "IDRiD_002,1,0,,,,", ("duplicate image id 'test/IDRiD_002'",)),
        # the training image exists: only the guard keeps a test row from reaching it
        BadRow("escape", "../a. Training Set/IDRiD_004,3,2,,,,", ("escapes the dataset root",)),
        BadRow("short-row", "IDRiD_012", ("Retinopathy grade '' is not a number",), "IDRiD_012"),
    ],
    "messidor2": [
        BadRow(
            "gradable=2",
            "IM009001.JPG,1,0,2",
            ("adjudicated_gradable '2' is not 0 or 1",),
            "IM009001.JPG",
        ),
        BadRow(
            "gradable-empty",
            "IM009002.JPG,1,0,",
            ("adjudicated_gradable '' is not 0 or 1",),
            "IM009002.JPG",
        ),
        BadRow(
            "grade-empty",
            "IM009003.JPG,,0,1",
            ("adjudicated_dr_grade '' is not a number",),
            "IM009003.JPG",
        ),
        BadRow(
            "grade=2.5",
            "IM009004.JPG,2.5,0,1",
            ("adjudicated_dr_grade '2.5' is outside 0-4",),
            "IM009004.JPG",
        ),
        BadRow("missing-image", "IM009005.JPG,1,0,1", ("image 'IM009005.JPG' not found", "IMAGES")),
        BadRow(
            "duplicate",
            "IM002385.JPG,2,0,1",
            ("duplicate image id 'IM002385'", "messidor_data.csv:5"),
        ),
        BadRow(
            "escape", "/etc/passwd,0,0,1", ("image name '/etc/passwd' escapes the dataset root",)
        ),
    ],
    "ddr": [
        BadRow(
            "grade=7",
            "20170101000000001.jpg 7",
            ("grade '7' is outside 0-4",),
            "20170101000000001.jpg",
        ),
        BadRow(
            "grade=abc",
            "20170101000000002.jpg abc",
            ("grade 'abc' is not a number",),
            "20170101000000002.jpg",
        ),
        BadRow("three-fields", "a b.jpg 2", ("expected '<file> <grade>', got 'a b.jpg 2'",)),
        BadRow("one-field", "lonely.jpg", ("expected '<file> <grade>', got 'lonely.jpg'",)),
        BadRow(
            "missing-image",
            "20170101000000009.jpg 1",
            ("image '20170101000000009.jpg' not found", "test"),
        ),
        BadRow(
            "duplicate",
            "007-0004-000.jpg 0",
            ("duplicate image id '007-0004-000'", "train.txt:1"),
            "007-0004-000.jpg",
        ),
        BadRow("escape", "../train/007-0005-000.jpg 2", ("escapes the dataset root",)),
    ],
    "generic_csv": [
        BadRow("eye=up", "p9_a.png,1,p9,up,train", ("eye 'up' is not left/right",), "p9_a.png"),
        BadRow("eye-empty", "p9_b.png,1,p9,,train", ("eye '' is not left/right",), "p9_b.png"),
        BadRow(
            "split=holdout",
            "p9_c.png,1,p9,L,holdout",
            ("split 'holdout' is not one of",),
            "p9_c.png",
        ),
        BadRow("grade=7", "p9_d.png,7,p9,L,train", ("dr '7' is outside 0-4",), "p9_d.png"),
        BadRow("no-patient", "p9_f.png,1,,L,train", ("pid is empty",), "p9_f.png"),
        BadRow("missing-image", "p9_e.png,1,p9,L,train", ("image 'p9_e.png' not found", "imgs")),
        BadRow("duplicate", "p1_a.png,0,p1,L,train", ("duplicate image id 'p1_a.png'",)),
        BadRow(
            "escape", "../secret.png,0,p9,L,train", ("escapes the dataset root",), bait="secret.png"
        ),
    ],
}
ROW_CASES = [
    pytest.param(name, bad, id=f"{name}-{bad.case}")
    for name, bads in BAD_ROWS.items()
    for bad in bads
]


def add_bad_rows(layout: Layout, bads: list[BadRow]) -> dict[str, BadRow]:
    """Append the rows to the last label file; {origin "file:line": row}."""
    first = layout.append("".join(bad.line + "\n" for bad in bads))
    for bad in bads:
        if bad.image:
            layout.image(IMAGE_AT[name_of(layout)].format(bad.image))
        if bad.bait:
            layout.image(bad.bait)
            layout.image(Path("..") / bad.bait)
    return {f"{layout.labels[-1]}:{first + i}": bad for i, bad in enumerate(bads)}


def name_of(layout: Layout) -> str:
    return {"csv": "generic_csv"}.get(layout.source, layout.source)


@pytest.mark.parametrize("name, bad", ROW_CASES)
def test_a_bad_row_is_an_error_naming_file_line_and_what_was_expected(
    name: str, bad: BadRow, request
) -> None:
    layout: Layout = request.getfixturevalue(name)
    (origin,) = add_bad_rows(layout, [bad])
    message = raises(layout, *bad.fragments)
    assert message.startswith(f"{origin}: ")


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_skipped_rows_are_listed_and_nothing_is_dropped_silently(name: str, request) -> None:
    layout: Layout = request.getfixturevalue(name)
    bad_rows = add_bad_rows(layout, BAD_ROWS[name])
    result = read(layout, on_error="skip")
    # one problem per bad row, each pointing at its row and saying what is wrong
    assert [p.origin for p in result.problems] == list(bad_rows)
    for problem in result.problems:
        for fragment in bad_rows[problem.origin].fragments:
            assert fragment in problem.message
        assert str(problem).startswith(f"{problem.origin}: ")
    # the good rows are all kept, unchanged
    assert result.per_grade() == layout.per_grade
    assert sum(result.excluded.values()) == layout.excluded
    total = len(result.records) + len(result.problems) + sum(result.excluded.values())
    assert total == layout.rows + len(bad_rows)


def test_rows_after_a_skipped_row_keep_their_line_numbers(aptos: Layout) -> None:
    csv = aptos.rewrite("id_code,diagnosis\n\n000c1434d8d7,9\n\n001639a390f0,4\n")
    result = read(aptos, on_error="skip")
    assert [p.origin for p in result.problems] == [f"{csv}:3"]
    assert [r.origin for r in result.records] == [f"{csv}:5"]


# --- whole-file faults: an error naming the file, whatever on_error says -------------------


def _replace_header(layout: Layout, header: str) -> list[str]:
    rest = layout.label.read_text(encoding="utf-8-sig").split("\n", 1)[1]
    return [str(layout.rewrite(header + "\n" + rest))]


def aptos_missing_columns(layout: Layout) -> list[str]:
    return [
        *_replace_header(layout, "id,grade"),
        "missing column(s) ['id_code', 'diagnosis']; found ['id', 'grade']",
    ]


def aptos_header_only(layout: Layout) -> list[str]:
    layout.rewrite("id_code,diagnosis\n")
    return [str(layout.label), "no rows after the header"]


def aptos_empty_file(layout: Layout) -> list[str]:
    layout.rewrite("\n\n")
    return [str(layout.label), "the file is empty; expected a header with ['id_code', 'diagnosis']"]


def aptos_no_labels(layout: Layout) -> list[str]:
    layout.label.unlink()
    return [str(layout.label), "label file not found"]


def aptos_not_utf8(layout: Layout) -> list[str]:
    layout.label.write_bytes(b"id_code,diagnosis\n\xe9t\xe9,1\n")
    return [str(layout.label), "not UTF-8", "expected a UTF-8 CSV"]


def eyepacs_missing_level(layout: Layout) -> list[str]:
    return [*_replace_header(layout, "image,grade"), "missing column(s) ['level']"]


def idrid_not_a_release(layout: Layout) -> list[str]:
    images = layout.root / "B. Disease Grading" / "1. Original Images"
    images.rename(images.with_name("images"))
    return [str(layout.root), "not an IDRiD Disease Grading folder", "'1. Original Images/'"]


def idrid_no_test_labels(layout: Layout) -> list[str]:
    layout.labels[1].unlink()
    return [str(layout.labels[1]), "label file not found"]


def idrid_missing_grade_column(layout: Layout) -> list[str]:
    head = "\ufeffImage name,Retinopathy_grade,Risk of macular edema "
    return [*_replace_header(layout, head), "missing column(s) ['Retinopathy grade']"]


def messidor2_no_csv(layout: Layout) -> list[str]:
    layout.label.rename(layout.label.with_suffix(".txt"))
    return [
        str(layout.root),
        "no Messidor-2 grades CSV found",
        "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable",
        "id_code,diagnosis,adjudicated_dme,adjudicated_gradable",
    ]


def messidor2_no_gradable_column(layout: Layout) -> list[str]:
    _replace_header(layout, "image_id,adjudicated_dr_grade,adjudicated_dme,gradable")
    return [str(layout.root), "no Messidor-2 grades CSV found"]


def messidor2_all_ungradable(layout: Layout) -> list[str]:
    layout.rewrite(
        "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
        "IM003718.JPG,,,0\n20051207_61880_0400_PP.png,1,0,0\n",
    )
    return [str(layout.root), "no usable images", "'ungradable (adjudicated_gradable=0)': 2"]


def ddr_not_a_release(layout: Layout) -> list[str]:
    (layout.root / "DR_grading" / "train.txt").unlink()
    return [str(layout.root), "not a DDR grading folder", "train.txt, valid.txt, test.txt"]


def ddr_no_valid_list(layout: Layout) -> list[str]:
    valid = layout.root / "DR_grading" / "valid.txt"
    valid.unlink()
    return [str(valid), "DDR valid list not found"]


def ddr_not_utf8(layout: Layout) -> list[str]:
    test = layout.root / "DR_grading" / "test.txt"
    test.write_bytes(b"\xff\xfe0\x000\x007\x00")
    return [str(test), "not UTF-8"]


def retinamnist_no_npz(layout: Layout) -> list[str]:
    layout.label.unlink()
    return [str(layout.root), "no retinamnist*.npz found"]


def retinamnist_missing_array(layout: Layout) -> list[str]:
    layout.rewrite_npz(val_labels=None)
    return [str(layout.label), "missing array(s) ['val_labels']", "val_images and val_labels"]


def retinamnist_length_mismatch(layout: Layout) -> list[str]:
    layout.rewrite_npz(test_labels=np.zeros((4, 1), np.uint8))
    return [
        str(layout.label),
        "test_images has shape (5, 28, 28, 3) but test_labels has 4 labels",
        "expected (n, H, W[, 3]) and n labels",
    ]


def retinamnist_corrupt(layout: Layout) -> list[str]:
    layout.label.write_bytes(np.random.default_rng(1).bytes(256))
    return [str(layout.label), "not a readable .npz file"]


def generic_missing_patient_column(layout: Layout) -> list[str]:
    return [*_replace_header(layout, "file,dr,patient,eye,split"), "missing column(s) ['pid']"]


def folder_with_a_non_grade_folder(layout: Layout) -> list[str]:
    layout.image("extra/x.png")
    (layout.root / "5").mkdir()
    return [str(layout.root), "sub-folders ['5', 'extra'] are not grades; expected only 0-4"]


def folder_empty(layout: Layout) -> list[str]:
    for grade in range(5):
        for path in (layout.root / str(grade)).iterdir():
            path.unlink()
    return [str(layout.root), "no usable images found for source 'folder'"]


FILE_CASES = [
    ("aptos", aptos_missing_columns),
    ("aptos", aptos_header_only),
    ("aptos", aptos_empty_file),
    ("aptos", aptos_no_labels),
    ("aptos", aptos_not_utf8),
    ("eyepacs", eyepacs_missing_level),
    ("idrid", idrid_not_a_release),
    ("idrid", idrid_no_test_labels),
    ("idrid", idrid_missing_grade_column),
    ("messidor2", messidor2_no_csv),
    ("messidor2", messidor2_no_gradable_column),
    ("messidor2", messidor2_all_ungradable),
    ("ddr", ddr_not_a_release),
    ("ddr", ddr_no_valid_list),
    ("ddr", ddr_not_utf8),
    ("retinamnist", retinamnist_no_npz),
    ("retinamnist", retinamnist_missing_array),
    ("retinamnist", retinamnist_length_mismatch),
    ("retinamnist", retinamnist_corrupt),
    ("generic_csv", generic_missing_patient_column),
    ("folder", folder_with_a_non_grade_folder),
    ("folder", folder_empty),
]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("name, damage", [pytest.param(n, d, id=d.__name__) for n, d in FILE_CASES])
def test_a_bad_file_is_an_error_naming_it_and_what_was_expected(
    name: str, damage, on_error: str, request
) -> None:
    layout: Layout = request.getfixturevalue(name)
    raises(layout, *damage(layout), on_error=on_error)


# --- readers without rows in a text file ------------------------------------------------


def test_retinamnist_label_outside_0_4(retinamnist: Layout) -> None:
    with np.load(retinamnist.label) as npz:
        labels = npz["train_labels"].copy()
    labels[0] = 7
    retinamnist.rewrite_npz(train_labels=labels)
    origin = f"{retinamnist.label}:train_labels[0]"
    message = raises(retinamnist, "label '7' is outside 0-4")
    assert message.startswith(f"{origin}: ")
    result = read(retinamnist, on_error="skip")
    assert [p.origin for p in result.problems] == [origin]
    assert len(result.records) + len(result.problems) == retinamnist.rows
    assert "train/0" not in by_id(result)


def test_a_non_image_file_in_a_grade_folder(folder: Layout) -> None:
    stray = folder.root / "2" / "notes.txt"
    stray.write_text("graded by Dr X")
    message = raises(folder, "not an image file", ".png")
    assert message.startswith(f"{stray}: ")
    result = read(folder, on_error="skip")
    assert [p.origin for p in result.problems] == [str(stray)]
    assert len(result.records) + len(result.problems) == folder.rows + 1
    assert result.per_grade() == folder.per_grade


# --- the entry point ---------------------------------------------------------------------


def test_unknown_source_lists_the_known_ones(aptos: Layout) -> None:
    with pytest.raises(DataError, match="unknown dataset source 'kaggle'") as caught:
        read_dataset("kaggle", aptos.root)
    assert str(sorted(READERS)) in str(caught.value)


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path.resolve() / "nowhere"
    with pytest.raises(DataError, match="dataset root not found") as caught:
        read_dataset("aptos", missing)
    assert str(missing) in str(caught.value)


def test_an_option_the_reader_does_not_take(aptos: Layout) -> None:
    raises(aptos, "aptos reader", "image_column", image_column="file")


def test_on_error_must_be_raise_or_skip(aptos: Layout) -> None:
    raises(aptos, "on_error must be 'raise' or 'skip'", on_error="ignore")


# --- inspect -----------------------------------------------------------------------------


def test_inspect_lists_a_corrupt_image_among_the_problems(aptos_jpg: Layout) -> None:
    corrupt = aptos_jpg.root / "train_images" / "0024cdab0c1e.jpg"
    corrupt.write_bytes(np.random.default_rng(2).bytes(512))
    summary = summarise(read(aptos_jpg))
    (problem,) = summary["problems"]
    assert problem.startswith(f"{aptos_jpg.label}:4: unreadable image {corrupt}")
    assert summary["n_images"] == 10
    assert summary["image_sizes"] == {"8x8": 9}


def test_inspect_summary_counts(eyepacs: Layout) -> None:
    summary = summarise(read(eyepacs))
    assert summary["source"] == "eyepacs"
    assert summary["n_images"] == 9
    assert summary["per_grade"] == eyepacs.per_grade
    assert summary["n_patients"] == 6
    assert summary["eyes"] == {"left": 5, "right": 4}
    assert summary["image_sizes"] == {"8x8": 9}
    assert summary["problems"] == [] and summary["excluded"] == {}
