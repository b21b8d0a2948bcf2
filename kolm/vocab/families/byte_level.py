"""GPT-2-style byte-level BPE (Llama-3, Qwen, GPT-NeoX): tokens are byte strings in GPT-2's byte-to-unicode alphabet.

Training units are the pieces of the tokenizer's own pre-tokenizer. The common shapes, a ``Split`` regex
(``Isolated``) followed by a ``ByteLevel`` step without its own regex (Llama-3, Qwen2) or a ``ByteLevel`` step
with the GPT-2 regex, are applied with the ``regex`` module on raw text (about 4x faster than the tokenizers'
Python API, which builds offsets and byte-level strings for every piece); every distinct Hangul-bearing piece is
turned into byte-level form once. Anything else goes through the tokenizer's pre-tokenizer itself.
:meth:`ByteLevelFamily.check_units` compares the two on the check sample, and ``extension.json`` reports it.

A token forces Hangul when its bytes do (:func:`kolm.vocab.chars.forces_hangul`): a byte-level token may hold
part of a character, so "contains Hangul" is decided on bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kolm.vocab.chars import bl_to_bytes, bytes_to_unicode, forces_hangul, has_hangul
from kolm.vocab.families import Family, register
from kolm.vocab.families.units import PieceCounter, Span, SpanCounter

# The regex HF's ByteLevel pre-tokenizer applies when `use_regex` is true (GPT-2's).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def fast_split(pre: Any) -> tuple[str, bool] | None:
    """(regex, add_prefix_space) when the pre-tokenizer is one regex split plus the byte-level mapping; else None."""
    if not isinstance(pre, dict):
        return None
    if pre.get("type") == "ByteLevel":
        return (GPT2_PATTERN, bool(pre.get("add_prefix_space"))) if pre.get("use_regex", True) else None
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, bl = steps
    pattern = (split.get("pattern") or {}).get("Regex")
    if (split.get("type") != "Split" or pattern is None or split.get("behavior") != "Isolated" or split.get("invert")
            or bl.get("type") != "ByteLevel" or bl.get("use_regex", True)):
        return None
    return pattern, bool(bl.get("add_prefix_space"))


def to_byte_level(text: str) -> str:
    m = bytes_to_unicode()
    return "".join(m[b] for b in text.encode("utf-8"))


@register
class ByteLevelFamily(Family):
    name = "byte_level"

    def __init__(self, tok_json: dict[str, Any]):
        super().__init__(tok_json)
        self.pre_json = tok_json.get("pre_tokenizer")
        self.fast = fast_split(self.pre_json)
        self._cache: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # compiled regexes and Rust objects are rebuilt in each process
        return {**super().__getstate__(), "_cache": {}}

    @classmethod
    def detect(cls, tok_json: dict[str, Any], types: set[str], where: str) -> bool:
        return "ByteLevel" in types

    # ------------------------------------------------------------------------------------------------ units

    def _regex(self) -> Any:
        if "regex" not in self._cache:
            import regex

            assert self.fast is not None
            # one capture group around the pattern: split() then returns the gaps and the matches, in order
            self._cache["regex"] = regex.compile(f"({self.fast[0]})")
        return self._cache["regex"]

    def _pre_tokenizer(self) -> Any:
        if "pre" not in self._cache:
            from tokenizers import Tokenizer

            self._cache["pre"] = Tokenizer.from_str(json.dumps({
                "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
                "pre_tokenizer": self.pre_json, "post_processor": None, "decoder": None,
                "model": {"type": "BPE", "vocab": {}, "merges": []}})).pre_tokenizer
        return self._cache["pre"]

    def _raw_pieces(self, doc: str) -> list[str]:
        """The text of the pre-tokenizer's pieces (with the added prefix space, if the tokenizer adds one)."""
        if self.fast[1] and not doc.startswith(" "):  # type: ignore[index]
            doc = " " + doc
        return [p for p in self._regex().split(doc) if p]

    def _spans(self, doc: str) -> Iterator[Span]:
        if self.fast is None:
            for piece, (s, e) in self._pre_tokenizer().pre_tokenize_str(doc):
                yield s, e, piece
            return
        pos = -1 if self.fast[1] and not doc.startswith(" ") else 0  # the added space sits before offset 0
        for p in self._raw_pieces(doc):
            yield max(pos, 0), pos + len(p), to_byte_level(p)
            pos += len(p)

    def counter(self, morph: bool) -> Any:
        if morph or self.fast is None:
            return SpanCounter(self._spans, lambda unit: len(bl_to_bytes(unit)))
        return PieceCounter(self._raw_pieces, to_byte_level)

    def check_units(self, docs: list[str]) -> tuple[int, int] | None:
        if self.fast is None:
            return None
        bad = 0
        for doc in docs:
            fast = Counter(to_byte_level(p) for p in self._raw_pieces(doc) if has_hangul(p))
            exact = Counter(p for p, (s, e) in self._pre_tokenizer().pre_tokenize_str(doc) if has_hangul(doc[s:e]))
            bad += fast != exact
        return len(docs), bad

    # ------------------------------------------------------------------------------------------------ tokens

    def token_bytes(self, token: str) -> bytes:
        return bl_to_bytes(token)

    def token_text(self, token: str) -> str:
        return bl_to_bytes(token).decode("utf-8", errors="replace")

    def forces_hangul(self, token: str) -> bool:
        return forces_hangul(bl_to_bytes(token))

    def piece_info(self, token: str) -> tuple[int, bool, bool]:
        # non-ASCII pieces inside a Hangul unit are (parts of) Hangul or its neighbours; the final forces-Hangul
        # filter decides what is kept, this only decides where training segments are cut
        b = bl_to_bytes(token)
        return len(b), any(x >= 0x80 for x in b), False
