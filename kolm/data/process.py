"""Worker side of ``kolm data build``: turn one batch of raw records into cleaned, hashed, tokenized documents.

A batch is records of one source. For each record the worker decodes and parses it (invalid UTF-8, broken JSON
and missing text fields become counted drop reasons), normalises it, masks PII and applies the quality filters
of :mod:`kolm.data.clean`. Per-document Python work is kept to C-speed string methods; the share of Hangul,
the n-gram repetition filters, the MinHash signatures and the LSH band keys are computed for the whole batch at
once with numpy. Kept documents are tokenized with the Rust ``tokenizers`` library in one ``encode_batch`` call
per batch (no special tokens; EOS, and BOS when asked, are added here).

Dedup decisions are not taken here: they need the global state kept by the main process
(:mod:`kolm.data.scan`), which gets back per surviving document its text, exact key and LSH band keys, decides,
and sends the documents it keeps back for :meth:`Worker.tokenize`, so duplicates are never tokenized.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from kolm.config import from_dict
from kolm.data import clean
from kolm.data.config import CleaningConfig, DedupConfig
from kolm.data.dedup import MinHasher, ngram_hashes, splitmix64

R = clean.REASON_CODE


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
        """Status per record (0 = passed the filters) and, per survivor, its text and dedup keys."""
        field, lang = self.spec.sources[src_idx]
        cfg = self.cfg
        n = len(payloads)
        status = np.zeros(n, dtype=np.uint8)
        pii: dict[str, int] = {}
        texts: list[str] = []
        idx: list[int] = []
        nfc, ws = cfg.nfc, cfg.normalize_whitespace
        min_c, max_c = cfg.min_chars, cfg.max_chars
        for i, p in enumerate(payloads):
            text, code = self._parse(p, fmt, field)
            if text is None:
                status[i] = code
                continue
            # Fast path: printable text (no controls, no odd spaces or newlines) needs only NFC and spaces.
            if ws and text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
                if nfc and not unicodedata.is_normalized("NFC", text):
                    text = unicodedata.normalize("NFC", text)
            else:
                text = clean.normalize(text, nfc, ws)
            if self.pii_types:
                text, counts = clean.mask_pii(text, self.pii_types, cfg.pii.tokens)
                for k, v in counts.items():
                    pii[k] = pii.get(k, 0) + v
            ln = len(text)
            if ln < min_c or ln > max_c:
                status[i] = R["empty"] if ln == 0 else (R["too_short"] if ln < min_c else R["too_long"])
                continue
            texts.append(text)
            idx.append(i)
        if lang == "ko" and cfg.min_hangul_ratio > 0 and texts:
            ratios = clean.hangul_ratios(texts)
            low = ratios < cfg.min_hangul_ratio
            if low.any():
                for j in np.flatnonzero(low):
                    status[idx[j]] = R["low_hangul"]
                texts = [t for t, b in zip(texts, low) if not b]
                idx = [i for i, b in zip(idx, low) if not b]
        # Words (lower-cased, UTF-8) of the whole batch at once; doc j owns words[w_start[j]:w_end[j]].
        words, w_start, w_end = clean.split_words(texts)
        n_words = w_end - w_start
        ok = np.ones(len(texts), dtype=bool)
        for j, text in enumerate(texts):  # cheap per-document filters
            if clean.symbol_ratio(text, n_words[j]) > cfg.max_symbol_word_ratio:
                status[idx[j]] = R["symbol_ratio"]
                ok[j] = False
            elif "\n" in text:
                frac, char_frac = clean.dup_lines(text)
                if frac > cfg.max_dup_line_frac or char_frac > cfg.max_dup_line_char_frac:
                    status[idx[j]] = R["dup_lines"]
                    ok[j] = False
        wh_all = np.fromiter(map(zlib.crc32, words), dtype=np.uint32, count=len(words))
        wl_all = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        n_all = len(words) + 1
        in_doc = np.cumsum(np.bincount(w_start, minlength=n_all) - np.bincount(w_end, minlength=n_all))[:-1] > 0
        doc_of_word = np.cumsum(np.bincount(w_start, minlength=n_all))[:-1] - 1
        keep_word = in_doc & ok[np.maximum(doc_of_word, 0)]
        ok_idx = np.flatnonzero(ok)
        counts = n_words[ok_idx]
        offsets = np.zeros(len(ok_idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        wh, wl = wh_all[keep_word], wl_all[keep_word]
        top2, dup5 = clean.repetition_fracs(wh, wl, offsets, cfg.repetition_min_words)
        bad2 = top2 > cfg.max_top_2gram_char_frac
        bad5 = (dup5 > cfg.max_dup_5gram_char_frac) & ~bad2
        for j in np.flatnonzero(bad2):
            status[idx[ok_idx[j]]] = R["top_2gram"]
        for j in np.flatnonzero(bad5):
            status[idx[ok_idx[j]]] = R["dup_5gram"]
        good = ~(bad2 | bad5)
        sel_docs = ok_idx[good]
        texts = [texts[j] for j in sel_docs]
        doc_idx = np.asarray([idx[j] for j in sel_docs], dtype=np.int64)
        blake = hashlib.blake2b
        exact = np.fromiter((int.from_bytes(blake(b" ".join(words[w_start[j]:w_end[j]]), digest_size=8).digest(),
                                            "little") for j in sel_docs.tolist()), dtype=np.uint64,
                            count=len(sel_docs))
        if self.dedup.near and len(sel_docs):
            # Words of the surviving documents only.
            keep_word = np.repeat(good, counts)
            shingles, sh_off = ngram_hashes(wh[keep_word], np.concatenate([[0], np.cumsum(counts[good])]),
                                            self.dedup.ngram)
            sig = self.hasher.signatures(shingles, sh_off)
            bands = self.hasher.band_keys(sig)
            has_sig = np.diff(sh_off) > 0
        else:
            bands = np.zeros((len(sel_docs), 0), dtype=np.uint64)
            has_sig = np.zeros(len(sel_docs), dtype=bool)
        n_bytes = np.fromiter((len(t.encode("utf-8", "surrogatepass")) for t in texts), dtype=np.int64,
                              count=len(texts))
        u = splitmix64(exact ^ self.val_salt) >> np.uint64(11)
        val = (u.astype(np.float64) / float(1 << 53)) < self.spec.val_fraction
        return {"status": status, "doc_idx": doc_idx, "exact": exact, "bands": bands, "has_sig": has_sig,
                "texts": texts, "n_bytes": n_bytes, "val": val, "pii": pii}

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
