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
- ``layers``: the input embeddings, the LM head and the decoder layers named in ``layers`` (Yamaguchi et al.
  2024, arXiv 2406.11477, train layers 0, 1, -2, -1 beside them); everything else frozen.

A stage may also train a **t+2 head** (``t2_head``; Yamaguchi et al.'s extra head): a copy of the LM head that
predicts the token after next from the same final hidden state, its cross-entropy added to the loss. It lives on
the model as ``kolm_t2_head`` while the stage trains (so checkpoints and resumes carry it) and is removed before the
stage's model is saved (:meth:`T2Head.drop`).
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


def setup_layers_stage(model: Any, layers: list[int]) -> None:
    """Train the input embeddings, the LM head and the decoder layers ``layers`` (negative: from the last)."""
    decoder = _decoder_layers(model)
    picked = sorted({i % len(decoder) for i in layers if -len(decoder) <= i < len(decoder)})
    if len(picked) != len(set(layers)):
        raise KolmError(f"layers stage: layers {layers} are not all in the model's {len(decoder)} decoder layers")
    for p in model.parameters():
        p.requires_grad_(False)
    for w in embedding_params(model):
        w.requires_grad_(True)
    for i in picked:
        for p in decoder[i].parameters():
            p.requires_grad_(True)


def _decoder_layers(model: Any) -> Any:
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise KolmError(f"layers stage: cannot find the decoder layers of {type(model).__name__} (model.layers)")
    return layers


T2_HEAD = "kolm_t2_head"


class T2Head:
    """The t+2 head of a stage: a trainable copy of the LM head attached as ``model.kolm_t2_head``, fed the final
    hidden states (caught by a hook on the final norm during the student's own forward pass)."""

    def __init__(self, model: Any):
        import copy

        import torch

        head = copy.deepcopy(model.get_output_embeddings())
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=True)
        setattr(model, T2_HEAD, head)
        self.model, self.head, self._h = model, head, None
        self._hook = final_norm(model).register_forward_hook(self._catch)

    def _catch(self, module: Any, args: Any, out: Any) -> None:
        self._h = out

    def loss(self, input_ids: Any) -> tuple[Any, int]:
        """Summed cross-entropy of the token after next at every position that has one, and the count."""
        import torch.nn.functional as F

        h, self._h = self._h, None
        if h is None:
            raise KolmError("t2_head: no hidden states were caught in the forward pass")
        logits = self.head(h[:, :-2]).float()
        target = input_ids[:, 2:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"), \
            target.numel()

    def drop(self) -> None:
        """Remove the head from the model (it is not part of the model that is saved)."""
        self._hook.remove()
        if hasattr(self.model, T2_HEAD):
            delattr(self.model, T2_HEAD)


def unwrapped(model: Any) -> Any:
    """The model a DeepSpeed engine wraps (the model itself when it is not wrapped)."""
    return getattr(model, "module", model)


def final_norm(model: Any) -> Any:
    """The module whose output is the final hidden state the LM head reads (Llama-family ``model.norm``)."""
    inner = unwrapped(model)
    base = getattr(inner, "model", None)
    norm = getattr(base, "norm", None)
    if norm is None:
        raise KolmError(f"cannot find the final norm of {type(inner).__name__} (expected model.norm, as in Llama, "
                        f"Mistral, Qwen, SmolLM)")
    return norm
