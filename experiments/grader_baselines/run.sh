#!/usr/bin/env bash
# experiments/grader_baselines: the grading recipe (classifier=dr_recipe) and its pieces,
# from scratch, rebalance=none, one run folder per setting under runs/grader_baselines/.
# Usage (from the repository root): bash experiments/grader_baselines/run.sh
# ONLY=<prefix> runs only the rows whose name starts with it (e.g. ONLY=eyepacs128/).
# A relaunch skips finished runs; the stage cache resumes an interrupted one.
set -u
DATA=${DATA:-$(realpath ../shared/data)}
OUT=${OUT:-runs/grader_baselines}
EP128="data=eyepacs data.root=$DATA/eyepacs128 data.image_size=128"
AP128="data=aptos data.root=$DATA/aptos2019 data.image_size=128"
EP64="data=eyepacs data.root=$DATA/eyepacs64 data.image_size=64"
PLUS128="+train_sets.eyepacs128.source=eyepacs +train_sets.eyepacs128.root=$DATA/eyepacs128"
while read -r name args; do
  [ -f "$OUT/$name/results.json" ] && continue
  [[ $name == "${ONLY:-}"* ]] || continue
  eval "set -- $args"
  .venv/bin/drvae rebalance=none "$@" hydra.run.dir="$OUT/$name" trainer.enable_progress_bar=false \
    || echo "failed: $name" >&2
done <<LIST
sim/baseline_s0 classifier=resnet10t seed=0
sim/recipe_s0 classifier=dr_recipe classifier.model.head=regression seed=0
sim/recipe_classification_s0 classifier=dr_recipe classifier.model.head=classification seed=0
sim/recipe_classification_e60_s0 classifier=dr_recipe classifier.model.head=classification classifier.trainer.max_epochs=60 seed=0
sim/recipe_classification_e60_s1 classifier=dr_recipe classifier.model.head=classification classifier.trainer.max_epochs=60 seed=1
sim/recipe_classification_e60_s2 classifier=dr_recipe classifier.model.head=classification classifier.trainer.max_epochs=60 seed=2
sim/recipe_mixup_s0 classifier=dr_recipe classifier.model.head=classification 'classifier.model.mixup={mixup_alpha:0.4,cutmix_alpha:1.0}' seed=0
sim/recipe_shuffle_s0 classifier=dr_recipe classifier.model.head=classification classifier.sampler=shuffle seed=0
sim/recipe_noema_s0 classifier=dr_recipe classifier.model.head=classification classifier.ema_decay=null seed=0
sim/recipe_noschedule_s0 classifier=dr_recipe classifier.model.head=classification classifier.scheduler=null seed=0
sim/recipe_ordinal_s0 classifier=dr_recipe classifier.model.head=ordinal seed=0
sim/baseline_s1 classifier=resnet10t seed=1
sim/recipe_classification_s1 classifier=dr_recipe classifier.model.head=classification seed=1
eyepacs64/baseline_s0 $EP64 classifier=resnet10t seed=0
eyepacs64/recipe_s0 $EP64 classifier=dr_recipe classifier.model.head=regression seed=0
eyepacs64/recipe_classification_s0 $EP64 classifier=dr_recipe classifier.model.head=classification seed=0
eyepacs64/recipe_classification_bengraham_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=classification seed=0
eyepacs64/recipe_regression_bengraham_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_e100_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=100 seed=0
aptos128/baseline_s0 $AP128 classifier.trainer.max_epochs=10 classifier=resnet10t seed=0
aptos128/recipe_classification_s0 $AP128 classifier.trainer.max_epochs=10 classifier=dr_recipe classifier.model.head=classification seed=0
eyepacs128/recipe_classification_s0 $EP128 classifier.trainer.max_epochs=10 classifier=dr_recipe classifier.model.head=classification seed=0
aptos128/recipe_regression_e40_s0 $AP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=40 seed=0
aptos128/recipe_regression_e60_s0 $AP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=60 seed=0
eyepacs128/recipe_regression_e25_s0 $EP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=25 seed=0
eyepacs128/recipe_regression_bengraham_e25_s0 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=25 seed=0
aptos128/recipe_regression_e60_s1 $AP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=60 seed=1
aptos128/recipe_regression_e60_s2 $AP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=60 seed=2
cross_dataset/aptos128_to_eyepacs128_s0 $AP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=40 seed=0 +test_sets.eyepacs128.source=eyepacs +test_sets.eyepacs128.root=$DATA/eyepacs128
cross_dataset/eyepacs128_to_aptos128_s0 $EP128 classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=25 seed=0 +test_sets.aptos2019.source=aptos +test_sets.aptos2019.root=$DATA/aptos2019
eyepacs128/recipe_regression_bengraham_in192_e25_s0 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.input_size=192 classifier.trainer.max_epochs=25 seed=0
eyepacs64/recipe_regression_bengraham_in128_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.input_size=128 classifier.trainer.max_epochs=60 seed=0
eyepacs128/recipe_regression_bengraham_in192_e40_s0 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.input_size=192 classifier.trainer.max_epochs=40 seed=0
eyepacs128/recipe_regression_bengraham_e25_s1 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=25 seed=1
eyepacs64/recipe_regression_bengraham_e60_s1 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=60 seed=1
eyepacs64/recipe_regression_bengraham_e60_s2 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.trainer.max_epochs=60 seed=2
eyepacs128/recipe_regression_bengraham_in256_e25_s0 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.input_size=256 classifier.trainer.max_epochs=25 seed=0
eyepacs128/recipe_regression_bengraham_in192_e25_s1 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.input_size=192 classifier.trainer.max_epochs=25 seed=1
eyepacs128/recipe_regression_bengraham_in192_e25_s2 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.input_size=192 classifier.trainer.max_epochs=25 seed=2
eyepacs64/recipe_regression_bengraham_resnet18d_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.model_name=resnet18d classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_effb0_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.model_name=efficientnet_b0 classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_shuffle_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.sampler=shuffle classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_ordinal_bengraham_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=ordinal classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_e60_s1 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.trainer.max_epochs=60 seed=1
eyepacs64/recipe_regression_bengraham_wd005_e60_s2 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.trainer.max_epochs=60 seed=2
eyepacs64/recipe_regression_bengraham_wd005_drop03_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.model.drop_rate=0.3 classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_lr1e3_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.optimizer.lr=0.001 classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_pow05_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.balance_power=0.5 classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_plus128_e30_s0 $EP64 $PLUS128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.trainer.max_epochs=30 seed=0
eyepacs64/recipe_regression_bengraham_wd005_plus128_e30_s1 $EP64 $PLUS128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.trainer.max_epochs=30 seed=1
eyepacs64/recipe_regression_bengraham_wd005_plus128_e30_s2 $EP64 $PLUS128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.trainer.max_epochs=30 seed=2
eyepacs128/recipe_regression_bengraham_fellow_e25_s0 $EP128 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.model.fellow_eye=true classifier.trainer.max_epochs=25 seed=0
eyepacs64/recipe_regression_bengraham_wd005_noaffine_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.augment.transforms.1.p=0.0 classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_noaffine_e60_s1 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.augment.transforms.1.p=0.0 classifier.trainer.max_epochs=60 seed=1
eyepacs64/recipe_regression_bengraham_wd005_noaffine_e60_s2 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.augment.transforms.1.p=0.0 classifier.trainer.max_epochs=60 seed=2
eyepacs64/recipe_regression_bengraham_wd005_affine_strong_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 classifier.augment.transforms.1.p=1.0 'classifier.augment.transforms.1.scale=[0.8,1.2]' classifier.trainer.max_epochs=60 seed=0
eyepacs64/recipe_regression_bengraham_wd005_mixup04_e60_s0 $EP64 data.preprocess.ben_graham=true classifier=dr_recipe classifier.model.head=regression classifier.optimizer.weight_decay=0.05 'classifier.model.mixup={mixup_alpha:0.4}' classifier.trainer.max_epochs=60 seed=0
LIST
for study in sim eyepacs64 aptos128 eyepacs128 cross_dataset; do
  [ -d "$OUT/$study" ] && .venv/bin/drvae-report "$OUT/$study"
done
