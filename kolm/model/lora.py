"""The peft LoRA config that kolm builds for the CPT ``lora`` stage and for ``kolm train sft`` / ``dpo``."""

from __future__ import annotations

from typing import Any

from kolm.errors import KolmError

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _last_name(model: Any, module: Any) -> str:
    return next(n for n, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def peft_lora_config(model: Any, *, r: int, alpha: float, dropout: float, target_modules: list[str],
                     token_ids: list[int]) -> Any:
    """peft LoraConfig for ``model``. Every target module must exist (``all-linear`` as the only entry: peft picks).
    ``token_ids`` (added tokens) get trainable rows in the input embeddings and, unless tied to them, the LM head
    (trl reads ``lm_head.weight``, which peft's trainable-tokens wrapper returns with the trained rows in)."""
    from peft import LoraConfig

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = sorted(set(target_modules) - names - {"all-linear"})
    if missing:
        raise KolmError(f"lora.target_modules: {missing} not found in the model; it has e.g. "
                        f"{sorted(n for n in names if n and not n.isdigit())[:20]}")
    trainable = None
    if token_ids:
        trainable = {_last_name(model, model.get_input_embeddings()): token_ids}
        out = model.get_output_embeddings()
        if out is not None and not model.config.get_text_config().tie_word_embeddings:
            trainable[_last_name(model, out)] = token_ids
    targets = "all-linear" if list(target_modules) == ["all-linear"] else list(target_modules)
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM", trainable_token_indices=trainable)
