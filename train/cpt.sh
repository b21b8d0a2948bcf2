#!/usr/bin/env bash
# Continual pretraining on the GPUs of one node under DeepSpeed (ZeRO-3 unless the recipe says otherwise).
#   train/cpt.sh RECIPE.yaml [NUM_GPUS] [key=value overrides ...]
#   train/cpt.sh train/cpt_llama2_ko.yaml 8 micro_batch_size=2 --resume
#   MASTER_PORT=29600 train/cpt.sh ...      # a second run on the same node
# Ctrl-C, SIGTERM or SIGHUP (to this script or its process group): every rank finishes its step and saves a checkpoint;
# the script waits for the ranks and exits with their status (130, 143, 129; continue with --resume). The launcher
# runs in a session of its own and the script signals the ranks itself, once: DeepSpeed's launch.py would forward
# the signal and then SIGKILL the ranks 30 s later, in the middle of a large checkpoint.
set -euo pipefail
recipe=${1:?usage: train/cpt.sh RECIPE.yaml [NUM_GPUS] [overrides...]}
shift
ngpu=${1:-}
if [[ "$ngpu" =~ ^[0-9]+$ ]]; then shift; else ngpu=$(nvidia-smi -L | wc -l); fi

# the launcher's own INFO lines (its command, world info, "process N spawned/exits") only with -v or KOLM_VERBOSE=1
ds_log=(--log_level error)
for a in "$@"; do [[ "$a" == -v || "$a" == --verbose ]] && ds_log=(); done
[[ "${KOLM_VERBOSE:-}" == 1 ]] && ds_log=()

# a background job of a script is not a process-group leader, so setsid runs the launcher without forking: its pid
# is the session id, and every rank it starts is in that session
setsid deepspeed ${ds_log[@]+"${ds_log[@]}"} --num_gpus "$ngpu" --master_port "${MASTER_PORT:-29500}" --module kolm.cli train cpt \
    "$recipe" "$@" &
launcher=$!
sig=
forward() {  # the ranks are the session's `python -u -m kolm.cli` processes; the launchers run `--module kolm.cli`.
    # They get SIGTERM whatever arrived: they inherit an ignored SIGINT from a launcher started in the background.
    sig=$1
    echo "train/cpt.sh: SIG$1: asking the ranks to checkpoint and stop" >&2
    pkill -TERM -s "$launcher" -f -- ' -m kolm\.cli( |$)' || true
}
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
while kill -0 "$launcher" 2>/dev/null; do wait "$launcher" || true; done  # a trapped signal interrupts `wait`
status=0
wait "$launcher" || status=$?  # bash keeps the status of a finished background job
while pgrep -s "$launcher" >/dev/null; do sleep 1; done  # ranks outlive a launcher that was killed on its own
# stopped as asked: report the signal that arrived (the launcher's own status can be another rank's, e.g. -6 = 250
# from a rank aborted in teardown after the checkpoint was complete; a clean finish stays 0)
case "$sig" in
    INT) [ "$status" -eq 0 ] || status=130 ;;
    TERM) [ "$status" -eq 0 ] || status=143 ;;
    HUP) [ "$status" -eq 0 ] || status=129 ;;
esac
exit "$status"
