#!/usr/bin/env bash
# Continual pretraining on the GPUs of one node under DeepSpeed (ZeRO-3 unless the recipe says otherwise).
#   train/cpt.sh RECIPE.yaml [NUM_GPUS] [key=value overrides ...]
#   train/cpt.sh train/cpt_llama2_ko.yaml 8 micro_batch_size=2 --resume
set -euo pipefail
recipe=${1:?usage: train/cpt.sh RECIPE.yaml [NUM_GPUS] [overrides...]}
shift
ngpu=${1:-}
if [[ "$ngpu" =~ ^[0-9]+$ ]]; then shift; else ngpu=$(nvidia-smi -L | wc -l); fi
exec deepspeed --num_gpus "$ngpu" --module kolm.cli train cpt "$recipe" "$@"
