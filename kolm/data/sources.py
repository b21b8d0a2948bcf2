"""Sources of ``kolm data build``: resolve and check them up front, then stream their records.

:func:`resolve_sources` runs before any long work: it expands globs (an empty glob is an error), checks that
every file exists and has a known format, that parquet files and saved ``datasets`` folders have the text
column, that the first records of a JSONL file carry the text field, and that a hub source is only used online.
Every error names the source, the file and, where it applies, the line.

:func:`iter_records` then streams one file as ``(location, payload, raw_bytes, reason)``: ``payload`` is the
record's bytes (``.txt``/``.jsonl``, decoded and parsed in the workers) or its text (columnar formats);
``reason`` is set for records skipped while reading (``record_too_large``, ``missing_field``). A line longer
than ``max_record_bytes`` is skipped without ever being held in memory.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.data.config import SourceConfig
from kolm.errors import KolmError

TXT_SUFFIXES = (".txt", ".txt.gz", ".txt.zst")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
_GLOB_CHARS = set("*?[")
_PEEK_RECORDS = 100


@dataclass
class ResolvedSource:
    """A source with its files expanded and its format fixed."""

    index: int
    cfg: SourceConfig
    files: list[str]
    formats: list[str]
    sizes: list[int]
    empty: list[bool] = dataclasses.field(default_factory=list)  # per file: certainly holds no record

    def nothing_to_read(self) -> str:
        """Why this source can yield no document at all, known before reading it ("" when it may yield some)."""
        if self.cfg.max_docs == 0:
            return "max_docs is 0"
        if self.files and all(self.empty):
            names = [os.path.basename(f) for f in self.files]
            return f"{names[0]} is empty" if len(names) == 1 else f"its {len(names)} files are empty"
        return ""

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def lang(self) -> str:
        return self.cfg.lang


def _detect_format(p: Path, where: str) -> str:
    if p.is_dir():
        if any((p / f).is_file() for f in ("state.json", "dataset_info.json", "dataset_dict.json")):
            return "arrow_dir"
        raise KolmError(f"{where}: {p} is a folder but not a dataset saved with `datasets.save_to_disk`")
    name = p.name.lower()
    for suffixes, fmt in ((TXT_SUFFIXES, "txt"), (JSONL_SUFFIXES, "jsonl"), (PARQUET_SUFFIXES, "parquet")):
        if name.endswith(suffixes):
            return fmt
    raise KolmError(f"{where}: {p}: unknown format (use .txt, .jsonl[.gz|.zst], .parquet or a datasets folder, "
                    f"or set `format`)")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def resolve_sources(sources: list[SourceConfig], base_dir: str | Path | None) -> list[ResolvedSource]:
    """Expand and check every source; raise a KolmError naming the culprit before any long work starts."""
    base = Path(base_dir) if base_dir else Path.cwd()
    out = []
    for i, s in enumerate(sources):
        where = f"sources[{i}] ({s.name})"
        if s.hub:
            if _offline():
                raise KolmError(f"{where}: hub dataset {s.hub!r} needs the network, but HF_HUB_OFFLINE or "
                                f"HF_DATASETS_OFFLINE is set; save it with `datasets.save_to_disk` and list the "
                                f"folder in `paths` instead")
            out.append(ResolvedSource(i, s, [s.hub], ["hub"], [0]))
            continue
        files: list[Path] = []
        for pat in s.paths:
            full = Path(os.path.expanduser(pat))
            if not full.is_absolute():
                full = base / full
            full = Path(os.path.normpath(full))
            if _GLOB_CHARS & set(pat):
                matches = sorted(glob.glob(str(full), recursive=True))
                if not matches:
                    raise KolmError(f"{where}: glob {pat!r} matched no files (looked for {full})")
                files.extend(Path(m) for m in matches)
            elif not full.exists():
                raise KolmError(f"{where}: file not found: {full}")
            else:
                files.append(full)
        formats, sizes, empty = [], [], []
        for f in files:
            fmt = _detect_format(f, where) if s.format == "auto" else s.format
            if not os.access(f, os.R_OK):
                raise KolmError(f"{where}: cannot read {f}")
            empty.append(_check_file(f, fmt, s, where))
            formats.append(fmt)
            sizes.append(f.stat().st_size if f.is_file() else 0)
        out.append(ResolvedSource(i, s, [str(f) for f in files], formats, sizes, empty))
    return out


def check_something_to_read(sources: list[ResolvedSource], langs: list[str]) -> list[str]:
    """Refuse, before any work, a language none of whose sources can yield a document (empty files,
    ``max_docs: 0``); return a warning for each empty file or source of a language that has others."""
    warnings = []
    for lang in langs:
        srcs = [s for s in sources if s.lang == lang]
        why = [s.nothing_to_read() for s in srcs]
        if all(why):
            raise KolmError(f"language {lang} has nothing to read: " + "; ".join(
                f"source {s.name}: {w}" for s, w in zip(srcs, why)) + "; fix the paths or drop it from the mix")
        for s, w in zip(srcs, why):
            if w:
                warnings.append(f"source {s.name} adds nothing: {w}")
            else:
                warnings += [f"source {s.name}: {f} is empty" for f, e in zip(s.files, s.empty) if e]
    return warnings


def _get_field(row: Any, field: str) -> Any:
    for part in field.split("."):
        if not isinstance(row, dict):
            return None
        row = row.get(part)
    return row


def _check_file(f: Path, fmt: str, s: SourceConfig, where: str) -> bool:
    """Check what can be checked without reading the whole file; return whether it certainly holds no record."""
    if fmt in ("jsonl", "txt"):
        try:
            if fmt == "jsonl":
                return _check_jsonl(f, s, where)
            with open_binary(f) as fh:
                return not fh.read(1)
        except corrupt_file_errors() as e:
            raise KolmError(f"{where}: {f}: cannot be read ({type(e).__name__}: {e})") from None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise KolmError(f"{where}: {f}: not a readable parquet file ({e})") from None
        names = pf.schema_arrow.names
        if s.text_field not in names:
            raise KolmError(f"{where}: {f}: no column {s.text_field!r} (columns: {names}); set `text_field`")
        return pf.metadata.num_rows == 0
    if fmt == "arrow_dir":
        ds = _load_arrow_dir(f, s, where)
        if s.text_field not in ds.column_names:
            raise KolmError(f"{where}: {f}: no column {s.text_field!r} (columns: {ds.column_names}); "
                            f"set `text_field`")
        return len(ds) == 0
    if fmt != "hub":
        raise KolmError(f"{where}: {f}: unknown format {fmt!r}")
    return False


def _check_jsonl(f: Path, s: SourceConfig, where: str) -> bool:
    """The first records that are JSON objects must carry the text field; True when the file has no record."""
    seen_keys: list[str] = []
    first_line = None
    records, complete = 0, True
    with open_binary(f) as fh:
        for lineno, raw, _ in _iter_lines(fh, s.max_record_bytes):
            if lineno > _PEEK_RECORDS:
                complete = False
                break
            if raw is not None and not raw.strip():
                continue  # a blank line is layout, not a record
            records += 1
            try:
                row = json.loads(raw) if raw is not None else None
            except (ValueError, UnicodeDecodeError):
                continue  # counted as bad_json / invalid_utf8 while building
            if not isinstance(row, dict):
                continue
            first_line = first_line or lineno
            if isinstance(_get_field(row, s.text_field), str):
                return False
            seen_keys = seen_keys or sorted(row)
    if first_line is not None:
        raise KolmError(f"{where}: {f}:{first_line}: no string field {s.text_field!r} in the first "
                        f"{_PEEK_RECORDS} records (fields: {seen_keys}); set `text_field`")
    return complete and records == 0


def _load_arrow_dir(f: Path, s: SourceConfig, where: str) -> Any:
    import datasets

    try:
        ds = datasets.load_from_disk(str(f))
    except Exception as e:  # noqa: BLE001
        raise KolmError(f"{where}: {f}: cannot load the saved dataset ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if s.split not in ds:
            raise KolmError(f"{where}: {f}: no split {s.split!r} (splits: {list(ds)}); set `split`")
        ds = ds[s.split]
    return ds


def open_binary(path: str | Path) -> io.BufferedIOBase:
    """Open a file for binary reading, decompressing ``.gz`` and ``.zst`` on the fly."""
    p = str(path)
    if p.endswith(".gz"):
        return gzip.open(p, "rb")  # type: ignore[return-value]
    if p.endswith(".zst"):
        import zstandard

        raw = open(p, "rb")  # noqa: SIM115 - closed through the reader
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return open(p, "rb", buffering=1 << 20)  # noqa: SIM115


def _iter_lines(fh: io.BufferedIOBase, cap: int, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield (line number, line without newline or None when longer than ``cap``, raw size in bytes).

    Reads ``chunk`` bytes at a time and splits them in C; at most ``cap + chunk`` bytes are held, however long a
    line is (the rest of an over-long line is read and dropped).
    """
    lineno = 0
    pending = b""
    skipping = 0  # > 0 while inside an over-long line: its bytes so far
    while True:
        data = fh.read(chunk)
        if not data:
            break
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                skipping += len(data)
                continue
            lineno += 1
            yield lineno, None, skipping + nl + 1
            skipping = 0
            data = data[nl + 1:]
        if pending:
            data = pending + data
        parts = data.split(b"\n")
        pending = parts.pop()
        for line in parts:
            lineno += 1
            if len(line) > cap:
                yield lineno, None, len(line) + 1
            else:
                yield lineno, line[:-1] if line.endswith(b"\r") else line, len(line) + 1
        if len(pending) > cap:
            skipping, pending = len(pending), b""
    if skipping:
        yield lineno + 1, None, skipping
    elif pending:
        yield lineno + 1, pending[:-1] if pending.endswith(b"\r") else pending, len(pending)


Record = tuple[int, "bytes | str | None", int, "str | None"]  # (line/row, payload, raw bytes, read-time reason)


def iter_records(src: ResolvedSource, file_idx: int, skip: int = 0) -> Iterator[Record]:
    """Stream the records of one file of ``src``, skipping the first ``skip`` (resume)."""
    f, fmt, cfg = src.files[file_idx], src.formats[file_idx], src.cfg
    gen: Iterator[Record]
    if fmt == "txt" and cfg.txt_mode == "paragraph":
        gen = _iter_paragraphs(f, cfg.max_record_bytes)
    elif fmt in ("txt", "jsonl"):
        gen = _iter_line_records(f, cfg.max_record_bytes, skip_blank=fmt == "jsonl")
    elif fmt == "parquet":
        gen = _iter_parquet(f, cfg.text_field, skip)
        skip = 0
    elif fmt == "arrow_dir":
        gen = _iter_arrow_dir(f, cfg, skip)
        skip = 0
    elif fmt == "hub":
        gen = _iter_hub(cfg)
    else:
        raise KolmError(f"{f}: unknown format {fmt!r}")
    for n, rec in enumerate(gen):
        if n < skip:
            continue
        yield rec


def corrupt_file_errors() -> tuple[type[BaseException], ...]:
    """What decompressors and pyarrow raise on a truncated or corrupt file."""
    errors: list[type[BaseException]] = [EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    try:
        import pyarrow

        errors.append(pyarrow.ArrowException)
    except ImportError:
        pass
    return tuple(errors)


def read_records(src: ResolvedSource, file_idx: int, skip: int, errors: list[str]) -> Iterator[Record]:
    """:func:`iter_records`, except that a file found truncated or corrupt part-way ends there: the records before
    are used and ``errors`` gets a line saying where and why (a long build is not lost to one bad file)."""
    n = skip
    try:
        for rec in iter_records(src, file_idx, skip):
            yield rec
            n += 1
    except corrupt_file_errors() as e:
        errors.append(f"{src.files[file_idx]} is truncated or corrupt after record {n:,} ({type(e).__name__}: "
                      f"{e}); the records before it were used, the rest of the file was skipped")


def _iter_line_records(f: str, cap: int, skip_blank: bool) -> Iterator[Record]:
    with open_binary(f) as fh:
        for lineno, raw, size in _iter_lines(fh, cap):
            if raw is None:
                yield lineno, None, size, "record_too_large"
            elif skip_blank and not raw.strip():
                continue  # a blank line in JSONL is layout, not a record
            else:
                yield lineno, raw, size, None


def _iter_paragraphs(f: str, cap: int) -> Iterator[Record]:
    with open_binary(f) as fh:
        buf: list[bytes] = []
        size, start, too_large = 0, 0, False
        for lineno, raw, n in _iter_lines(fh, cap):
            if raw is not None and not raw.strip():
                if buf or too_large:
                    yield start, (None if too_large else b"\n".join(buf)), size, ("record_too_large"
                                                                                   if too_large else None)
                buf, size, too_large = [], 0, False
                continue
            if not buf and not too_large:
                start = lineno
            size += n
            if raw is None or size > cap:
                too_large, buf = True, []
            else:
                buf.append(raw)
        if buf or too_large:
            yield start, (None if too_large else b"\n".join(buf)), size, "record_too_large" if too_large else None


def _column_records(texts: list[Any], first_row: int) -> Iterator[Record]:
    for j, t in enumerate(texts):
        if isinstance(t, str):
            yield first_row + j, t, len(t.encode("utf-8", "surrogatepass")), None
        else:
            yield first_row + j, None, 0, "missing_field"


def _iter_parquet(f: str, field: str, skip: int) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f)
    row = 0
    for rg in range(pf.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row + n <= skip:  # resume: whole row groups are skipped without reading them
            row += n
            continue
        for batch in pf.iter_batches(batch_size=4096, row_groups=[rg], columns=[field]):
            texts = batch.column(0).to_pylist()
            lo = max(0, skip - row)
            yield from _column_records(texts[lo:], row + lo + 1)
            row += len(texts)


def _iter_arrow_dir(f: str, cfg: SourceConfig, skip: int) -> Iterator[Record]:
    ds = _load_arrow_dir(Path(f), cfg, f"source {cfg.name}")
    for lo in range(skip, len(ds), 4096):
        texts = ds[lo:lo + 4096][cfg.text_field]
        yield from _column_records(texts, lo + 1)


def _iter_hub(cfg: SourceConfig) -> Iterator[Record]:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hub, cfg.hub_config, split=cfg.split, streaming=True)
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        raise KolmError(f"source {cfg.name}: cannot stream hub dataset {cfg.hub!r}: {e}") from None
    for i, row in enumerate(ds, 1):
        t = _get_field(row, cfg.text_field)
        yield from _column_records([t], i)
