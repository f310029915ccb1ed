#!/usr/bin/env bash
# experiments/generator_ablation: does the posterior sampler's synthetic set help the grader?
# The default comparison at 128 px with the 60-epoch hierarchical VAE of sim128_e60/ and
# generate.sampler=posterior: rebalance none vs synthetic (100 posterior samples per grade
# added) vs oversample (100 copies of real training images per grade added, the control that
# near copies should be measured against), seed $SEED (default 0), into
# runs/generator_posterior_rebalance/ (seed 0) or runs/generator_posterior_rebalance_s$SEED/;
# then the report (paired bootstrap against none). A relaunch resumes through the stage cache.
# Usage (from the repository root): [SEED=1] bash experiments/generator_ablation/posterior_rebalance.sh
set -u
. "$(dirname "$0")/settings.sh"  # $SHARP and $AT128
SEED=${SEED:-0}
[ "$SEED" = 0 ] && SUFFIX="" || SUFFIX="_s$SEED"
OUT=${OUT:-runs/generator_posterior_rebalance$SUFFIX}
eval "set -- vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60"
.venv/bin/drvae -m rebalance=none,synthetic,oversample seed="$SEED" "$@" generate.sampler=posterior \
  trainer.enable_progress_bar=false hydra.sweep.dir="$OUT" ${EXTRA:-}
.venv/bin/drvae-report "$OUT"
