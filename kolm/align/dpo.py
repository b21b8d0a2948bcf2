"""``kolm train dpo RECIPE.yaml``: preference tuning with trl's DPOTrainer and a LoRA adapter.

    kolm train dpo train/dpo_ko.yaml [model=../out/my-sft-merged] [beta=0.1] [loss_type=ipo] [--dry-run]
    deepspeed --num_gpus 8 -m kolm.cli train dpo train/dpo_ko.yaml deepspeed=zero3

Usually MODEL is the SFT model made standalone by ``kolm merge-lora``. The reference policy is that same model with
the adapter disabled (trl does this for peft models), so no second copy is held in memory. Rows with
``prompt``/``chosen``/``rejected`` (strings or chat messages) are validated and counted as in ``kolm train sft``
(:mod:`kolm.align.data`) and rendered with the chat template (``auto``: the tokenizer's, else kolm's default),
checked as for SFT: the prompt rendered with the generation prompt must be a prefix of prompt + answer, which is
how trl splits each row (:mod:`kolm.align.chat`). Output: the adapter and the same records as ``kolm train sft``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kolm import console
from kolm.align.chat import pick_chat_template
from kolm.align.config import AlignConfig, TrainSection
from kolm.align.data import dpo_examples
from kolm.align.model import (
    expose_head_bias,
    prepare,
    record_data,
    template_path,
    train_and_save,
    trl_config,
    wrap_model,
)
from kolm.config import ConfigError, field
from kolm.eval.bpb import prefix_token
from kolm.train.metrics import with_metric_channel

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DpoTrainSection(TrainSection):
    """Optimisation for DPO: as for SFT, with a smaller default learning rate."""

    learning_rate: float = field(5e-6, help="peak learning rate")


@dataclass
class DpoConfig(AlignConfig):
    """Options of ``kolm train dpo``."""

    train: DpoTrainSection = field(default_factory=DpoTrainSection, help="optimisation")
    beta: float = field(0.1, help="strength of the pull towards the reference model (trl's beta)")
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"],
                                 help=f"trl DPO loss(es), combined if several: {', '.join(LOSS_TYPES)}")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ConfigError(f"beta: must be > 0, got {self.beta}")
        bad = sorted(set(self.loss_type) - set(LOSS_TYPES))
        if bad or not self.loss_type:
            raise ConfigError(f"loss_type: {bad or 'empty'}; known: {list(LOSS_TYPES)}")


def build_trainer(cfg: DpoConfig, callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Check the recipe and the chat template, validate the data, load and check the model, and return trl's
    DPOTrainer (not yet trained) and run info; ``callbacks`` as for ``kolm train sft``."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from kolm.train.online_eval import add_online_eval, read_eval_sets

    model_dir, tok_dir, tokenizer, bf16 = prepare(cfg, cfg.train)
    args = trl_config(DPOConfig, cfg, cfg.train, bf16, max_length=cfg.data.max_length, beta=cfg.beta,
                      loss_type=list(cfg.loss_type))
    template = pick_chat_template(tokenizer, cfg.chat_template, template_path(cfg))
    eval_sets = read_eval_sets(cfg.eval, tokenizer)  # checked (and tokenized) before the training data is read
    rows, report = dpo_examples(cfg.data.train, tokenizer, template, cfg.data.max_length, split=cfg.data.split,
                                strict=cfg.data.strict, max_rows=cfg.data.max_rows)
    record_data(cfg, report)
    model, peft_config, info = wrap_model(cfg, cfg.lora, model_dir, tok_dir, tokenizer, bf16)
    tokenizer.chat_template = template.text  # trl renders the rows with it when the trainer is built
    trainer = with_metric_channel(DPOTrainer)(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                              processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    tokenizer.chat_template = template.saved  # saved with the adapter
    add_online_eval(trainer, eval_sets, cfg.eval, prefix_token(tokenizer), cfg.data.max_length)
    expose_head_bias(trainer.model)
    console.trainer_output(trainer, "kolm train dpo")
    info.update(kind="dpo", chat_template=template.source, assistant_tokens=template.masks, data=report.to_dict())
    return trainer, info


def run(cfg: DpoConfig, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """``kolm train dpo``: train the adapter and save it (see the module docstring)."""
    trainer, info = build_trainer(cfg, callbacks)
    return train_and_save(trainer, cfg, info)
