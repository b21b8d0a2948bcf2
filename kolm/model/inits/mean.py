"""``mean``: transformers' mean resizing: each new row is a sample of N(mean, 1e-9 * cov) of the old rows."""

from __future__ import annotations

from typing import Any

from kolm.model.inits.base import EmbeddingInit, InitInputs, register


def mean_resizing_rows(old: Any, k: int) -> Any:
    """k samples of N(mean, 1e-9 * cov) of the rows of ``old`` (float32), as transformers' ``mean_resizing``."""
    import torch
    from torch.distributions import constraints

    mean = old.mean(0)
    centered = old - mean
    cov = 1e-9 * (centered.T @ centered / old.shape[0])
    if constraints.positive_definite.check(cov).all():
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).sample((k,))
    return mean[None].repeat(k, 1)


@register
class Mean(EmbeddingInit):
    name = "mean"

    def rows(self, model: Any, old_w: Any, old_b: Any, rows: list[int], inputs: InitInputs,
             kind: str) -> tuple[Any, Any, dict[str, float]]:
        import torch

        w = mean_resizing_rows(old_w.to(torch.float32), len(rows))
        b = None if old_b is None else old_b.mean(dtype=torch.float32).repeat(len(rows))
        return w, b, {}
