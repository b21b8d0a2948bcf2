"""The quality filters of ``kolm data build``: one class per drop reason, run in registry order on whole batches.

A worker turns a batch of records into normalised, PII-masked texts (:mod:`kolm.data.process`) and hands them to
a :class:`Pipeline` as a :class:`Batch`. Each filter sees the documents that passed every filter before it and
says, for each, whether to drop it (:meth:`Filter.apply`, one call per batch, vectorised where it pays); its
``name`` is the drop reason the manifest counts. So a document's reason is the first filter it fails, in the
order of :data:`FILTERS`:

    empty, too_short, too_long, low_hangul (``ko`` sources), symbol_ratio, dup_lines, top_2gram, dup_5gram

What several filters need (the words of every document, the n-gram repetition shares) is a feature of the batch,
computed once, on the documents alive when first asked for, and cut down with the batch as documents drop.

Adding a filter touches the files named for it: a class here (``name``, ``settings`` naming the
:class:`~kolm.data.config.CleaningConfig` fields it reads, ``apply``) registered with :func:`register` at its place
in the order, its thresholds in :mod:`kolm.data.config`, and a test. Worker processes import the registered
classes by module path (:func:`filter_paths`), so a filter must be defined at module level.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np

from kolm.data import clean
from kolm.data.config import CleaningConfig
from kolm.errors import KolmError

# Drop reasons that are not filters: set while reading (sources), while parsing (workers) and by dedup (scan).
READ_REASONS = ("record_too_large", "missing_field")
PARSE_REASONS = ("invalid_utf8", "bad_json", "missing_field")
DEDUP_REASONS = ("exact_duplicate", "near_duplicate")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class Words:
    """Lower-cased UTF-8 words of some documents of a batch, split once for the whole batch.

    ``words``, ``hashes`` (crc32) and ``lens`` cover every word of the batch as first split; document ``j`` owns
    positions ``start[j]:end[j]``. :meth:`take` keeps some documents without touching the word arrays.
    """

    words: list[bytes]
    hashes: np.ndarray
    lens: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @classmethod
    def of(cls, texts: list[str]) -> Words:
        words, start, end = clean.split_words(texts)
        hashes = np.fromiter(map(zlib.crc32, words), dtype=np.uint32, count=len(words))
        lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        return cls(words, hashes, lens, start, end)

    @property
    def counts(self) -> np.ndarray:
        """Words per document."""
        return self.end - self.start

    def take(self, idx: np.ndarray) -> Words:
        return Words(self.words, self.hashes, self.lens, self.start[idx], self.end[idx])

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hashes and lengths of these documents' words, concatenated in order, and offsets (documents + 1)."""
        counts = self.counts
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        pos = np.repeat(self.start - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
        return self.hashes[pos], self.lens[pos], offsets


def _take(value: Any, idx: np.ndarray) -> Any:
    if isinstance(value, np.ndarray):
        return value[idx]
    if isinstance(value, tuple):
        return tuple(_take(v, idx) for v in value)
    return value.take(idx)


class Batch:
    """The documents of one worker batch still in the pipeline (one source, so one language) and their features.

    ``rows[j]`` is the position of document ``j`` in the batch as it entered the pipeline.
    """

    def __init__(self, texts: list[str], lang: str):
        self.texts = texts
        self.lang = lang
        self.rows = np.arange(len(texts), dtype=np.int64)
        self._features: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def feature(self, key: str, compute: Callable[[Batch], Any]) -> Any:
        """``compute(self)`` on first use, then cached and cut down by :meth:`keep` (an array with one row per
        document, a tuple of them, or an object with ``take(indices)``)."""
        if key not in self._features:
            self._features[key] = compute(self)
        return self._features[key]

    @property
    def n_chars(self) -> np.ndarray:
        return self.feature("n_chars", lambda b: np.fromiter(map(len, b.texts), dtype=np.int64, count=len(b)))

    @property
    def words(self) -> Words:
        return self.feature("words", lambda b: Words.of(b.texts))

    def repetition(self, min_words: int) -> tuple[np.ndarray, np.ndarray]:
        """Gopher's top-2-gram and duplicated-5-gram character shares per document (:func:`clean.repetition_fracs`)."""

        def compute(b: Batch) -> tuple[np.ndarray, np.ndarray]:
            hashes, lens, offsets = b.words.flat()
            return clean.repetition_fracs(hashes, lens, offsets, min_words)

        return self.feature(f"repetition/{min_words}", compute)

    def keep(self, mask: np.ndarray) -> None:
        """Keep the documents where ``mask`` is True (texts, rows and every computed feature)."""
        idx = np.flatnonzero(mask)
        self.texts = [self.texts[i] for i in idx.tolist()]
        self.rows = self.rows[idx]
        self._features = {k: _take(v, idx) for k, v in self._features.items()}


class Filter(ABC):
    """One quality filter. Subclasses set ``name`` (the drop reason) and ``settings`` (the CleaningConfig fields they
    read: their section of the recipe's ``cleaning``), and implement :meth:`apply`."""

    name: ClassVar[str] = ""
    settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: CleaningConfig):
        self.cfg = cfg

    def active(self, lang: str) -> bool:
        """Whether the filter runs on documents of this language (all, unless a subclass says otherwise)."""
        return True

    @abstractmethod
    def apply(self, batch: Batch) -> np.ndarray:
        """Boolean array, one per document of ``batch``: True drops it."""


FILTERS: list[type[Filter]] = []
F = TypeVar("F", bound=type[Filter])


def register(cls: F | None = None, *, before: str | None = None) -> Any:
    """Class decorator: add a filter to :data:`FILTERS`, at the end or just before the filter named ``before``.

    Checks what can be checked now: a new lower-case name that is not another drop reason, and settings that are
    fields of CleaningConfig.
    """

    def add(c: F) -> F:
        names = [f.name for f in FILTERS]
        if not _NAME.match(c.name or ""):
            raise ValueError(f"filter {c.__qualname__}: name {c.name!r} must be lower_case (it is the drop reason)")
        if c.name in names or c.name in READ_REASONS + PARSE_REASONS + DEDUP_REASONS:
            raise ValueError(f"filter {c.__qualname__}: drop reason {c.name!r} is taken")
        fields = {f.name for f in dataclasses.fields(CleaningConfig)}
        unknown = [s for s in c.settings if s not in fields]
        if unknown:
            raise ValueError(f"filter {c.name}: settings {unknown} are not fields of CleaningConfig")
        if before is not None and before not in names:
            raise ValueError(f"filter {c.name}: no filter {before!r} to insert before (have {names})")
        FILTERS.insert(names.index(before) if before is not None else len(FILTERS), c)
        return c

    return add(cls) if cls is not None else add


def filter_paths() -> list[str]:
    """The registered filters as ``module:qualname``, in order: what worker processes import."""
    return [f"{c.__module__}:{c.__qualname__}" for c in FILTERS]


def load_filters(paths: list[str]) -> list[type[Filter]]:
    """Import filter classes from :func:`filter_paths` strings; a KolmError names the one that fails."""
    out = []
    for p in paths:
        module, _, qualname = p.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise KolmError(f"data filter {p} cannot be imported ({e}); the worker processes import filters by "
                            f"module path, so define it at module level in an importable module") from None
        if not (isinstance(obj, type) and issubclass(obj, Filter)):
            raise KolmError(f"data filter {p} is not a kolm.data.filters.Filter subclass")
        out.append(obj)
    return out


class Pipeline:
    """The filters of one build, configured, in order."""

    def __init__(self, cfg: CleaningConfig, classes: list[type[Filter]] | None = None):
        self.filters = [c(cfg) for c in (FILTERS if classes is None else classes)]
        self.names = tuple(f.name for f in self.filters)

    def run(self, batch: Batch) -> np.ndarray:
        """Filter ``batch`` in place (it keeps the survivors). Returns, per document as given, 0 when it is kept,
        else 1 + the index of the first filter that dropped it."""
        codes = np.zeros(len(batch), dtype=np.int64)
        for k, f in enumerate(self.filters, 1):
            if not len(batch):
                break
            if not f.active(batch.lang):
                continue
            drop = np.asarray(f.apply(batch), dtype=bool)
            if drop.shape != (len(batch),):
                raise KolmError(f"data filter {f.name}: apply returned shape {drop.shape} for {len(batch)} documents")
            if drop.any():
                codes[batch.rows[drop]] = k
                batch.keep(~drop)
        return codes


# -- the filters, in order --------------------------------------------------------------------------------------------
@register
class Empty(Filter):
    """Nothing left after normalisation (empty or blank records)."""

    name = "empty"

    def apply(self, batch: Batch) -> np.ndarray:
        return batch.n_chars == 0


@register
class TooShort(Filter):
    name = "too_short"
    settings = ("min_chars",)

    def apply(self, batch: Batch) -> np.ndarray:
        return batch.n_chars < self.cfg.min_chars


@register
class TooLong(Filter):
    name = "too_long"
    settings = ("max_chars",)

    def apply(self, batch: Batch) -> np.ndarray:
        return batch.n_chars > self.cfg.max_chars


@register
class LowHangul(Filter):
    """``ko`` sources: too small a share of Hangul among letters (:func:`clean.hangul_ratios`); off at 0."""

    name = "low_hangul"
    settings = ("min_hangul_ratio",)

    def active(self, lang: str) -> bool:
        return lang == "ko" and self.cfg.min_hangul_ratio > 0

    def apply(self, batch: Batch) -> np.ndarray:
        return clean.hangul_ratios(batch.texts) < self.cfg.min_hangul_ratio


@register
class SymbolRatio(Filter):
    """Gopher: ('#' + ellipses) per word."""

    name = "symbol_ratio"
    settings = ("max_symbol_word_ratio",)

    def apply(self, batch: Batch) -> np.ndarray:
        n_words = batch.words.counts.tolist()
        ratios = np.fromiter(map(clean.symbol_ratio, batch.texts, n_words), dtype=np.float64, count=len(batch))
        return ratios > self.cfg.max_symbol_word_ratio


@register
class DupLines(Filter):
    """Gopher: share of duplicated lines, or of the characters in them (multi-line documents only)."""

    name = "dup_lines"
    settings = ("max_dup_line_frac", "max_dup_line_char_frac")

    def apply(self, batch: Batch) -> np.ndarray:
        drop = np.zeros(len(batch), dtype=bool)
        for j, text in enumerate(batch.texts):
            if "\n" in text:
                frac, char_frac = clean.dup_lines(text)
                drop[j] = frac > self.cfg.max_dup_line_frac or char_frac > self.cfg.max_dup_line_char_frac
        return drop


@register
class Top2gram(Filter):
    """Gopher: share of characters in the most frequent word 2-gram (from ``repetition_min_words`` words on)."""

    name = "top_2gram"
    settings = ("max_top_2gram_char_frac", "repetition_min_words")

    def apply(self, batch: Batch) -> np.ndarray:
        return batch.repetition(self.cfg.repetition_min_words)[0] > self.cfg.max_top_2gram_char_frac


@register
class Dup5gram(Filter):
    """Gopher: share of characters covered by word 5-grams that occur more than once."""

    name = "dup_5gram"
    settings = ("max_dup_5gram_char_frac", "repetition_min_words")

    def apply(self, batch: Batch) -> np.ndarray:
        return batch.repetition(self.cfg.repetition_min_words)[1] > self.cfg.max_dup_5gram_char_frac
