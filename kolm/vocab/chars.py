"""What "Hangul" means for text and for the bytes of a token, and GPT-2's byte-level alphabet.

The tokenizer families themselves (how each detects itself, cuts units, spells tokens) are classes in
:mod:`kolm.vocab.families`; this module holds the definitions they share.

The safety argument of ``kolm vocab extend`` rests on one predicate, :func:`forces_hangul`: a new merge is only
allowed if *any* valid UTF-8 text in which its result occurs must contain a Hangul character. Then text without
Hangul can never trigger a new merge, so it tokenizes exactly as before.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Hangul script blocks: Jamo, Compatibility Jamo, Jamo Extended-A, Syllables, Jamo Extended-B, halfwidth forms.
# This is kolm's one definition of "Hangul" (tests of "text without Hangul" use it too).
HANGUL_RANGES = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7A3), (0xD7B0, 0xD7FF),
                 (0xFFA0, 0xFFDC))
HANGUL_CLASS = "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in HANGUL_RANGES)
HANGUL_RE = re.compile(f"[{HANGUL_CLASS}]")


def is_hangul(ch: str) -> bool:
    return HANGUL_RE.match(ch) is not None


def has_hangul(text: str) -> bool:
    return HANGUL_RE.search(text) is not None


def hangul_share(text: str) -> float:
    """Share of non-space characters that are Hangul."""
    chars = [c for c in text if not c.isspace()]
    return sum(map(is_hangul, chars)) / len(chars) if chars else 0.0


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def bl_to_bytes(token: str) -> bytes:
    """Byte-level token string -> the raw bytes it stands for."""
    m = unicode_to_bytes()
    return bytes(m[c] for c in token)


def _utf8_len(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF8:
        return 4
    return 0  # continuation byte or invalid


def forces_hangul(data: bytes) -> bool:
    """True if every valid UTF-8 text containing ``data`` as a byte substring contains a Hangul character.

    Sufficient condition used: some character in ``data`` starts at a lead byte and every code point that
    agrees with the bytes present (complete, or a prefix cut by the end of ``data``) is Hangul.
    """
    i = 0
    while i < len(data):
        n = _utf8_len(data[i])
        if n <= 1:
            i += 1
            continue
        avail = 1
        while avail < n and i + avail < len(data) and 0x80 <= data[i + avail] < 0xC0:
            avail += 1
        if avail < n and i + avail < len(data):  # a non-continuation byte inside: invalid UTF-8, never matches
            i += avail
            continue
        # code point bits: lead carries (7 - n) bits, each continuation 6 bits
        lead_bits = data[i] & ((1 << (7 - n)) - 1)
        lo = hi = lead_bits
        for k in range(1, n):
            if k < avail:
                lo = (lo << 6) | (data[i + k] & 0x3F)
                hi = (hi << 6) | (data[i + k] & 0x3F)
            else:
                lo, hi = lo << 6, (hi << 6) | 0x3F
        if any(a <= lo and hi <= b for a, b in HANGUL_RANGES):
            return True
        i += avail
    return False
