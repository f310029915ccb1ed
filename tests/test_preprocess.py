"""Preprocessing: field-of-view crop, squaring, reduced-size JPEG decoding, normalisations."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drvae.data.preprocess import (
    PreprocessConfig,
    ben_graham,
    clahe,
    crop_to_fov,
    load_image,
    load_preprocessed,
    preprocess,
)
from drvae.data.records import DataError, Record


def fundus_frame(height: int = 300, width: int = 400, colour: tuple = (170, 80, 40)) -> np.ndarray:
    """A wide black frame holding a circular field of view clipped top and bottom."""
    frame = np.zeros((height, width, 3), np.uint8)
    cv2.circle(frame, (width // 2, height // 2), int(height * 0.55), colour, -1)
    return frame


def record_for(path: Path) -> Record:
    return Record(path.stem, path, 0, path.stem, "test", f"{path.name}:1")


def test_crop_keeps_the_field_of_view_and_drops_the_black_sides() -> None:
    cropped = crop_to_fov(fundus_frame())
    assert cropped.shape[0] == 300  # clipped top and bottom: full height kept
    assert abs(cropped.shape[1] - 2 * int(300 * 0.55) - 1) <= 2  # the circle's diameter


def test_crop_is_robust_to_a_dark_low_contrast_photograph() -> None:
    cropped = crop_to_fov(fundus_frame(colour=(28, 12, 6)))
    assert abs(cropped.shape[1] - 331) <= 4


def test_a_frame_with_no_black_surround_is_kept_whole() -> None:
    frame = np.full((100, 120, 3), 140, np.uint8)
    assert crop_to_fov(frame).shape == frame.shape


def test_preprocess_gives_a_square_with_black_corners_and_a_bright_centre() -> None:
    out = preprocess(fundus_frame(), PreprocessConfig(size=64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[0, 0].max() < 5 and out[63, 63].max() < 5
    assert out[32, 32, 0] > 150


def test_ben_graham_centres_the_fundus_on_grey_and_blacks_the_rim() -> None:
    image = preprocess(fundus_frame(), PreprocessConfig(size=128))
    out = ben_graham(image)
    assert abs(int(out[64, 64].mean()) - 128) < 10  # flat region: local mean subtracted
    assert out[0, 0].max() == 0


def test_clahe_keeps_shape_and_raises_local_contrast() -> None:
    rng = np.random.default_rng(0)
    image = (100 + rng.normal(0, 3, (64, 64, 3))).clip(0, 255).astype(np.uint8)
    out = clahe(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out.std() > image.std()


def test_large_jpegs_are_decoded_at_reduced_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpeg"
    Image.fromarray(fundus_frame(1500, 2000)).save(path, quality=90)
    reduced = load_image(record_for(path), min_size=256)
    assert 256 <= reduced.shape[0] <= 750  # DCT scaling by 1/2, 1/4 or 1/8
    full = load_image(record_for(path))
    assert full.shape == (1500, 2000, 3)
    a = load_preprocessed(record_for(path), PreprocessConfig(size=64)).astype(int)
    b = preprocess(full, PreprocessConfig(size=64)).astype(int)
    assert np.abs(a - b).mean() < 3  # the shortcut changes the pixels very little


def test_corrupt_image_names_the_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff this is not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg.*broken\.jpg:1.*cannot decode"):
        load_image(record_for(path))


def test_grayscale_images_become_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(path)
    assert load_image(record_for(path)).shape == (20, 20, 3)


def test_sizes_out_of_range_are_refused() -> None:
    with pytest.raises(DataError, match="size"):
        PreprocessConfig(size=4)
