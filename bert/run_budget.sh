#!/usr/bin/env bash
# Reproduce this folder's README results table: see ../common/run_budget.sh for the budget variables.
# The defaults are the budget the table was made with: 41 min at one torch thread, after
# data.py (13 min with one worker); pretraining at 128 tokens, as BERT's first phase.
steps=300 batch=32 n_seq=128 lr=5e-4 warmup=30
finetune_runs() {
  finetune bert-scratch --pretrain none
  finetune bert-pre --pretrain save_pretrain.pth
}
source "$(dirname "$0")/../common/run_budget.sh"
