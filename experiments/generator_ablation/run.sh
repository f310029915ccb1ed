#!/usr/bin/env bash
# experiments/generator_ablation: each generator lever's effect on the fidelity figures
# (the judge's per-grade recall on real test images, their reconstructions and 100 samples
# per grade). The judge is the classifier trained on real images only (the rebalance=none
# job's), shared through the stage cache. One run folder per setting under
# runs/generator_ablation/; a relaunch skips finished runs.
# Usage (from the repository root): bash experiments/generator_ablation/run.sh
# (EXTRA="paths.cache_dir=..." adds overrides to every run; ONLY=sim128/ runs only the
# settings whose name starts with it). Rows run stages vae, generate and fidelity; the rows
# that name stages=[vae,generate,audit] run the whole audit (memorisation, TSTR, ...).
set -u
OUT=${OUT:-runs/generator_ablation}
. "$(dirname "$0")/settings.sh"  # $SHARP and $AT128
# sim128_posterior/: the same 128 px VAE config again, on a fresh machine (an empty stage cache:
# the judge retrained, and came out different), every sampler judged by that one judge,
# with the posterior sampler (generate.sampler=posterior) and the full audit
# sim128_e60/: the same VAE trained twice as long (60 epochs; its recon gap had levelled off
# with the 30-epoch schedule, not with the model; its judge retrained identical to
# sim128_posterior's), and the posterior
# sampler hotter (T 2, 4: do the near copies move away from their training images, and does
# the grade survive?), with the audit's memorisation figures but without TSTR
# eyepacs128/: the issue's second data set, the sim128_e60 VAE config on ../shared/data/eyepacs128,
# on one GPU (trainer=gpu; ~5 h of VAE training on the 2-core CPU): ONLY=eyepacs128/ on a GPU machine
DATA=${DATA:-$(realpath ../shared/data)}
EP128="data=eyepacs data.root=$DATA/eyepacs128 trainer=gpu data.num_workers=4"
COMMON="generate.per_grade=100 trainer.enable_progress_bar=false ${EXTRA:-}"
while read -r name args; do
  [ -f "$OUT/$name/results.json" ] && continue
  case $name in "${ONLY:-}"*) ;; *) continue ;; esac
  # the fidelity figures; a row that names its own stages (e.g. the full audit) keeps them
  case " $args " in *" stages="*) stages="" ;; *) stages="stages=[vae,generate,fidelity]" ;; esac
  eval "set -- $args"
  .venv/bin/drvae $stages $COMMON "$@" hydra.run.dir="$OUT/$name" || echo "failed: $name" >&2
done <<LIST
sim64/conv_s0 vae=conv seed=0
sim64/hierarchical_s0 vae=hierarchical seed=0
sim64/hierarchical_balanced_s0 vae=hierarchical vae.sampler=balanced seed=0
sim64/hierarchical_gradeloss100_s0 vae=hierarchical vae.model.grade_loss_weight=100 seed=0
sim64/conv_gmm_s0 vae=conv generate.sampler=gmm seed=0
sim64/hierarchical_gmm_s0 vae=hierarchical generate.sampler=gmm seed=0
sim64/hierarchical_sharp_s0 vae=hierarchical $SHARP seed=0
sim128/conv_clip1_s0 vae=conv data.image_size=128 vae.trainer.gradient_clip_val=1.0 seed=0
sim128/conv_logvar_clamp_s0 vae=conv data.image_size=128 seed=0
sim128/hierarchical_sharp_e30_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 seed=0
sim128/hierarchical_sharp_e30_gmm_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=gmm seed=0
sim128/hierarchical_sharp_e30_gmm_t05_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=gmm generate.temperature=0.5 seed=0
sim128/hierarchical_sharp_e30_gmm_t02_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=gmm generate.temperature=0.2 seed=0
sim128/hierarchical_sharp_e30_balanced_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 vae.sampler=balanced seed=0
sim128_posterior/hierarchical_sharp_e30_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 seed=0
sim128_posterior/hierarchical_sharp_e30_gmm_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=gmm seed=0
sim128_posterior/hierarchical_sharp_e30_gmm_t05_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=gmm generate.temperature=0.5 seed=0
sim128_posterior/hierarchical_sharp_e30_gmm_t02_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=gmm generate.temperature=0.2 seed=0
sim128_posterior/hierarchical_sharp_e30_posterior_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=posterior stages=[vae,generate,audit] seed=0
sim128_posterior/hierarchical_sharp_e30_posterior_t05_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=posterior generate.temperature=0.5 seed=0
sim128_posterior/hierarchical_sharp_e30_posterior_t02_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 generate.sampler=posterior generate.temperature=0.2 seed=0
sim128_posterior/hierarchical_sharp_e30_audit_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=30 stages=[vae,generate,audit] seed=0
sim128_e60/hierarchical_sharp_e60_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60 seed=0
sim128_e60/hierarchical_sharp_e60_posterior_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60 generate.sampler=posterior stages=[vae,generate,audit] seed=0
sim128_e60/hierarchical_sharp_e60_posterior_t2_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60 generate.sampler=posterior generate.temperature=2 stages=[vae,generate,audit] audit.tstr=false seed=0
sim128_e60/hierarchical_sharp_e60_posterior_t4_s0 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60 generate.sampler=posterior generate.temperature=4 stages=[vae,generate,audit] audit.tstr=false seed=0
eyepacs128/hierarchical_sharp_e60_s0 $EP128 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60 stages=[vae,generate,audit] seed=0
eyepacs128/hierarchical_sharp_e60_posterior_s0 $EP128 vae=hierarchical $SHARP $AT128 vae.trainer.max_epochs=60 generate.sampler=posterior stages=[vae,generate,audit] seed=0
LIST
for study in sim64 sim128 sim128_posterior sim128_e60 eyepacs128; do
  [ -d "$OUT/$study" ] && .venv/bin/drvae-report "$OUT/$study"
done
