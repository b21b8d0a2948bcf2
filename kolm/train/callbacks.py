"""The callbacks of ``kolm train cpt``, one job each, and the schema of ``metrics.jsonl``.

- :class:`MetricsJsonl` writes ``metrics.jsonl`` from the Trainer's log (the one metrics channel,
  :mod:`kolm.train.metrics`: TensorBoard and W&B get the same numbers through ``report_to``);
- :class:`kolm.train.online_eval.OnlineEval` evaluates bits per byte (shared with SFT/DPO);
- :class:`StopOnSignal` saves a checkpoint and stops after a stop request (:mod:`kolm.train.signals`);
- :class:`CheckpointCallback` marks a checkpoint complete once every rank has written it.

``metrics.jsonl`` in the run folder gets one JSON object per line (written by rank 0; training rows carry rank 0's
peak GPU memory when there is a GPU):

- ``{"kind": "train", "stage": "full", "stage_index": 1, "step": 120, "stage_step": 20, "loss": 2.31,
  "lr": 1e-4, "grad_norm": 0.9, "tokens_seen": 491520, "tokens_seen_by_lang": {"en": 98304, "ko": 393216}}``
  (``tokens_seen_by_lang`` is exact: it comes from the data folder's ``train_lang_tokens.npy``; a run with a teacher
  adds ``teacher_kd`` and ``teacher_chunk``, nats per label position before weighting, and ``loss_with_teacher``,
  the objective, while ``loss`` stays the data's cross-entropy: :mod:`kolm.train.teacher`)
- ``{"kind": "eval", "stage": ..., "stage_index": ..., "step": ..., "stage_step": ..., "tokens_seen": ...,
  "eval": {"ko": {"bpb": 1.21, "loss": 2.3, "nats": ..., "bytes": ..., "tokens": ..., "docs": ...}, "en": {...}}}``

``step`` counts optimizer steps across all stages; evaluation runs at the start of the first stage (step 0 is the
input model, the reference for forgetting), every ``eval.every`` steps and at the end of each stage, on the data
folder's validation splits and the recipe's ``eval.sets`` (:mod:`kolm.train.online_eval`). Each row comes from one
Trainer log call: TensorBoard and W&B show the same numbers under ``eval/{lang}_bpb`` (and ``_loss``, ``_nats``,
...), ``train/loss``, ``train/learning_rate``, ``train/grad_norm``, ``train/tokens_seen``,
``train/tokens_seen_{lang}``, at the same ``step``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kolm.train.metrics import TOKENS_SEEN, read_eval_logs, read_tokens_by_lang
from kolm.train.run_state import barrier, is_main, write_marker

GPU_KEYS = ("gpu_max_allocated_gib", "gpu_max_reserved_gib")
# a run with a teacher (kolm.train.teacher) also logs its terms (teacher_kd, teacher_chunk) and the objective
TEACHER_KEYS = ("loss_with_teacher",)


class MetricsJsonl(TrainerCallback):
    """Appends the Trainer's log calls to ``metrics.jsonl`` (rank 0): an ``eval`` row when the log holds
    evaluation results, a ``train`` row when it holds the training loss (both when it holds both, eval first)."""

    def __init__(self, path: Path, *, stage: str, stage_index: int, step_offset: int):
        self.path, self.stage, self.stage_index, self.step_offset = path, stage, stage_index, step_offset

    def rows(self, step: int, logs: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows one log call at stage step ``step`` becomes."""
        base: dict[str, Any] = {"stage": self.stage, "stage_index": self.stage_index, "step": self.step_offset + step,
                                "stage_step": step, "time": round(time.time(), 3)}
        if TOKENS_SEEN in logs:
            base[TOKENS_SEEN] = logs[TOKENS_SEEN]
        by_lang = read_tokens_by_lang(logs)
        if by_lang:
            base["tokens_seen_by_lang"] = by_lang
        out = []
        evals = read_eval_logs(logs)
        if evals:
            out.append({"kind": "eval", **base, "eval": evals})
        if "loss" in logs:
            out.append({"kind": "train", **base, "loss": logs["loss"], "lr": logs.get("learning_rate"),
                        "grad_norm": logs.get("grad_norm"),
                        **{k: logs[k] for k in logs if k in GPU_KEYS or k in TEACHER_KEYS or k.startswith("teacher_")}})
        return out

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        rows = self.rows(state.global_step, logs or {})
        if rows and is_main():
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(row) + "\n" for row in rows))


class StopOnSignal(TrainerCallback):
    """After a stop request on any rank (``signals.stop_requested()``, :class:`kolm.train.signals.StopSignals`), every
    rank saves a checkpoint at the end of the step and stops; ``stopped_by_signal`` tells the caller to exit."""

    def __init__(self, signals: Any):
        self.signals = signals
        self.stopped_by_signal = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.signals.stop_requested():
            self.stopped_by_signal = True
            control.should_save = True
            control.should_training_stop = True


class CheckpointCallback(TrainerCallback):
    """Marks a checkpoint complete once every rank has finished writing it (see :mod:`kolm.train.run_state`)."""

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        barrier()
        if is_main():
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_marker(ckpt, state.global_step)
        barrier()
