"""Korean morpheme boundaries from kiwipiepy, as character offsets into the original text.

``morpheme_boundaries(texts)`` analyses a batch of texts with Kiwi and returns, for each text, the sorted
offsets ``p`` (``0 < p < len(text)``) where one morpheme's surface ends and the next one's begins, so that
``split_at(text, bounds)`` cuts the *original* string into morpheme-sized pieces (``''.join`` gives it
back). Used by ``kolm vocab extend --morpheme-aware`` (no BPE merge may cross such a boundary) and by
``kolm vocab report`` (how well a tokenizer's boundaries line up with morphemes).

Details that matter:

* Only kiwi's *surface* spans (``token.start``, ``token.len``) are used, never the morpheme forms:
  ``했다`` is ``하/VV 었/EP 다/EF`` where ``하`` and ``었`` share the surface ``했``. A boundary is kept at
  ``p`` only where a span ends at ``p``, another starts at ``p`` and no span covers ``p`` from both sides,
  so nothing is ever placed inside a contracted syllable.
* Input that is not NFC (e.g. NFD jamo from macOS file names) is analysed in NFC, and the offsets are
  mapped back to the original string; offsets that fall inside a composed character are dropped.
* Texts without Hangul are not analysed (``[]``). Long texts are cut into chunks of at most
  ``MAX_CHUNK`` characters at newlines, sentence ends or spaces (a hard cut only if there is none), and
  the chunks of a whole batch go through Kiwi's multi-threaded batch API together.
* No boundary is placed before a combining mark, a Hangul vowel/final jamo or a variation selector, or
  next to a zero-width joiner, so a cut never splits a user-perceived character.

Example::

    >>> from kolm.vocab.morph import morpheme_boundaries, split_at
    >>> split_at("한국어를 배웠다", morpheme_boundaries(["한국어를 배웠다"])[0])
    ['한국어', '를 배웠', '다']
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from kolm.vocab.chars import HANGUL_RE, is_hangul  # noqa: F401 (re-exported)

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SENT_END_RE = re.compile(r"[.!?。！？][\"'”’)\]]*\s")
_SPACE_RE = re.compile(r"\s")

MAX_CHUNK = 2000  # characters per Kiwi call; Kiwi is linear but single-threaded within one text

_KIWI: Any = None
_KIWI_THREADS: int | None = None
_KIWI_LOCK = threading.Lock()


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def set_kiwi_threads(n: int | None) -> None:
    """Use ``n`` Kiwi threads in this process from now on (None: the default, one per core, at most 8); worker
    processes that share the cores call this so that processes x threads does not exceed them."""
    global _KIWI, _KIWI_THREADS
    with _KIWI_LOCK:
        _KIWI_THREADS = n
        if _KIWI is not None and _KIWI.num_workers != (n or _default_workers()):
            _KIWI = None


def get_kiwi() -> Any:
    """The process-wide ``kiwipiepy.Kiwi`` (one thread per available core, at most 8, unless
    :func:`set_kiwi_threads` says otherwise), loaded once.

    Loading the model takes a couple of seconds; the instance is warmed up here so the first real
    call is not slower than the rest.
    """
    global _KIWI
    if _KIWI is None:
        with _KIWI_LOCK:
            if _KIWI is None:
                from kiwipiepy import Kiwi

                kiwi = Kiwi(num_workers=_KIWI_THREADS or _default_workers())
                kiwi.tokenize("")  # Kiwi initialises lazily; do it now
                _KIWI = kiwi
    return _KIWI


def _continues_cluster(ch: str) -> bool:
    """A character that attaches to the one before it (combining mark, Hangul vowel/final jamo, ZWJ...)."""
    o = ord(ch)
    if 0x1160 <= o <= 0x11FF or 0xD7B0 <= o <= 0xD7FF:  # jungseong / jongseong (+ extended B)
        return True
    if o in (0x200D, 0x200C) or 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF or 0x1F3FB <= o <= 0x1F3FF:
        return True  # joiners, variation selectors, skin-tone modifiers
    return unicodedata.combining(ch) != 0 or unicodedata.category(ch) in ("Mn", "Mc", "Me")


def _safe_cut(text: str, p: int) -> bool:
    return not _continues_cluster(text[p]) and text[p - 1] != "\u200d"


def _nfc_view(text: str) -> tuple[str, dict[int, int] | None]:
    """The text to analyse and a map from its offsets to the original's (None: the same string).

    The original is cut into clusters (a starter plus what attaches to it); each cluster is normalised on
    its own, so cluster starts map one to one. If that does not reproduce the NFC of the whole text (a
    script whose composition crosses our clusters), the original is analysed as it is.
    """
    if unicodedata.is_normalized("NFC", text):
        return text, None
    nfc = unicodedata.normalize("NFC", text)
    parts: list[str] = []
    pos_map: dict[int, int] = {}
    npos = 0
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or not _continues_cluster(text[i]):
            piece = unicodedata.normalize("NFC", text[start:i])
            pos_map[npos] = start
            parts.append(piece)
            npos += len(piece)
            start = i
    if "".join(parts) != nfc:
        return text, None
    pos_map[npos] = len(text)
    return nfc, pos_map


def _chunks(text: str, max_len: int = MAX_CHUNK) -> Iterator[tuple[int, int]]:
    """(start, end) spans covering ``text``, each at most ``max_len`` long, cut after a newline, a sentence
    end or a space when there is one in the second half of the window."""
    n = len(text)
    pos = 0
    while n - pos > max_len:
        lo, hi = pos + max_len // 2, pos + max_len
        cut = text.rfind("\n", lo, hi)
        if cut < 0:
            ends = [m.end() - 1 for m in _SENT_END_RE.finditer(text, lo, hi)]
            cut = ends[-1] if ends else -1
        if cut < 0:
            spaces = [m.start() for m in _SPACE_RE.finditer(text, lo, hi)]
            cut = spaces[-1] if spaces else -1
        end = cut + 1 if cut >= 0 else hi
        yield pos, end
        pos = end
    if pos < n:
        yield pos, n


def surface_boundaries(spans: Iterable[tuple[int, int]]) -> set[int]:
    """Offsets where one surface span ends, another starts, and no span covers the offset from both sides.

    ``spans`` are ``(start, end)`` pairs in any order; empty spans are ignored. Also used on tokenizer
    offsets, where byte-level pieces of one character share that character's span.
    """
    starts: set[int] = set()
    ends: set[int] = set()
    covered: set[int] = set()
    for s, e in spans:
        if e <= s:
            continue
        starts.add(s)
        ends.add(e)
        if e - s > 1:
            covered.update(range(s + 1, e))
    return (starts & ends) - covered


def morpheme_boundaries(texts: Sequence[str]) -> list[list[int]]:
    """For each text, the sorted character offsets ``0 < p < len(text)`` of kiwi morpheme boundaries.

    Offsets index the original Python string (code points), whatever its normalisation; texts without
    Hangul (and empty ones) give ``[]``. All chunks of the batch are analysed in one multi-threaded Kiwi
    call, so pass many texts at once.

    Args:
        texts: the documents (a list or other sequence of ``str``; a bare ``str`` is refused).

    Returns:
        One sorted list of offsets per text, in input order.
    """
    if isinstance(texts, str):
        raise TypeError("morpheme_boundaries() takes a list of texts, not a single str")
    texts = list(texts)
    out: list[set[int]] = [set() for _ in texts]
    # jobs: (text index, offset of the chunk in the analysed text, position map or None)
    jobs: list[tuple[int, int, dict[int, int] | None]] = []
    pieces: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if not text or not HANGUL_RE.search(text):
            continue
        view, pos_map = _nfc_view(text)
        if _SURROGATE_RE.search(view):  # lone surrogates cannot be encoded for Kiwi; same length replacement
            view = _SURROGATE_RE.sub("\ufffd", view)
        for s, e in _chunks(view):
            if HANGUL_RE.search(view, s, e):
                jobs.append((i, s, pos_map))
                pieces.append(view[s:e])
    if pieces:
        kiwi = get_kiwi()
        for (i, offset, pos_map), tokens in zip(jobs, kiwi.tokenize(iter(pieces)), strict=True):
            bounds = surface_boundaries((t.start, t.start + t.len) for t in tokens)
            dest = out[i]
            for p in bounds:
                p += offset
                if pos_map is not None:
                    p = pos_map.get(p, -1)
                    if p <= 0:
                        continue
                dest.add(p)
    result: list[list[int]] = []
    for text, bounds in zip(texts, out, strict=True):
        result.append(sorted(p for p in bounds if 0 < p < len(text) and _safe_cut(text, p)))
    return result


def split_at(text: str, boundaries: Iterable[int]) -> list[str]:
    """Cut ``text`` at the given offsets (strictly increasing, ``0 < p < len(text)``).

    ``''.join(split_at(text, b)) == text`` always holds; bad offsets raise ``ValueError``.
    """
    pieces: list[str] = []
    prev = 0
    for p in boundaries:
        if not prev < p < len(text):
            raise ValueError(f"boundary {p} is not strictly increasing inside (0, {len(text)})")
        pieces.append(text[prev:p])
        prev = p
    pieces.append(text[prev:])
    return pieces
