"""Streamed, parallel counting of the training units of ``kolm vocab extend``.

The corpus is cut into parts of about 16 MiB at line starts (:func:`kolm.io.corpus.corpus_parts`) and every part is
read a block at a time, NFC-composed, optionally morpheme-segmented with kiwipiepy, and counted by the tokenizer
family's unit counter, in ``--num-proc`` worker processes. Memory is bounded by the number of distinct
Hangul-bearing units (plus a few blocks per worker), never by the corpus: no list of documents, no joined copy.

Exactly the same counts come out for any number of processes: the parts do not depend on it, and the parent
merges the parts' counts in corpus order, so the units keep their order of first appearance (which the learner's
tie-breaking depends on).

Two seeded samples:

- ``max_bytes`` / ``fraction``: learn from a sample of the corpus. The files are cut into 1 MiB blocks at line
  starts (row groups for parquet) and blocks are drawn without replacement, seeded, until the budget is met; only
  those are read. Documents stay whole.
- the **check sample**: ``check_docs`` documents drawn uniformly from everything read (bottom-k of a seeded random
  key per document; each part draws its keys from its own seed, so the sample does not depend on the processes
  either). The invariant checks and the measurements in ``extension.json`` run on it.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import sys
import unicodedata
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolm.errors import KolmError
from kolm.io.corpus import PART_BYTES, CorpusPart, ReadStats, corpus_parts, iter_part, whole_file
from kolm.vocab.families import Family

SAMPLE_BLOCK_BYTES = 1 << 20  # the unit drawn by --max-bytes / --sample
MORPH_PART_BYTES = 1 << 20  # kiwipiepy is ~50x slower per byte than counting: smaller parts keep workers busy
PROGRESS_MIN_BYTES = 64 << 20  # no progress bar for smaller corpora


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class CorpusCounts:
    """The counted units of a corpus (or of its sample) and what was read."""

    units: Counter
    sample: list[str]  # the check sample
    stats: ReadStats
    corpus_bytes: int  # size of the whole corpus (parquet: uncompressed)
    bytes_read: int  # size of the parts read (less than corpus_bytes when sampling)
    parts: int
    num_proc: int
    sampled: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def plan(files: list[Path], *, max_bytes: int = 0, fraction: float = 1.0, seed: int = 0,
         part_bytes: int = PART_BYTES) -> tuple[list[CorpusPart], int]:
    """The parts to read and the corpus size. With a budget (``max_bytes`` > 0 or ``fraction`` < 1) below the
    corpus size, a seeded draw of 1 MiB blocks that meets the budget, merged into parts of at most 16 MiB."""
    total = sum(whole_file(p).nbytes for p in files)
    budget = min(max_bytes or total, fraction * total)
    if budget >= total:
        return corpus_parts(files, part_bytes), total
    blocks = corpus_parts(files, SAMPLE_BLOCK_BYTES)
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    got = 0
    for i in order:
        if got >= budget:
            break
        chosen.append(i)
        got += blocks[i].nbytes
    parts: list[CorpusPart] = []
    for i in sorted(chosen):
        b, last = blocks[i], parts[-1] if parts else None
        if last and last.path == b.path and last.end == b.start and last.nbytes + b.nbytes <= part_bytes:
            parts[-1] = CorpusPart(b.path, b.file_index, last.start, b.end, last.nbytes + b.nbytes)
        else:
            parts.append(b)
    return parts, total


# ------------------------------------------------------------------------------------------------ one part


class BottomK:
    """The ``k`` documents with the smallest keys, each document's key uniform in [0, 1): a uniform sample that
    merges across parts by keeping the ``k`` smallest keys of all (``heapq.nsmallest``).

    Once ``k`` are held, a document beats the largest kept key ``t`` with probability ``t``, so the number of
    documents to the next one that does is geometric and its key is uniform in [0, t): drawn directly, in
    O(k log(n/k)) random numbers instead of one per document.
    """

    def __init__(self, k: int, rng: random.Random):
        self.k, self.rng = k, rng
        self.heap: list[tuple[float, str]] = []  # (-key, doc)
        self.skip = 0  # documents to pass before the next one enters

    def add(self, docs: list[str]) -> None:
        heap, rng, pos, n = self.heap, self.rng, 0, len(docs)
        while pos < n and len(heap) < self.k:
            heapq.heappush(heap, (-rng.random(), docs[pos]))
            pos += 1
            if len(heap) == self.k:
                self._draw_skip()
        if len(heap) < self.k:
            return
        while pos + self.skip < n:
            pos += self.skip
            heapq.heapreplace(heap, (-rng.random() * -heap[0][0], docs[pos]))
            pos += 1
            self._draw_skip()
        self.skip -= n - pos

    def _draw_skip(self) -> None:
        t = -self.heap[0][0]
        u = 1.0 - self.rng.random()  # (0, 1]
        self.skip = int(math.log(u) / math.log1p(-t)) if 0.0 < t < 1.0 else 0

    def items(self) -> list[tuple[float, str]]:
        """(key, document) pairs."""
        return [(-nk, d) for nk, d in self.heap]

_JOB: dict[str, Any] = {}  # what every part needs; set once per worker process by _init


def _init(family: Family, text_field: str, morph: bool, max_chars: int, check_docs: int, seed: int,
          kiwi_threads: int) -> None:
    _JOB.update(family=family, text_field=text_field, morph=morph, max_chars=max_chars, check_docs=check_docs,
                seed=seed)
    if morph:
        from kolm.vocab import morph as morph_mod

        morph_mod.set_kiwi_threads(kiwi_threads)


def _count_part(part: CorpusPart) -> tuple[Counter, list[tuple[float, str]], ReadStats, int]:
    """Units, check-sample candidates (key, document), read counts and size of one part."""
    family: Family = _JOB["family"]
    morph, k = _JOB["morph"], _JOB["check_docs"]
    counter = family.counter(morph)
    sample = BottomK(k, random.Random(f"{_JOB['seed']}:{part.file_index}:{part.start}"))
    stats = ReadStats()
    if morph:
        from kolm.vocab.morph import morpheme_boundaries
    for batch in iter_part(part, _JOB["text_field"], _JOB["max_chars"], stats):
        # NFC: kolm's data stage composes Hangul, so the vocabulary is learned on composed text too. A newline is
        # a starter that composes with nothing, so the joined batch is NFC exactly when every document is.
        if not unicodedata.is_normalized("NFC", "\n".join(batch)):
            batch = [unicodedata.normalize("NFC", d) for d in batch]
        counter.add(batch, morpheme_boundaries(batch) if morph else None)
        sample.add(batch)
    return counter.units(), sample.items(), stats, part.nbytes


def _results(parts: list[CorpusPart], num_proc: int, initargs: tuple) -> Iterator[tuple]:
    """:func:`_count_part` of every part, in order; in ``num_proc`` spawned workers with at most two parts per
    worker in flight (finished parts never pile up), or in this process. A worker that dies (killed, out of
    memory) stops the run with a KolmError instead of a hang."""
    if num_proc <= 1:
        _init(*initargs)
        yield from map(_count_part, parts)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds Rust thread pools
    try:
        with ProcessPoolExecutor(num_proc, mp_context=ctx, initializer=_init, initargs=initargs) as pool:
            pending: deque = deque()
            try:
                for part in parts:
                    pending.append(pool.submit(_count_part, part))
                    if len(pending) >= 2 * num_proc:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # on an error, do not finish the parts in flight
                for f in pending:
                    f.cancel()
    except BrokenProcessPool as e:
        raise KolmError(f"a counting worker process died ({e}); if memory ran out, lower --num-proc; if workers "
                        "cannot start here (e.g. a script read from stdin), pass --num-proc 1") from None


def count_corpus(files: list[Path], family: Family, *, text_field: str = "text", morpheme_aware: bool = False,
                 num_proc: int = 0, max_bytes: int = 0, fraction: float = 1.0, seed: int = 0,
                 check_docs: int = 2000, check_chars: int = 400_000, max_chars: int = 20000,
                 part_bytes: int | None = None) -> CorpusCounts:
    """Count the Hangul-bearing units of ``files`` (see the module docstring); ``num_proc`` 0: every core.
    The check sample holds at most ``check_docs`` documents and ``check_chars`` characters. Parts are
    ``part_bytes`` (default 16 MiB, 1 MiB with ``morpheme_aware``)."""
    import time

    t0 = time.perf_counter()
    part_bytes = part_bytes or (MORPH_PART_BYTES if morpheme_aware else PART_BYTES)
    parts, total = plan(files, max_bytes=max_bytes, fraction=fraction, seed=seed, part_bytes=part_bytes)
    procs = max(1, min(num_proc or available_cores(), len(parts)))
    kiwi_threads = max(1, available_cores() // procs)
    initargs = (family, text_field, morpheme_aware, max_chars, check_docs, seed, kiwi_threads)
    units: Counter = Counter()
    best: list[tuple[float, str]] = []
    stats = ReadStats()
    read = sum(p.nbytes for p in parts)
    bar = _progress(read)
    try:
        for part_units, cands, part_stats, nbytes in _results(parts, procs, initargs):
            units.update(part_units)
            best = heapq.nsmallest(check_docs, best + cands)
            stats.add(part_stats)
            bar.update(nbytes)
    finally:
        bar.close()
    return CorpusCounts(units, _within(best, check_chars), stats, total, read, len(parts), procs,
                        sampled=read < total, seconds={"count": round(time.perf_counter() - t0, 3)})


def _within(best: list[tuple[float, str]], chars: int) -> list[str]:
    """The sampled documents in key order while they fit in ``chars`` characters (the first one, cut to fit,
    always), so that checking them costs bounded time and memory however long the documents are."""
    out: list[str] = []
    for _, doc in best:
        if out and chars < len(doc):
            break
        out.append(doc[:chars])
        chars -= len(out[-1])
    return out


def _progress(total: int) -> Any:
    from tqdm.auto import tqdm

    quiet = total < PROGRESS_MIN_BYTES or not sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="kolm vocab extend: counting",
                disable=quiet, leave=False, file=sys.stderr)
