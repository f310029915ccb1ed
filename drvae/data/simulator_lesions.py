"""Drawing for the fundus simulator: the vessel tree and the ICDR lesions, as coverage layers.

Everything is drawn in a canonical right eye (disc to the right of the fovea) and measured in
units of the field-of-view radius R or the disc diameter, so that a seed draws the same
picture at any image size. Layers are uint8 coverage maps (cv2 anti-aliases only 8-bit
images); the renderer in `simulator.py` tints the background with them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions keep small images faithful
LAYERS = ("artery", "vein", "new", "red", "exudate", "cws", "pigment")  # "new": NV, over the disc
TAU = 2 * np.pi
Rng = np.random.Generator


@dataclass
class Geometry:
    """Where things are in one eye, in pixels of an image `size` wide (canonical right eye)."""

    size: int
    centre: np.ndarray  # (2,) FOV centre (x, y)
    radius: float  # FOV radius R
    disc: np.ndarray  # (2,)
    fovea: np.ndarray  # (2,)
    dd: float  # disc diameter

    def rescaled(self, size: int) -> Geometry:
        """The same eye in an image `size` wide (pixel centres map to pixel centres)."""
        k = size / self.size

        def move(p: np.ndarray) -> np.ndarray:
            return (p + 0.5) * k - 0.5

        return Geometry(
            size, move(self.centre), self.radius * k, move(self.disc), move(self.fovea), self.dd * k
        )


@dataclass
class Canvas(Geometry):
    """The supersampled drawing surface: geometry plus uint8 coverage layers."""

    layers: dict[str, np.ndarray] = field(init=False)  # name -> (W, W) uint8
    haze: np.ndarray | None = None  # (64, 64) float32 vitreous veil in 0-1; None when clear

    def __post_init__(self) -> None:
        self.layers = {k: np.zeros((self.size, self.size), np.uint8) for k in LAYERS}


@dataclass
class Vessel:
    pts: np.ndarray  # (N, 2) polyline, px
    widths: np.ndarray  # (N-1,) width of each segment, px
    kind: str  # "artery" | "vein"
    depth: int  # branching levels still allowed below it


def fix(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> cv2 fixed-point int32."""
    return np.rint(np.asarray(pts) * (1 << SHIFT)).astype(np.int32)


def draw_path(layer: np.ndarray, pts: np.ndarray, widths: np.ndarray, value: float = 255) -> None:
    """A polyline whose width varies along it; sub-pixel widths become partial coverage."""
    thick = np.maximum(1, np.rint(widths)).astype(np.int32)  # (N-1,)
    tenths = np.rint(np.clip(widths, 0.1, 1.0) * 10).astype(np.int32)  # (N-1,)
    key = thick * 16 + tenths
    bounds = [0, *(np.flatnonzero(key[1:] != key[:-1]) + 1).tolist(), len(key)]
    for s, e in itertools.pairwise(bounds):  # one polyline per run of constant width
        colour = int(value * tenths[s] / 10)
        cv2.polylines(
            layer, [fix(pts[s : e + 1])], False, colour, int(thick[s]), cv2.LINE_AA, SHIFT
        )


def draw_ellipse(
    layer: np.ndarray, c: np.ndarray, axes: tuple[float, float], angle: float, value: float
) -> None:
    """Filled anti-aliased ellipse at sub-pixel position and size."""
    ax = (max(1, round(axes[0] * 16)), max(1, round(axes[1] * 16)))
    cv2.ellipse(layer, tuple(fix(c)), ax, angle, 0, 360, int(value), -1, cv2.LINE_AA, SHIFT)


def walk(
    start: np.ndarray, heading: float, length: float, step: float, wiggle: float, rng: Rng
) -> np.ndarray:
    """A smooth random path: the heading does a random walk. Returns (n+1, 2) points."""
    n = max(2, int(length / step))
    ang = heading + np.cumsum(rng.normal(0.0, wiggle, n))  # (n,)
    steps = step * np.stack([np.cos(ang), np.sin(ang)], axis=1)  # (n, 2)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def polar_points(
    cv: Canvas, rng: np.random.Generator, n: int, r_lo: float, r_hi: float, quadrant: int = -1
) -> np.ndarray:
    """n points around the fovea at radii r_lo..r_hi (x R), area-uniform; kept off the disc."""
    lo, hi = (0.0, TAU) if quadrant < 0 else (quadrant * TAU / 4, (quadrant + 1) * TAU / 4)
    ang = rng.uniform(lo, hi, n)
    r = cv.radius * np.sqrt(rng.uniform(r_lo**2, r_hi**2, n))
    pts = cv.fovea + np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)  # (n, 2)
    off = pts - cv.disc
    dist = np.maximum(np.hypot(off[:, 0], off[:, 1]), 1e-6)[:, None]  # (n, 1)
    keep_out = 0.75 * cv.dd  # lesions on the disc would read as disc texture
    return np.where(dist < keep_out, cv.disc + off / dist * keep_out, pts)


# ---------------------------------------------------------------- vessel tree


def clip_path(cv: Canvas, pts: np.ndarray) -> np.ndarray:
    """Cut a path where it leaves the FOV or enters the foveal avascular zone."""
    out = np.hypot(*(pts - cv.centre).T) > 1.02 * cv.radius
    faz = np.hypot(*(pts - cv.fovea).T) < 0.4 * cv.dd
    bad = (out | faz)[1:]  # the first point (the branch origin) always stays
    return pts[: 1 + (np.argmax(bad) if bad.any() else len(bad))]


def arcade(cv: Canvas, root: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """Superior (side=-1) or inferior (+1) temporal arcade: leaves the disc vertically and
    curves around the macula, in polar coordinates about the fovea."""
    rel = root - cv.fovea
    r0, phi0 = np.hypot(*rel), np.arctan2(side * rel[1], rel[0])
    phi = np.linspace(phi0, np.deg2rad(rng.uniform(140, 152)), 64)  # (64,)
    knots = [1.0, rng.uniform(0.86, 0.96), rng.uniform(0.72, 0.86), rng.uniform(1.1, 1.35), 2.4]
    r = r0 * np.interp(phi, np.deg2rad([0, 45, 90, 125, 150]), knots)  # tail leaves the FOV
    r *= 1 + 0.025 * np.sin(phi * rng.uniform(4, 9) + rng.uniform(0, TAU))  # gentle undulation
    return cv.fovea + np.stack([r * np.cos(phi), side * r * np.sin(phi)], axis=1)


def grow(
    cv: Canvas, pts: np.ndarray, w0: float, kind: str, depth: int, rng: Rng, out: list[Vessel]
) -> None:
    """Add a vessel and, recursively, its branches; width tapers along it and at each branch."""
    pts = clip_path(cv, pts)
    n = len(pts) - 1
    k = int(rng.integers(1, 4)) if depth > 0 else 0
    at = np.sort(rng.uniform(0.12, 0.85, k))  # branch points, fraction of length
    if n < 3:
        return
    t = np.linspace(0.0, 1.0, n)  # (n,)
    widths = w0 * (1 - 0.3 * t) * 0.86 ** np.searchsorted(at, t)  # (n,)
    out.append(Vessel(pts, widths, kind, depth))
    for frac in at:
        i = min(int(frac * n), n - 1)
        tangent = pts[i + 1] - pts[i]
        turn = rng.uniform(0.5, 1.2) * rng.choice([-1, 1])
        heading = np.arctan2(tangent[1], tangent[0]) + turn
        inward = np.dot([np.cos(heading), np.sin(heading)], pts[i] - cv.fovea) < 0
        if inward and rng.random() < 0.6:  # most branches leave the macula alone
            heading -= 2 * turn
            inward = False
        w = widths[i] * rng.uniform(0.55, 0.8)
        length = cv.radius * rng.uniform(0.2, 0.55) * (0.45 if inward else 1.0)
        child = walk(pts[i], heading, length, 0.02 * cv.radius, 0.1, rng)
        grow(cv, child, w, kind, depth - 1, rng, out)


def vessel_tree(cv: Canvas, rng: np.random.Generator) -> list[Vessel]:
    """Artery/vein pairs: two temporal arcades, two or three nasal trunks, macular twigs."""
    out: list[Vessel] = []
    w_vein = cv.radius * rng.uniform(0.017, 0.023)
    for kind, w in (("vein", w_vein), ("artery", w_vein * rng.uniform(0.65, 0.78))):
        root = cv.disc + rng.normal(0, 0.08 * cv.dd, 2)  # each trunk leaves the cup apart
        step = 0.02 * cv.radius
        for side in (-1, 1):
            grow(cv, arcade(cv, root, side, rng), w, kind, 2, rng, out)
            heading = side * rng.uniform(0.35, 1.2)  # nasal = +x in the canonical eye
            grow(
                cv,
                walk(root, heading, cv.radius * 0.8, step, 0.07, rng),
                w * 0.8,
                kind,
                2,
                rng,
                out,
            )
        if rng.random() < 0.6:
            trunk = walk(root, rng.normal(0, 0.2), cv.radius * 0.7, step, 0.08, rng)
            grow(cv, trunk, w * 0.6, kind, 1, rng, out)
        twig = walk(root, np.pi + rng.normal(0, 0.25), cv.radius * 0.4, step, 0.1, rng)
        grow(cv, twig, w * 0.4, kind, 1, rng, out)
    return out


def draw_vessels(cv: Canvas, vessels: list[Vessel]) -> None:
    for v in vessels:
        draw_path(cv.layers[v.kind], v.pts, v.widths)


# ---------------------------------------------------------------- lesions


def microaneurysms(cv: Canvas, n: int, rng: np.random.Generator) -> None:
    """Small sharp dark-red dots, mostly in the posterior pole."""
    for p in polar_points(cv, rng, n, 0.05, 0.8):
        r = cv.radius * rng.uniform(0.006, 0.011)
        draw_ellipse(cv.layers["red"], p, (r, r), 0, rng.uniform(190, 255))


def haemorrhages(cv: Canvas, n: int, rng: np.random.Generator, quadrant: int = -1) -> None:
    """Dot (round), blot (irregular: a few overlapping ellipses) and flame (streak along the
    nerve fibres, i.e. pointing at the disc) haemorrhages."""
    for p in polar_points(cv, rng, n, 0.08, 0.92, quadrant):
        kind, value = rng.random(), rng.uniform(170, 255)
        if kind < 0.45:  # dot
            r = cv.radius * rng.uniform(0.012, 0.022)
            draw_ellipse(cv.layers["red"], p, (r, r), 0, value)
        elif kind < 0.85:  # blot
            for q in p + rng.normal(0, 0.015 * cv.radius, (int(rng.integers(2, 5)), 2)):
                axes = cv.radius * rng.uniform(0.014, 0.032, 2)
                draw_ellipse(cv.layers["red"], q, tuple(axes), rng.uniform(0, 180), value)
        else:  # flame
            to_disc = np.degrees(np.arctan2(*(cv.disc - p)[::-1]))
            axes = (cv.radius * rng.uniform(0.035, 0.06), cv.radius * rng.uniform(0.01, 0.018))
            draw_ellipse(cv.layers["red"], p, axes, to_disc, value * 0.85)


def exudates(cv: Canvas, clusters: int, rng: np.random.Generator) -> None:
    """Hard exudates: small bright yellow spots in clumps or circinate rings near the macula."""
    for c in polar_points(cv, rng, clusters, 0.08, 0.6):
        m = int(rng.integers(4, 22))
        if rng.random() < 0.4:  # circinate ring around a leaking point
            ring = cv.radius * rng.uniform(0.06, 0.14)
            ang = rng.uniform(0, TAU) + rng.uniform(0, rng.uniform(2, TAU), m)  # (m,) an arc
            rad = ring * rng.normal(1.0, 0.1, m)
            spots = c + np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)  # (m, 2)
        else:
            spots = c + rng.normal(0, cv.radius * rng.uniform(0.02, 0.05), (m, 2))
        for p in spots:
            r = cv.radius * rng.uniform(0.004, 0.012)
            draw_ellipse(
                cv.layers["exudate"], p, (r, r * rng.uniform(0.6, 1)), 0, rng.uniform(170, 255)
            )


def cotton_wool(cv: Canvas, n: int, rng: np.random.Generator) -> None:
    """Pale fluffy patches near the arcades (the renderer blurs this layer)."""
    for p in polar_points(cv, rng, n, 0.25, 0.7):
        axes = (cv.radius * rng.uniform(0.03, 0.06), cv.radius * rng.uniform(0.02, 0.04))
        draw_ellipse(cv.layers["cws"], p, axes, rng.uniform(0, 180), rng.uniform(130, 200))


def venous_beading(cv: Canvas, veins: list[Vessel], rng: np.random.Generator) -> None:
    """Sausage-like beads along a stretch of one to three large veins."""
    big = [v for v in veins if v.depth >= 1 and len(v.pts) > 12]
    for j in rng.permutation(len(big))[: int(rng.integers(1, 4))]:
        v = big[j]
        s = int(rng.integers(2, len(v.pts) // 2))
        for i in range(s, min(len(v.pts) - 1, s + int(rng.integers(8, 20))), 2):
            r = v.widths[i] * rng.uniform(0.75, 1.05)
            draw_ellipse(cv.layers["vein"], v.pts[i], (r, r), 0, 255)


def tangle(cv: Canvas, layer: str, c: np.ndarray, n: int, size: float, rng: Rng) -> None:
    """n fine, tortuous vessel loops around c (size x R): IRMA and new vessels."""
    for _ in range(n):
        start = c + rng.normal(0, 0.3 * size * cv.radius, 2)
        path = walk(
            start,
            rng.uniform(0, TAU),
            size * cv.radius * rng.uniform(1.5, 3),
            0.006 * cv.radius,
            rng.uniform(0.35, 0.6),
            rng,
        )
        width = np.full(len(path) - 1, cv.radius * rng.uniform(0.006, 0.01))
        draw_path(cv.layers[layer], path, width, rng.uniform(170, 240))


def neovascularisation(cv: Canvas, veins: list[Vessel], rng: np.random.Generator) -> None:
    """New vessels at the disc (NVD) and/or elsewhere along the arcades (NVE)."""
    nvd = rng.random() < 0.65
    if nvd:
        tangle(
            cv,
            "new",
            cv.disc + rng.normal(0, 0.3 * cv.dd, 2),
            int(rng.integers(4, 10)),
            0.04,
            rng,
        )
    for _ in range(int(rng.integers(0 if nvd else 1, 4))):
        v = veins[int(rng.integers(len(veins)))]
        tangle(cv, "new", v.pts[int(rng.integers(len(v.pts)))], int(rng.integers(3, 7)), 0.03, rng)
    if rng.random() < 0.3:  # fibrous tissue: a whitish film over the new vessels
        draw_ellipse(cv.layers["cws"], cv.disc, (cv.dd * 0.9, cv.dd * 0.7), 0, 90)


def preretinal(cv: Canvas, rng: np.random.Generator) -> None:
    """Boat-shaped haemorrhage: blood settles under gravity, so the top is flat."""
    c = polar_points(cv, rng, 1, 0.15, 0.6)[0]
    a = cv.radius * rng.uniform(0.07, 0.2)
    b = a * rng.uniform(0.4, 0.7)
    top = rng.uniform(-25, 0)  # arc start: the chord between the arc ends is the flat top
    arc = cv2.ellipse2Poly(
        tuple(fix(c)), (round(a * 16), round(b * 16)), 0, int(top), int(180 - top), 5
    )
    cv2.fillPoly(cv.layers["red"], [arc], 255, cv2.LINE_AA, SHIFT)


def vitreous(cv: Canvas, rng: np.random.Generator) -> None:
    """A hazy reddish veil: a soft low-frequency blob field."""
    blobs = cv2.resize(
        rng.normal(0, 1, (5, 5)).astype(np.float32), (64, 64), interpolation=cv2.INTER_CUBIC
    )  # (64, 64); the renderer resizes it
    cv.haze = np.clip(blobs - rng.uniform(-0.5, 0.8), 0, 1) * rng.uniform(0.35, 0.8)


def laser_scars(cv: Canvas, rng: np.random.Generator) -> None:
    """Pan-retinal photocoagulation: rows of pale spots with pigmented rims, periphery only."""
    for p in polar_points(cv, rng, int(rng.integers(30, 90)), 0.55, 0.98):
        r = cv.radius * rng.uniform(0.014, 0.024)
        draw_ellipse(cv.layers["cws"], p, (r, r), 0, rng.uniform(90, 170))
        cv2.circle(
            cv.layers["pigment"],
            tuple(fix(p)),
            round(r * 16),
            int(rng.uniform(120, 220)),
            max(1, round(r * 0.4)),
            cv2.LINE_AA,
            SHIFT,
        )


def moderate(cv: Canvas, rng: np.random.Generator, scale: float) -> None:
    """Grade-2 lesions; `scale` raises the counts for the higher grades."""
    n_haem = int(rng.poisson(rng.uniform(0.5, 8) * scale))
    n_exu = int(rng.integers(1, 4)) if rng.random() < 0.5 + 0.1 * scale else 0
    n_cws = int(rng.integers(1, 4)) if rng.random() < 0.3 + 0.1 * scale else 0
    if n_haem + n_exu + n_cws == 0:  # moderate needs more than microaneurysms
        n_haem = int(rng.integers(1, 4))
    haemorrhages(cv, n_haem, rng)
    exudates(cv, n_exu, rng)
    cotton_wool(cv, n_cws, rng)


def severe(cv: Canvas, veins: list[Vessel], rng: np.random.Generator) -> None:
    """Grade-3 signs: haemorrhages in all four quadrants, venous beading, IRMA."""
    for q in range(4):
        haemorrhages(cv, int(rng.integers(2, 9)), rng, quadrant=q)
    if rng.random() < 0.5:
        venous_beading(cv, veins, rng)
    if rng.random() < 0.5:
        for c in polar_points(cv, rng, int(rng.integers(1, 5)), 0.25, 0.8):
            tangle(cv, "vein", c, int(rng.integers(2, 4)), 0.025, rng)


def add_lesions(cv: Canvas, grade: int, veins: list[Vessel], rng: np.random.Generator) -> None:
    """Draw the lesions the ICDR scale names for `grade` (0-4); counts overlap between grades."""
    if grade == 0:
        return
    microaneurysms(cv, int(rng.poisson([0, 2.5, 6, 9, 8][grade])) + (grade == 1), rng)
    if grade >= 2:
        moderate(cv, rng, scale=[0, 0, 1.0, 1.5, 1.2][grade])
    if grade == 3 or (grade == 4 and rng.random() < 0.5):
        severe(cv, veins, rng)
    if grade == 4:
        neovascularisation(cv, veins, rng)
        bleed = rng.random()
        if bleed < 0.45:
            for _ in range(1 + (rng.random() < 0.25)):
                preretinal(cv, rng)
        if 0.3 < bleed < 0.65:
            vitreous(cv, rng)
        if rng.random() < 0.25:
            laser_scars(cv, rng)
