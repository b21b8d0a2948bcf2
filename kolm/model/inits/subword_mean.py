"""``subword-mean``: a new row is the mean of the base rows of the pieces the base tokenizer cuts the token into.

The pieces come from ``extension.json`` (``kolm vocab extend`` lists them) or the base BPE model. The LM head gets
the mean of the head rows of the same pieces, so a new token's logit starts at the mean of its pieces' logits.
Rows without pieces (padding rows past the tokenizer) get the plain mean of the base rows.
"""

from __future__ import annotations

from typing import Any

from kolm.model.inits.base import EmbeddingInit, InitInputs, register


def piece_means(old_w: Any, old_b: Any, rows: list[int], plan: Any) -> tuple[Any, Any, list[int]]:
    """(rows x dim float32 means, bias means or None, number of pieces of each row that had pieces)."""
    import torch

    f32 = torch.float32
    w = old_w[: plan.n_base].mean(0, dtype=f32)[None].repeat(len(rows), 1)
    b = None if old_b is None else old_b[: plan.n_base].mean(dtype=f32).repeat(len(rows))
    n_pieces = []
    for r, i in enumerate(rows):
        ids = plan.pieces.get(i)
        if ids:
            w[r] = old_w[ids].mean(0, dtype=f32)
            if b is not None:
                b[r] = old_b[ids].mean(dtype=f32)
            n_pieces.append(len(ids))
    return w, b, n_pieces


@register
class SubwordMean(EmbeddingInit):
    name = "subword-mean"

    def rows(self, model: Any, old_w: Any, old_b: Any, rows: list[int], inputs: InitInputs,
             kind: str) -> tuple[Any, Any, dict[str, float]]:
        w, b, n = piece_means(old_w, old_b, rows, inputs.plan)
        return w, b, {"rows_from_pieces": len(n), "mean_pieces": round(sum(n) / max(len(n), 1), 3)}
