"""``kolm train sft RECIPE.yaml``: LoRA instruction tuning with trl's SFTTrainer.

    kolm train sft train/sft_ko.yaml [model=../out/my-model] [lora.r=32] [data.strict=true] [--dry-run]
    deepspeed --num_gpus 8 -m kolm.cli train sft train/sft_ko.yaml deepspeed=zero3

0. The recipe's trl arguments (``train:``, ``trl:``, ``report_to``) become trl's SFTConfig and the chat template is
   checked (:mod:`kolm.align.chat`: the model's own template, ChatML/Llama/Mistral/Gemma..., works without
   ``{% generation %}`` markers), before any data is read.
1. Rows are validated, converted to chat form and tokenized with the chat template (:mod:`kolm.align.data`); what
   was skipped or truncated, and why, goes to ``OUTPUT/data_report.json`` and is printed.
2. The model is loaded from safetensors (fp32 on CPU, bf16 where CUDA supports it; partitioned under ZeRO-3) and
   checked against the tokenizer: a tokenizer with more ids than embedding rows is refused.
3. trl's SFTTrainer trains a peft LoRA adapter (``lora.*``; ``lora.train_new_tokens`` also trains the embedding and
   LM-head rows of the tokens ``kolm vocab extend`` added). Labels are -100 outside the assistant turns, so only the
   assistant tokens (and the end-of-turn token) carry the loss; ``packing: true`` packs examples (trl's BFD).
4. OUTPUT receives the adapter, the tokenizer with the chat template, ``train_log.json``, ``kolm_config.yaml`` and
   ``kolm_adapter.json`` (the vocabulary and tokenizer fingerprint the adapter belongs to); ``kolm merge-lora``
   makes a standalone model. ``report_to: [tensorboard]`` also writes TensorBoard events to ``OUTPUT/runs/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kolm import console
from kolm.align.chat import pick_chat_template
from kolm.align.config import AlignConfig
from kolm.align.data import sft_examples
from kolm.align.model import (
    expose_head_bias,
    prepare,
    record_data,
    template_path,
    train_and_save,
    trl_config,
    wrap_model,
)
from kolm.config import field
from kolm.eval.bpb import prefix_token
from kolm.train.metrics import with_metric_channel


@dataclass
class SftConfig(AlignConfig):
    """Options of ``kolm train sft``."""

    packing: bool = field(False, help="pack several examples into each max_length sequence (trl's BFD packing)")
    assistant_only_loss: bool = field(True, help="loss on assistant tokens only (false: on every token)")


def build_trainer(cfg: SftConfig, callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Check the recipe and the chat template, validate the data, load and check the model, and return trl's
    SFTTrainer (not yet trained) and run info. ``callbacks`` (TrainerCallbacks) join the trainer: what they log
    goes through the Trainer's log to ``report_to`` and ``train_log.json``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from kolm.train.online_eval import add_online_eval, read_eval_sets

    model_dir, tok_dir, tokenizer, bf16 = prepare(cfg, cfg.train)
    # trl's arguments first: they are checked before the data, and with ZeRO-3 they make from_pretrained load the
    # model partitioned.
    args = trl_config(SFTConfig, cfg, cfg.train, bf16, max_length=cfg.data.max_length, packing=cfg.packing)
    template = pick_chat_template(tokenizer, cfg.chat_template, template_path(cfg), check=cfg.assistant_only_loss)
    eval_sets = read_eval_sets(cfg.eval, tokenizer)  # checked (and tokenized) before the training data is read
    examples, report = sft_examples(cfg.data.train, tokenizer, template, cfg.data.max_length, split=cfg.data.split,
                                    strict=cfg.data.strict, max_rows=cfg.data.max_rows,
                                    assistant_only=cfg.assistant_only_loss)
    record_data(cfg, report)
    model, peft_config, info = wrap_model(cfg, cfg.lora, model_dir, tok_dir, tokenizer, bf16)
    tokenizer.chat_template = template.saved  # saved with the adapter: inference renders prompts as training did
    # Already tokenized, with assistant_masks: trl builds the labels, truncates, drops rows without any, packs.
    trainer = with_metric_channel(SFTTrainer)(model=model, args=args, train_dataset=Dataset.from_list(examples),
                                              processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    add_online_eval(trainer, eval_sets, cfg.eval, prefix_token(tokenizer), cfg.data.max_length)
    expose_head_bias(trainer.model)
    console.trainer_output(trainer, "kolm train sft")
    info.update(kind="sft", chat_template=template.source, assistant_tokens=template.masks, data=report.to_dict())
    return trainer, info


def run(cfg: SftConfig, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """``kolm train sft``: train the adapter and save it (see the module docstring)."""
    trainer, info = build_trainer(cfg, callbacks)
    return train_and_save(trainer, cfg, info)
