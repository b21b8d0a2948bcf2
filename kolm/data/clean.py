"""Text cleaning for ``kolm data build``: normalisation, PII masking and the measures behind the quality filters.

Pure functions (no I/O), run inside the worker processes:

- :func:`normalize`: NFC (Hangul ends up composed), control and zero-width characters removed, Unicode spaces
  unified, newlines normalised;
- :func:`mask_pii`: emails, phone numbers (Korean and North-American), Korean resident registration numbers
  and IPv4 addresses replaced by Dolma-style tokens (``|||EMAIL_ADDRESS|||``...), with counts;
- the measures the quality filters of :mod:`kolm.data.filters` threshold: share of Hangul (:func:`hangul_ratios`),
  Gopher's symbol-to-word ratio, duplicated lines, and word n-gram repetition (:func:`repetition_fracs`: top
  2-gram and duplicated 5-gram character shares). The n-gram and Hangul measures work on a whole batch at once
  with numpy; words are the lower-cased, whitespace-separated UTF-8 tokens of :func:`split_words`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np

from kolm.data.dedup import splitmix64

# C0/C1 controls except \t \n \r, zero-width space/no-break, word joiner, BOM, soft hyphen, non-characters.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff\ufffe\uffff]")
_NEWLINES = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SPACES = re.compile("[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_SPACE_AROUND_NL = re.compile(" ?\n ?")
_MANY_NL = re.compile("\n{3,}")

# PII. Emails are only searched for in texts with an "@"; the numeric patterns start with a digit, "+" or "(",
# and the character before a match is checked in Python (a lookbehind would slow every position down).
_EMAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])")
_NUMERIC = re.compile(
    # Korean resident registration number: YYMMDD-GNNNNNN (G = 1..8), the hyphen required.
    r"(?P<kr_rrn>\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?[-\u2013]\s?[1-8]\d{6}(?![\d-]))"
    r"|(?P<ip>(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d))"
    r"|(?P<phone>(?:(?:\+82[-.\s]?\(?0?\)?|\(?0)\d{1,2}\)?[-.\s]?\d{3,4}[-.\s]\d{4}"  # 02-123-4567, 010-1234-5678
    r"|01[016789]\d{7,8}"  # 01012345678
    r"|(?:\+?1[-.\s]?)?\(?[2-9]\d{2}\)?[-.\s]\d{3}[-.\s]\d{4}"  # (555) 123-4567, +1 555 123 4567
    r")(?![\d-]))"
)
# Every numeric pattern contains a run of >= 7 digits and separators: a cheap pre-check for the slow pattern.
_NUMERIC_HINT = re.compile(r"\d[\d.\-\u2013\s()]{5,}\d")
_BAD_BEFORE = frozenset("0123456789.-+_@/")

def normalize(text: str, nfc: bool = True, whitespace: bool = True) -> str:
    """NFC-compose and normalise whitespace. Idempotent."""
    if nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if whitespace:
        text = _CONTROL.sub("", text)
        text = _NEWLINES.sub("\n", text)
        text = _SPACES.sub(" ", text)
        if "\n" in text:
            text = _SPACE_AROUND_NL.sub("\n", text)
            text = _MANY_NL.sub("\n\n", text)
        text = text.strip()
    return text


def mask_pii(text: str, types: tuple[str, ...] | list[str], tokens: dict[str, str]) -> tuple[str, dict[str, int]]:
    """Replace PII of the given types by their tokens; return the new text and counts per type."""
    counts: dict[str, int] = {}
    wanted = set(types)

    def repl(m: re.Match[str]) -> str:
        kind = m.lastgroup or "email"
        start = m.start()
        if kind not in wanted or (start and (text[start - 1] in _BAD_BEFORE or text[start - 1].isalpha())):
            return m.group(0)
        if kind == "ip" and text[m.end():m.end() + 1] == "." and (start == 0 or text[start - 1] == "\n"):
            return m.group(0)  # "1.2.3.4. Title": a section number at the start of a line, not an address
        counts[kind] = counts.get(kind, 0) + 1
        return tokens[kind]

    if "email" in wanted and "@" in text:
        text = _EMAIL.sub(repl, text)
    if _NUMERIC_HINT.search(text) is not None:
        text = _NUMERIC.sub(repl, text)
    return text, counts


def dup_lines(text: str) -> tuple[float, float]:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) < 2:
        return 0.0, 0.0
    counts = Counter(lines)
    if len(counts) == len(lines):
        return 0.0, 0.0
    dup = sum(c - 1 for c in counts.values() if c > 1)
    dup_chars = sum(len(ln) * (c - 1) for ln, c in counts.items() if c > 1)
    return dup / len(lines), dup_chars / max(1, sum(len(ln) for ln in lines))


def symbol_ratio(text: str, n_words: int) -> float:
    """Gopher's symbol-to-word ratio: ('#' + '...' + '…') per word."""
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    return symbols / max(1, n_words) if symbols else 0.0


def _letterlike_table() -> np.ndarray:
    t = np.zeros(128, dtype=bool)
    for c in range(128):
        t[c] = chr(c).isalpha()
    return t


_ASCII_LETTER = _letterlike_table()


def hangul_ratios(texts: list[str]) -> np.ndarray:
    """Share of Hangul among letter-like characters, per text, in one numpy pass over the batch.

    Letter-like: ASCII letters, and non-ASCII characters outside the punctuation/symbol blocks
    (U+0080-00BF, U+2000-2BFF, U+3000-303F, U+FE30-FE4F, U+FF00-FF20, U+FF3B-FF40, U+FF5B-FF65).
    """
    if not texts:
        return np.zeros(0)
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    cp = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    hangul = (((cp >= 0xAC00) & (cp <= 0xD7A3)) | ((cp >= 0x1100) & (cp <= 0x11FF))
              | ((cp >= 0x3130) & (cp <= 0x318F)) | ((cp >= 0xA960) & (cp <= 0xA97F))
              | ((cp >= 0xD7B0) & (cp <= 0xD7FF)))
    ascii_ = cp < 128
    letter = np.where(ascii_, _ASCII_LETTER[np.where(ascii_, cp, 0)], True)
    letter &= ~((cp >= 0x80) & (cp <= 0xBF))
    letter &= ~((cp >= 0x2000) & (cp <= 0x2BFF))
    letter &= ~((cp >= 0x3000) & (cp <= 0x303F))
    letter &= ~((cp >= 0xFE30) & (cp <= 0xFE4F))
    letter &= ~(((cp >= 0xFF00) & (cp <= 0xFF20)) | ((cp >= 0xFF3B) & (cp <= 0xFF40))
                | ((cp >= 0xFF5B) & (cp <= 0xFF65)))
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    nz = lens > 0
    h = np.zeros(len(texts))
    lt = np.zeros(len(texts))
    if nz.any():
        h[nz] = np.add.reduceat(hangul.astype(np.int64), starts[nz])
        lt[nz] = np.add.reduceat(letter.astype(np.int64), starts[nz])
    return np.divide(h, lt, out=np.zeros_like(h), where=lt > 0)


def repetition_fracs(word_hashes: np.ndarray, word_lens: np.ndarray, offsets: np.ndarray,
                     min_words: int) -> tuple[np.ndarray, np.ndarray]:
    """Gopher's top-2-gram and duplicated-5-gram character fractions per document (0 below ``min_words``)."""
    n_docs = len(offsets) - 1
    counts = np.diff(offsets)
    top2 = np.zeros(n_docs)
    dup5 = np.zeros(n_docs)
    eligible = counts >= max(min_words, 5)
    if not eligible.any():
        return top2, dup5
    doc_of = np.repeat(np.arange(n_docs), counts)
    pos = np.arange(len(word_hashes)) - np.repeat(offsets[:-1], counts)
    remaining = np.repeat(counts, counts) - pos
    ok_doc = eligible[doc_of]
    total_chars = np.bincount(doc_of, weights=word_lens, minlength=n_docs)
    h = word_hashes.astype(np.uint64)
    doc_salt = splitmix64(doc_of.astype(np.uint64) + np.uint64(1))

    def gram_keys(n: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.flatnonzero(ok_doc & (remaining >= n))
        acc = doc_salt[starts].copy()
        with np.errstate(over="ignore"):
            for k in range(n):
                acc = acc * np.uint64(0x100000001B3) + h[starts + k]
        return starts, acc

    starts2, k2 = gram_keys(2)
    if len(starts2) == 0:
        return top2, dup5
    _, inv, cnt = np.unique(k2, return_inverse=True, return_counts=True)
    c = cnt[inv]
    score = np.where(c >= 2, c * (word_lens[starts2] + word_lens[starts2 + 1]), 0)
    docs2 = doc_of[starts2]  # non-decreasing: one contiguous run per document
    first = np.flatnonzero(np.concatenate([[True], docs2[1:] != docs2[:-1]]))
    top2[docs2[first]] = np.maximum.reduceat(score, first)
    # A 5-gram can only repeat where its four bigrams all repeat: sort just those candidate positions.
    dup2 = np.zeros(len(word_hashes) + 4, dtype=bool)
    dup2[starts2[c >= 2]] = True
    cand = starts2[dup2[starts2] & dup2[starts2 + 1] & dup2[starts2 + 2] & dup2[starts2 + 3]]
    cand = cand[remaining[cand] >= 5]
    if len(cand):
        acc = doc_salt[cand].copy()
        with np.errstate(over="ignore"):
            for k in range(5):
                acc = acc * np.uint64(0x100000001B3) + h[cand + k]
        _, inv, cnt = np.unique(acc, return_inverse=True, return_counts=True)
        dup_starts = cand[cnt[inv] >= 2]
        if len(dup_starts):
            n_w = len(word_hashes) + 6
            diff = np.bincount(dup_starts, minlength=n_w) - np.bincount(dup_starts + 5, minlength=n_w)
            covered = np.cumsum(diff)[: len(word_hashes)] > 0
            dup5 = np.bincount(doc_of[covered], weights=word_lens[covered], minlength=n_docs)
    safe = np.where(total_chars > 0, total_chars, 1)
    return top2 / safe, dup5 / safe


_SENTINEL = b"\x00"


def split_words(texts: list[str]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Lower-cased UTF-8 words of all texts with one ``split``; doc j owns ``words[start[j]:end[j]]``.

    Documents are joined by the word "\\x00" (normalisation removes control characters, so it does not occur in a
    text; when it does, e.g. with normalisation off, this falls back to one split per document).
    """
    if not texts:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    words = " \x00 ".join(texts).lower().encode("utf-8", "surrogatepass").split()
    one = np.flatnonzero(np.fromiter(map(len, words), dtype=np.int64, count=len(words)) == 1)
    sent = one[np.fromiter((words[i] == _SENTINEL for i in one.tolist()), dtype=bool, count=len(one))]
    if len(sent) != len(texts) - 1:  # some text holds the sentinel word itself
        words, bounds = [], [0]
        for t in texts:
            words += t.lower().encode("utf-8", "surrogatepass").split()
            bounds.append(len(words))
        b = np.asarray(bounds, dtype=np.int64)
        return words, b[:-1], b[1:]
    return words, np.concatenate([[0], sent + 1]).astype(np.int64), np.concatenate([sent, [len(words)]]).astype(
        np.int64)

