"""`make bench`: measured figures for the data foundation, written to experiments/benchmarks/.

- simulator: images/s at 128 px with 2 workers;
- cache: full-resolution fundus JPEGs, plain PIL decode + resize against the cache's first
  pass (reduced-size decoding, parallel workers) and its second pass (reading the cache);
- learnability: a small timm CNN trained from scratch on simulated images, scored on a
  held-out split, so that the simulator is known to be learnable but not trivial;
- vae: VAE training images/s through drvae (Lightning) and through a hand-written loop on
  the same model, data and batch size, at 64 and 128 px; generation images/s per size;
- classifier: the same comparison for the timm grading classifier;
- overhead: the same with tiny models at 16 px, where what drvae adds per step decides;
- loader: the cached training loader against decoding the source JPEGs, at 64/128/224 px;
- sweep: a multirun over N per-grade synthetic counts against its trainings timed alone.

`--only vae` (or any group) runs some groups and merges them into the existing results.
`--device cuda` runs the model benchmarks on the GPU (bf16 autocast, as `trainer=gpu`) and
writes to experiments/benchmarks/<card>/ instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from drvae import __version__
from drvae.bench.data import bench_cache, bench_simulator
from drvae.bench.memory import PeakMemory

RESULTS = Path("experiments/benchmarks")
# figure -> (comparison, target) of issue #7; each is reported as measured, met or not
TARGETS = {
    "vae_overhead_ratio": (">=", 0.9),
    "classifier_overhead_ratio": (">=", 0.9),
    "loader_vs_model_ratio": (">=", 10.0),
    "cache_build_speedup": (">=", 4.0),
    "sweep_cost_ratio": ("<=", 1.15),
}
DEFAULT_SIZE = 64  # conf/data_base.yaml image_size


def machine(device: str) -> dict[str, str]:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or "unknown",
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "drvae": __version__,
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def find(benchmarks: dict[str, Any], figure: str) -> float | None:
    """The value of `figure` in whichever benchmark holds it (the default size's first)."""
    ordered = sorted(benchmarks.items(), key=lambda kv: f"{DEFAULT_SIZE}px" not in kv[0])
    return next((b[figure] for _, b in ordered if figure in b), None)


def targets(benchmarks: dict[str, Any]) -> dict[str, Any]:
    """The issue's target figures, derived where needed, each with whether it is met."""
    model = benchmarks.get(f"classifier_training_{DEFAULT_SIZE}px", {}).get(
        "drvae_images_per_second"
    )
    loader = benchmarks.get("loader", {}).get(f"cached_images_per_second_{DEFAULT_SIZE}px")
    values = {name: find(benchmarks, name) for name in TARGETS}
    if model and loader:
        values["loader_vs_model_ratio"] = round(loader / model, 1)
    out = {}
    for name, (op, target) in TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[name] = {"value": value, "target": f"{op} {target}", "met": met}
    return out


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Benchmarks",
        "",
        f"Command: `{results['command']}`",
        "",
        "Machine of the last run (each benchmark's `measured_on` names its own): "
        + ", ".join(f"{k} {v}" for k, v in results["machine"].items()),
        "",
        "## Targets",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    for name, t in results["targets"].items():
        met = {True: "yes", False: "**no**", None: "not run"}[t["met"]]
        lines.append(f"| {name} | {t['value']} | {t['target']} | {met} |")
    lines.append("")
    for name, figures in results["benchmarks"].items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in figures.items()] + [""]
    (out / "RESULTS.md").write_text("\n".join(lines))


def training_size(scale: float, device: str) -> tuple[int, int]:
    """Images per epoch and epochs of a training benchmark (the median is taken over the
    epochs after the first); a GPU's epochs are short, so it gets more images."""
    return max(128, int((16384 if device == "cuda" else 1024) * scale)), 5


def run_group(
    group: str, work: Path, scale: float, device: str, loader_workers: tuple[int, ...] = ()
) -> dict[str, Any]:
    """The benchmarks of one group, name -> figures. Heavy imports happen here, not at the
    top: torch would otherwise load in every image worker's fork server."""
    out: dict[str, Any] = {}
    if group == "data":
        out["simulator"] = bench_simulator(work, int(1000 * scale) or 10)
        out["cache"] = bench_cache(work, max(8, int(48 * scale)))
    elif group == "learnability":
        from drvae.bench.learnability import bench_learnability

        for size, epochs in ((64, 20), (128, 12)):
            out[f"learnability_{size}px_balanced"] = bench_learnability(
                work, max(100, int(3000 * scale)), size, max(1, int(epochs * scale)), (0.2,) * 5
            )
    elif group == "vae":
        from drvae.bench.vae import bench_generation, bench_vae_training

        n, epochs = training_size(scale, device)
        for size in (64, 128):
            out[f"vae_training_{size}px"] = bench_vae_training(
                size, n=n, epochs=epochs, device=device
            )
            out[f"vae_generation_{size}px"] = bench_generation(
                size, n=n if device == "cuda" else 1024, device=device
            )
        out["vae_training_64px_hierarchical"] = bench_vae_training(  # vae=hierarchical
            64, n=n, epochs=epochs, batch=16, device=device, architecture="hierarchical"
        )
    elif group == "classifier":
        from drvae.bench.classifier import bench_classifier_training

        n, epochs = training_size(scale, device)
        for size in (64, 128):
            out[f"classifier_training_{size}px"] = bench_classifier_training(
                size, n=n, epochs=epochs, device=device
            )
    elif group == "overhead":
        from drvae.bench.overhead import bench_step_overhead

        out["step_overhead_16px_tiny_models"] = bench_step_overhead(device)
    elif group == "loader":
        from drvae.bench.loader import bench_loader

        out["loader"] = bench_loader(work, max(64, int(512 * scale)), workers=loader_workers)
    elif group == "sweep":
        from drvae.bench.sweep import bench_sweep

        out["sweep"] = bench_sweep(work, int(2000 * scale) or 200, max(1, int(5 * scale)))
    return out


GROUPS = ("data", "learnability", "vae", "classifier", "overhead", "loader", "sweep")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m drvae.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="default: " + str(RESULTS))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--loader-workers", default="2", help="DataLoader worker counts to add to 0, e.g. 2,8"
    )
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"some of {GROUPS}, comma-separated"
    )
    args = parser.parse_args(argv)
    groups = args.only.split(",")
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {sorted(unknown)}; expected some of {GROUPS}")
    info = machine(args.device)
    out = args.out or RESULTS
    if args.device == "cuda" and args.out is None:
        out = RESULTS / re.sub(r"[^a-z0-9]+", "_", info["gpu"].lower()).strip("_")
    scale = 0.1 if args.quick else 1.0
    previous = out / "results.json"
    benchmarks: dict[str, Any] = {}
    if set(groups) != set(GROUPS) and previous.is_file():
        benchmarks = json.loads(previous.read_text())["benchmarks"]
    # each row says where and when it was measured: `--only` merges groups measured on
    # different machines into one file
    measured_on = f"{date.today()}, {info['platform']}, {info['device']}"
    with tempfile.TemporaryDirectory(prefix="drvae-bench-") as tmp:
        for group in groups:
            workers = tuple(int(w) for w in args.loader_workers.split(",") if w)
            with PeakMemory() as peak:
                group_figures = run_group(group, Path(tmp), scale, args.device, workers)
            for name, figures in group_figures.items():
                benchmarks[name] = {**figures, **peak.figures(), "measured_on": measured_on}
                print(name, benchmarks[name], flush=True)
    command = "make bench" + (" (--quick)" if args.quick else "")
    if set(groups) != set(GROUPS) or args.device != "cpu":
        command += f"; last: python -m drvae.bench --only {args.only} --device {args.device}"
    results = {
        "command": command,
        "machine": info,
        "targets": targets(benchmarks),
        "benchmarks": benchmarks,
    }
    write_results(results, out)
    print(f"wrote {out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
