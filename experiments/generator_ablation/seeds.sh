#!/usr/bin/env bash
# experiments/generator_ablation: the default comparison (rebalance none vs synthetic, 100
# VAE images per grade) with vae=hierarchical, 3 seeds, into runs/generator_seeds/; then the
# report (paired bootstrap against none). A relaunch resumes through the stage cache.
# Usage (from the repository root): bash experiments/generator_ablation/seeds.sh
set -u
OUT=${OUT:-runs/generator_seeds}
[ -f "$OUT/multirun.yaml" ] && [ "$(ls "$OUT"/*/results.json 2>/dev/null | wc -l)" -eq 6 ] && exit 0
.venv/bin/drvae -m rebalance=none,synthetic seed=0,1,2 vae=hierarchical \
  trainer.enable_progress_bar=false hydra.sweep.dir="$OUT" ${EXTRA:-}
