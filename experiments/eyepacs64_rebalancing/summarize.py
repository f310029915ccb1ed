"""Write this folder's `report.md` (drvae-report's tables) and `jobs.json` (per job: the
overrides, test metrics, counts, confusion matrix, VAE validation ELBO, seconds).

    python experiments/eyepacs64_rebalancing/summarize.py runs/eyepacs64_rebalancing
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from drvae.report.collect import collect
from drvae.report.table import report

HERE = Path(__file__).parent


def job_summary(results: dict) -> dict:
    stages = results["stages"]
    vae = stages.get("vae", {})
    return {
        "overrides": results["overrides"],
        "metrics": results["metrics"],
        "counts": results["counts"],
        "confusion_matrix": stages["classifier"]["confusion_matrix"],
        "classifier_best_epoch": stages["classifier"]["best_epoch"],
        "vae_val_elbo": vae.get("metrics", {}).get("val/elbo"),
        "vae_reused": vae.get("reused"),
        "seconds": results["seconds"],
    }


def main(sweep: Path) -> None:
    jobs = [job_summary(j.results) for j in collect(sweep) if j.results]
    (HERE / "jobs.json").write_text(json.dumps(jobs, indent=1) + "\n")
    (HERE / "report.md").write_text(f"# drvae-report {sweep}\n\n{report(sweep)}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
