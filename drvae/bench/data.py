"""Benchmarks of the data stages: the simulator and the preprocessing cache."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from drvae.data.cache import build_cache, open_cache
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import read_dataset
from drvae.data.simulator import render_fundus, simulate_dataset


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Median wall time of `repeats` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_simulator(work: Path, n: int, size: int = 128) -> dict[str, float]:
    runs = iter(range(100))
    seconds, _ = timed(lambda: simulate_dataset(work / f"sim{next(runs)}", n, size, workers=2))
    return {
        "n": n,
        "size": size,
        "workers": 2,
        "seconds": round(seconds, 2),
        "images_per_second": round(n / seconds, 1),
    }


def write_full_resolution(root: Path, n: int, width: int = 3888, height: int = 2592) -> None:
    """APTOS-layout JPEGs the size of a fundus camera's (EyePACS: up to 5184 x 3456): the
    simulator's picture on a wide black frame, with sensor noise so the JPEGs are as costly
    to decode as photographs (about 1-2 MB each)."""
    (root / "train_images").mkdir(parents=True)
    rows = ["id_code,diagnosis"]
    for i in range(n):
        rng = np.random.default_rng([7, i])
        eye = cv2.resize(
            render_fundus(i % 5, 512, rng), (height, height), interpolation=cv2.INTER_CUBIC
        )  # (H, H, 3)
        frame = np.zeros((height, width, 3), np.uint8)
        left = (width - height) // 2
        frame[:, left : left + height] = eye
        noise = rng.normal(0, 4, frame.shape).astype(np.int16)
        frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(root / "train_images" / f"full{i:03d}.jpeg", quality=92)
        rows.append(f"full{i:03d},{i % 5}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")


def bench_cache(work: Path, n: int, size: int = 128) -> dict[str, Any]:
    root = work / "fullres"
    write_full_resolution(root, n)
    records = read_dataset("aptos", root).records
    config = PreprocessConfig(size=size)

    def plain_pil() -> None:
        for r in records:
            with Image.open(r.path) as image:
                image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)

    runs = iter(range(100))
    plain, _ = timed(plain_pil, repeats=3)
    first, cache = timed(lambda: build_cache(records, config, work / f"c{next(runs)}", 2))
    second, _ = timed(lambda: np.asarray(open_cache(cache.folder).images).sum())
    megabytes = sum(r.path.stat().st_size for r in records) / n / 1e6
    return {
        "n": n,
        "source_size": "3888x2592 JPEG",
        "mean_file_mb": round(megabytes, 2),
        "size": size,
        "workers": 2,
        "plain_pil_images_per_second": round(n / plain, 2),
        "first_pass_images_per_second": round(n / first, 2),
        "second_pass_images_per_second": round(n / second, 1),
        "cache_build_speedup": round(plain / first, 1),
        "second_pass_speedup": round(first / second, 1),
    }
