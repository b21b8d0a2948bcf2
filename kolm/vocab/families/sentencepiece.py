"""SentencePiece-style BPE with byte fallback (Llama-1/2, Mistral/SOLAR, Yi, Gemma).

Spaces are written ``▁``; characters missing from the vocabulary fall back to ``<0xNN>`` byte pieces. Tokens are
Unicode strings, so a token forces Hangul exactly when it contains a Hangul character.

Training units are the space-separated words of a document, each with a leading ``▁``. Whether the *first* word
of a document gets one too depends on the tokenizer's dummy prefix, read from tokenizer.json: a ``Prepend("▁")``
normalizer (Llama-2's conversion) or a ``Metaspace`` pre-tokenizer with ``prepend_scheme`` ``always``/``first``
(or the legacy ``add_prefix_space: true``) add one; Gemma's ``Replace(" ", "▁")`` alone does not.

Hangul syllables the vocabulary lacks (they fall back to bytes) are candidate new single-character tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kolm.errors import KolmError
from kolm.vocab.chars import HANGUL_RE, has_hangul, is_hangul
from kolm.vocab.families import Family, OutputFiles, components, register
from kolm.vocab.families.units import Span, SpanCounter

_WORD_RE = re.compile(r"[^ ]+")  # SentencePiece-style BPE sees spaces as `▁` word starts
_SPACE = "▁"


def _is_byte_piece(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def dummy_prefix(tok_json: dict[str, Any]) -> bool:
    """Whether the tokenizer puts a ``▁`` before the first word of every text (SentencePiece's dummy prefix)."""
    for part in components(tok_json):
        if part.get("type") == "Prepend" and part.get("prepend") == _SPACE:
            return True
        if part.get("type") == "Metaspace":
            scheme = part.get("prepend_scheme")
            if scheme is not None:
                return scheme in ("always", "first")
            return bool(part.get("add_prefix_space", True))
    return False


class _WordCounter:
    """The fast unit counter: documents joined by a space and split on spaces (one C-level count per batch);
    ``▁`` is added once per distinct Hangul word at the end. Without a dummy prefix the first word of each
    document is counted apart, as the unit without ``▁``."""

    def __init__(self, dummy: bool):
        self.words: Counter = Counter()
        self.firsts: Counter | None = None if dummy else Counter()

    def add(self, docs: list[str], bounds: list[list[int]] | None) -> None:
        if bounds is not None:
            raise ValueError("the word counter keeps no morpheme boundaries; use SpanCounter")
        self.words.update(" ".join(docs).split(" "))
        if self.firsts is not None:
            self.firsts.update(d.split(" ", 1)[0] for d in docs)

    def units(self) -> Counter:
        out: Counter = Counter()
        search = HANGUL_RE.search
        firsts = self.firsts
        for w, c in self.words.items():
            if not w or not search(w):
                continue
            first = firsts.get(w, 0) if firsts is not None else 0
            if c > first:
                out[(_SPACE + w, ())] = c - first
            if first:
                out[(w, ())] = first
        return out


@register
class SentencePieceFamily(Family):
    name = "sentencepiece"

    def __init__(self, tok_json: dict[str, Any]):
        super().__init__(tok_json)
        self.dummy_prefix = dummy_prefix(tok_json)

    @classmethod
    def detect(cls, tok_json: dict[str, Any], types: set[str], where: str) -> bool:
        if "ByteLevel" in types:
            return False
        metaspace = "Metaspace" in types or any(
            p.get("type") == "Replace" and p.get("content") == _SPACE for p in components(tok_json))
        if not metaspace:
            return False
        if not (tok_json.get("model") or {}).get("byte_fallback"):
            raise KolmError(f"{where}: SentencePiece-style BPE without byte_fallback is not supported: characters "
                            "outside the vocabulary would become <unk> and could not round-trip")
        return True

    # ------------------------------------------------------------------------------------------------ units

    def counter(self, morph: bool) -> Any:
        return SpanCounter(self._spans, lambda unit: len(unit.encode())) if morph else _WordCounter(self.dummy_prefix)

    def _spans(self, doc: str) -> Iterator[Span]:
        for m in _WORD_RE.finditer(doc):
            s = m.start()
            yield s, m.end(), m.group() if s == 0 and not self.dummy_prefix else _SPACE + m.group()

    # ------------------------------------------------------------------------------------------------ tokens

    def token_bytes(self, token: str) -> bytes:
        """``▁`` stays as its UTF-8 bytes; a ``<0xNN>`` piece is that byte."""
        if _is_byte_piece(token):
            return bytes([int(token[3:5], 16)])
        return token.encode("utf-8")

    def token_text(self, token: str) -> str:
        return token.replace(_SPACE, " ")

    def forces_hangul(self, token: str) -> bool:
        return has_hangul(token)

    def piece_info(self, token: str) -> tuple[int, bool, bool]:
        return len(self.token_bytes(token)), has_hangul(token), _is_byte_piece(token)

    def char_counts(self, units: Counter, vocab: dict[str, int], exclude: frozenset[str]) -> Counter:
        counts: Counter = Counter()
        for (unit, _), c in units.items():
            for ch in unit:
                if is_hangul(ch) and ch not in vocab and ch not in exclude:
                    counts[ch] += c
        return counts

    # ------------------------------------------------------------------------------------------------ files

    def write_files(self, folder: Path, src: OutputFiles, report: dict[str, Any]) -> list[str]:
        """tokenizer.model, verified against tokenizer.json (:mod:`kolm.vocab.spm_model`): clients such as
        llama.cpp's converter read it, and without it they merge by piece order instead of by rank."""
        from kolm.vocab.spm_model import write_tokenizer_model

        report["tokenizer_model"] = write_tokenizer_model(src.base_folder, src.tok_json, folder, src.sample,
                                                          accept_mismatch=src.accept_mismatch,
                                                          tokenizer=src.tokenizer)
        return ["tokenizer.model"] if report["tokenizer_model"].get("written") else []

    def files_summary(self, report: dict[str, Any]) -> str | None:
        from kolm.vocab.spm_model import summary

        return summary(report["tokenizer_model"]) if "tokenizer_model" in report else None
