"""Phase 1 of ``kolm data build``: stream every source through the worker pool, deduplicate, spill, checkpoint.

The main process reads records (:mod:`kolm.data.sources`) and groups them into batches of ~``batch_bytes``.
Each batch goes through two pool tasks (:mod:`kolm.data.process`): ``run_clean`` (parse, normalise, mask PII,
filter, hash), then, after the main process has taken the dedup decisions against the global key sets
(:class:`kolm.data.dedup.KeySet`) and routed the kept documents to train or validation, ``run_tokenize`` for
the kept documents only: duplicates and filtered documents are never tokenized. At most ``2 * num_proc``
batches are in flight per task kind and results are consumed in submission order, so memory is bounded and
the outcome depends neither on timing nor on ``num_proc``. Tokens are appended to per-source spill files.

A record whose raw bytes equal those of an already kept document is dropped as ``exact_duplicate`` before it
is even cleaned (it would normalise to the same text).

When the last source of a language is read, the language must have kept a document: otherwise the build stops
there (not after reading the other languages) with :func:`check_kept`'s message, which names every source of the
language and why it lost everything (drop reasons with counts and the settings behind them).

Every ``checkpoint_mb`` of input the in-flight batches are drained and the state (position, counters, spill
sizes, key-set runs) is written atomically; an interrupted build resumes from the last checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kolm.config import to_dict
from kolm.data.config import DataBuildConfig
from kolm.data.dedup import KeySet, repeated
from kolm.data.filters import filter_paths, load_filters
from kolm.data.process import WorkerSpec, init_worker, run_clean, run_tokenize
from kolm.data.sources import ResolvedSource, read_records
from kolm.errors import KolmError
from kolm.io.files import atomic_write_text

MAX_EXAMPLES = 5
# spill bytes (int32 train tokens, validation rows) per input byte, for the room a build needs before a checkpoint has
# measured it (measured 1.73 for ../shared's ko_dev + en_dev with Llama-2's tokenizer; the key sets added 0.43 there)
SPILL_PER_INPUT_BYTE = 1.7
STATE_FILE = "scan_state.json"


@dataclass
class SourceStats:
    """Counters of one source. Invariant: read == kept + sum(dropped.values())."""

    read: int = 0
    kept: int = 0
    train_docs: int = 0
    val_docs: int = 0
    bytes_read: int = 0
    bytes_kept: int = 0
    tokens_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_bytes: dict[str, int] = field(default_factory=dict)
    pii_masked: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[list[int]]] = field(default_factory=dict)  # reason -> [[file index, line], ...]
    read_errors: list[str] = field(default_factory=list)  # files cut short by corruption, where and why

    def drop(self, reason: str, size: int, loc: tuple[int, int]) -> None:
        self.drop_many(reason, 1, size, [loc])

    def drop_many(self, reason: str, n: int, size: int, locs: list[tuple[int, int]]) -> None:
        """Count ``n`` drops of ``size`` bytes; keep the first locations (in file order, whatever the timing)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        self.dropped_bytes[reason] = self.dropped_bytes.get(reason, 0) + size
        ex = self.examples.setdefault(reason, [])
        new = [list(loc) for loc in locs[:MAX_EXAMPLES] if len(ex) < MAX_EXAMPLES or list(loc) < ex[-1]]
        if new:
            ex.extend(new)
            ex.sort()
            del ex[MAX_EXAMPLES:]

    def drop_records(self, reason: str, rows: np.ndarray, fi: int, lines: np.ndarray, sizes: np.ndarray) -> None:
        """Drops of the batch records ``rows`` (indices into per-record ``lines`` and ``sizes``), in order."""
        if len(rows):
            locs = [(fi, int(x)) for x in lines[rows[:MAX_EXAMPLES]]]
            self.drop_many(reason, len(rows), int(sizes[rows].sum()), locs)


class _Done:
    """Stands in for a Future when running in-process (num_proc=0)."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def _raw_keys(payloads: list[bytes | str]) -> np.ndarray:
    """64-bit blake2b of every record's raw bytes (text records: their UTF-8)."""
    blake = hashlib.blake2b
    digests = b"".join(blake(p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                       for p in payloads)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


class Scanner:
    """Runs phase 1 for one build; see the module docstring."""

    def __init__(self, cfg: DataBuildConfig, sources: list[ResolvedSource], spec: WorkerSpec, work: Path,
                 progress: bool = True):
        self.cfg, self.sources, self.spec, self.work = cfg, sources, spec, work
        self.progress = progress
        self.state_path = work / STATE_FILE
        self.keys_dir = work / "keys"
        self.stats = [SourceStats() for _ in sources]
        self.val_counts = {lang: 0 for lang in cfg.mix}
        self.position = [0, 0, 0]  # source, file, records done in that file
        self.exact_on, self.near_on = cfg.dedup.exact, cfg.dedup.near
        self.raw = KeySet(self.keys_dir, "raw")
        self.exact = KeySet(self.keys_dir, "exact")
        self.near = KeySet(self.keys_dir, "near")
        self.cleaning: collections.deque = collections.deque()  # (future, source, file index, (lines, sizes, raw keys))
        self.tokenizing: collections.deque = collections.deque()  # (future, source, is_val, texts, n_bytes)
        self.window = 2 * max(1, cfg.num_proc)  # batches in flight per queue: bounded memory
        self.batch_id = 0
        self.hints = filter_hints(cfg, load_filters(spec.filters))
        self.measured = (0, 0, 0)  # spill bytes, key-set bytes, input bytes read at the last checkpoint

    # -- spills -------------------------------------------------------------------------------------------
    def _spill_paths(self) -> dict[str, Path]:
        paths = {}
        for s in self.sources:
            paths[f"tokens{s.index}"] = self.work / f"src{s.index}.tokens.bin"
            paths[f"lengths{s.index}"] = self.work / f"src{s.index}.lengths.bin"
        for lang in self.cfg.mix:
            paths[f"val_{lang}"] = self.work / f"val.{lang}.jsonl"
        return paths

    def _open_spills(self, sizes: dict[str, int] | None) -> None:
        self.paths = self._spill_paths()
        self.fh = {}
        for k, p in self.paths.items():
            if sizes is not None and p.exists():
                with open(p, "r+b") as f:
                    f.truncate(sizes.get(k, 0))  # drop what was written after the checkpoint
            elif p.exists():
                p.unlink()
            self.fh[k] = open(p, "ab")  # noqa: SIM115 - closed in run()

    def _sync_spills(self) -> dict[str, int]:
        sizes = {}
        for k, f in self.fh.items():
            f.flush()
            os.fsync(f.fileno())
            sizes[k] = f.tell()
        return sizes

    # -- state --------------------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        self.stats = [SourceStats(**s) for s in state["stats"]]
        self.val_counts = state["val_counts"]
        self.position = state["position"]
        self.batch_id = state["batch_id"]
        self.raw = KeySet.load(self.keys_dir, "raw", state["keys"]["raw"])
        self.exact = KeySet.load(self.keys_dir, "exact", state["keys"]["exact"])
        self.near = KeySet.load(self.keys_dir, "near", state["keys"]["near"])
        self._measure(state["spill_sizes"])
        return state

    def _measure(self, spill_sizes: dict[str, int]) -> None:
        """Remember the spills' and key sets' bytes and the input bytes read at a checkpoint (everything read is
        spilled there), for :meth:`space_needed`."""
        keys = sum(p.stat().st_size for p in self.keys_dir.glob("*.npy"))
        self.measured = (sum(spill_sizes.values()), keys, sum(st.bytes_read for st in self.stats))

    def _checkpoint(self, done: bool = False) -> None:
        self._drain(0)
        sizes = self._sync_spills()
        state = {"version": 1, "done": done, "position": self.position, "batch_id": self.batch_id,
                 "stats": [dataclasses.asdict(s) for s in self.stats], "val_counts": self.val_counts,
                 "spill_sizes": sizes,
                 "keys": {"raw": self.raw.checkpoint(), "exact": self.exact.checkpoint(),
                          "near": self.near.checkpoint()}}
        atomic_write_text(self.state_path, json.dumps(state))
        for ks in (self.raw, self.exact, self.near):
            ks.garbage_collect()
        self._measure(sizes)

    # -- main loop ----------------------------------------------------------------------------------------
    def run(self) -> list[SourceStats]:
        state = self._load_state() if self.cfg.resume else None
        if state is not None and state["done"]:
            return self.stats
        self._open_spills(state["spill_sizes"] if state else None)
        from kolm.console import Progress

        total = sum(sum(s.sizes) for s in self.sources)
        done_bytes = sum(st.bytes_read for st in self.stats)
        self.bar = Progress("kolm data build: clean+tokenize", total or None, unit="B", scale=True,
                            initial=done_bytes, enabled=self.progress)
        self.pool = None
        if self.cfg.num_proc > 0:
            # spawn (not fork): the workers never inherit locks from threads of the main process. An executor,
            # unlike multiprocessing.Pool, fails with BrokenProcessPool if a worker dies instead of hanging.
            self.pool = ProcessPoolExecutor(self.cfg.num_proc, mp_context=mp.get_context("spawn"),
                                            initializer=init_worker, initargs=(self.spec, True))
        else:
            init_worker(self.spec, single_thread=False)  # in-process: the same functions, called directly
        try:
            self._loop()
            self._checkpoint(done=True)
        except BaseException:
            # closing flushes what is buffered: on a full disk that fails again and would hide the first error (the
            # spills are cut back to the last checkpoint on resume anyway)
            self._close(quiet=True)
            raise
        self._close(quiet=False)
        return self.stats

    def _close(self, quiet: bool) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for f in self.fh.values():
            try:
                f.close()
            except OSError:
                if not quiet:
                    raise
        self.bar.close()

    def space_needed(self) -> int:
        """Roughly how many bytes the rest of the build writes: phase 1's spills and key sets grow with the input
        (at the rate the last checkpoint measured, else :data:`SPILL_PER_INPUT_BYTE`), and packing then writes train
        shards and validation splits about the size of the finished spills."""
        spills, keys, read = self.measured
        total = sum(sum(s.sizes) for s in self.sources)
        end_spills, end_keys = (spills / read * total, keys / read * total) if read else (SPILL_PER_INPUT_BYTE * total,
                                                                                             0.0)
        now = sum(p.stat().st_size for p in [*self._spill_paths().values(), *self.keys_dir.glob("*.npy")]
                  if p.is_file())
        return int(max(0.0, end_spills + end_keys - now) + end_spills)

    def _loop(self) -> None:
        ckpt_bytes = int(self.cfg.checkpoint_mb * (1 << 20))
        since_ckpt = 0
        start_src, start_file, start_rec = self.position
        for src in self.sources[start_src:]:
            st = self.stats[src.index]
            limit = src.cfg.max_docs
            for fi in range(start_file if src.index == start_src else 0, len(src.files)):
                skip = start_rec if (src.index, fi) == (start_src, start_file) else 0
                self.position = [src.index, fi, skip]
                rec_no = skip
                payloads: list[Any] = []
                metas: list[tuple[int, int]] = []  # (line, raw bytes)
                size = 0
                for line, payload, nbytes, reason in read_records(src, fi, skip, st.read_errors):
                    if limit is not None and st.read >= limit:
                        break
                    st.read += 1
                    st.bytes_read += nbytes
                    rec_no += 1
                    if reason is not None:
                        st.drop(reason, nbytes, (fi, line))
                        continue
                    payloads.append(payload)
                    metas.append((line, nbytes))
                    size += nbytes
                    if size >= self.cfg.batch_bytes:
                        self._submit(src, fi, payloads, metas, size)
                        payloads, metas = [], []
                        since_ckpt += size
                        size = 0
                        if since_ckpt >= ckpt_bytes:
                            self.position = [src.index, fi, rec_no]
                            self._checkpoint()
                            since_ckpt = 0
                if payloads:
                    self._submit(src, fi, payloads, metas, size)
                    since_ckpt += size
                self.position = [src.index, fi + 1, 0]
            self.position = [src.index + 1, 0, 0]
            if all(s.index <= src.index for s in self.sources if s.lang == src.lang):
                self._drain(0)  # the language is complete: fail now if it kept nothing, not after the others
                check_kept(self.sources, self.stats, [src.lang], self.hints)

    def _submit(self, src: ResolvedSource, fi: int, payloads: list[Any], metas: list[tuple[int, int]],
                size: int) -> None:
        st = self.stats[src.index]
        arr = np.array(metas, dtype=np.int64).reshape(-1, 2)
        lines, sizes = arr[:, 0].copy(), arr[:, 1].copy()
        raw = _raw_keys(payloads) if self.exact_on else np.zeros(len(payloads), np.uint64)
        if self.exact_on and len(self.raw):
            hit = self.raw.contains(raw)
            if hit.any():
                st.drop_records("exact_duplicate", np.flatnonzero(hit), fi, lines, sizes)
                keep = np.flatnonzero(~hit)
                payloads = [payloads[i] for i in keep]
                lines, sizes, raw = lines[keep], sizes[keep], raw[keep]
        self.bar.update(size)
        if not payloads:
            return
        self.batch_id += 1
        self._drain(self.window - 1)
        self.cleaning.append((self._call(run_clean, (src.index, src.formats[fi], payloads)), src, fi,
                              (lines, sizes, raw)))

    def _call(self, fn: Any, arg: Any) -> Any:
        if self.pool is not None:
            return self.pool.submit(fn, arg)
        return _Done(fn(arg))

    @staticmethod
    def _result(fut: Any) -> Any:
        try:
            return fut.result()
        except BrokenProcessPool as e:
            raise KolmError(f"a data worker process died ({e}); out of memory? lower num_proc or batch_bytes, "
                            f"then run the same command again to resume") from None

    def _drain(self, keep: int) -> None:
        """Consume results in submission order until at most ``keep`` cleaning batches are in flight."""
        while len(self.cleaning) > keep:
            fut, src, fi, metas = self.cleaning.popleft()
            self._handle_clean(self._result(fut), src, fi, metas)
            while len(self.tokenizing) >= self.window:
                self._handle_tokens(*self.tokenizing.popleft())
        if keep == 0:
            while self.tokenizing:
                self._handle_tokens(*self.tokenizing.popleft())

    def _handle_clean(self, res: dict[str, Any], src: ResolvedSource, fi: int,
                      meta: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Count filter drops, take the dedup decisions, route kept documents to train or validation."""
        lines, sizes, raw = meta
        st = self.stats[src.index]
        status, reasons = res["status"], res["reasons"]
        for code in np.unique(status[status > 0]):
            st.drop_records(reasons[code - 1], np.flatnonzero(status == code), fi, lines, sizes)
        for k, v in res["pii"].items():
            st.pii_masked[k] = st.pii_masked.get(k, 0) + v
        doc_idx = res["doc_idx"]
        m = len(doc_idx)
        if m == 0:
            return
        verdict = self._dedup(res["exact"], res["bands"], res["has_sig"])
        kept = verdict == 0
        st.drop_records("exact_duplicate", doc_idx[verdict == 1], fi, lines, sizes)
        st.drop_records("near_duplicate", doc_idx[verdict == 2], fi, lines, sizes)
        if self.exact_on:
            self.exact.add(res["exact"][kept])
            self.raw.add(raw[doc_idx[kept]])
        if self.near_on and res["bands"].shape[1]:
            self.near.add(res["bands"][kept & res["has_sig"]])
        is_val = np.zeros(m, dtype=bool)
        cap = self.cfg.validation.max_docs
        for j in np.flatnonzero(res["val"] & kept):
            if self.val_counts[src.lang] >= cap:
                break
            self.val_counts[src.lang] += 1
            is_val[j] = True
        sel = np.flatnonzero(kept)
        texts = [res["texts"][j] for j in sel]
        st.kept += len(sel)
        st.val_docs += int(is_val.sum())
        st.train_docs += len(sel) - int(is_val.sum())
        st.bytes_kept += int(res["n_bytes"][sel].sum())
        if texts:
            fut = self._call(run_tokenize, texts)
            self.tokenizing.append((fut, src, is_val[sel], texts, res["n_bytes"][sel]))

    def _dedup(self, exact: np.ndarray, bands: np.ndarray, has_sig: np.ndarray) -> np.ndarray:
        """Per document of a batch, in order: 0 kept, 1 exact duplicate, 2 near duplicate.

        Same result as deciding one document at a time (a document is a duplicate of the documents kept before it,
        in earlier batches or earlier in this one), but only documents whose keys collide inside the batch go
        through the sequential loop.
        """
        m = len(exact)
        verdict = np.zeros(m, dtype=np.uint8)
        near_on = self.near_on and bands.shape[1] > 0
        if self.exact_on:
            verdict[self.exact.contains(exact)] = 1
        if near_on:
            verdict[(verdict == 0) & has_sig & self.near.contains(bands).any(axis=1)] = 2
        # Documents sharing an exact key or a band key with another document of this batch.
        conflict = np.zeros(m, dtype=bool)
        if self.exact_on:
            conflict |= repeated(exact)
        if near_on:
            shared = np.zeros(m, dtype=bool)
            shared[np.flatnonzero(has_sig)] = repeated(bands[has_sig].ravel()).reshape(-1, bands.shape[1]).any(axis=1)
            conflict |= shared
        seen_ex: set[int] = set()
        seen_b: set[int] = set()
        for j in np.flatnonzero(conflict & (verdict == 0)).tolist():
            if self.exact_on and int(exact[j]) in seen_ex:
                verdict[j] = 1
                continue
            keys = bands[j].tolist() if near_on and has_sig[j] else []
            if keys and not seen_b.isdisjoint(keys):
                verdict[j] = 2
                continue
            seen_ex.add(int(exact[j]))
            seen_b.update(keys)
        return verdict

    def _handle_tokens(self, fut: Any, src: ResolvedSource, is_val: np.ndarray, texts: list[str],
                       n_bytes: np.ndarray) -> None:
        """Append the tokens of kept documents to the train spill, or whole documents to the validation spill."""
        tokens, n_tok = self._result(fut)
        n_tok = n_tok.astype(np.int64)
        self.stats[src.index].tokens_kept += int(n_tok.sum())
        if is_val.any():
            tok_end = np.cumsum(n_tok)
            head = 1 if self.spec.bos_id is not None else 0
            fh = self.fh[f"val_{src.lang}"]
            for j in np.flatnonzero(is_val):
                ids = tokens[tok_end[j] - n_tok[j] + head:tok_end[j] - 1].tolist()
                row = {"text": texts[j], "input_ids": ids, "n_bytes": int(n_bytes[j]), "source": src.name}
                fh.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        train = ~is_val
        if train.any():
            self.fh[f"tokens{src.index}"].write((tokens[np.repeat(train, n_tok)] if not train.all() else tokens)
                                                .astype(np.int32, copy=False).tobytes())
            self.fh[f"lengths{src.index}"].write(n_tok[train].astype(np.int32).tobytes())


def describe_loss(src: ResolvedSource, st: SourceStats, hints: dict[str, str] | None = None) -> str:
    """Why a source kept nothing, e.g. ``source ko_web (ko.txt): all 1,204 documents dropped: low_hangul 1,100
    (min_hangul_ratio 0.3), too_short 104 (min_chars 20)``; ``hints`` maps a drop reason to the settings behind it."""
    names = [os.path.basename(f) for f in src.files]
    head = f"source {src.name} ({', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''})"
    notes = "".join(f"; {e}" for e in st.read_errors)
    if st.read == 0:
        why = "max_docs is 0" if src.cfg.max_docs == 0 else "" if notes else "no records in it"
        return f"{head}: no documents read" + (f" ({why})" if why else "") + notes
    hints = hints or {}
    drops = sorted(st.dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{head}: all {st.read:,} documents dropped: " + ", ".join(
        f"{r} {n:,}" + (f" ({hints[r]})" if hints.get(r) else "") for r, n in drops) + notes


def check_kept(sources: list[ResolvedSource], stats: list[SourceStats], langs: list[str],
               hints: dict[str, str] | None = None) -> list[str]:
    """Raise when a language kept no document, naming each of its sources and why it lost everything; return, for
    the languages that kept some, one line per source that lost everything."""
    lines = []
    for lang in langs:
        pairs = [(s, st) for s, st in zip(sources, stats) if s.lang == lang]
        if not any(st.kept for _, st in pairs):
            raise KolmError(f"language {lang} has no documents left after cleaning and dedup: "
                            + "; ".join(describe_loss(s, st, hints) for s, st in pairs))
        lines += [describe_loss(s, st, hints) for s, st in pairs if st.kept == 0]
    return lines


def filter_hints(cfg: DataBuildConfig, filter_classes: list[Any]) -> dict[str, str]:
    """Drop reason -> the cleaning settings behind it and their values (``min_chars 20``), for error messages."""
    c = cfg.cleaning
    return {f.name: ", ".join(f"{k} {getattr(c, k)}" for k in f.settings) for f in filter_classes}


def worker_spec(cfg: DataBuildConfig, sources: list[ResolvedSource], tokenizer_file: str, eos_id: int,
                bos_id: int | None) -> WorkerSpec:
    """The worker configuration of a build; the quality filters are the registered ones, checked importable."""
    paths = filter_paths()
    load_filters(paths)
    return WorkerSpec(tokenizer_file=tokenizer_file, cleaning=to_dict(cfg.cleaning), dedup=to_dict(cfg.dedup),
                      sources=[(s.cfg.text_field, s.lang) for s in sources], eos_id=eos_id, bos_id=bos_id,
                      val_fraction=cfg.validation.fraction, seed=cfg.seed, filters=paths)
