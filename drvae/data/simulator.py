"""The embedded default dataset: procedurally generated colour fundus photographs.

Each image is a circular field of view on black: an orange-red retina with illumination
fall-off and choroidal texture, a yellowish optic disc with a paler cup, a darker macula with
a foveal reflex about 2.5 disc diameters temporal to the disc, and an artery/vein tree from the
disc. The grade (ICDR 0-4) decides which lesions are drawn (`simulator_lesions.add_lesions`).

The dataset is written in the APTOS 2019 layout (`train.csv` + `train_images/<id_code>.png`),
so the default run goes through the same reader as a user's data. Image i is drawn from
`np.random.default_rng([seed, i])`, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drvae.data import simulator_lesions as sl
from drvae.data.records import NUM_GRADES, DataError
from drvae.data.workers import chunk_size, image_pool

# EyePACS-like imbalance: 73.67% grade 0 and 2.16% grade 4 (as the paper states); the remaining
# 24.17% split over grades 1-3 in the EyePACS training-set proportions 2443:5292:873.
_G1, _G2, _G3 = (0.2417 * k / (2443 + 5292 + 873) for k in (2443, 5292, 873))
DEFAULT_GRADE_FRACTIONS: tuple[float, float, float, float, float] = (0.7367, _G1, _G2, _G3, 0.0216)

SUPERSAMPLE = 2  # draw at twice the size, then area-average: thin vessels stay smooth
_ORDER_KEY = (0x5EED, 1)  # seeds the grade shuffle; never equal to an image's [seed, i]

# Background colour prototypes (RGB, 0-1), mixed per image: EyePACS cameras and pigmentation
# range from orange-red to brown, dark brown, pale pink-grey and grey-olive.
_PROTOTYPES = np.array(
    [
        [0.86, 0.40, 0.16],
        [0.78, 0.27, 0.10],
        [0.62, 0.37, 0.16],
        [0.42, 0.21, 0.08],
        [0.74, 0.54, 0.44],
        [0.6, 0.52, 0.38],
    ],
    dtype=np.float32,
)  # (6, 3)
_TINTS = {  # what blood lets through: multiplies the background under each layer
    "artery": np.float32([0.84, 0.64, 0.68]),
    "vein": np.float32([0.64, 0.42, 0.5]),
    "new": np.float32([0.7, 0.45, 0.5]),
    "red": np.float32([0.6, 0.2, 0.18]),
    "pigment": np.float32([0.4, 0.33, 0.28]),
}


# ---------------------------------------------------------------- grade counts


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    try:
        f = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"grade fractions must be {NUM_GRADES} numbers, got {fractions!r}") from err
    if f.shape != (NUM_GRADES,) or not np.all(np.isfinite(f)) or np.any(f < 0):
        raise DataError(
            f"grade fractions must be {NUM_GRADES} finite non-negative numbers (grades 0-4), "
            f"got {fractions!r}"
        )
    if abs(f.sum() - 1.0) > 1e-6:
        raise DataError(f"grade fractions must sum to 1 (±1e-6), got {fractions!r} (sum {f.sum()})")
    return f / f.sum()


def grade_counts(n: int, fractions: Sequence[float] = DEFAULT_GRADE_FRACTIONS) -> list[int]:
    """Exact per-grade image counts for n images: largest remainder, ties to the lower grade."""
    n = _check_int("n", n, 1)
    raw = _check_fractions(fractions) * n  # (5,)
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return [int(c) for c in counts]


# ---------------------------------------------------------------- rendering


@dataclass
class _Look:
    """Per-image photographic variation, drawn before (and independently of) the lesions."""

    colour: np.ndarray  # (3,) background RGB
    right_eye: bool
    angle: float  # degrees
    vignette: float
    gradient: np.ndarray  # (2,) linear illumination slope per R
    rim: float  # pale halo at the FOV edge
    contrast: float
    gamma: float
    blur: float  # x R
    noise: float
    crop: float  # half-height of the visible band (x R); >= 1 means no crop

    @staticmethod
    def sample(rng: np.random.Generator) -> _Look:
        colour = rng.dirichlet(np.full(len(_PROTOTYPES), 0.35)) @ _PROTOTYPES
        colour = colour * np.exp(rng.normal(0, 0.07, 3)) * rng.uniform(0.7, 1.15)
        return _Look(
            colour=colour.astype(np.float32),
            right_eye=bool(rng.random() < 0.5),
            angle=float(rng.uniform(-15, 15)),
            vignette=float(rng.uniform(0.2, 0.65)),
            gradient=rng.normal(0, 0.12, 2),
            rim=float(rng.uniform(0, 0.35) if rng.random() < 0.4 else 0.0),
            contrast=float(rng.uniform(0.65, 1.0)),
            gamma=float(rng.uniform(0.8, 1.25)),
            blur=float(rng.uniform(0.002, 0.012)),
            noise=float(rng.uniform(0.002, 0.012)),
            crop=float(rng.uniform(0.8, 0.95) if rng.random() < 0.3 else 2.0),
        )


def _geometry(work: int, rng: np.random.Generator) -> sl.Canvas:
    """FOV, disc and fovea positions for a canonical right eye (disc to the right)."""
    radius = work / 2 * rng.uniform(0.9, 0.98)
    slack = work / 2 - radius  # keeps the whole circle inside the image
    centre = (work - 1) / 2 + np.clip(rng.normal(0, 0.4 * slack, 2), -slack, slack)
    dd = radius * rng.uniform(0.2, 0.25)
    fovea = centre + rng.normal(0, 0.04 * radius, 2)
    disc = fovea + np.array([2.5 * dd * rng.uniform(0.92, 1.08), -dd * rng.uniform(0.0, 0.3)])
    return sl.Canvas(work, centre, radius, disc, fovea, dd)


def _gauss(geo: sl.Geometry, c: np.ndarray, sigma: float) -> np.ndarray:
    """(S, S) float32 isotropic Gaussian bump centred at c."""
    y, x = np.ogrid[: geo.size, : geo.size]
    d2 = ((x - c[0]) ** 2 + (y - c[1]) ** 2).astype(np.float32)
    return np.exp(-d2 / np.float32(2 * sigma**2))


def _smooth_noise(grid: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 smooth noise: a grid x grid normal field, bicubic-upsampled."""
    field = rng.normal(0, 1, (grid, grid)).astype(np.float32)
    return cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)


def _background(geo: sl.Geometry, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 retina: choroidal texture, darker macula, foveal reflex."""
    coarse, fine = _smooth_noise(6, geo.size, rng), _smooth_noise(20, geo.size, rng)
    tex = 1 + rng.uniform(0.03, 0.09) * coarse + rng.uniform(0.0, 0.025) * fine  # (S, S)
    img = look.colour * tex[..., None]  # (S, S, 3)
    macula = rng.uniform(0.15, 0.4) * _gauss(geo, geo.fovea, 0.85 * geo.dd)
    macula += rng.uniform(0.05, 0.2) * _gauss(geo, geo.fovea, 0.3 * geo.dd)
    img *= 1 - macula[..., None] * np.float32([1.0, 1.1, 0.9])  # darker and browner
    reflex = rng.uniform(0.0, 0.25) * _gauss(geo, geo.fovea, max(0.05 * geo.dd, 0.5))
    return img + reflex[..., None] * np.float32(0.9)


def _disc(geo: sl.Geometry, img: np.ndarray, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """Blend a yellowish disc and its paler, slightly temporal cup into img (S, S, 3)."""
    axes = (0.5 * geo.dd, 0.5 * geo.dd * rng.uniform(1.0, 1.15))
    cup = rng.uniform(0.25, 0.55)
    disc_colour = 0.35 * look.colour + np.array([0.75, 0.62, 0.38]) * rng.uniform(0.8, 1.2)
    cup_colour = np.array([0.95, 0.88, 0.72]) * rng.uniform(0.85, 1.1)
    cup_centre = geo.disc - [0.06 * geo.dd, 0]
    shapes = ((geo.disc, axes), (cup_centre, (axes[0] * cup, axes[1] * cup)))
    for (c, ax), colour in zip(shapes, (disc_colour, cup_colour), strict=True):
        layer = np.zeros((geo.size, geo.size), np.uint8)
        sl.draw_ellipse(layer, c, ax, 0, 255)
        a = cv2.GaussianBlur(layer, (0, 0), 0.07 * geo.dd).astype(np.float32)[..., None] / 255
        img = img * (1 - 0.7 * a) + np.clip(colour, 0, 1).astype(np.float32) * (0.7 * a)
    # the disc lights up its surroundings (a yellowish glow); vessels still show through
    glow = rng.uniform(0.08, 0.3) * _gauss(geo, geo.disc, 0.55 * geo.dd)[..., None]
    return img + glow * (np.float32([1.0, 0.9, 0.7]) - img)


def _coverage(cv: sl.Canvas, name: str, size: int, blur: float = 0.0) -> np.ndarray | None:
    """(S, S, 1) float32 coverage in 0-1 of one layer, area-averaged to the output size
    (the supersampling), optionally softened (blur in output px); None when empty."""
    layer = cv.layers[name]
    if not layer.any():
        return None
    a = cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA)
    if blur > 0.3:
        a = cv2.GaussianBlur(a, (0, 0), blur)
    return a.astype(np.float32)[..., None] * np.float32(1 / 255)


def _absorb(cv: sl.Canvas, img: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Blood absorbs: darken img (S, S, 3) in place by each layer's tint times its coverage."""
    for name in names:
        a = _coverage(cv, name, img.shape[0])
        if a is not None:
            img *= 1 - a * (1 - _TINTS[name])
    return img


def _lesion_layers(cv: sl.Canvas, geo: sl.Geometry, img: np.ndarray, look: _Look) -> np.ndarray:
    """Lesions over the retina (S, S, 3): blood absorbs, exudates and CWS cover, haze veils."""
    img = _absorb(cv, img, ("new", "red", "pigment"))
    exudate = np.clip(0.25 * look.colour + [0.9, 0.8, 0.35], 0, 1).astype(np.float32)
    cws = np.clip(0.4 * look.colour + [0.6, 0.6, 0.55], 0, 1).astype(np.float32)
    for name, colour, blur in (("exudate", exudate, 0.0), ("cws", cws, 0.018 * geo.radius)):
        a = _coverage(cv, name, geo.size, blur)
        if a is not None:
            img = img * (1 - a) + colour * a
    if cv.haze is not None:  # vitreous blood scatters: blurred, reddened, darker
        h = cv2.resize(cv.haze, (geo.size, geo.size), interpolation=cv2.INTER_LINEAR)[..., None]
        veil = cv2.GaussianBlur(img, (0, 0), 0.03 * geo.radius) * np.float32([0.75, 0.3, 0.25])
        img = img * (1 - h) + veil * h
    return img


def _camera(geo: sl.Geometry, img: np.ndarray, look: _Look) -> np.ndarray:
    """Eye side, rotation, illumination, contrast, gamma and blur; (S, S, 3) float32."""
    flip = np.array([[-1.0, 0, 2 * geo.centre[0]], [0, 1, 0], [0, 0, 1]])  # mirror about FOV
    rot = cv2.getRotationMatrix2D(tuple(geo.centre), look.angle, 1.0)  # (2, 3)
    m = rot if look.right_eye else rot @ flip  # left eye: mirror, then rotate
    s = geo.size
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    y, x = np.ogrid[:s, :s]
    dx = ((x - geo.centre[0]) / geo.radius).astype(np.float32)  # (1, S)
    dy = ((y - geo.centre[1]) / geo.radius).astype(np.float32)  # (S, 1)
    r = np.sqrt(dx**2 + dy**2)  # (S, S) radius in units of R
    light = 1 - look.vignette * r * r * np.sqrt(r) + look.gradient[0] * dx + look.gradient[1] * dy
    rim = look.rim * np.exp(-(((1 - r) / 0.06) ** 2))  # pale halo at the edge of the lens
    img = img * light[..., None] + rim[..., None] * np.float32(0.8)
    mean = img.reshape(-1, 3).mean(axis=0)
    img = np.clip(mean + (img - mean) * look.contrast, 0, 1) ** np.float32(look.gamma)
    sigma = look.blur * geo.radius
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.3 else img


def _finish(geo: sl.Geometry, img: np.ndarray, look: _Look, rng: sl.Rng) -> np.ndarray:
    """Add sensor noise and black out everything outside the FOV; (S, S, 3) uint8."""
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(look.noise)
    mask = np.zeros(img.shape[:2], np.uint8)
    r16 = round(geo.radius * 16)
    cv2.circle(mask, tuple(sl.fix(geo.centre)), r16, 255, -1, cv2.LINE_AA, sl.SHIFT)
    band = round(look.crop * geo.radius)  # some cameras crop the circle top and bottom
    top, bottom = max(0, round(geo.centre[1]) - band), max(0, round(geo.centre[1]) + band + 1)
    mask[:top], mask[bottom:] = 0, 0
    img = np.clip(img, 0, 1) * (mask.astype(np.float32)[..., None] * np.float32(1 / 255))
    return np.rint(img * 255).astype(np.uint8)


def render_fundus(grade: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 RGB fundus photograph of ICDR `grade` drawn from rng.

    The eye and the photograph come from one child stream of rng and the lesions from
    another, so the same rng with another grade shows the same eye with other lesions.
    Vessels and lesions are drawn at SUPERSAMPLE x size and area-averaged; the rest is
    computed at the output size.
    """
    grade = _check_int("grade", grade, 0, NUM_GRADES - 1)
    size = _check_int("size", size, 16)
    eye, lesions, finish = rng.spawn(3)
    cv = _geometry(size * SUPERSAMPLE, eye)
    geo = cv.rescaled(size)
    look = _Look.sample(eye)
    vessels = sl.vessel_tree(cv, eye)
    sl.draw_vessels(cv, vessels)
    img = _absorb(cv, _background(geo, look, eye), ("artery", "vein"))
    img = _disc(geo, img, look, eye)
    sl.add_lesions(cv, grade, [v for v in vessels if v.kind == "vein"], lesions)
    img = _camera(geo, _lesion_layers(cv, geo, img, look), look)
    return _finish(geo, img, look, finish)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise DataError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------- dataset


def image_id(index: int) -> str:
    """The APTOS id_code of simulated image `index`."""
    return f"sim_{index:06d}"


def _render_file(task: tuple[str, int, int, int, int]) -> None:
    """Worker: draw image `index` and write it as PNG (runs in the pool processes)."""
    folder, index, grade, size, seed = task
    rgb = render_fundus(grade, size, np.random.default_rng([seed, index]))
    path = os.path.join(folder, f"{image_id(index)}.png")
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _render_all(tasks: list[tuple[str, int, int, int, int]], workers: int, progress: bool) -> None:
    from tqdm import tqdm  # a dependency, imported here to keep worker start-up light

    bar = tqdm(total=len(tasks), desc="simulating", unit="img", disable=not progress)
    if workers == 1:
        for task in tasks:
            _render_file(task)
            bar.update()
    else:
        with image_pool(workers) as pool:
            for _ in pool.map(_render_file, tasks, chunksize=chunk_size(len(tasks), workers, 64)):
                bar.update()
    bar.close()


def _write_tables(tmp: Path, grades: np.ndarray, meta: dict) -> None:
    with open(tmp / "train.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id_code", "diagnosis"])
        writer.writerows([image_id(i), int(g)] for i, g in enumerate(grades))
    (tmp / "simulation.json").write_text(json.dumps(meta, indent=2) + "\n")


def simulate_dataset(
    out: Path,
    n: int,
    size: int = 128,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_GRADE_FRACTIONS,
    workers: int = 2,
    progress: bool = False,
) -> dict[int, int]:
    """Write n simulated fundus photographs to `out` in the APTOS 2019 layout.

    `out/train.csv` (id_code,diagnosis), `out/train_images/sim_NNNNNN.png` and
    `out/simulation.json` (the parameters). The folder appears only when complete (rendered
    into `<out>.tmp-<pid>`, then renamed), and an existing non-empty `out` is never touched.
    Returns the number of images per grade.
    """
    from drvae import __version__

    out = Path(out)
    n = _check_int("n", n, 1)
    size = _check_int("size", size, 16)
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    workers = _check_int("workers", workers, 1)
    counts = grade_counts(n, fractions)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; refusing to overwrite")
    grades = np.repeat(np.arange(NUM_GRADES), counts)  # (n,)
    np.random.default_rng([seed, *_ORDER_KEY]).shuffle(grades)
    meta = {
        "generator": "drvae.data.simulator",
        "drvae_version": __version__,
        "layout": "aptos2019",
        "n": n,
        "size": size,
        "seed": seed,
        "grade_fractions": [float(f) for f in fractions],  # as given (validated above)
        "grade_counts": {str(g): c for g, c in enumerate(counts)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this same pid's crashed run
    try:
        (tmp / "train_images").mkdir(parents=True)
        tasks = [(str(tmp / "train_images"), i, int(g), size, seed) for i, g in enumerate(grades)]
        _render_all(tasks, min(workers, n), progress)
        _write_tables(tmp, grades, meta)
        os.replace(tmp, out)  # atomic; replaces only an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print(f"wrote {n} images to {out}: per grade {counts}", file=sys.stderr)
    return dict(enumerate(counts))
