"""Embedding-init methods for ``kolm model resize --init NAME``: one class per method, one file per class.

Every module in this package that defines a subclass of :class:`~kolm.model.inits.base.EmbeddingInit` with
``@register`` is found automatically: adding a method is adding a file (``kolm/model/inits/<name>.py``).

* ``subword-mean`` (:mod:`.subword_mean`): the mean of the base rows of the new token's base pieces.
* ``mean`` (:mod:`.mean`): transformers' mean resizing (a sample of N(mean, 1e-9 cov) of the old rows).
* ``random`` (:mod:`.random`): the model's own ``_init_weights`` (ablations).
* ``distill`` (:mod:`.distill`): subword-mean, then a short distillation of only the new rows against the base
  model's own predictions of the same text under the base tokenization (uses the model; one process).

    from kolm.model.inits import get_init, names
"""

from __future__ import annotations

import importlib
import pkgutil

from kolm.model.inits.base import BUDGET_S, REGISTRY, EmbeddingInit, InitInputs, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def names() -> list[str]:
    """Registered init names, in a stable order (the default first)."""
    return sorted(REGISTRY, key=lambda n: (n != "subword-mean", n))


def get_init(name: str) -> EmbeddingInit:
    """An instance of the init called ``name`` (KolmError naming the choices otherwise)."""
    from kolm.errors import KolmError

    if name not in REGISTRY:
        raise KolmError(f"init: {name!r} is not one of {names()}")
    return REGISTRY[name]()


__all__ = ["BUDGET_S", "EmbeddingInit", "InitInputs", "REGISTRY", "get_init", "names", "register"]
