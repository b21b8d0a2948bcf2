"""Online evaluation during training: bits per byte per language on held-out documents, for CPT, SFT and DPO.

An evaluation set is whole documents of one language, tokenized with the model's tokenizer: a file set of the
recipe's ``eval.sets`` (:func:`read_eval_sets`, read like ``kolm eval --text``: ``.txt``/``.jsonl``/``.parquet``,
NFC, the first ``eval.max_docs``) or, for ``kolm train cpt``, a validation split of the data folder
(:func:`cpt_eval_sets`; a language in ``eval.sets`` uses its set). Sets are read and checked before training
starts: a missing or empty file, or one without documents, is a one-line error.

:class:`OnlineEval` scores every set with :func:`kolm.eval.bpb.score_documents` (whole documents from BOS,
overlapping windows for long ones; collective under ZeRO-3) at the start of training, every ``eval.every`` steps
and at the end, and sends the numbers through the trainer's metric channel (:mod:`kolm.train.metrics`), so
``metrics.jsonl``, ``train_log.json``, TensorBoard and W&B all get them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from kolm.errors import KolmError
from kolm.train.config import CptEvalConfig, OnlineEvalConfig
from kolm.train.metrics import MetricChannel, eval_logs


@dataclass
class EvalSet:
    """The documents of one language, tokenized (no BOS/EOS), with their UTF-8 size and where they came from."""

    lang: str
    input_ids: list[list[int]]
    n_bytes: int
    source: str

    def describe(self) -> str:
        return f"{self.lang} ({len(self.input_ids)} docs, {self.source})"


def read_eval_sets(cfg: OnlineEvalConfig, tokenizer: Any) -> list[EvalSet]:
    """The recipe's ``eval.sets``, read, checked and tokenized with ``tokenizer`` (a Hugging Face tokenizer or a
    ``tokenizers.Tokenizer``); empty when the evaluation is off or has no sets."""
    from kolm.eval.bpb import tokenize_documents
    from kolm.io.corpus import read_documents

    out = []
    for lang, files in cfg.sets.items() if cfg.every > 0 else ():
        try:
            texts = read_documents(files, cfg.text_field, cfg.max_docs, cfg.nfc).texts
        except KolmError as e:
            raise KolmError(f"eval.sets.{lang}: {e}") from None
        out.append(EvalSet(lang, tokenize_documents(tokenizer, texts), sum(len(t.encode("utf-8")) for t in texts),
                           "eval.sets " + ", ".join(os.path.basename(f) for f in files)))
    return out


def cpt_eval_sets(cfg: CptEvalConfig, data: Any, tokenizer: Any) -> list[EvalSet]:
    """The sets ``kolm train cpt`` evaluates on: the data folder's validation splits (``eval.splits``), in the
    manifest's order, with a language in ``eval.sets`` scored on its set instead, then the other sets. Prints one
    line saying which (rank 0)."""
    sets = {s.lang: s for s in read_eval_sets(cfg, tokenizer)}
    out = []
    for lang in data.manifest.languages if cfg.every > 0 and cfg.splits else ():
        if lang in sets:
            sets[lang].source += ", not the data's validation split"
            out.append(sets.pop(lang))
            continue
        try:
            split = data.validation(lang, cfg.max_docs)
        except KolmError as e:
            raise KolmError(f"{e} (or evaluate {lang} on a file: eval.sets.{lang}=FILE)") from None
        if not split.input_ids:
            raise KolmError(f"data: the validation split for {lang!r} has no input_ids column: {split.path}")
        out.append(EvalSet(lang, split.input_ids, split.n_bytes, "validation split"))
    out += sets.values()
    if out and int(os.environ.get("RANK", "0")) == 0:
        print(f"kolm train cpt: bits per byte every {cfg.every} steps on {'; '.join(s.describe() for s in out)}",
              flush=True)
    return out


class OnlineEval(TrainerCallback):
    """Bits per byte of every set at the start (``at_start``),
    every ``every`` steps and at the last step, recorded in the trainer's metric channel with a log forced at that
    step. Runs on every rank (the forward passes are collective under ZeRO-3)."""

    def __init__(self, trainer: Any, sets: list[EvalSet], *, every: int, prefix_id: int, max_length: int,
                 stride: int | None, batch_size: int, at_start: bool = True):
        if not isinstance(trainer, MetricChannel):
            raise TypeError("OnlineEval needs a trainer with kolm's metric channel (kolm.train.metrics)")
        self.trainer, self.sets, self.every, self.at_start = trainer, sets, every, at_start
        self.prefix_id, self.max_length, self.stride, self.batch_size = prefix_id, max_length, stride, batch_size

    def evaluate(self, model: Any) -> dict[str, dict[str, float]]:
        """``{lang: BpbResult.as_dict()}`` of ``model`` on every set."""
        from kolm.eval.bpb import score_documents

        with _plain_forward(model):
            out = {s.lang: score_documents(model, s.input_ids, s.n_bytes, self.prefix_id, max_length=self.max_length,
                                           stride=self.stride, batch_size=self.batch_size).as_dict()
                   for s in self.sets}
        _forget_zero3_trace(self.trainer)
        return out

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.at_start:  # no training log at step 0: log the evaluation on its own
            self.trainer.record_metrics(eval_logs(self.evaluate(model)))
            self.trainer.log({})

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        step = state.global_step
        if step % self.every == 0 or step == state.max_steps:
            self.trainer.record_metrics(eval_logs(self.evaluate(model)))
            control.should_log = True  # logged now with this step's training numbers, logging step or not


@contextmanager
def _plain_forward(model: Any) -> Iterator[None]:
    """Evaluate in the weights' own precision. Under mixed precision (bf16 autocast) accelerate replaces the model's
    ``forward`` by one that runs under autocast and keeps the plain one as ``_original_forward``; an outer
    ``autocast(enabled=False)`` cannot undo an inner one, so the plain forward is swapped in while scoring. Online
    bits per byte then equal what ``kolm eval`` scores (bf16 autocast moves SmolLM2's by up to 0.15%)."""
    plain = getattr(model, "_original_forward", None)
    if plain is None:
        yield
        return
    wrapped = model.forward
    model.forward = plain
    try:
        yield
    finally:
        model.forward = wrapped


def _forget_zero3_trace(trainer: Any) -> None:
    """Under ZeRO-3, release every parameter the evaluation gathered and drop the module order DeepSpeed recorded
    from its forward passes, so the next training step records its own. Otherwise that step prefetches in the
    evaluation's order, e.g. the ``lm_head`` that trl's fused loss gathers by hand, and DeepSpeed fails with "Cannot
    partition a param in flight". (``_invalidate_trace`` is what DeepSpeed itself calls when a forward pass leaves
    the recorded order; it has no public name.)"""
    engine = getattr(trainer, "deepspeed", None)
    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
    if offload is None:
        return
    offload.empty_partition_cache()
    coordinator = offload.get_param_coordinator()
    if not coordinator.is_invalid_trace():
        coordinator._invalidate_trace()


def add_online_eval(trainer: Any, sets: list[EvalSet], cfg: OnlineEvalConfig, prefix_id: int, max_length: int,
                    *, at_start: bool = True) -> None:
    """Add :class:`OnlineEval` to ``trainer`` when there is something to evaluate."""
    if sets and cfg.every > 0:
        trainer.add_callback(OnlineEval(trainer, sets, every=cfg.every, prefix_id=prefix_id, max_length=max_length,
                                        stride=cfg.stride, batch_size=cfg.batch_size, at_start=at_start))
