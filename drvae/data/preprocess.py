"""Fundus preprocessing: decode at reduced size, crop the field of view, square, resize,
and the optional contrast normalisations (Ben Graham's, CLAHE)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from drvae.data.records import DataError, Record

Image.MAX_IMAGE_PIXELS = 60_000_000  # fundus cameras top out near 20 MP; larger is suspect


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that determines the cached pixels (and so the cache key)."""

    size: int = 128
    crop_fov: bool = True
    ben_graham: bool = False  # subtract the local mean colour (Graham, Kaggle 2015 winner)
    clahe: bool = False  # contrast-limited adaptive histogram equalisation on lightness

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 2048:
            raise DataError(f"preprocessing size must be 8-2048 px, got {self.size}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@lru_cache(maxsize=4)
def npz_array(path: Path, key: str) -> np.ndarray:
    with np.load(path) as npz:
        return npz[key]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]


def load_image(record: Record, min_size: int = 0) -> np.ndarray:
    """The record's pixels as RGB uint8 (H, W, 3).

    JPEGs decode directly at 1/2, 1/4 or 1/8 scale (DCT scaling) when the result stays at
    least `min_size` on each side: most of the cost of a 4000 px fundus photograph saved.
    """
    if record.array_key is not None:
        return _as_rgb(npz_array(record.path, record.array_key)[record.index])
    try:
        with Image.open(record.path) as image:
            if min_size:
                image.draft("RGB", (min_size, min_size))
            return _as_rgb(np.asarray(image.convert("RGB")))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise DataError(f"{record.path} ({record.origin}): cannot decode image: {error}") from None


def fov_mask(image: np.ndarray) -> np.ndarray:
    """Pixels inside the circular field of view, (H, W) bool.

    The threshold sits between the black surround and the fundus (Otsu on the brightest
    channel), clamped low so that dark, low-contrast photographs keep their periphery.
    """
    brightest = image.max(axis=2)  # (H, W); red carries the fundus, blue is near black
    otsu, _ = cv2.threshold(brightest, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(otsu * 0.5, 4, 20))
    return brightest > threshold


def crop_to_fov(image: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of the field of view; rows or columns with only stray
    bright pixels (text, noise) do not count. A frame with no clear FOV is kept whole."""
    mask = fov_mask(image)
    h, w = mask.shape
    rows = np.flatnonzero(mask.sum(axis=1) > 0.02 * w)
    cols = np.flatnonzero(mask.sum(axis=0) > 0.02 * h)
    if len(rows) < 0.1 * h or len(cols) < 0.1 * w:
        return image
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Centre the image on a black square; the FOV is often clipped top and bottom."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(
        image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )


def ben_graham(image: np.ndarray) -> np.ndarray:
    """4 * (image - Gaussian-blurred image) + 128, black outside a slightly shrunk field of
    view (the blur bleeds black into the rim, which would otherwise glow)."""
    sigma = image.shape[0] / 30
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    out = cv2.addWeighted(image, 4, blurred, -4, 128)
    rim = max(3, image.shape[0] // 32) | 1  # odd kernel side
    inside = cv2.erode(fov_mask(image).astype(np.uint8), np.ones((rim, rim), np.uint8))
    out[inside == 0] = 0
    return out


def clahe(image: np.ndarray) -> np.ndarray:
    """CLAHE on the L channel of Lab, so colours keep their hue."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    tiles = max(2, image.shape[0] // 32)
    equaliser = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(tiles, tiles))
    lab[:, :, 0] = equaliser.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def preprocess(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8."""
    if config.crop_fov:
        image = crop_to_fov(image)
    image = pad_to_square(image)
    size = config.size
    shrinking = image.shape[0] > size
    image = cv2.resize(
        image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    )
    if config.ben_graham:
        image = ben_graham(image)
    if config.clahe:
        image = clahe(image)
    return np.ascontiguousarray(image)


def load_preprocessed(record: Record, config: PreprocessConfig) -> np.ndarray:
    """Decode just large enough (twice the target: the FOV is at least half the frame)."""
    return preprocess(load_image(record, min_size=2 * config.size), config)
