"""Tokenizer families ``kolm vocab extend`` can extend: one class per family, found by reading tokenizer.json.

A family says how the base BPE sees text and what its vocabulary entries mean:

- how it **detects** itself from ``tokenizer.json`` (:meth:`Family.detect`),
- how it **cuts training units** out of documents (:meth:`Family.counter`; runs in worker processes),
- what a vocabulary entry **stands for** (:meth:`Family.token_bytes`, :meth:`Family.token_text`) and whether it
  **forces Hangul** (:meth:`Family.forces_hangul`, the predicate the safety argument rests on),
- how base pieces behave inside a unit when it is **segmented** (:meth:`Family.piece_info`,
  :meth:`Family.segmenting_model`) and which single characters it may add (:meth:`Family.char_counts`),
- which checks prove a new token **reachable** (:meth:`Family.unreachable`: by the model as it is and by its
  merges alone, which differ for BPE with ``ignore_merges``, e.g. Llama-3),
- which **extra files** it writes beside ``tokenizer.json`` (:meth:`Family.write_files`).

Adding a family is adding one module to this package that defines a :class:`Family` subclass decorated with
:func:`register`; :func:`detect` imports every module here and asks each class in turn. The ``name`` of a family
is what ``extension.json`` records (``"sentencepiece"``, ``"byte_level"``); later stages read it.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from kolm.errors import KolmError

UnitKey = tuple[str, tuple[int, ...]]  # (unit as the base BPE spells it, morpheme-boundary byte offsets inside it)

_REGISTRY: list[type[Family]] = []


class UnitCounter(Protocol):
    """Counts the units of one part of the corpus: ``add`` per batch of documents, ``units`` once at the end."""

    def add(self, docs: list[str], bounds: list[list[int]] | None) -> None: ...

    def units(self) -> Counter: ...


class Family:
    """One BPE tokenizer family. Instances hold plain data only, so they can be sent to worker processes."""

    name: ClassVar[str] = ""  # the `family` string in extension.json

    def __init__(self, tok_json: dict[str, Any]):
        model = tok_json.get("model") or {}
        self.vocab_size = len(model.get("vocab") or {})
        # BPE with ignore_merges (Llama-3) looks a whole pre-token up in the vocabulary before merging
        self.ignore_merges = bool(model.get("ignore_merges"))
        self._models: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------------------- detection

    @classmethod
    def detect(cls, tok_json: dict[str, Any], types: set[str], where: str) -> bool:
        """True if ``tok_json`` is of this family (``types``: component types of its normalizer and
        pre-tokenizer). Raise a KolmError naming ``where`` for a near miss this family cannot extend."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------- units

    def counter(self, morph: bool) -> UnitCounter:
        """A fresh counter of the Hangul-bearing training units of one part of the corpus; ``morph``: the
        batches come with morpheme-boundary offsets, which the units keep (see :mod:`.units`)."""
        raise NotImplementedError

    def check_units(self, docs: list[str]) -> tuple[int, int] | None:
        """(documents checked, documents whose units differ from the base tokenizer's own pre-tokenizer) when
        :meth:`counter` takes a shortcut that can be compared with it; None when there is nothing to check."""
        return None

    # ---------------------------------------------------------------------------------------------- tokens

    def token_bytes(self, token: str) -> bytes:
        """The raw text bytes a vocabulary entry stands for."""
        raise NotImplementedError

    def token_text(self, token: str) -> str:
        """Readable text of a vocabulary entry."""
        raise NotImplementedError

    def forces_hangul(self, token: str) -> bool:
        """True if every valid UTF-8 text in which ``token`` occurs contains a Hangul character."""
        raise NotImplementedError

    def piece_info(self, token: str) -> tuple[int, bool, bool]:
        """(bytes it stands for, whether it touches Hangul, whether it is a byte-fallback piece) of a base piece
        inside a Hangul-bearing unit; decides where training segments are cut."""
        raise NotImplementedError

    def char_counts(self, units: Counter, vocab: dict[str, int], exclude: frozenset[str]) -> Counter:
        """Candidate new single-character tokens with their corpus counts (none unless the family falls back to
        bytes for characters missing from its vocabulary)."""
        return Counter()

    # ---------------------------------------------------------------------------------------------- models

    def __getstate__(self) -> dict[str, Any]:  # Rust objects are rebuilt in each process
        return {**self.__dict__, "_models": {}}

    def segmenting_model(self, base: Any) -> Any:
        """The BPE model that segments units while learning: the base's merges *alone*.

        With ``ignore_merges`` the base model looks a whole unit up before merging, and some base tokens are
        reachable only that way. Learning on such a segment would build new merges on a token the merges never
        make, and the new token would appear only as a whole pre-token, never inside a longer one (nor in
        runtimes without ``ignore_merges``). Segmenting with the merges alone avoids that.
        """
        if not self.ignore_merges:
            return base.model
        if "segment" not in self._models:
            self._models["segment"] = merges_only(json.loads(base.to_str())).model
        return self._models["segment"]

    def unreachable(self, tok: Any, tokens: list[str], tok_json: dict[str, Any]) -> dict[str, list[str]]:
        """The ``tokens`` that the BPE model of ``tok`` (``tok_json``: its tokenizer.json) does not produce from
        their own string: as it is (``model``) and by its merges alone (``merges_only``; the same model unless
        it has ``ignore_merges``)."""
        def missing(model: Any) -> list[str]:
            return [t for t in tokens if [x.value for x in model.tokenize(t)] != [t]]

        as_is = missing(tok.model)
        model_json = tok_json.get("model") or {}
        return {"model": as_is,
                "merges_only": missing(merges_only(tok_json).model) if model_json.get("ignore_merges") else as_is}

    # ---------------------------------------------------------------------------------------------- files

    def write_files(self, folder: Path, src: OutputFiles, report: dict[str, Any]) -> list[str]:
        """Write the family's files beside tokenizer.json into ``folder`` (the output being built) and return their
        names; may add fields to ``report`` (extension.json). The generic families write none."""
        return []

    def files_summary(self, report: dict[str, Any]) -> str | None:
        """A clause about the family's files for the ``kolm vocab extend`` summary line (None: nothing to say)."""
        return None


@dataclass
class OutputFiles:
    """What a family's own output files are made from: the base tokenizer folder, the new tokenizer.json (and its
    ``tokenizers.Tokenizer``), the check sample to verify them on, and whether a verified difference is accepted."""

    base_folder: Path
    tok_json: dict[str, Any]
    tokenizer: Any
    sample: list[str]
    accept_mismatch: bool = False


def merges_only(tok_json: dict[str, Any]) -> Any:
    """A `tokenizers.Tokenizer` of ``tok_json`` whose BPE model applies its merges only (``ignore_merges`` off)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps({**tok_json, "model": {**tok_json["model"], "ignore_merges": False}}))


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make ``cls`` known to :func:`detect` (a family module calls it at import)."""
    if cls not in _REGISTRY:
        _REGISTRY.append(cls)
    return cls


def families() -> list[type[Family]]:
    """Every registered family (the modules of this package are imported on first use)."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return list(_REGISTRY)


def by_name(name: str) -> type[Family]:
    for cls in families():
        if cls.name == name:
            return cls
    raise KolmError(f"unknown tokenizer family {name!r} (known: {', '.join(c.name for c in families())})")


def _components(node: Any) -> list[dict]:
    if not isinstance(node, dict):
        return []
    out = [node]
    for k in ("normalizers", "pretokenizers", "pre_tokenizers", "decoders"):
        for sub in node.get(k) or []:
            out += _components(sub)
    return out


def components(tok_json: dict[str, Any]) -> list[dict]:
    """The normalizer and pre-tokenizer components of a tokenizer.json, flattened out of Sequences."""
    return _components(tok_json.get("normalizer")) + _components(tok_json.get("pre_tokenizer"))


def detect(tok_json: dict[str, Any], where: str = "tokenizer.json") -> Family:
    """The family of a tokenizer.json as an instance; refuse anything kolm cannot extend with a clear error."""
    model = tok_json.get("model") or {}
    mtype = model.get("type")
    if mtype != "BPE":
        raise KolmError(f"{where}: unsupported tokenizer family: model type {mtype!r}. kolm extends BPE tokenizers "
                        "only (SentencePiece-style BPE with byte fallback, e.g. Llama-2/Mistral/Yi/Gemma, or "
                        "byte-level BPE, e.g. Llama-3/Qwen); WordPiece and Unigram are not supported")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise KolmError(f"{where}: unsupported BPE variant with {key}={model[key]!r}")
    types = {p.get("type") for p in components(tok_json)}
    for cls in families():
        if cls.detect(tok_json, types, where):
            return cls(tok_json)
    raise KolmError(f"{where}: unsupported tokenizer family: a BPE model that no kolm family recognises "
                    f"({', '.join(c.name for c in families())}): neither a ByteLevel pre-tokenizer nor "
                    "SentencePiece-style `▁` spaces with byte fallback")
