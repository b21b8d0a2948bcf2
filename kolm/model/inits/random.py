"""``random``: the model's own ``_init_weights`` on the new rows (transformers' ``mean_resizing=False``), for
ablations."""

from __future__ import annotations

from typing import Any

from kolm.model.inits.base import EmbeddingInit, InitInputs, register


@register
class Random(EmbeddingInit):
    name = "random"

    def rows(self, model: Any, old_w: Any, old_b: Any, rows: list[int], inputs: InitInputs,
             kind: str) -> tuple[Any, Any, dict[str, float]]:
        from torch import nn

        tmp = (nn.Embedding(len(rows), old_w.shape[1]) if kind == "embedding"
               else nn.Linear(old_w.shape[1], len(rows), bias=old_b is not None))
        if hasattr(model, "_init_weights"):
            model._init_weights(tmp)
        return tmp.weight.detach().float(), None if old_b is None else tmp.bias.detach().float(), {}
