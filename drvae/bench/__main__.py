"""`make bench`: measured figures for the data foundation, written to experiments/benchmarks/.

- simulator: images/s at 128 px with 2 workers;
- cache: full-resolution fundus JPEGs, plain PIL decode + resize against the cache's first
  pass (reduced-size decoding, parallel workers) and its second pass (reading the cache);
- learnability: a small timm CNN trained from scratch on simulated images, scored on a
  held-out split, so that the simulator is known to be learnable but not trivial;
- vae: VAE training images/s through drvae (Lightning) and through a hand-written loop on
  the same model, data and batch size, at 64 and 128 px; generation images/s per size.

`--only vae` (or any group) runs some groups and merges them into the existing results.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

from drvae import __version__
from drvae.bench.data import bench_cache, bench_simulator

RESULTS = Path("experiments/benchmarks")


def machine() -> dict[str, str]:
    import torch

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


def run_group(group: str, work: Path, scale: float) -> dict[str, Any]:
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

        for size in (64, 128):
            out[f"vae_training_{size}px"] = bench_vae_training(size, n=max(128, int(1024 * scale)))
            out[f"vae_generation_{size}px"] = bench_generation(size)
    return out


GROUPS = ("data", "learnability", "vae")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m drvae.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"some of {GROUPS}, comma-separated"
    )
    args = parser.parse_args(argv)
    groups = args.only.split(",")
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {sorted(unknown)}; expected some of {GROUPS}")
    scale = 0.1 if args.quick else 1.0
    previous = args.out / "results.json"
    benchmarks: dict[str, Any] = {}
    if set(groups) != set(GROUPS) and previous.is_file():
        benchmarks = json.loads(previous.read_text())["benchmarks"]
    with tempfile.TemporaryDirectory(prefix="drvae-bench-") as tmp:
        for group in groups:
            for name, figures in run_group(group, Path(tmp), scale).items():
                benchmarks[name] = figures
                print(name, figures, flush=True)
    command = "make bench" + (" (--quick)" if args.quick else "")
    if set(groups) != set(GROUPS):
        command += f"; last: python -m drvae.bench --only {args.only}"
    write_results({"command": command, "machine": machine(), "benchmarks": benchmarks}, args.out)
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
