#!/usr/bin/env bash
# The whole CPT path on 2 CPU ranks with a tiny model: vocabulary extension, resize, data, ZeRO-3 CPT.
# Needs ../shared (or KOLM_SHARED). About 2-3 minutes on 2 cores (the first DeepSpeed run builds a small op).
#   train/cpu_smoke.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/cpu-smoke}
shared=${KOLM_SHARED:-../shared}
kolm vocab extend --base "$shared/tokenizers/llama2" --corpus "$shared/corpora/ko_dev.txt" \
    --num-new-tokens 500 --output "$out/tok" --overwrite
kolm model init --tokenizer "$shared/tokenizers/llama2" --output "$out/base" --overwrite
kolm model resize --model "$out/base" --tokenizer "$out/tok" --output "$out/model" --overwrite
# the recipe reads ../shared/corpora relative to itself
kolm data build data_recipes/ko_en_replay.yaml --output "$out/data" tokenizer="$out/tok" seq_len=128 --overwrite
DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --module kolm.cli train cpt train/cpt_tiny_cpu.yaml \
    model="$out/model" data="$out/data" output="$out/run" deepspeed=zero3
