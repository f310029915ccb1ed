"""`make bench`: measured figures for the data foundation, written to experiments/benchmarks/.

- simulator: images/s at 128 px with 2 workers;
- cache: full-resolution fundus JPEGs, plain PIL decode + resize against the cache's first
  pass (reduced-size decoding, parallel workers) and its second pass (reading the cache);
- learnability: a small timm CNN trained from scratch on simulated images, scored on a
  held-out split, so that the simulator is known to be learnable but not trivial.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from drvae import __version__
from drvae.data.cache import build_cache, open_cache
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import read_dataset
from drvae.data.simulator import render_fundus, simulate_dataset
from drvae.data.splits import make_splits

RESULTS = Path("experiments/benchmarks")


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
    plain, _ = timed(plain_pil, repeats=1)
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


def _batches(
    images: np.ndarray, grades: np.ndarray, batch: int, shuffle: bool, rng: np.random.Generator
):
    order = rng.permutation(len(images)) if shuffle else np.arange(len(images))
    for start in range(0, len(order), batch):
        idx = np.sort(order[start : start + batch])
        x = torch.from_numpy(np.ascontiguousarray(images[idx])).permute(0, 3, 1, 2)
        yield x.float().div(255), torch.from_numpy(grades[idx])  # (B, 3, S, S), (B,)


def train_small_cnn(
    images: np.ndarray, grades: np.ndarray, splits, epochs: int, seed: int = 0
) -> dict[str, Any]:
    """resnet10t from scratch, AdamW, horizontal flips; scored on the test split."""
    import timm
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, recall_score

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    train_x, train_y = images[splits.train], grades[splits.train]
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in _batches(train_x, train_y, 64, True, rng):
            x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(3), x)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_y = grades[splits.test]
        logits = [model(x) for x, _ in _batches(images[splits.test], test_y, 256, False, rng)]
    predicted = torch.cat(logits).argmax(1).numpy()
    return {
        "epochs": epochs,
        "train_images": len(train_y),
        "test_images": len(test_y),
        "train_seconds": round(seconds, 1),
        "accuracy": round(float((predicted == test_y).mean()), 3),
        "balanced_accuracy": round(balanced_accuracy_score(test_y, predicted), 3),
        "qwk": round(cohen_kappa_score(test_y, predicted, weights="quadratic"), 3),
        "recall_per_grade": [round(r, 3) for r in recall_score(test_y, predicted, average=None)],
        "majority_class_accuracy": round(float(np.bincount(test_y).max() / len(test_y)), 3),
    }


def bench_learnability(
    work: Path, n: int, size: int, epochs: int, fractions: tuple[float, ...]
) -> dict[str, Any]:
    root = work / f"learn{size}-{len(list(work.iterdir()))}"
    simulate_dataset(root, n, size=128, seed=1, fractions=fractions, workers=2)
    records = read_dataset("aptos", root).records
    cache = build_cache(records, PreprocessConfig(size=size), work / "cache", workers=2)
    splits = make_splits(cache.records, seed=0)
    result = train_small_cnn(np.asarray(cache.images), cache.grades, splits, epochs)
    return {"n": n, "size": size, "grade_fractions": list(fractions), **result}


def machine() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "drvae": __version__,
    }


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Benchmarks",
        "",
        f"Command: `{results['command']}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()),
        "",
    ]
    for name, figures in results["benchmarks"].items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in figures.items()] + [""]
    (out / "RESULTS.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m drvae.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    balanced = (0.2,) * 5
    benchmarks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="drvae-bench-") as tmp:
        work = Path(tmp)
        benchmarks["simulator"] = bench_simulator(work, int(1000 * scale) or 10)
        print("simulator", benchmarks["simulator"], flush=True)
        benchmarks["cache"] = bench_cache(work, max(4, int(24 * scale)))
        print("cache", benchmarks["cache"], flush=True)
        for size, epochs in ((64, 20), (128, 12)):
            key = f"learnability_{size}px_balanced"
            benchmarks[key] = bench_learnability(
                work, max(100, int(3000 * scale)), size, max(1, int(epochs * scale)), balanced
            )
            print(key, benchmarks[key], flush=True)
    command = "make bench" + (" (--quick)" if args.quick else "")
    write_results({"command": command, "machine": machine(), "benchmarks": benchmarks}, args.out)
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
