#!/usr/bin/env bash
# Reproduce a model's README results table on a 2-core CPU. Not run by itself: a model
# folder's run_budget.sh (`bash run_budget.sh` in that folder) sets, then sources this file:
#   steps batch n_seq lr warmup   its default pretraining budget
#   finetune_runs                 a function: its NSMC fine-tunings, one `finetune ITEM ARGS...` each
# (A model whose results come from common/experiment.py has no run_budget.sh.)
# Real corpora come from $CORPUS_DIR (or data/download/); config_half; a fixed
# pretraining budget; then the model's NSMC fine-tunings (from scratch and
# pretrained, with its variants) and the TF-IDF baseline row. Every number is
# logged (runs/*.csv, results.csv, save_pretrain.log.json) and the README table
# and plots are redrawn from those logs.
#
# The budget is set by the variables below. Each model's defaults are the
# budget its README table was made with, at one torch thread so that two
# models can run side by side on this 2-core CPU (OMP_NUM_THREADS=1). Override
# them to shorten or stretch a run, e.g.
#   PRETRAIN_STEPS=300 TRAIN_LIMIT=40000 TRAIN_EPOCHS=2 bash run_budget.sh
# The Note column of the table records the budget used. An existing
# save_pretrain.pth is resumed with the same settings (delete it to start over).
set -euo pipefail
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "run a model folder's run_budget.sh (it sets the defaults and sources this file)" >&2; exit 2
fi
cd "$(dirname "$0")"                       # the model folder whose run_budget.sh sourced this file
model=$(basename "$PWD")

PRETRAIN_STEPS=${PRETRAIN_STEPS:-$steps}   # optimizer steps of PRETRAIN_BATCH x N_SEQ tokens
PRETRAIN_BATCH=${PRETRAIN_BATCH:-$batch}
N_SEQ=${N_SEQ:-$n_seq}                     # pretraining instance length
PRETRAIN_LR=${PRETRAIN_LR:-$lr}            # peak learning rate of the pretraining schedule
PRETRAIN_WARMUP=${PRETRAIN_WARMUP:-$warmup} # warmup: share of PRETRAIN_STEPS (< 1) or a step count
TRAIN_LIMIT=${TRAIN_LIMIT:-20000}          # NSMC train reviews used (0: all 150k)
TRAIN_EPOCHS=${TRAIN_EPOCHS:-1}
TRAIN_BATCH=${TRAIN_BATCH:-64}
gpu_args=()
[ -n "${GPU:-}" ] && gpu_args=(--gpu "$GPU")

[ -f ../data/kowiki.json ] || python ../data/kowiki.py
[ -f ../data/ratings_train.json ] && [ -f ../data/ratings_test.json ] || python ../data/nsmc.py
[ -f ../vocab/kowiki.model ] || python ../vocab/build.py
python data.py --n_seq "$N_SEQ"            # kept if it already exists

resume=()
[ -f save_pretrain.pth ] && resume=(--resume)
python pretrain.py --config config_half.json --batch "$PRETRAIN_BATCH" --max_steps "$PRETRAIN_STEPS" \
  --epoch 1 --lr "$PRETRAIN_LR" --warmup "$PRETRAIN_WARMUP" --save_every 50 "${resume[@]}" "${gpu_args[@]}"

limit=$([ "$TRAIN_LIMIT" = 0 ] && echo all || echo "$TRAIN_LIMIT")
note="pretrain ${PRETRAIN_STEPS} steps x ${PRETRAIN_BATCH}x${N_SEQ} tok, lr ${PRETRAIN_LR}; fine-tune ${TRAIN_EPOCHS} ep on ${limit} reviews"
train_lr=1e-4                              # fine-tuning peak learning rate
finetune() {  # finetune ITEM ARGS...: one NSMC run, its row in results.csv
  local item=$1; shift
  rm -f save_best.state.pth   # each run starts fresh (not a resume of the previous one)
  python train.py --item "$item" --config config_half.json --epoch "$TRAIN_EPOCHS" --batch "$TRAIN_BATCH" \
    --lr "$train_lr" --warmup 0.1 --train_limit "$TRAIN_LIMIT" --note "$note" "$@" "${gpu_args[@]}"
}
finetune_runs
python -m common.baseline --train_limit "$TRAIN_LIMIT" --models "$model"
python -m common.results "$model"
