#!/usr/bin/env bash
# Continual pretraining on several nodes: run this once, on the first node listed in the hostfile. The deepspeed
# launcher starts the ranks on every node over passwordless ssh (pdsh); all nodes need the same environment and paths
# (a shared filesystem for the model, data and run folder). Without ssh (Slurm): train/cpt_slurm.sbatch.
#   train/cpt_multinode.sh train/hostfile RECIPE.yaml [overrides...]
# Ctrl-C or SIGTERM: the launcher signals the ranks on every node; they save a checkpoint at the end of the step and
# exit (continue with --resume). DeepSpeed's launch.py kills them 30 s after that, so a step plus a checkpoint must fit
# in 30 s here; torchrun (train/cpt_slurm.sbatch) waits as long as you tell it.
set -euo pipefail
hostfile=${1:?usage: train/cpt_multinode.sh HOSTFILE RECIPE.yaml [overrides...]}
recipe=${2:?usage: train/cpt_multinode.sh HOSTFILE RECIPE.yaml [overrides...]}
shift 2
master=$(grep -v '^\s*#' "$hostfile" | awk 'NF {print $1; exit}')
exec deepspeed --hostfile "$hostfile" --master_addr "$master" --master_port "${MASTER_PORT:-29500}" \
    --module kolm.cli train cpt "$recipe" "$@"
