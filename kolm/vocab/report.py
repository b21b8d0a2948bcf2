"""``kolm vocab report``: compare tokenizers on text (chars/token, tokens/word, bytes/token, morpheme alignment).

    kolm vocab report --tokenizer ../shared/tokenizers/llama2 --tokenizer ../shared/tokenizers/llama3 \\
        --text ../shared/corpora/ko_dev.txt --text ../shared/corpora/en_dev.txt [--json] [--no-morphemes]

One row per (tokenizer, file). Tokens are counted without special tokens (``add_special_tokens=False``).
The same figures are available to code through ``measure(tokenizer, texts)`` (one tokenizer) and
``measure_many(tokenizers, texts)`` (several, sharing the morpheme analysis).

How the figures are defined:

* **Korean vs non-Korean** is decided per *whitespace word*: a word is Korean if it holds at least one
  Hangul character. Words, not character-class runs, because every common pre-tokenizer splits at
  whitespace but many do not split at a script change (Llama-3's ``\\p{L}+`` keeps ``GIMP의`` together),
  so a token can straddle a Latin/Hangul run but (almost) never two words. Each token is attributed, by
  its offsets in the original text, to the first word that ends after the token's start: the word it
  begins in, or for a pure-space token (``▁``, ``Ġ``) the word that follows, which matches how both
  SentencePiece and byte-level BPE attach a leading space to the next word. Word characters exclude
  whitespace, so ``ko_chars_per_token`` is Korean word characters per Korean token. Overall
  ``chars_per_token`` counts every character, whitespace included, over all tokens.
* **Morpheme alignment** (``morph_precision``) is the share of token boundaries that are also kiwi
  morpheme boundaries (``kolm.vocab.morph``), counting only boundaries strictly inside Hangul: offset ``p``
  with Hangul on both sides. Boundaries at spaces, punctuation or script changes are aligned for every
  tokenizer and would only dilute the comparison. ``morph_recall`` is the share of those morpheme
  boundaries that are token boundaries (a character-level tokenizer has recall 1 and low precision).
  Token boundaries come from the tokenizer's offsets, at character positions: the bytes of one
  character split over several tokens (byte fallback, byte-level BPE) share one span and give no
  character boundary; ``ko_split_char_share`` reports how many Hangul characters are split that way.
"""

from __future__ import annotations

import json
import sys
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io.corpus import check_corpus_files, iter_corpus
from kolm.io.tokenizers import load_tokenizer_json
from kolm.tables import text_table
from kolm.vocab.chars import HANGUL_RE, is_hangul
from kolm.vocab.morph import morpheme_boundaries, surface_boundaries

BATCH_DOCS = 512


@dataclass
class ReportConfig:
    """Compare tokenizers on text files."""

    tokenizer: list[str] = field(default_factory=list, path=True, hub=True,
                                 help="tokenizer folder(s) or hub id(s); list several to compare them")
    text: list[str] = field(default_factory=list, path=True,
                            help="text file(s): .txt (one document a line), .jsonl, .parquet")
    json: bool = field(False, help="print one JSON object with a list of rows instead of a table")
    morphemes: bool = field(True, help="measure how token boundaries align with kiwi morpheme boundaries")
    max_docs: int | None = field(None, help="read at most this many documents from each file")
    text_field: str = field("text", help="field/column holding the text in .jsonl/.parquet files")
    trust_remote_code: bool = field(False, help="allow custom tokenizer code when loading with transformers")

    def __post_init__(self) -> None:
        if not self.tokenizer:
            raise ConfigError("tokenizer: give at least one --tokenizer (folder or hub id)")
        if any(not t.strip() for t in self.tokenizer):
            raise ConfigError("tokenizer: empty name")
        if not self.text:
            raise ConfigError("text: give at least one --text file")
        if self.max_docs is not None and self.max_docs <= 0:
            raise ConfigError(f"max_docs: must be positive, got {self.max_docs}")
        if not self.text_field:
            raise ConfigError("text_field: must not be empty")


# ----------------------------------------------------------------------------------------------- tokenizers



def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False) -> Any:
    """A ``tokenizers.Tokenizer`` for a folder, a hub id or a ``tokenizer.json`` file.

    ``tokenizer.json`` is read directly when present (fast, exactly what transformers' fast tokenizer
    wraps); otherwise transformers' ``AutoTokenizer`` builds a fast tokenizer and its backend is used.
    """
    return load_tokenizer_json(name_or_path, "tokenizer", allow_autotokenizer=True,
                               trust_remote_code=trust_remote_code)[0]


def _backend(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, Path)):
        return load_tokenizer(tokenizer)
    if hasattr(tokenizer, "backend_tokenizer"):  # transformers fast tokenizer
        return tokenizer.backend_tokenizer
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer
    raise TypeError(f"not a tokenizer: {type(tokenizer).__name__} (pass a tokenizers.Tokenizer, a fast "
                    "transformers tokenizer or a folder)")


# ----------------------------------------------------------------------------------------------- statistics

_DOC_KEYS = ("docs", "chars", "bytes", "words", "ko_chars", "ko_bytes", "ko_words", "other_chars", "other_bytes",
             "other_words", "hangul_chars", "morph_bounds")
_TOK_KEYS = ("tokens", "ko_tokens", "other_tokens", "ko_split_chars", "token_bounds", "aligned_bounds")


class _Doc:
    """What one document contributes independently of the tokenizer (computed once, shared)."""

    __slots__ = ("text", "word_ends", "word_ko", "morph", "counts")

    def __init__(self, text: str, bounds: list[int] | None) -> None:
        self.text = text
        words = text.split()
        self.word_ends: list[int] = []
        self.word_ko: list[bool] = []
        c = dict.fromkeys(_DOC_KEYS, 0)
        c["docs"] = 1
        c["chars"] = len(text)
        c["bytes"] = len(text.encode("utf-8", "surrogatepass"))
        pos = 0
        for w in words:
            start = text.index(w, pos)
            pos = start + len(w)
            ko = HANGUL_RE.search(w) is not None
            self.word_ends.append(pos)
            self.word_ko.append(ko)
            side = "ko" if ko else "other"
            c[f"{side}_words"] += 1
            c[f"{side}_chars"] += len(w)
            c[f"{side}_bytes"] += len(w.encode("utf-8", "surrogatepass"))
        c["words"] = len(words)
        c["hangul_chars"] = sum(map(is_hangul, text)) if c["ko_words"] else 0
        self.morph: set[int] | None = None
        if bounds is not None:
            self.morph = {p for p in bounds if is_hangul(text[p - 1]) and is_hangul(text[p])}
            c["morph_bounds"] = len(self.morph)
        self.counts = c


def _is_space_marker(token: str) -> bool:
    # SentencePiece puts a lone "▁" on the offsets of the following character; it is no split of that char.
    return token != "" and token.strip("\u2581") == ""


def _count_tokens(doc: _Doc, offsets: list[tuple[int, int]], tokens: list[str], acc: dict[str, int]) -> None:
    text, ends, ko = doc.text, doc.word_ends, doc.word_ko
    nw = len(ends)
    acc["tokens"] += len(offsets)
    n_ko = n_other = 0
    if nw:
        for s, _ in offsets:
            w = bisect_right(ends, s)  # first word ending after the token's start
            if ko[w if w < nw else nw - 1]:
                n_ko += 1
            else:
                n_other += 1
    acc["ko_tokens"] += n_ko
    acc["other_tokens"] += n_other
    if not doc.counts["ko_words"]:
        return
    spans = [o for o, t in zip(offsets, tokens, strict=True) if not _is_space_marker(t)]
    split: set[int] = set()
    prev_end = 0
    for s, e in spans:
        if s < prev_end:
            split.update(c for c in range(s, min(e, prev_end)) if is_hangul(text[c]))
        prev_end = max(prev_end, e)
    acc["ko_split_chars"] += len(split)
    if doc.morph is not None:
        n = len(text)
        tb = {p for p in surface_boundaries(spans) if 0 < p < n and is_hangul(text[p - 1]) and is_hangul(text[p])}
        acc["token_bounds"] += len(tb)
        acc["aligned_bounds"] += len(tb & doc.morph)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _finish(acc: dict[str, int], morphemes: bool) -> dict[str, Any]:
    out: dict[str, Any] = dict(acc)
    for pre in ("", "ko_", "other_"):
        out[f"{pre}chars_per_token"] = _ratio(acc[f"{pre}chars"], acc[f"{pre}tokens"])
        out[f"{pre}tokens_per_word"] = _ratio(acc[f"{pre}tokens"], acc[f"{pre}words"])
        out[f"{pre}bytes_per_token"] = _ratio(acc[f"{pre}bytes"], acc[f"{pre}tokens"])
    out["ko_split_char_share"] = _ratio(acc["ko_split_chars"], acc["hangul_chars"])
    if morphemes:
        out["morph_precision"] = _ratio(acc["aligned_bounds"], acc["token_bounds"])
        out["morph_recall"] = _ratio(acc["aligned_bounds"], acc["morph_bounds"])
    else:
        for k in ("morph_bounds", "token_bounds", "aligned_bounds"):
            out[k] = None
        out["morph_precision"] = out["morph_recall"] = None
    return out


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while batch := list(islice(it, size)):
        yield batch


def measure_many(tokenizers: Sequence[Any], texts: Iterable[str], morphemes: bool = True) -> list[dict[str, Any]]:
    """``measure`` for several tokenizers over the same texts; the morpheme analysis is done once.

    Texts are streamed in batches, so a large corpus is fine.
    """
    backends = [_backend(t) for t in tokenizers]
    accs = [{**dict.fromkeys(_DOC_KEYS, 0), **dict.fromkeys(_TOK_KEYS, 0)} for _ in backends]
    for batch in _batches(texts, BATCH_DOCS):
        bounds = morpheme_boundaries(batch) if morphemes else [None] * len(batch)
        docs = [_Doc(t, b) for t, b in zip(batch, bounds, strict=True)]
        for backend, acc in zip(backends, accs, strict=True):
            for doc in docs:
                for k, v in doc.counts.items():
                    acc[k] += v
            for doc, enc in zip(docs, backend.encode_batch(batch, add_special_tokens=False), strict=True):
                _count_tokens(doc, enc.offsets, enc.tokens, acc)
    return [_finish(acc, morphemes) for acc in accs]


def measure(tokenizer: Any, texts: Iterable[str], morphemes: bool = True) -> dict[str, Any]:
    """Tokenization statistics of ``tokenizer`` on ``texts`` (special tokens not counted).

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, a fast transformers tokenizer, or a folder / hub id.
        texts: the documents (any iterable of str; streamed).
        morphemes: also compute the kiwi morpheme-boundary alignment (needs kiwipiepy; the slow part).

    Returns:
        A flat dict. Counts: ``docs chars bytes words tokens``, the same with ``ko_`` and ``other_`` prefixes
        (Korean = whitespace words holding Hangul; see the module docstring), ``hangul_chars``,
        ``ko_split_chars``, ``morph_bounds token_bounds aligned_bounds``. Ratios (``None`` when the
        denominator is 0): ``chars_per_token tokens_per_word bytes_per_token`` and their ``ko_`` /
        ``other_`` versions, ``ko_split_char_share``, ``morph_precision`` (share of token boundaries
        inside Hangul that are morpheme boundaries) and ``morph_recall``; the morpheme figures are
        ``None`` when ``morphemes`` is false.
    """
    return measure_many([tokenizer], texts, morphemes)[0]


# ----------------------------------------------------------------------------------------------- output

_COLUMNS = [  # (header, key, format)
    ("docs", "docs", "d"), ("tokens", "tokens", "d"),
    ("chars/tok", "chars_per_token", ".2f"), ("ko c/tok", "ko_chars_per_token", ".2f"),
    ("other c/tok", "other_chars_per_token", ".2f"), ("tok/word", "tokens_per_word", ".2f"),
    ("ko tok/word", "ko_tokens_per_word", ".2f"), ("bytes/tok", "bytes_per_token", ".2f"),
    ("ko b/tok", "ko_bytes_per_token", ".2f"), ("ko split", "ko_split_char_share", ".1%"),
    ("morph prec", "morph_precision", ".1%"), ("morph rec", "morph_recall", ".1%"),
]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table, one line per (tokenizer, file) row; ``-`` where a figure is undefined."""
    head = ["tokenizer", "file", "vocab", *(h for h, _, _ in _COLUMNS)]
    body = []
    for r in rows:
        cells = [str(r["tokenizer"]), str(r["file"]), str(r["vocab_size"])]
        for _, key, fmt in _COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else format(v, fmt))
        body.append(cells)
    return text_table(head, body, left=2, solid_rule=True)


def _display_names(names: list[str]) -> list[str]:
    short = [Path(n.rstrip("/")).name or n for n in names]
    return short if len(set(short)) == len(short) else list(names)


def run(cfg: ReportConfig) -> list[dict[str, Any]]:
    """Measure every tokenizer on every file and print a table (or JSON with ``--json``); returns the rows."""
    files = check_corpus_files(cfg.text)
    toks = [load_tokenizer(name, cfg.trust_remote_code) for name in cfg.tokenizer]
    shown = _display_names(cfg.tokenizer)
    rows: list[dict[str, Any]] = []
    for f in files:
        docs = iter_corpus([f], cfg.text_field)
        if cfg.max_docs is not None:
            docs = islice(docs, cfg.max_docs)
        stats = measure_many(toks, docs, morphemes=cfg.morphemes)
        if stats[0]["docs"] == 0:
            raise KolmError(f"{f}: no non-empty documents" + ("" if f.suffix == ".txt" else
                                                             f" in field {cfg.text_field!r}"))
        for name, label, tok, st in zip(cfg.tokenizer, shown, toks, stats, strict=True):
            rows.append({"tokenizer": label, "tokenizer_path": name, "file": str(f),
                         "vocab_size": tok.get_vocab_size(with_added_tokens=True), **st})
    if cfg.json:
        print(json.dumps({"rows": rows, "config": to_dict(cfg)}, ensure_ascii=False))
    else:
        file_label = dict(zip(map(str, files), _display_names([str(f) for f in files]), strict=True))
        print(format_table([{**r, "file": file_label[r["file"]]} for r in rows]))
        if cfg.morphemes:
            print("\nko = whitespace words with Hangul; ko split = Hangul chars split across tokens; morph prec/rec = "
                  "token vs kiwi morpheme boundaries inside Hangul", file=sys.stdout)
    return rows
