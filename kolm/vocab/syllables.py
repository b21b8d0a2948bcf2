"""Syllables first (``kolm vocab extend --mode syllables``): make whole Hangul syllables single tokens before
learning multi-syllable merges, so that small budgets (+256, +1,000) go where a byte-level base loses most.

A byte-level base (SmolLM2, GPT-2 style) spells most Hangul syllables as 2-3 tokens: a syllable is 3 UTF-8 bytes,
and the base's pieces are a lead byte (often glued to the word's leading space, `` \\xed``) and continuation bytes.
This module learns the merges that join the base pieces of each syllable, and only those, as a BPE confined to
**syllable cells**: the base pieces of a unit are cut wherever a piece starts a new character, and a cell that
holds exactly one Hangul character in two or more pieces is a candidate (``" 한"`` = `` \\xed`` + ``\\x95`` +
``\\x9c``). At each step the adjacent pair inside the cells that occurs most often in the corpus (so the merge
that saves the most tokens) is merged, provided its result

- forces Hangul (the safety predicate of :mod:`kolm.vocab.chars`: text without Hangul never meets it); a two-byte
  intermediate such as ``\\xed\\x95`` does (it can only start a syllable), two continuation bytes never do,
- is not a base token (then the extended tokenizer would emit that base id where the base emits other pieces, and
  expanding extended ids into base ids would no longer give the base tokenization),
- and is not excluded (pruned as unreachable in an earlier round).

Intermediates that many syllables share (the 64 syllables of a ``\\xed\\x95`` block) are frequent pairs, so they
are learned early and every syllable of the block then needs one more merge. Every merge counts toward the
budget, intermediates too.

How much of the budget goes to syllables (:func:`worth_keeping`): a syllable step is kept while it saves at least
as many tokens as the multi-syllable merge it would displace, estimated by the corpus counts of adjacent Hangul
pairs (:func:`pair_counts`). Without that rule the rare syllables took the whole of a +1,000 budget on SmolLM2 and
compressed held-out Korean less than merges alone (2.99 against 3.04 bytes per token; with it, 3.74). What is left
of the budget goes to the usual learner (:mod:`kolm.vocab.learn`), on units segmented by the base merges plus
these, so the syllable merges rank before every multi-syllable one.

A SentencePiece-family base has no partial characters: a syllable it lacks falls back to bytes and becomes a new
single-character token (:meth:`kolm.vocab.families.Family.char_counts`); in this mode those come first, by
frequency, by the same rule (a new character saves two byte pieces per occurrence) instead of the ``max_char_share``
cap. Its cells never have two pieces, so the syllable merges add nothing there.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from kolm.vocab.chars import HANGUL_RE
from kolm.vocab.families import Family


def syllable_cells(units: Counter, family: Family, model: Any) -> Counter:
    """The syllable cells of the counted units (:mod:`kolm.vocab.count`) as ``model`` (the base merges alone)
    segments them, with their corpus counts; cells of one piece or of more than one Hangul character are left out."""
    cells: Counter = Counter()
    info: dict[str, tuple[bytes, bool]] = {}  # piece -> (its bytes, whether it starts a character)
    for (unit, _), count in units.items():
        cell: list[str] = []
        raw: list[bytes] = []
        for piece in (t.value for t in model.tokenize(unit)):
            got = info.get(piece)
            if got is None:
                b = family.token_bytes(piece)
                got = info[piece] = b, not b or not 0x80 <= b[0] < 0xC0
            if got[1] and cell:
                _add(cells, cell, raw, count)
                cell, raw = [], []
            cell.append(piece)
            raw.append(got[0])
        _add(cells, cell, raw, count)
    return cells


def _add(cells: Counter, cell: list[str], raw: list[bytes], count: int) -> None:
    if len(cell) > 1 and len(HANGUL_RE.findall(b"".join(raw).decode("utf-8", errors="replace"))) == 1:
        cells[tuple(cell)] += count


def learn_cell_merges(cells: Counter, allowed: Callable[[str], bool], budget: int, min_frequency: int
                      ) -> list[tuple[tuple[str, str], int]]:
    """The merges, in order, of a BPE over ``cells`` whose results must pass ``allowed``, each with the tokens it
    saves (its count when it is made): at most ``budget`` of them, each seen at least ``min_frequency`` times.
    Ties go to the smaller pair (strings compared), so the result does not depend on the order of the cells."""
    words = [list(c) for c in cells]
    freq = list(cells.values())
    counts: Counter = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for pair in zip(w, w[1:], strict=False):
            counts[pair] += freq[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    banned: set[tuple[str, str]] = set()
    steps: list[tuple[tuple[str, str], int]] = []
    while heap and len(steps) < budget:
        neg, pair = heapq.heappop(heap)
        if -neg != counts.get(pair, 0) or pair in banned:
            continue  # stale entry (a fresher one is in the heap) or refused before
        if -neg < min_frequency:
            break
        result = pair[0] + pair[1]
        if not allowed(result):
            banned.add(pair)
            continue
        steps.append((pair, -neg))
        changed: set[tuple[str, str]] = set()
        for i in where.pop(pair):
            w, f = words[i], freq[i]
            for p in zip(w, w[1:], strict=False):
                counts[p] -= f
                changed.add(p)
            words[i] = w = _merge(w, pair, result)
            for p in zip(w, w[1:], strict=False):
                counts[p] += f
                where[p].add(i)
                changed.add(p)
        for p in changed:
            if counts[p] > 0 and p != pair:
                heapq.heappush(heap, (-counts[p], p))
        counts.pop(pair, None)
    return steps


def _merge(word: list[str], pair: tuple[str, str], result: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(result)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def pair_counts(units: Counter, family: Family) -> list[int]:
    """Corpus counts of adjacent character pairs inside the units that the multi-syllable merges would make once
    the syllables are whole tokens (two Hangul characters, or SentencePiece's ``▁`` and a Hangul character), largest
    first: an estimate of what the merges that a syllable step displaces would save."""
    out: Counter = Counter()
    for (unit, _), c in units.items():
        text = family.token_bytes(unit).decode("utf-8", errors="replace")
        for a, b in zip(text, text[1:], strict=False):
            if HANGUL_RE.match(b) and (a == "\u2581" or HANGUL_RE.match(a)):
                out[a + b] += c
    return sorted(out.values(), reverse=True)


def worth_keeping(saved: list[int], others: list[int], n: int) -> int:
    """How many of the first syllable steps (step k saves ``saved[k]`` tokens) are among the ``n`` steps that save
    the most, when the alternatives save ``others`` (largest first)."""
    k = j = 0
    for _ in range(n):
        if k < len(saved) and (j >= len(others) or saved[k] >= others[j]):
            k += 1
        else:
            j += 1
    return k
