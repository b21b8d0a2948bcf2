#!/usr/bin/env bash
# Continual pretraining on several nodes: run this once, on the first node listed in the hostfile. The deepspeed
# launcher starts the ranks on every node over passwordless ssh; all nodes need the same environment and paths
# (a shared filesystem for the model, data and run folder).
#   train/cpt_multinode.sh train/hostfile RECIPE.yaml [overrides...]
set -euo pipefail
hostfile=${1:?usage: train/cpt_multinode.sh HOSTFILE RECIPE.yaml [overrides...]}
recipe=${2:?usage: train/cpt_multinode.sh HOSTFILE RECIPE.yaml [overrides...]}
shift 2
master=$(grep -v '^\s*#' "$hostfile" | awk 'NF {print $1; exit}')
exec deepspeed --hostfile "$hostfile" --master_addr "$master" --master_port "${MASTER_PORT:-29500}" \
    --module kolm.cli train cpt "$recipe" "$@"
