"""Online evaluation and metrics of ``kolm train cpt``.

``metrics.jsonl`` in the run folder gets one JSON object per line (written by rank 0; training rows carry rank 0's
peak GPU memory when there is a GPU):

- ``{"kind": "train", "stage": "full", "stage_index": 1, "step": 120, "stage_step": 20, "loss": 2.31,
  "lr": 1e-4, "grad_norm": 0.9, "tokens_seen": 491520, "tokens_seen_by_lang": {"en": 98304, "ko": 393216}}``
  (``tokens_seen_by_lang`` is exact: it comes from the data folder's ``train_lang_tokens.npy``)
- ``{"kind": "eval", "stage": ..., "stage_index": ..., "step": ..., "stage_step": ..., "tokens_seen": ...,
  "eval": {"ko": {"bpb": 1.21, "loss": 2.3, "nats": ..., "bytes": ..., "tokens": ..., "docs": ...}, "en": {...}}}``

``step`` counts optimizer steps across all stages; evaluation runs at the start of each stage (step 0 of the
first stage is the input model, the reference for forgetting), every ``eval.every`` steps, and at the end.
The same numbers go to TensorBoard/W&B through the Trainer's ``report_to``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kolm.eval.bpb import score_documents
from kolm.train.run_state import barrier, is_main, write_marker


class MetricsCallback(TrainerCallback):
    def __init__(self, path: Path, *, stage_index: int, stage: Any, step_offset: int, tokens_per_step: int,
                 validation: dict[str, tuple[list[list[int]], int]], prefix_id: int, max_length: int, every: int,
                 batch_size: int, stride: int | None, signals: Any, resumed: bool,
                 lang_tokens: tuple[list[str], Any] | None = None, seq_offset: int = 0):
        self.path, self.stage_index, self.stage = path, stage_index, stage
        self.step_offset, self.tokens_per_step = step_offset, tokens_per_step
        self.validation, self.prefix_id, self.max_length = validation, prefix_id, max_length
        self.every, self.batch_size, self.stride = every, batch_size, stride
        self.signals, self.resumed = signals, resumed
        self.lang_tokens, self.seq_offset = lang_tokens, seq_offset
        self.stopped_by_signal = False
        self._last_eval = -1

    def _write(self, row: dict[str, Any]) -> None:
        if is_main():
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def _base(self, step: int) -> dict[str, Any]:
        row = {"stage": self.stage.name, "stage_index": self.stage_index, "step": self.step_offset + step,
               "stage_step": step, "tokens_seen": (self.step_offset + step) * self.tokens_per_step,
               "time": round(time.time(), 3)}
        if self.lang_tokens is not None:
            row["tokens_seen_by_lang"] = self._by_lang(self.seq_offset + step * self.seqs_per_step)
        return row

    @property
    def seqs_per_step(self) -> int:
        return self.tokens_per_step // self.max_length

    def _by_lang(self, consumed: int) -> dict[str, int]:
        """Exact tokens per language in the first ``consumed`` sequences (wrapping into later epochs)."""
        langs, cum = self.lang_tokens  # type: ignore[misc]
        n = len(cum) - 1
        full, rem = divmod(consumed, n)
        return {lang: int(full * cum[n][j] + cum[rem][j]) for j, lang in enumerate(langs)}

    def evaluate(self, model: Any, step: int) -> dict[str, Any]:
        res = {lang: score_documents(model, docs, n_bytes, self.prefix_id, max_length=self.max_length,
                                     stride=self.stride, batch_size=self.batch_size).as_dict()
               for lang, (docs, n_bytes) in self.validation.items()}
        self._last_eval = step
        self._write({"kind": "eval", **self._base(step), "eval": res})
        return res

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        # the first stage's step 0 is the input model (the forgetting reference); later stages start where the
        # previous one ended, which was evaluated already
        if self.validation and self.every > 0 and not self.resumed and self.stage_index == 0:
            self.evaluate(model, 0)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        step = state.global_step
        if self.validation and self.every > 0 and (step % self.every == 0 or step == state.max_steps):
            self.evaluate(model, step)
        if self.signals.stop_requested():
            self.stopped_by_signal = True
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        if "loss" not in logs:
            return
        row = {"kind": "train", **self._base(state.global_step), "loss": logs["loss"],
               "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
        row.update(_gpu_memory())
        self._write(row)


def _gpu_memory() -> dict[str, float]:
    """Peak GPU memory of this process so far (GiB, allocated by tensors and reserved by the allocator)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
            "gpu_max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)}


class CheckpointCallback(TrainerCallback):
    """Marks a checkpoint complete once every rank has finished writing it (see :mod:`kolm.train.run_state`)."""

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        barrier()
        if is_main():
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_marker(ckpt, state.global_step)
        barrier()
