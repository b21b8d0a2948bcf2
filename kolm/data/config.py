"""Typed configs of ``kolm data build``: sources, cleaning, PII, dedup, validation split, mix and packing.

A recipe YAML in ``data_recipes/`` maps onto :class:`DataBuildConfig`; relative paths in it are resolved against
the recipe's folder when it is read (the rule of :mod:`kolm.paths`). Checks that need no I/O live in ``__post_init__``;
checks that touch files (paths exist, tokenizer loads, text fields present) run in
:func:`kolm.data.sources.resolve_sources` before any long work starts.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Literal

from kolm.config import ConfigError, field

LANG_RE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]+)?$")
PII_TYPES = ("email", "phone", "kr_rrn", "ip")
# Dolma-style replacement tokens (OLMo's pipeline masks with |||EMAIL_ADDRESS||| and friends).
DEFAULT_PII_TOKENS = {"email": "|||EMAIL_ADDRESS|||", "phone": "|||PHONE_NUMBER|||",
                      "kr_rrn": "|||KR_RRN|||", "ip": "|||IP_ADDRESS|||"}
SourceFormat = Literal["auto", "txt", "jsonl", "parquet", "arrow_dir", "hub"]


@dataclass
class SourceConfig:
    """One input source: files (or a saved ``datasets`` folder, or a hub dataset id) in one language."""

    lang: str = field(help="language tag of every document in this source, e.g. ko or en")
    paths: list[str] = field(default_factory=list, path=True,
                             help="files, globs or datasets folders (relative to the recipe)")
    name: str = field("", help="name used in the manifest (default: <lang>_<index>)")
    format: SourceFormat = field("auto", help="input format; auto detects it from the file suffix")
    text_field: str = field("text", help="JSON key / column holding the text (a.b for nested JSON)")
    txt_mode: Literal["line", "paragraph"] = field(
        "line", help=".txt files: one document per line, or paragraphs separated by blank lines")
    hub: str | None = field(None, help="hub dataset id, streamed (only when online)")
    hub_config: str | None = field(None, help="hub dataset config name")
    split: str = field("train", help="split of a hub dataset or of a saved DatasetDict")
    max_epochs: float = field(1.0, help="most passes over this source's kept documents the mix may use "
                                        "(> 1 allows upsampling)")
    max_docs: int | None = field(None, help="read at most this many records (quick runs)")
    max_record_bytes: int = field(8 << 20, help="records (lines) larger than this are skipped and counted "
                                                "while streaming, never held in memory")

    def __post_init__(self) -> None:
        if not LANG_RE.match(self.lang or ""):
            raise ConfigError(f"sources.lang: {self.lang!r} is not a language tag like 'ko' or 'en'")
        if not self.paths and not self.hub:
            raise ConfigError(f"source {self.name or self.lang!r}: give `paths` or `hub`")
        if self.paths and self.hub:
            raise ConfigError(f"source {self.name or self.lang!r}: give either `paths` or `hub`, not both")
        if self.hub and self.format not in ("auto", "hub"):
            raise ConfigError(f"source {self.name or self.lang!r}: format must be auto or hub with `hub`")
        if self.max_epochs <= 0:
            raise ConfigError(f"source {self.name or self.lang!r}: max_epochs must be > 0")
        if self.max_docs is not None and self.max_docs < 0:
            raise ConfigError(f"source {self.name or self.lang!r}: max_docs must be >= 0")
        if self.max_record_bytes < 1024:
            raise ConfigError(f"source {self.name or self.lang!r}: max_record_bytes must be >= 1024")


@dataclass
class PIIConfig:
    """PII masking (Dolma style): matches are replaced by a token, counts go to the manifest."""

    enabled: bool = field(True, help="mask PII")
    types: list[str] = field(default_factory=lambda: list(PII_TYPES), help=f"which of {list(PII_TYPES)}")
    tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PII_TOKENS), help="replacement per type")

    def __post_init__(self) -> None:
        bad = sorted(set(self.types) - set(PII_TYPES))
        if bad:
            raise ConfigError(f"cleaning.pii.types: unknown {bad}; known: {list(PII_TYPES)}")
        self.tokens = {**DEFAULT_PII_TOKENS, **self.tokens}
        bad = sorted(set(self.tokens) - set(PII_TYPES))
        if bad:
            raise ConfigError(f"cleaning.pii.tokens: unknown {bad}; known: {list(PII_TYPES)}")


@dataclass
class CleaningConfig:
    """Normalisation, PII masking and the settings of the Gopher/Dolma-style quality filters of
    :mod:`kolm.data.filters` (each filter names the fields it reads); the filters run in registry order and the
    first failing one is the drop reason recorded in the manifest."""

    nfc: bool = field(True, help="Unicode NFC (composes NFD Hangul jamo into syllables)")
    normalize_whitespace: bool = field(True, help="drop control/zero-width characters, unify spaces and newlines")
    min_chars: int = field(20, help="drop documents shorter than this (characters, after normalisation)")
    max_chars: int = field(200_000, help="drop documents longer than this")
    min_hangul_ratio: float = field(0.3, help="`ko` sources: least share of Hangul among letters")
    max_symbol_word_ratio: float = field(0.1, help="Gopher: most ('#' + ellipsis) per word")
    max_dup_line_frac: float = field(0.3, help="Gopher: most share of duplicated lines (multi-line documents)")
    max_dup_line_char_frac: float = field(0.2, help="Gopher: most share of characters in duplicated lines")
    max_top_2gram_char_frac: float = field(0.2, help="Gopher: most share of characters in the top word 2-gram")
    max_dup_5gram_char_frac: float = field(0.15, help="Gopher: most share of characters in duplicated word 5-grams")
    repetition_min_words: int = field(20, help="n-gram repetition filters apply from this many words on")
    pii: PIIConfig = field(default_factory=PIIConfig, help="PII masking")

    def __post_init__(self) -> None:
        if self.min_chars < 1:
            raise ConfigError("cleaning.min_chars must be >= 1 (empty documents are always dropped)")
        if self.max_chars < self.min_chars:
            raise ConfigError("cleaning.max_chars must be >= cleaning.min_chars")
        for name in ("min_hangul_ratio", "max_dup_line_frac", "max_dup_line_char_frac", "max_top_2gram_char_frac",
                     "max_dup_5gram_char_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"cleaning.{name} must be in [0, 1], got {v}")
        if self.max_symbol_word_ratio < 0:
            raise ConfigError("cleaning.max_symbol_word_ratio must be >= 0")


@dataclass
class DedupConfig:
    """Exact (normalised-hash) and near-duplicate (MinHash LSH) removal, within and across all sources."""

    exact: bool = field(True, help="drop documents whose normalised text (lower-cased, whitespace collapsed) repeats")
    near: bool = field(True, help="drop near-duplicates found by MinHash LSH over word n-grams")
    threshold: float = field(0.8, help="estimated Jaccard similarity above which documents are near-duplicates")
    num_perm: int = field(128, help="MinHash permutations")
    ngram: int = field(3, help="word n-gram size of the shingles")
    bands: int | None = field(None, help="LSH bands (default: chosen from threshold and num_perm)")
    seed: int = field(1, help="seed of the MinHash permutations")

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("dedup.threshold must be in (0, 1)")
        if self.num_perm < 2 or self.ngram < 1:
            raise ConfigError("dedup.num_perm must be >= 2 and dedup.ngram >= 1")
        if self.bands is not None and not 1 <= self.bands <= self.num_perm:
            raise ConfigError("dedup.bands must be in [1, num_perm]")

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): the given bands, or the pair minimising false positives + false negatives."""
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        return optimal_lsh_params(self.threshold, self.num_perm)


@functools.lru_cache(maxsize=32)
def optimal_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows minimising the (equally weighted) false positive and negative areas, as datasketch does."""

    def area(b: int, r: int, lo: float, hi: float, fp: bool) -> float:
        n = 100
        total = 0.0
        for i in range(n):
            s = lo + (hi - lo) * (i + 0.5) / n
            p = 1.0 - (1.0 - s ** r) ** b
            total += (p if fp else 1.0 - p) * (hi - lo) / n
        return total

    best, best_err = (1, num_perm), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = area(b, r, 0.0, threshold, True) + area(b, r, threshold, 1.0, False)
            if err < best_err:
                best, best_err = (b, r), err
    return best


@dataclass
class ValidationConfig:
    """Held-out validation documents per language: whole documents, chosen by a seeded hash of the text."""

    fraction: float = field(0.01, help="share of kept documents held out, per language")
    max_docs: int = field(1000, help="at most this many validation documents per language")
    min_docs: int = field(1, help="fail when a language gets fewer validation documents than this")

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError("validation.fraction must be in [0, 1)")
        if self.max_docs < 0 or self.min_docs < 0 or self.min_docs > self.max_docs:
            raise ConfigError("validation: need 0 <= min_docs <= max_docs")
        if self.fraction == 0 and self.min_docs > 0:
            raise ConfigError("validation.min_docs > 0 needs validation.fraction > 0")


@dataclass
class DataBuildConfig:
    """``kolm data build RECIPE.yaml --output DIR``: clean, deduplicate, mix, tokenize and pack."""

    tokenizer: str = field(path=True, hub=True,
                           help="tokenizer folder (e.g. the output of `kolm vocab extend`) or hub id")
    sources: list[SourceConfig] = field(default_factory=list, cli=False, help="input sources")
    mix: dict[str, float] = field(default_factory=dict, help="target share of train tokens per language")
    output: str = field("", path=True, help="output folder")
    seq_len: int = field(2048, help="tokens per packed train sequence")
    add_bos: bool = field(False, help="start every document with BOS (documents always end with EOS)")
    seed: int = field(0, help="seed of sampling, shuffling and the validation split")
    cleaning: CleaningConfig = field(default_factory=CleaningConfig, help="normalisation and filters")
    dedup: DedupConfig = field(default_factory=DedupConfig, help="deduplication")
    validation: ValidationConfig = field(default_factory=ValidationConfig, help="held-out split")
    max_train_tokens: int | None = field(None, help="cap on packed train tokens (the mix still holds)")
    num_proc: int = field(2, help="worker processes for cleaning and tokenizing (0: in-process)")
    batch_bytes: int = field(1 << 20, help="input bytes per work batch")
    shard_size: int = field(8192, help="packed sequences per train shard")
    checkpoint_mb: float = field(256.0, help="write a resumable checkpoint every this many input MB")
    resume: bool = field(True, help="continue an interrupted build of the same recipe in --output")
    overwrite: bool = field(False, help="replace an existing output folder")
    keep_work: bool = field(False, help="keep the intermediate work folder (<output>/.work)")
    progress: bool = field(True, help="show progress bars")

    def __post_init__(self) -> None:
        if not self.tokenizer:
            raise ConfigError("tokenizer: a tokenizer folder is required")
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        names: set[str] = set()
        for i, s in enumerate(self.sources):
            if not s.name:
                s.name = f"{s.lang}_{i}"
            if s.name in names:
                raise ConfigError(f"sources[{i}].name: duplicate name {s.name!r}")
            names.add(s.name)
        if not self.mix:
            raise ConfigError("mix: give the target token share per language, e.g. {ko: 0.8, en: 0.2}")
        for lang, share in self.mix.items():
            if not 0.0 < share <= 1.0:
                raise ConfigError(f"mix.{lang}: share must be in (0, 1], got {share}")
        total = sum(self.mix.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"mix: shares sum to {total:.6g}, they must sum to 1")
        src_langs = {s.lang for s in self.sources}
        missing = sorted(set(self.mix) - src_langs)
        if missing:
            raise ConfigError(f"mix: no source for language(s) {missing}")
        unused = sorted(src_langs - set(self.mix))
        if unused:
            raise ConfigError(f"mix: language(s) {unused} have sources but no share in the mix")
        if self.seq_len < 8:
            raise ConfigError("seq_len must be >= 8")
        if self.max_train_tokens is not None and self.max_train_tokens < self.seq_len:
            raise ConfigError("max_train_tokens must be >= seq_len")
        if self.num_proc < 0:
            raise ConfigError("num_proc must be >= 0")
        if self.batch_bytes < 1024 or self.shard_size < 1 or self.checkpoint_mb <= 0:
            raise ConfigError("batch_bytes >= 1024, shard_size >= 1 and checkpoint_mb > 0 are required")
