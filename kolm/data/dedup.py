"""Deduplication for ``kolm data build``: batched MinHash signatures, LSH band keys and a disk-backed key set.

- :class:`MinHasher` computes MinHash signatures for a whole batch of documents at once with numpy, using
  datasketch's ``affine32`` scheme bit for bit (same permutations from the same seed, MurmurHash3 pre-mix,
  ``a * h + b`` mod 2^32); the tests check it against ``datasketch.MinHash``. Shingles are word n-grams.
- Signatures are cut into LSH bands; each band becomes one 64-bit key. Two documents sharing any band key
  are near-duplicate candidates (the estimated-Jaccard threshold is set through bands x rows).
- :class:`KeySet` holds the keys of kept documents as sorted runs (a log-structured merge); large runs are
  saved as ``.npy`` and memory-mapped, so resident memory stays bounded as the corpus grows and the set
  survives an interrupted build. Disk use: 8 bytes per key.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kolm.io.files import atomic_path

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_EMPTY32 = np.uint32(0xFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed avalanching bijection on uint64 (SplitMix64 finaliser)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before the affine permutations."""
    s1, m1, s2, m2, s3 = _FMIX32
    with np.errstate(over="ignore"):
        h = h ^ (h >> s1)
        h = h * m1
        h = h ^ (h >> s2)
        h = h * m2
        return h ^ (h >> s3)


def ngram_hashes(word_hashes: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash word n-grams of every document of a batch.

    Args:
        word_hashes: uint32 hashes of all words of the batch, documents one after the other.
        offsets: int64, length docs + 1: document d owns ``word_hashes[offsets[d]:offsets[d + 1]]``.
        n: n-gram size. A document with 1..n-1 words yields one shingle of all its words.

    Returns:
        (uint32 shingle hashes, int64 shingle offsets per document, length docs + 1).
    """
    counts = np.diff(offsets)
    total = len(word_hashes)
    h = word_hashes.astype(np.uint64)
    pos = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], counts)
    remaining = np.repeat(counts, counts) - pos  # words from this one to the document's end
    acc = h.copy()
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for k in range(1, n):
            nxt = np.zeros(total, dtype=np.uint64)
            inside = np.flatnonzero(remaining[: total - k] > k)  # the k-th next word is in the same document
            nxt[inside] = h[inside + k]
            acc = acc * prime + nxt + np.uint64(k)
    acc = splitmix64(acc)
    # Full n-grams, plus the first position of documents shorter than n (their n-gram is cut at the end).
    keep = (remaining >= n) | ((pos == 0) & (remaining < n))
    shingles = (acc[keep] ^ (acc[keep] >> np.uint64(32))).astype(np.uint32)
    per_doc = np.bincount(np.repeat(np.arange(len(counts)), counts)[keep], minlength=len(counts))
    out_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=out_offsets[1:])
    return shingles, out_offsets


class MinHasher:
    """MinHash signatures (datasketch ``affine32`` scheme) and LSH band keys for batches of documents."""

    def __init__(self, num_perm: int, seed: int, bands: int, rows: int, chunk: int = 1 << 14):
        gen = np.random.RandomState(seed)  # the same draws as datasketch.MinHash(scheme="affine32")
        self.a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        self.b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        self.num_perm, self.bands, self.rows, self.chunk = num_perm, bands, rows, chunk
        if bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands * rows} > num_perm = {num_perm}")

    def signatures(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(docs, num_perm) uint32 signatures; a document without shingles gets all 0xFFFFFFFF."""
        n_docs = len(offsets) - 1
        sig = np.full((self.num_perm, n_docs), _EMPTY32, dtype=np.uint32)
        if len(shingles) == 0:
            return sig.T.copy()
        hv = fmix32(shingles.astype(np.uint32))
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        starts = offsets[:-1][nonempty]
        ends = offsets[1:][nonempty]
        # Whole documents per chunk, laid out (perms x shingles) so that the per-document min runs over
        # contiguous memory; a chunk holds ~chunk shingles (one long document may exceed it).
        i = 0
        while i < len(nonempty):
            j = max(i + 1, int(np.searchsorted(ends, starts[i] + self.chunk, side="right")))
            lo, hi = starts[i], ends[j - 1]
            with np.errstate(over="ignore"):
                phv = np.multiply.outer(self.a, hv[lo:hi])
                phv += self.b[:, None]
            sig[:, nonempty[i:j]] = np.minimum.reduceat(phv, starts[i:j] - lo, axis=1)
            i = j
        return np.ascontiguousarray(sig.T)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(docs, bands) uint64 keys: one hash per band of rows, the band index mixed in."""
        n = sig.shape[0]
        used = sig[:, : self.bands * self.rows].reshape(n, self.bands, self.rows).astype(np.uint64)
        acc = np.zeros((n, self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(self.rows):
                acc = acc * np.uint64(0x100000001B3) + used[:, :, r]
            acc += np.arange(self.bands, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
        return splitmix64(acc)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a comparison: faster here than ``np.unique``'s hash path)."""
    a = np.sort(keys, kind="stable")  # stable = timsort/radix: near-linear on concatenated sorted runs
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


def repeated(keys: np.ndarray) -> np.ndarray:
    """Per element: does its value occur more than once in ``keys``?"""
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    eq = s[1:] == s[:-1]
    rep = np.zeros(len(keys), dtype=bool)
    rep[1:] |= eq
    rep[:-1] |= eq
    out = np.empty(len(keys), dtype=bool)
    out[order] = rep
    return out


class KeySet:
    """A growing set of uint64 keys kept as sorted runs (a log-structured merge), queried a whole array at once.

    Each :meth:`add` becomes a small sorted run; the newest run is merged into the one before while it is at least
    half its size, so there are O(log n) runs and each key is merged O(log n) times. Runs of ``mmap_at`` keys or
    more are written to ``.npy`` files and memory-mapped, so resident memory stays small however many documents
    were kept; :meth:`checkpoint` writes the rest and returns the state that :meth:`load` reopens.
    """

    def __init__(self, folder: str | Path, name: str, mmap_at: int = 1 << 20):
        self.folder, self.name, self.mmap_at = Path(folder), name, mmap_at
        self.folder.mkdir(parents=True, exist_ok=True)
        self.runs: list[np.ndarray] = []
        self.files: list[str | None] = []  # file of each run, None while it lives in memory only
        self._next = 0

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean array of the shape of ``keys``: which are in the set."""
        keys = np.asarray(keys, dtype=np.uint64)
        flat = keys.ravel()
        if not self.runs or not len(flat):
            return np.zeros(keys.shape, dtype=bool)
        order = np.argsort(flat, kind="stable")
        needles = flat[order]  # sorted needles: binary searches walk the runs in order (cache friendly)
        hit_sorted = np.zeros(len(flat), dtype=bool)
        for run in self.runs:
            idx = np.searchsorted(run, needles)
            idx[idx == len(run)] = len(run) - 1
            hit_sorted |= run[idx] == needles
        hit = np.empty(len(flat), dtype=bool)
        hit[order] = hit_sorted
        return hit.reshape(keys.shape)

    def add(self, keys: Iterable[int] | np.ndarray) -> None:
        arr = sorted_unique(np.fromiter(keys, dtype=np.uint64) if not isinstance(keys, np.ndarray)
                            else keys.astype(np.uint64, copy=False).ravel())
        if not len(arr):
            return
        self.runs.append(arr)
        self.files.append(None)
        while len(self.runs) >= 2 and len(self.runs[-1]) * 2 >= len(self.runs[-2]):
            merged = sorted_unique(np.concatenate([self.runs[-2], self.runs[-1]]))
            self.runs[-2:] = [merged]
            self.files[-2:] = [None]
            if len(merged) >= self.mmap_at:
                self._persist(len(self.runs) - 1)

    def _persist(self, i: int) -> None:
        fname = f"{self.name}-{self._next:06d}.npy"
        self._next += 1
        with atomic_path(self.folder / fname) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(self.runs[i]))
        self.runs[i] = np.load(self.folder / fname, mmap_mode="r")
        self.files[i] = fname

    def checkpoint(self) -> dict:
        """Write the in-memory runs; return the state to pass to :meth:`load`."""
        for i, f in enumerate(self.files):
            if f is None:
                self._persist(i)
        return {"files": list(self.files), "next": self._next}

    def garbage_collect(self) -> None:
        """Remove run files of this set that the current state does not reference (old merge inputs)."""
        live = {f for f in self.files if f}
        for p in self.folder.glob(f"{self.name}-*.npy*"):
            if p.name not in live:
                p.unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: str | Path, name: str, state: dict, mmap_at: int = 1 << 20) -> KeySet:
        ks = cls(folder, name, mmap_at)
        ks.files = list(state["files"])
        ks.runs = [np.load(ks.folder / f, mmap_mode="r") for f in ks.files]
        ks._next = int(state["next"])
        ks.garbage_collect()
        return ks
