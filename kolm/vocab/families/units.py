"""Unit counters shared by the tokenizer families: per-document spans with morpheme boundaries, and a counter of
raw pieces that are turned into units once per distinct piece.

A counter collects the Hangul-bearing training units of one part of the corpus (:meth:`add` per batch of
documents, :meth:`units` once at the end) as ``(unit, morpheme-boundary byte offsets inside the unit)`` keys, in
order of first appearance, so that merging the parts in corpus order reproduces a single pass over the corpus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from itertools import chain

from kolm.vocab.chars import HANGUL_RE, has_hangul

Span = tuple[int, int, str]  # (start, end) character offsets of a unit in its document, and the unit itself


class SpanCounter:
    """Units from a per-document span function; keeps the morpheme boundaries (byte offsets) inside each unit.

    ``spans(doc)`` gives every unit of ``doc`` with its character span; ``unit_bytes(unit)`` is how many text
    bytes the unit stands for (a unit may carry a prefix, e.g. SentencePiece's ``▁``, that the span does not).
    """

    def __init__(self, spans: Callable[[str], Iterable[Span]], unit_bytes: Callable[[str], int]):
        self.spans, self.unit_bytes = spans, unit_bytes
        self.counts: Counter = Counter()

    def add(self, docs: list[str], bounds: list[list[int]] | None) -> None:
        counts = self.counts
        for i, text in enumerate(docs):
            doc_bounds = bounds[i] if bounds is not None else ()
            for s, e, unit in self.spans(text):
                if not has_hangul(text[s:e]):
                    continue
                inner: tuple[int, ...] = ()
                if doc_bounds:
                    prefix = self.unit_bytes(unit) - len(text[s:e].encode())
                    inner = tuple(prefix + len(text[s:c].encode()) for c in doc_bounds if s < c < e)
                counts[(unit, inner)] += 1

    def units(self) -> Counter:
        return self.counts


class PieceCounter:
    """Units from raw text pieces: ``pieces(doc)`` cuts a document into the text of its units; each distinct
    Hangul-bearing piece becomes ``to_unit(piece)`` once, at the end (the hot loop is one C-level count)."""

    def __init__(self, pieces: Callable[[str], Iterable[str]], to_unit: Callable[[str], str]):
        self.pieces, self.to_unit = pieces, to_unit
        self.raw: Counter = Counter()

    def add(self, docs: list[str], bounds: list[list[int]] | None) -> None:
        if bounds is not None:
            raise ValueError("PieceCounter keeps no morpheme boundaries; use SpanCounter")
        self.raw.update(chain.from_iterable(map(self.pieces, docs)))

    def units(self) -> Counter:
        search = HANGUL_RE.search
        return Counter({(self.to_unit(p), ()): c for p, c in self.raw.items() if search(p)})
