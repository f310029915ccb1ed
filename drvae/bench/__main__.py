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
        benchmarks["cache"] = bench_cache(work, max(8, int(48 * scale)))
        print("cache", benchmarks["cache"], flush=True)
        # Imported only now: torch would otherwise load in every image worker's fork server.
        from drvae.bench.learnability import bench_learnability

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
