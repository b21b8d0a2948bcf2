"""What trains in each stage of ``kolm train cpt``.

- ``embeddings``: only the rows of the *added* tokens in the input embeddings and the LM head. Every other
  parameter is frozen (``requires_grad=False``). The old rows share a tensor with the new ones, so their
  gradient is zeroed by a tensor hook before it is accumulated (this also works under ZeRO-3, where the hook
  runs before DeepSpeed's reduce), and the stage runs with weight decay 0: AdamW's decoupled decay would
  otherwise shrink the old rows even with a zero gradient. Zero gradient + zero decay = an update of exactly 0,
  so the old rows stay bit-identical.
- ``full``: every parameter.
- ``lora``: peft LoRA adapters on attention/MLP, plus (``lora.train_new_embeddings``) the added tokens' rows via
  peft's ``trainable_token_indices``; at the end the adapters are merged into a plain model.
"""

from __future__ import annotations

from typing import Any

from kolm.errors import KolmError


def embedding_params(model: Any) -> list[Any]:
    """The input embedding and the LM head weights (one tensor when they are tied)."""
    out = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not out[0]:
        out.append(head.weight)
    return out


def setup_embeddings_stage(model: Any, new_token_start: int) -> list[Any]:
    """Freeze everything but the added rows; returns the hook handles (remove them after training)."""
    import torch

    rows = _rows(model)
    if not 0 < new_token_start < rows:
        raise KolmError(f"embeddings stage: the model has {rows} embedding rows and the added tokens start at "
                        f"{new_token_start}: there are no new rows to train (did you run `kolm model resize`?)")
    for p in model.parameters():
        p.requires_grad_(False)
    handles = []
    for w in embedding_params(model):
        w.requires_grad_(True)

        def mask_old_rows(grad: torch.Tensor, start: int = new_token_start) -> torch.Tensor:
            grad = grad.clone()
            grad[:start] = 0
            return grad

        handles.append(w.register_hook(mask_old_rows))
    return handles


def _rows(model: Any) -> int:
    w = model.get_input_embeddings().weight
    return int(getattr(w, "ds_shape", w.shape)[0])


def setup_full_stage(model: Any) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def setup_lora_stage(model: Any, lora: Any, new_token_start: int | None, seed: int) -> Any:
    """Wrap ``model`` with peft LoRA (and trainable added-token rows); returns the PeftModel."""
    import torch
    from peft import get_peft_model

    from kolm.model.lora import peft_lora_config

    torch.manual_seed(seed)
    rows = _rows(model)
    ids: list[int] = []
    if lora.train_new_embeddings and new_token_start is not None and new_token_start < rows:
        ids = list(range(new_token_start, rows))
    cfg = peft_lora_config(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                           target_modules=lora.target_modules, token_ids=ids)
    return get_peft_model(model, cfg)
