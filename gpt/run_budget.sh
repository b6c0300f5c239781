#!/usr/bin/env bash
# Reproduce this folder's README results table: see ../common/run_budget.sh for the budget variables.
exec bash "$(dirname "$0")/../common/run_budget.sh" gpt "$@"
