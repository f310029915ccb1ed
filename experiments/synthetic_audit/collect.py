"""Copy a run's audit (audit.json and its plots) into this folder, under `NAME/`.

python experiments/synthetic_audit/collect.py runs/audit_simulated simulated
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(run: Path, name: str) -> None:
    results = json.loads((run / "results.json").read_text())
    audit = Path(results["stages"]["audit"]["path"])
    target = HERE / name
    target.mkdir(exist_ok=True)
    for path in [audit / "audit.json", *sorted(audit.glob("*.png"))]:
        shutil.copyfile(path, target / path.name)
    summary = {
        "overrides": results["overrides"],
        "stages": {k: v.get("seconds") for k, v in results["stages"].items()},
        "seconds": results["seconds"],
        "data": results["data"]["counts"],
    }
    (target / "run.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
