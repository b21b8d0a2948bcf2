"""Worker side of ``kolm data build``: turn one batch of raw records into cleaned, hashed, tokenized documents.

A batch is records of one source. :meth:`Worker.clean` runs, in order: parsing (invalid UTF-8, broken JSON and
missing text fields become counted drop reasons), normalisation (:func:`kolm.data.clean.normalize`), PII masking,
the quality filters (:class:`kolm.data.filters.Pipeline`, the registered filters in order), exact-duplicate
hashing and MinHash LSH band keys, and the seeded validation split. Per-document Python work is kept to C-speed
string methods; the filters, the MinHash signatures and the band keys work on the whole batch at once with numpy.
Kept documents are tokenized with the Rust ``tokenizers`` library in one ``encode_batch`` call per batch (no
special tokens; EOS, and BOS when asked, are added here).

Dedup decisions are not taken here: they need the global state kept by the main process
(:mod:`kolm.data.scan`), which gets back per surviving document its text, exact key and LSH band keys, decides,
and sends the documents it keeps back for :meth:`Worker.tokenize`, so duplicates are never tokenized.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from kolm.config import from_dict
from kolm.data import clean
from kolm.data.config import CleaningConfig, DedupConfig
from kolm.data.dedup import MinHasher, ngram_hashes, splitmix64
from kolm.data.filters import PARSE_REASONS, Batch, Pipeline, Words, filter_paths, load_filters
from kolm.errors import KolmError

R = {r: i + 1 for i, r in enumerate(PARSE_REASONS)}  # parse failures; filter codes follow them


@dataclass
class WorkerSpec:
    """Everything a worker needs, as plain picklable data."""

    tokenizer_file: str
    cleaning: dict[str, Any]
    dedup: dict[str, Any]
    sources: list[tuple[str, str]]  # per source index: (text_field, lang)
    eos_id: int
    bos_id: int | None
    val_fraction: float
    seed: int
    filters: list[str] = dataclasses.field(default_factory=filter_paths)  # the filters in order, module:qualname


_WORKER: Worker | None = None


def init_worker(spec: WorkerSpec, single_thread: bool = True) -> None:
    """Pool initializer: build the per-process worker (tokenizer loaded once)."""
    global _WORKER
    if single_thread:  # one process per core already: no nested tokenizer thread pool
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = Worker(spec)


def run_clean(batch: tuple[int, str, list[Any]]) -> dict[str, Any]:
    """Pool task 1: parse, clean, filter and hash one batch of records."""
    assert _WORKER is not None, "init_worker was not called"
    return _WORKER.clean(*batch)


def run_tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pool task 2: tokenize the documents the main process kept after dedup."""
    assert _WORKER is not None, "init_worker was not called"
    return _WORKER.tokenize(texts)


class Worker:
    """Per-process state: configs, tokenizer and MinHasher."""

    def __init__(self, spec: WorkerSpec):
        from tokenizers import Tokenizer

        self.spec = spec
        self.cfg: CleaningConfig = from_dict(CleaningConfig, spec.cleaning, "cleaning")
        self.dedup: DedupConfig = from_dict(DedupConfig, spec.dedup, "dedup")
        self.tok = Tokenizer.from_file(spec.tokenizer_file)
        self._encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        self.bands, self.rows = self.dedup.lsh_params()
        self.hasher = MinHasher(self.dedup.num_perm, self.dedup.seed, self.bands, self.rows)
        self.pii_types = tuple(self.cfg.pii.types) if self.cfg.pii.enabled else ()
        self.pipeline = Pipeline(self.cfg, load_filters(spec.filters))
        self.reasons = PARSE_REASONS + self.pipeline.names
        if len(self.reasons) > 255:  # status codes are uint8
            raise KolmError(f"{len(self.pipeline.names)} data filters registered; at most {255 - len(PARSE_REASONS)}")
        self.val_salt = np.uint64(int.from_bytes(hashlib.blake2b(f"val-{spec.seed}".encode(),
                                                                 digest_size=8).digest(), "little"))

    def _parse(self, payload: Any, fmt: str, field: str) -> tuple[str | None, int]:
        if isinstance(payload, str):
            return payload, 0
        if fmt == "jsonl":
            try:
                row = json.loads(payload)
            except UnicodeDecodeError:
                return None, R["invalid_utf8"]
            except ValueError:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    return None, R["invalid_utf8"]
                return None, R["bad_json"]
            if not isinstance(row, dict):
                return None, R["bad_json"]
            text = row
            for part in field.split("."):
                text = text.get(part) if isinstance(text, dict) else None
            return (text, 0) if isinstance(text, str) else (None, R["missing_field"])
        try:
            return payload.decode("utf-8"), 0
        except UnicodeDecodeError:
            return None, R["invalid_utf8"]

    def clean(self, src_idx: int, fmt: str, payloads: list[Any]) -> dict[str, Any]:
        """Status per record (0 = passed the filters, else 1 + index into ``reasons``) and, per survivor, its text,
        dedup keys, size and validation flag."""
        field, lang = self.spec.sources[src_idx]
        status = np.zeros(len(payloads), dtype=np.uint8)
        pii: dict[str, int] = {}
        texts: list[str] = []
        rows: list[int] = []
        for i, p in enumerate(payloads):
            text, code = self._parse(p, fmt, field)
            if text is None:
                status[i] = code
                continue
            texts.append(self._mask(self._normalise(text), pii))
            rows.append(i)
        batch = Batch(texts, lang)
        codes = self.pipeline.run(batch)
        dropped = np.flatnonzero(codes)
        status[np.asarray(rows, dtype=np.int64)[dropped]] = codes[dropped] + len(PARSE_REASONS)
        doc_idx = np.asarray(rows, dtype=np.int64)[batch.rows]
        exact = self._exact_keys(batch.words)
        bands, has_sig = self._band_keys(batch.words)
        n_bytes = np.fromiter((len(t.encode("utf-8", "surrogatepass")) for t in batch.texts), dtype=np.int64,
                              count=len(batch))
        return {"status": status, "reasons": self.reasons, "doc_idx": doc_idx, "exact": exact, "bands": bands,
                "has_sig": has_sig, "texts": batch.texts, "n_bytes": n_bytes, "val": self._validation(exact),
                "pii": pii}

    def _normalise(self, text: str) -> str:
        cfg = self.cfg
        # Fast path: printable text (no controls, no odd spaces or newlines) needs only NFC and spaces.
        if cfg.normalize_whitespace and text.isprintable() and "  " not in text and text[:1] != " " \
                and text[-1:] != " ":
            if cfg.nfc and not unicodedata.is_normalized("NFC", text):
                text = unicodedata.normalize("NFC", text)
            return text
        return clean.normalize(text, cfg.nfc, cfg.normalize_whitespace)

    def _mask(self, text: str, counts: dict[str, int]) -> str:
        """Mask PII (when on), adding the matches per type to ``counts``."""
        if not self.pii_types:
            return text
        text, found = clean.mask_pii(text, self.pii_types, self.cfg.pii.tokens)
        for k, v in found.items():
            counts[k] = counts.get(k, 0) + v
        return text

    @staticmethod
    def _exact_keys(words: Words) -> np.ndarray:
        """64-bit blake2b of each document's lower-cased words joined by one space (exact-duplicate key)."""
        blake, ws = hashlib.blake2b, words.words
        return np.fromiter((int.from_bytes(blake(b" ".join(ws[a:b]), digest_size=8).digest(), "little")
                            for a, b in zip(words.start.tolist(), words.end.tolist())), dtype=np.uint64,
                           count=len(words.start))

    def _band_keys(self, words: Words) -> tuple[np.ndarray, np.ndarray]:
        """MinHash LSH band keys of each document's word n-grams, and whether it has any n-gram at all."""
        n = len(words.start)
        if not self.dedup.near or not n:
            return np.zeros((n, 0), dtype=np.uint64), np.zeros(n, dtype=bool)
        hashes, _, offsets = words.flat()
        shingles, sh_off = ngram_hashes(hashes, offsets, self.dedup.ngram)
        return self.hasher.band_keys(self.hasher.signatures(shingles, sh_off)), np.diff(sh_off) > 0

    def _validation(self, exact: np.ndarray) -> np.ndarray:
        """Held out or not, from a seeded hash of the exact key: the same document always lands on the same side."""
        u = splitmix64(exact ^ self.val_salt) >> np.uint64(11)
        return (u.astype(np.float64) / float(1 << 53)) < self.spec.val_fraction

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat int32 ids with EOS after (and BOS before, when set) every document, and per-doc lengths."""
        if not texts:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        encs = self._encode(texts, add_special_tokens=False)
        ids = [e.ids for e in encs]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum()))
        ends = np.cumsum(lens)
        out = np.insert(flat, ends, self.spec.eos_id)
        extra = 1
        if self.spec.bos_id is not None:
            starts = np.concatenate([[0], ends[:-1]]) + np.arange(len(lens))
            out = np.insert(out, starts, self.spec.bos_id)
            extra = 2
        return out.astype(np.int32, copy=False), (lens + extra).astype(np.int32)
