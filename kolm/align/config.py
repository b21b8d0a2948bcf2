"""Config sections shared by ``kolm train sft`` and ``kolm train dpo``: data, LoRA, optimisation, online evaluation
(``eval``, the section of ``kolm train cpt``: :class:`kolm.train.config.OnlineEvalConfig`), and the top-level fields
both commands have (model, output, chat template, DeepSpeed, loggers, further trl arguments).

The ``train:`` section maps one to one onto trl's SFTConfig/DPOConfig (``kolm.align.model.TRAIN_TO_TRL``); ``trl:``
passes any other argument of those configs through (checked when the command starts, before any data is read).

``deepspeed`` takes the presets of ``kolm train cpt`` (``zero2``, ``zero3``, ``zero3_offload``: the JSON files in
``train/deepspeed/``, whose ``auto`` values the HF Trainer fills from the recipe) or a DeepSpeed JSON file. Launch
several ranks with the deepspeed launcher, e.g. ``deepspeed --num_gpus 8 -m kolm.cli train sft RECIPE.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from kolm.config import ConfigError, field
from kolm.model.lora import LLAMA_TARGETS
from kolm.train.config import DEEPSPEED_PRESETS, OnlineEvalConfig


@dataclass
class DataSection:
    """Training data: local files or hub datasets, validated row by row before training."""

    train: list[str] = field(default_factory=list, path=True, hub=True,
                             help="training files (.jsonl, .parquet; relative to the recipe) or hub dataset ids "
                                  "(online only)")
    split: str = field("train", help="split of hub datasets")
    max_length: int = field(1024, help="most tokens per example; longer examples are truncated at the end, rows "
                                       "whose prompt alone fills it are skipped (and counted)")
    strict: bool = field(False, help="stop at the first bad row with an error naming file and line, instead of "
                                     "skipping it and counting the reason")
    max_rows: int | None = field(None, help="use at most this many valid rows (quick runs)")

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError("data.train: at least one file or hub dataset id is required")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length: must be >= 8, got {self.max_length}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"data.max_rows: must be >= 1, got {self.max_rows}")


@dataclass
class LoraSection:
    """The peft LoRA adapter; optionally also the embedding rows of tokens added by ``kolm vocab extend``."""

    r: int = field(16, help="LoRA rank")
    alpha: float = field(32, help="LoRA alpha (scaling = alpha / r)")
    dropout: float = field(0.05, help="dropout on the LoRA input")
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS),
                                      help="module names that get adapters, or [all-linear]")
    train_new_tokens: bool = field(False, help="also train the input-embedding and LM-head rows of the added tokens "
                                               "(peft trainable_token_indices; ids from extension.json)")
    new_token_ids: list[int] = field(default_factory=list,
                                     help="ids whose rows train_new_tokens trains (default: the `added` ids of "
                                          "extension.json next to the model or tokenizer)")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r: must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha: must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: at least one module name is required")
        if "lm_head" in self.target_modules:
            raise ConfigError("lora.target_modules: lm_head cannot carry LoRA (trl computes log-probs from "
                              "lm_head.weight directly); use lora.train_new_tokens for new token rows")
        if self.new_token_ids and not self.train_new_tokens:
            raise ConfigError("lora.new_token_ids: set lora.train_new_tokens: true as well")
        if any(i < 0 for i in self.new_token_ids):
            raise ConfigError("lora.new_token_ids: ids must be >= 0")


@dataclass
class TrainSection:
    """Optimisation: trl's SFTConfig / DPOConfig fields (transformers TrainingArguments) under kolm's names."""

    learning_rate: float = field(2e-4, help="peak learning rate")
    epochs: float = field(1.0, help="passes over the data (ignored when max_steps > 0)")
    max_steps: int = field(-1, help="stop after this many optimizer steps (-1: use epochs)")
    batch_size: int = field(4, help="examples per device and micro-step")
    grad_accum: int = field(1, help="micro-steps per optimizer step")
    warmup: float = field(0.03, help="warmup steps (an int) or share of all steps (a float < 1)")
    scheduler: str = field("cosine", help="transformers lr_scheduler_type (cosine, linear, constant, ...)")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    max_grad_norm: float = field(1.0, help="gradient clipping")
    logging_steps: int = field(10, help="log every N steps")
    save_steps: int = field(0, help="write a checkpoint every N steps (0: only the final adapter)")
    gradient_checkpointing: bool = field(True, help="recompute activations in the backward pass (saves memory)")
    precision: Literal["auto", "fp32", "bf16"] = field(
        "auto", help="auto: bf16 where CUDA supports it, bf16 autocast on a CPU with AVX-512 BF16/AMX (not under "
                     "DeepSpeed), else fp32")
    seed: int = field(42, help="random seed (adapter init, data order)")

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"train.max_steps: must be -1 or > 0, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise ConfigError(f"train.epochs: must be > 0, got {self.epochs}")
        for name in ("batch_size", "grad_accum", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1")
        if self.warmup < 0 or self.save_steps < 0:
            raise ConfigError("train.warmup and train.save_steps: must be >= 0")


@dataclass
class AlignConfig:
    """Top-level fields of both ``kolm train sft`` and ``kolm train dpo``."""

    model: str = field(None, path=True, hub=True, help="model folder (safetensors weights) or hub id; e.g. the "
                                                        "output of `kolm model resize` after continual pretraining")
    output: str = field(None, path=True, help="output folder: the adapter, its tokenizer, checkpoints, reports")
    tokenizer: str | None = field(None, path=True, hub=True, help="tokenizer folder (default: the one in MODEL)")
    chat_template: str = field("auto", path=True, keywords=("auto", "default"),
                               help="auto (the tokenizer's own, else kolm's default), default (kolm's default, see "
                                    "kolm.align.data), or a .jinja file")
    deepspeed: str | None = field(None, path=True, keywords=DEEPSPEED_PRESETS,
                                  help=f"{' | '.join(DEEPSPEED_PRESETS)} (presets of `kolm train cpt`) or a DeepSpeed "
                                       "JSON file (relative to the recipe)")
    trust_remote_code: bool = field(False, help="allow custom model/tokenizer code from the hub (off by default)")
    overwrite: bool = field(False, help="write into an output folder that is not empty")
    report_to: list[str] = field(default_factory=list, help="loggers the Trainer reports to, e.g. [tensorboard] "
                                                            "(event files in OUTPUT/runs/) or [wandb]; none by "
                                                            "default (train_log.json is always written)")
    trl: dict[str, Any] = field(default_factory=dict, help="further arguments of trl's SFTConfig / DPOConfig, e.g. "
                                                           "{neftune_noise_alpha: 5, optim: adamw_torch_fused}; the "
                                                           "ones kolm sets from its own fields are refused")
    data: DataSection = field(default_factory=DataSection, help="training data")
    lora: LoraSection = field(default_factory=LoraSection, help="the LoRA adapter")
    train: TrainSection = field(default_factory=TrainSection, help="optimisation")
    eval: OnlineEvalConfig = field(default_factory=OnlineEvalConfig,
                                   help="online bits per byte on eval.sets ({ko: FILE, en: FILE}) at the start, "
                                        "every eval.every steps and at the end; off without sets")

    def __post_init__(self) -> None:
        for name in ("model", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")

    def deepspeed_config(self) -> dict[str, Any] | None:
        """The DeepSpeed config dict named by ``deepspeed`` (None: no DeepSpeed)."""
        from kolm.train.cpt import deepspeed_config

        return deepspeed_config(self.deepspeed)


def is_main_process() -> bool:
    """Rank 0 of a launcher-started job (or a plain single process)."""
    return int(os.environ.get("RANK", "0")) == 0
