"""Packing and writing of ``kolm data build``: fixed-length train shards and whole-document validation splits.

Train: the shuffled document stream of the plan (:mod:`kolm.data.mix`) is cut into sequences of exactly
``seq_len`` tokens, no padding; documents end with EOS, a document may continue into the next sequence, and the
last partial sequence is dropped. Shard ``k`` holds sequences ``[k * shard_size, (k + 1) * shard_size)``, so any
shard can be written on its own: a resumed build skips the shards already on disk. Each shard is written to a
temporary name and renamed, so a shard file is either complete or absent.

The folders are in the format of ``datasets.Dataset.save_to_disk`` (``data-XXXXX-of-NNNNN.arrow``,
``state.json``, ``dataset_info.json``) and load with ``datasets.load_from_disk``. Train has one column,
``input_ids``, a fixed-size list of int32; validation has ``text``, ``input_ids`` (no BOS/EOS), ``n_bytes``
(UTF-8 bytes of the text), ``n_tokens`` and ``source``, one row per whole document.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kolm.data.mix import Plan
from kolm.io.files import atomic_path


def shard_name(k: int, n: int) -> str:
    return f"data-{k:05d}-of-{n:05d}.arrow"


def _value(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "_type": "Value"}


def _train_features(seq_len: int) -> dict[str, Any]:
    return {"input_ids": {"feature": _value("int32"), "length": seq_len, "_type": "List"}}


def _val_features() -> dict[str, Any]:
    return {"text": _value("string"), "input_ids": {"feature": _value("int32"), "_type": "List"},
            "n_bytes": _value("int64"), "n_tokens": _value("int32"), "source": _value("string")}


def _schema_meta(features: dict[str, Any]) -> dict[bytes, bytes]:
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def _write_arrow(path: Path, features: dict[str, Any], table: Any) -> None:
    """One Arrow stream file as ``datasets`` writes it (features in the schema metadata), atomically.

    Written with pyarrow directly: importing ``datasets`` alone costs ~2 s, more than packing a shard.
    """
    _write_batches(path, table.schema, features, [table])


def _write_batches(path: Path, schema: Any, features: dict[str, Any], batches: Iterable[Any]) -> None:
    import pyarrow as pa

    schema = schema.with_metadata(_schema_meta(features))
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for b in batches:
            parts = b.to_batches() if isinstance(b, pa.Table) else [b]
            writer.write_table(pa.Table.from_batches(parts, schema=schema), max_chunksize=10_000)


def finish_dataset_dir(folder: Path, features: dict[str, Any], n_shards: int, fingerprint: str) -> None:
    """Write ``state.json`` and ``dataset_info.json`` as ``Dataset.save_to_disk`` does."""
    state = {"_data_files": [{"filename": shard_name(k, n_shards)} for k in range(n_shards)],
             "_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    info = {"builder_name": None, "citation": "", "config_name": None, "dataset_name": None, "dataset_size": None,
            "description": "", "download_checksums": None, "download_size": None, "features": features,
            "homepage": "", "license": "", "size_in_bytes": None, "splits": None, "supervised_keys": None,
            "version": None}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


class TokenStore:
    """One source's spilled train tokens (``tokens.bin`` + ``lengths.bin``), read document by document.

    Documents are read with ``os.preadv`` straight into the caller's buffer: packing visits them in shuffled
    order, and a memory map would pull a whole page into memory per document.
    """

    def __init__(self, tokens_path: Path, lengths_path: Path):
        self.lengths = np.fromfile(lengths_path, dtype=np.int32).astype(np.int64)
        self.starts = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.starts[1:])
        self.fd = os.open(tokens_path, os.O_RDONLY) if tokens_path.exists() else -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _gather(stores: list[TokenStore], src: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """The tokens of documents ``(src[i], doc[i])``, concatenated in that order."""
    lens = np.empty(len(src), dtype=np.int64)
    offs = np.empty(len(src), dtype=np.int64)
    fds = np.empty(len(src), dtype=np.int64)
    for s, st in enumerate(stores):
        m = src == s
        lens[m] = st.lengths[doc[m]]
        offs[m] = st.starts[doc[m]] * 4
        fds[m] = st.fd
    out = np.empty(int(lens.sum()), dtype=np.int32)
    ends = np.cumsum(lens)
    preadv = os.preadv
    for fd, off, lo, hi in zip(fds.tolist(), offs.tolist(), (ends - lens).tolist(), ends.tolist()):
        if preadv(fd, [out[lo:hi]], off) != (hi - lo) * 4:
            raise OSError(f"short read from the token spill (fd {fd}, offset {off})")
    return out


def write_train(folder: Path, plan: Plan, stores: list[TokenStore], shard_size: int, fingerprint: str,
                progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
                batch_bytes: int = 8 << 20) -> dict[str, Any]:
    """Write all missing train shards of the plan, then the dataset metadata. Returns shard info.

    A shard is written as record batches of ~``batch_bytes``, so memory stays ~one batch whatever ``shard_size``.
    """
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    L = plan.seq_len
    n_seq = plan.n_sequences
    n_shards = max(1, -(-n_seq // shard_size))
    features = _train_features(L)
    schema = pa.schema([pa.field("input_ids", pa.list_(pa.int32(), L))])
    rows_per_batch = max(1, min(10_000, batch_bytes // (4 * L)))
    doc_start = np.concatenate([[0], plan.doc_end[:-1]]).astype(np.int64)  # documents are contiguous

    def rows(lo: int, hi: int) -> Any:
        """Record batch of sequences [lo, hi)."""
        a, b = lo * L, hi * L
        d0 = int(np.searchsorted(plan.doc_end, a, side="right"))
        d1 = int(np.searchsorted(plan.doc_end, b - 1, side="right"))
        buf = _gather(stores, plan.order_src[d0:d1 + 1], plan.order_doc[d0:d1 + 1])
        off = a - int(doc_start[d0])
        flat = buf[off:off + (b - a)]
        assert len(flat) == b - a, "internal error: packed batch has the wrong length"
        return pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(flat), L)], schema=schema)

    written = 0
    shards: Iterable[int] = range(n_shards)
    if progress is not None:
        shards = progress(shards, n_shards)
    for k in shards:
        path = folder / shard_name(k, n_shards)
        if path.exists():
            continue
        lo, hi = k * shard_size, min((k + 1) * shard_size, n_seq)
        batches = (rows(r, min(r + rows_per_batch, hi)) for r in range(lo, hi, rows_per_batch))
        _write_batches(path, schema, features, batches)
        written += 1
    finish_dataset_dir(folder, features, n_shards, fingerprint)
    return {"sequences": n_seq, "tokens": n_seq * L, "shards": n_shards, "shards_written_now": written,
            "tail_tokens_dropped": int(plan.doc_end[-1]) - n_seq * L if len(plan.doc_end) else 0}


def write_lang_tokens(path: Path, plan: Plan, source_langs: list[str]) -> dict[str, Any]:
    """``path`` (.npy, int64, shape (n_sequences + 1, n_languages)): tokens of each language in the first k packed
    sequences, so a trainer can report exactly how many tokens of each language it has seen."""
    langs = sorted(set(source_langs))
    L, n_seq = plan.seq_len, plan.n_sequences
    lang_of_doc = np.array([langs.index(source_langs[s]) for s in range(len(source_langs))],
                           dtype=np.int64)[plan.order_src] if len(plan.order_src) else np.zeros(0, np.int64)
    doc_end = plan.doc_end.astype(np.int64)
    doc_start = np.concatenate([[0], doc_end[:-1]]).astype(np.int64)
    bounds = np.arange(n_seq + 1, dtype=np.int64) * L
    d = np.searchsorted(doc_end, bounds, side="right")  # the document each boundary falls in
    out = np.zeros((n_seq + 1, len(langs)), dtype=np.int64)
    for j in range(len(langs)):
        per_doc = np.where(lang_of_doc == j, doc_end - doc_start, 0)
        before = np.concatenate([[0], np.cumsum(per_doc)])[np.minimum(d, len(per_doc))]
        inside = np.where((d < len(per_doc)) & (lang_of_doc[np.minimum(d, len(per_doc) - 1)] == j),
                          bounds - doc_start[np.minimum(d, len(per_doc) - 1)], 0) if len(per_doc) else 0
        out[:, j] = before + inside
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, out)
    return {"path": path.name, "languages": langs}


def write_validation(folder: Path, rows: list[dict[str, Any]], fingerprint: str) -> dict[str, int]:
    """One shard of whole documents (rows from the validation spill, in stream order)."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    features = _val_features()
    table = pa.table({
        "text": pa.array([r["text"] for r in rows], pa.string()),
        "input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.int32())),
        "n_bytes": pa.array([r["n_bytes"] for r in rows], pa.int64()),
        "n_tokens": pa.array([len(r["input_ids"]) for r in rows], pa.int32()),
        "source": pa.array([r["source"] for r in rows], pa.string()),
    })
    _write_arrow(folder / shard_name(0, 1), features, table)
    finish_dataset_dir(folder, features, 1, fingerprint)
    return {"docs": len(rows), "tokens": int(sum(len(r["input_ids"]) for r in rows)),
            "bytes": int(sum(r["n_bytes"] for r in rows))}


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
