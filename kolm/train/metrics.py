"""One metrics channel for kolm's trainers: every number goes through the HF Trainer's ``log``.

OLMo-core gives its trainer ``record_metric``: whatever a component records is reduced and handed, with the
trainer's own numbers, to every logger at once. The HF Trainer's equivalent is ``Trainer.log``, which appends to
``state.log_history`` and calls every callback's ``on_log``: TensorBoard, W&B and the other ``report_to``
loggers (the Trainer's own callbacks), ``metrics.jsonl`` (:class:`kolm.train.callbacks.MetricsJsonl`) and
``train_log.json`` (SFT/DPO) therefore all receive the same numbers. :class:`MetricChannel` adds the two things
the Trainer lacks, for kolm's trainers (``kolm train cpt``'s and trl's SFT/DPO trainers, mixed in by
:func:`with_metric_channel`):

- ``record_metrics(numbers)``: kept until the next ``log`` call and sent with it. The online evaluation
  (:mod:`kolm.train.online_eval`) records bits per byte and asks for a log at that step, so an evaluation at a
  step that is not a logging step is still logged, together with the training loss of that step;
- ``metric_sources``: functions ``(state, logs) -> numbers`` asked at every ``log`` call (the tokens seen per
  language of ``kolm train cpt``, :class:`TokenCounter`, and the peak GPU memory, :func:`gpu_memory`).

Names in the log, flat as the Trainer wants them (the loggers write ``eval_*`` as ``eval/*`` and the rest as
``train/*``): ``eval_{lang}_{bpb,loss,nats,bytes,tokens,docs}`` (:func:`eval_logs`, read back by
:func:`read_eval_logs`), ``tokens_seen``, ``tokens_seen_{lang}``, ``gpu_max_allocated_gib``,
``gpu_max_reserved_gib``, beside the Trainer's ``loss``, ``learning_rate``, ``grad_norm`` and ``epoch``.

A staged CPT run trains one Trainer per stage, each counting steps from 0. :func:`report_at_run_step` hands the
Trainer's loggers the run's step (the stage's offset added) so that TensorBoard and W&B draw one curve per number
across stages, at the steps ``metrics.jsonl`` records, with TensorBoard's events in one folder per run.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from kolm.config import ConfigError
from kolm.errors import KolmError

EVAL_FIELDS = ("bpb", "loss", "nats", "bytes", "tokens", "docs")  # per language, as kolm.eval.bpb.BpbResult
TOKENS_SEEN = "tokens_seen"
MetricSource = Callable[[Any, dict[str, Any]], dict[str, float]]


class MetricChannel:
    """Mixin for a transformers ``Trainer`` class (also trl's): ``record_metrics`` and ``metric_sources`` feed the
    Trainer's ``log`` (see the module docstring). Put it first in the bases: ``class T(MetricChannel, Trainer)``."""

    def __init__(self, *args: Any, metric_sources: list[MetricSource] | tuple = (), **kwargs: Any) -> None:
        self.metric_sources = list(metric_sources)
        self._recorded: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def record_metrics(self, metrics: dict[str, float]) -> None:
        """Send ``metrics`` with the next ``log`` call (the caller sets ``control.should_log`` or calls ``log``)."""
        self._recorded.update(metrics)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        for source in self.metric_sources:
            logs.update(source(self.state, logs))
        logs.update(self._recorded)
        self._recorded.clear()
        super().log(logs, *args, **kwargs)  # type: ignore[misc]


@functools.cache
def with_metric_channel(trainer_cls: type) -> type:
    """``trainer_cls`` (e.g. trl's SFTTrainer) with :class:`MetricChannel` mixed in."""
    if issubclass(trainer_cls, MetricChannel):
        return trainer_cls
    return type(trainer_cls.__name__, (MetricChannel, trainer_cls), {"__module__": trainer_cls.__module__,
                                                                        "__doc__": trainer_cls.__doc__})


def eval_logs(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{lang: BpbResult.as_dict()}`` as flat log entries ``eval_{lang}_{field}``."""
    return {f"eval_{lang}_{k}": r[k] for lang, r in results.items() for k in EVAL_FIELDS}


def read_eval_logs(logs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-language results in a log (the inverse of :func:`eval_logs`). A language counts only with its bpb:
    another ``eval_*`` number that happens to end in a field name (trl's ``eval_num_tokens``) is not one."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in logs.items():
        lang, sep, name = key.removeprefix("eval_").rpartition("_")
        if key.startswith("eval_") and sep and lang and name in EVAL_FIELDS:
            out.setdefault(lang, {})[name] = value
    return {lang: r for lang, r in out.items() if "bpb" in r}


def read_tokens_by_lang(logs: dict[str, Any]) -> dict[str, int]:
    """``tokens_seen_{lang}`` entries of a log as ``{lang: tokens}``."""
    prefix = TOKENS_SEEN + "_"
    return {k[len(prefix):]: v for k, v in logs.items() if k.startswith(prefix)}


class TokenCounter:
    """Tokens a ``kolm train cpt`` run has consumed after a step of a stage, counted from the run's start: in all
    (``tokens_seen``) and per language (``tokens_seen_{lang}``, exact, from the data folder's cumulative counts per
    packed sequence). The stage starts at sequence ``seq_offset`` of the train split (where the stages before it
    stopped) and ``step_offset`` steps into the run; the data wraps into later epochs."""

    def __init__(self, *, step_offset: int, tokens_per_step: int, seq_len: int, seq_offset: int,
                 lang_tokens: tuple[list[str], Any] | None):
        self.step_offset, self.tokens_per_step, self.seq_len = step_offset, tokens_per_step, seq_len
        self.seq_offset, self.lang_tokens = seq_offset, lang_tokens

    def at(self, step: int) -> dict[str, int]:
        """The counts after ``step`` optimizer steps of this stage."""
        out = {TOKENS_SEEN: (self.step_offset + step) * self.tokens_per_step}
        if self.lang_tokens is not None:
            langs, cum = self.lang_tokens
            n = len(cum) - 1
            full, rem = divmod(self.seq_offset + step * (self.tokens_per_step // self.seq_len), n)
            out.update({f"{TOKENS_SEEN}_{lang}": int(full * cum[n][j] + cum[rem][j]) for j, lang in enumerate(langs)})
        return out

    def __call__(self, state: Any, logs: dict[str, Any]) -> dict[str, int]:
        return self.at(state.global_step)


def gpu_memory(state: Any, logs: dict[str, Any]) -> dict[str, float]:
    """Peak GPU memory of this process so far (GiB, allocated by tensors and reserved by the allocator), with the
    training loss; nothing without a GPU."""
    import torch

    if "loss" not in logs or not torch.cuda.is_available():
        return {}
    return {"gpu_max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
            "gpu_max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)}


class AtRunStep:
    """One of the Trainer's logger callbacks (TensorBoard, W&B, ...) that files what it logs under the run's step
    (``offset`` + the stage's step) instead of the stage's. Only ``on_log`` sees the shifted step: checkpoint
    events keep the stage's (checkpoint folders are named by it). Every other attribute is the logger's own."""

    def __init__(self, inner: Any, offset: int):
        self.inner, self.offset = inner, offset

    def __getattr__(self, name: str) -> Any:  # only called for what AtRunStep itself lacks
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        shifted = copy.copy(state)
        shifted.global_step = state.global_step + self.offset
        return self.inner.on_log(args, shifted, control, **kwargs)


@functools.cache
def _at_run_step_class(logger_cls: type) -> type:
    """An :class:`AtRunStep` class per logger class (the Trainer warns about two callbacks of one class)."""
    return type(f"{logger_cls.__name__}AtRunStep", (AtRunStep,), {})


def report_at_run_step(trainer: Any, offset: int, tensorboard_dir: str | None) -> None:
    """Make the Trainer's ``report_to`` loggers report at the run's step (:class:`AtRunStep`) and write TensorBoard
    events to ``tensorboard_dir`` (one folder for every stage of a run; ``TENSORBOARD_LOGGING_DIR`` still wins).
    Call it before adding kolm's callbacks: the loggers must see ``on_train_begin`` first."""
    from transformers.integrations import TensorBoardCallback
    from transformers.integrations.integration_utils import get_reporting_integration_callbacks

    for cls in get_reporting_integration_callbacks(trainer.args.report_to):
        logger = trainer.pop_callback(cls)
        if logger is None:
            continue
        if isinstance(logger, TensorBoardCallback) and logger.logging_dir is None and tensorboard_dir:
            logger.logging_dir = tensorboard_dir
        trainer.add_callback(_at_run_step_class(cls)(logger, offset))


def report_to_arg(names: list[str]) -> list[str] | str:
    """``report_to`` as TrainingArguments takes it: the loggers, or ``"none"``."""
    return [n for n in names if n != "none"] or "none"


def check_report_to(names: list[str]) -> None:
    """Every logger in ``report_to`` is one the Trainer knows and is installed (else the Trainer fails late)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    for name in names:
        if name in ("none", "all"):  # the Trainer's own words for no logger and every installed one
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"report_to: unknown logger {name!r}; known: {sorted(INTEGRATION_TO_CALLBACK)}")
        if name not in get_available_reporting_integrations():
            raise KolmError(f"report_to: {name} is not installed (e.g. `pip install {name}`)")
