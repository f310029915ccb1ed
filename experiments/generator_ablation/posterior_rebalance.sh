#!/usr/bin/env bash
# experiments/generator_ablation: does the posterior sampler's synthetic set help the grader?
# The default comparison at 128 px with the 60-epoch hierarchical VAE of sim128_e60/ and
# generate.sampler=posterior: rebalance none vs synthetic (100 posterior samples per grade
# added) vs oversample (100 copies of real training images per grade added, the control that
# near copies should be measured against), one seed, into runs/generator_posterior_rebalance/;
# then the report (paired bootstrap against none). A relaunch resumes through the stage cache.
# Usage (from the repository root): bash experiments/generator_ablation/posterior_rebalance.sh
set -u
. "$(dirname "$0")/settings.sh"  # $SHARP and $AT128
OUT=${OUT:-runs/generator_posterior_rebalance}
eval "set -- vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60"
.venv/bin/drvae -m rebalance=none,synthetic,oversample seed=0 "$@" generate.sampler=posterior \
  trainer.enable_progress_bar=false hydra.sweep.dir="$OUT" ${EXTRA:-}
.venv/bin/drvae-report "$OUT"
