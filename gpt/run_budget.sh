#!/usr/bin/env bash
# Reproduce gpt/README.md's results table on a 2-core CPU: real corpora in
# $CORPUS_DIR (or data/download/), config_half, a fixed pretraining budget,
# then three NSMC fine-tunings (scratch, pretrained, pretrained + LM loss) and
# the TF-IDF baseline row. Every number is logged (runs/*.csv, results.csv,
# save_pretrain.log.json) and the README table and plots are redrawn from them.
#
# The budget is set by the variables below; the defaults take about 2 hours on
# 2 CPU cores. Override them to shorten or stretch a run, e.g.
#   PRETRAIN_STEPS=300 TRAIN_LIMIT=40000 TRAIN_EPOCHS=2 bash run_budget.sh
# and the Note column of the table records the budget used.
set -euo pipefail
cd "$(dirname "$0")"

PRETRAIN_STEPS=${PRETRAIN_STEPS:-600}   # optimizer steps of 32 x 256 tokens
PRETRAIN_BATCH=${PRETRAIN_BATCH:-32}
TRAIN_LIMIT=${TRAIN_LIMIT:-0}           # NSMC train reviews used (0: all 150k)
TRAIN_EPOCHS=${TRAIN_EPOCHS:-1}
TRAIN_BATCH=${TRAIN_BATCH:-64}
GPU_ARGS=${GPU:+--gpu $GPU}

[ -f ../data/kowiki.json ] || python ../data/kowiki.py
[ -f ../data/ratings_train.json ] && [ -f ../data/ratings_test.json ] || python ../data/nsmc.py
[ -f ../vocab/kowiki.model ] || python ../vocab/build.py
python data.py --n_seq 256            # kept if it already exists

if [ -f save_pretrain.pth ]; then RESUME=--resume; else RESUME=; fi
python pretrain.py --config config_half.json --batch "$PRETRAIN_BATCH" --max_steps "$PRETRAIN_STEPS" \
  --epoch 1 --lr 5e-4 --warmup 0.05 --save_every 100 $RESUME $GPU_ARGS

note="pretrain ${PRETRAIN_STEPS} steps x ${PRETRAIN_BATCH}x256 tok; fine-tune ${TRAIN_EPOCHS} ep on $([ "$TRAIN_LIMIT" = 0 ] && echo all || echo "$TRAIN_LIMIT") reviews"
common=(--config config_half.json --epoch "$TRAIN_EPOCHS" --batch "$TRAIN_BATCH" --lr 1e-4 --warmup 0.1
        --train_limit "$TRAIN_LIMIT" --note "$note" $GPU_ARGS)
rm -f save_best.state.pth
python train.py --pretrain none --lm 0 --item gpt-scratch-lm0 "${common[@]}"
rm -f save_best.state.pth
python train.py --pretrain save_pretrain.pth --lm 0 --item gpt-pre-lm0 "${common[@]}"
rm -f save_best.state.pth
python train.py --pretrain save_pretrain.pth --lm 0.5 --item gpt-pre-lm0.5 "${common[@]}"
python -m common.baseline --train_limit "$TRAIN_LIMIT" --models gpt
python -m common.results gpt
