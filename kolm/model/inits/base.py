"""The interface of an embedding-init method (see :mod:`kolm.model.inits`) and the registry.

An init fills the new rows of one ``[vocab, dim]`` matrix (input embeddings or LM head) from the old rows
(:meth:`EmbeddingInit.rows`); this part also runs under ZeRO-3, on rank 0 inside a gathered parameter. An init
that needs the whole model (``uses_model = True``) then refines the new rows of the resized model in
:meth:`EmbeddingInit.refine`, in a single process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

REGISTRY: dict[str, type[EmbeddingInit]] = {}
# The wall-clock budget of a model-using init (distill: about 25 steps of SmolLM2-135M on 2 CPU cores; bench/init.py)
BUDGET_S = 280.0


@dataclass
class InitInputs:
    """Everything an init may use besides the weights (the model-using inits read ``corpus`` and the budget)."""

    plan: Any  # kolm.model.resize.ExtensionPlan: new ids, their base pieces
    seed: int = 0
    new_tokenizer: Any = None  # tokenizers.Tokenizer of the extended vocabulary
    base_tokenizer: Any = None  # tokenizers.Tokenizer of the base vocabulary
    corpus: list[str] = field(default_factory=list)  # corpus files (text the extension was learned on)
    budget_s: float = BUDGET_S  # wall-clock budget of a model-using init
    max_steps: int | None = None  # optional step cap of a model-using init
    options: dict[str, Any] = field(default_factory=dict)  # method-specific knobs (tests, benchmarks)


class EmbeddingInit:
    """Base class: subclasses set ``name`` and implement :meth:`rows` (and, for ``uses_model``, :meth:`refine`)."""

    name: ClassVar[str] = ""
    uses_model: ClassVar[bool] = False

    def rows(self, model: Any, old_w: Any, old_b: Any, rows: list[int], inputs: InitInputs,
             kind: str) -> tuple[Any, Any, dict[str, float]]:
        """float32 values for ``rows`` of one matrix (``kind``: "embedding" or "linear") and its bias, and stats."""
        raise NotImplementedError

    def refine(self, model: Any, inputs: InitInputs) -> dict[str, Any]:
        """Improve the new rows of the resized ``model`` in place; returns statistics. Model-free inits: no-op."""
        return {}


def register(cls: type[EmbeddingInit]) -> type[EmbeddingInit]:
    """Class decorator: make ``cls`` available as ``--init cls.name``."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"init class {cls.__name__}: empty or duplicate name {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls
