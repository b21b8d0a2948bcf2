"""Tokenizer families kolm can extend, and what "Hangul" means for a token.

Two BPE families are supported, detected from ``tokenizer.json`` itself:

- ``sentencepiece``: SentencePiece-style BPE with byte fallback and ``▁`` for spaces (Llama-1/2, Mistral/SOLAR,
  Yi, Gemma). Tokens are Unicode strings; characters missing from the vocabulary fall back to ``<0xNN>`` bytes.
- ``byte_level``: GPT-2-style byte-level BPE (Llama-3, Qwen, GPT-NeoX). Tokens are byte strings written in the
  GPT-2 byte-to-unicode alphabet.

The safety argument of ``kolm vocab extend`` rests on one predicate, :func:`forces_hangul`: a new merge is only
allowed if *any* valid UTF-8 text in which its result occurs must contain a Hangul character. Then text without
Hangul can never trigger a new merge, so it tokenizes exactly as before.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from kolm.errors import KolmError

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


def bytes_to_bl(data: bytes) -> str:
    m = bytes_to_unicode()
    return "".join(m[b] for b in data)


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


def detect_family(tok_json: dict[str, Any], where: str = "tokenizer.json") -> str:
    """Return ``"sentencepiece"`` or ``"byte_level"``; refuse anything else with a clear error."""
    model = tok_json.get("model") or {}
    mtype = model.get("type")
    if mtype != "BPE":
        raise KolmError(f"{where}: unsupported tokenizer family: model type {mtype!r}. kolm extends BPE tokenizers "
                        "only (SentencePiece-style BPE with byte fallback, e.g. Llama-2/Mistral/Yi, or byte-level "
                        "BPE, e.g. Llama-3/Qwen); WordPiece and Unigram are not supported")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise KolmError(f"{where}: unsupported BPE variant with {key}={model[key]!r}")

    def components(node: Any) -> list[dict]:
        if not isinstance(node, dict):
            return []
        out = [node]
        for k in ("normalizers", "pretokenizers", "pre_tokenizers", "decoders"):
            for sub in node.get(k) or []:
                out += components(sub)
        return out

    parts = components(tok_json.get("normalizer")) + components(tok_json.get("pre_tokenizer"))
    types = {p.get("type") for p in parts}
    if "ByteLevel" in types:
        return "byte_level"
    metaspace = "Metaspace" in types or any(
        p.get("type") == "Replace" and p.get("content") == "▁" for p in parts)
    if metaspace and model.get("byte_fallback"):
        return "sentencepiece"
    if metaspace:
        raise KolmError(f"{where}: SentencePiece-style BPE without byte_fallback is not supported: characters "
                        "outside the vocabulary would become <unk> and could not round-trip")
    raise KolmError(f"{where}: unsupported tokenizer family: a BPE model with neither a ByteLevel pre-tokenizer nor "
                    "SentencePiece-style `▁` spaces with byte fallback")


def token_bytes(token: str, family: str) -> bytes:
    """The raw text bytes a vocabulary entry stands for (``▁`` kept as its UTF-8 bytes in SP family)."""
    if family == "byte_level":
        return bl_to_bytes(token)
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.encode("utf-8")


def token_text(token: str, family: str) -> str:
    """Readable text of a vocabulary entry (``▁`` shown as a space)."""
    if family == "byte_level":
        return bl_to_bytes(token).decode("utf-8", errors="replace")
    return token.replace("▁", " ")


def token_forces_hangul(token: str, family: str) -> bool:
    if family == "byte_level":
        return forces_hangul(bl_to_bytes(token))
    return has_hangul(token)
