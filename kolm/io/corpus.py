"""Reading corpora: plain text (a document per line), JSON lines (a text field per row) and parquet (a text column).

Files are checked up front (:func:`check_corpus_files`), cut into parts of about 16 MiB for parallel readers
(:func:`corpus_parts`) and read in blocks (:func:`iter_part`), long documents cut into windows
(:func:`text_windows`). Heavy libraries (pyarrow) are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kolm.errors import KolmError

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")


def check_corpus_files(paths: list[str]) -> list[Path]:
    """Validate corpus paths up front: they exist, are non-empty and have a supported suffix."""
    if not paths:
        raise KolmError("no corpus files given")
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise KolmError(f"corpus file not found: {p}")
        if not p.name.endswith(CORPUS_SUFFIXES):
            raise KolmError(f"{p}: unsupported corpus format (use one of {', '.join(CORPUS_SUFFIXES)})")
        if p.stat().st_size == 0:
            raise KolmError(f"corpus file is empty: {p}")
        out.append(p)
    return out


def iter_corpus(paths: list[str] | list[Path], text_field: str = "text") -> Iterator[str]:
    """Yield documents: lines of ``.txt``, the ``text_field`` of ``.jsonl`` rows, a column of ``.parquet``.

    Files are read in blocks (:func:`iter_part`), so a consumer that stops early reads little. Broken input raises
    a KolmError naming the file and line (vocabulary learning is short; failing loudly is better than learning
    from a silently truncated corpus).
    """
    for i, p in enumerate(map(Path, paths)):
        for batch in iter_part(whole_file(p, i), text_field):
            yield from batch


# ----------------------------------------------------------------------------------------------- corpus parts

PART_BYTES = 16 << 20  # a unit of parallel work: large enough that per-part overheads vanish
BLOCK_BYTES = 4 << 20  # read size; also the longest stretch of one .txt line held in memory


@dataclasses.dataclass(frozen=True)
class CorpusPart:
    """A contiguous piece of one corpus file: a byte range from a line start to a line start (``.txt``,
    ``.jsonl``) or a range of row groups (``.parquet``). ``nbytes`` is the size it covers (for parquet the
    uncompressed size of its row groups), ``file_index`` the file's position in the corpus."""

    path: Path
    file_index: int
    start: int
    end: int
    nbytes: int


@dataclasses.dataclass
class ReadStats:
    """What :func:`iter_part` read: documents (non-empty lines/rows) and the long ones cut into windows."""

    documents: int = 0
    windowed_documents: int = 0
    windows: int = 0

    def add(self, other: ReadStats) -> None:
        self.documents += other.documents
        self.windowed_documents += other.windowed_documents
        self.windows += other.windows


def whole_file(path: Path, file_index: int = 0) -> CorpusPart:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        md = pq.ParquetFile(path).metadata
        return CorpusPart(path, file_index, 0, md.num_row_groups, path.stat().st_size)
    size = path.stat().st_size
    return CorpusPart(path, file_index, 0, size, size)


def corpus_parts(paths: list[Path], part_bytes: int = PART_BYTES) -> list[CorpusPart]:
    """Cut every file into parts of about ``part_bytes`` (at line starts, or at row-group boundaries), in corpus
    order. The cut depends only on the files and ``part_bytes``, never on how many processes read them."""
    out: list[CorpusPart] = []
    for i, p in enumerate(paths):
        if p.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            md = pq.ParquetFile(p).metadata
            start, acc = 0, 0
            for g in range(md.num_row_groups):
                acc += md.row_group(g).total_byte_size
                if acc >= part_bytes or g == md.num_row_groups - 1:
                    out.append(CorpusPart(p, i, start, g + 1, acc))
                    start, acc = g + 1, 0
            continue
        size = p.stat().st_size
        cuts = [0]
        with p.open("rb") as fh:
            while cuts[-1] + part_bytes < size:
                nxt = _next_line_start(fh, cuts[-1] + part_bytes)
                if nxt >= size:
                    break
                cuts.append(nxt)
        cuts.append(size)
        out += [CorpusPart(p, i, a, b, b - a) for a, b in zip(cuts, cuts[1:]) if b > a]
    return out


def _next_line_start(fh: Any, pos: int) -> int:
    """The offset of the first line that starts at or after ``pos`` (reads in blocks: lines may be huge)."""
    fh.seek(pos - 1)
    while True:
        block = fh.read(1 << 20)
        if not block:
            return fh.tell()
        i = block.find(b"\n")
        if i >= 0:
            return fh.tell() - len(block) + i + 1


def iter_part(part: CorpusPart, text_field: str = "text", max_chars: int | None = None,
              stats: ReadStats | None = None) -> Iterator[list[str]]:
    """Yield the non-empty documents of ``part`` in batches (about one per block read).

    ``max_chars``: documents longer than this are cut into windows (:func:`text_windows`), and a ``.txt`` line is
    read in bounded pieces, so no single line of any length sits in memory whole; without it documents come whole.
    ``stats`` (if given) counts documents and windows.
    """
    stats = stats if stats is not None else ReadStats()
    name = part.path.name
    if name.endswith(".txt"):
        yield from _txt_batches(part, max_chars, stats)
        return
    if name.endswith(".jsonl"):
        batches = _jsonl_batches(part, text_field)
    elif name.endswith(".parquet"):
        batches = _parquet_batches(part, text_field)
    else:
        raise KolmError(f"{part.path}: unsupported corpus format")
    for batch in batches:
        stats.documents += len(batch)
        if batch:
            yield _windowed(batch, max_chars, stats)


def text_windows(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters, each cut just before a space that follows a
    non-space (a word keeps the space in front of it and a run of spaces stays whole, as tokenizers cut words),
    else before any whitespace, else anywhere. ``"".join(text_windows(t, n)) == t``."""
    out = []
    pos, n = 0, len(text)
    while n - pos > max_chars:
        lo, hi = pos + max_chars // 2, pos + max_chars
        cut = text.rfind(" ", lo + 1, hi + 1)
        while cut > lo and text[cut - 1].isspace():
            cut = text.rfind(" ", lo + 1, cut)
        if cut <= lo:
            cut = next((k for k in range(hi, lo, -1) if text[k].isspace()), hi)
        out.append(text[pos:cut])
        pos = cut
    out.append(text[pos:])
    return out


def _windowed(batch: list[str], max_chars: int | None, stats: ReadStats) -> list[str]:
    if max_chars is None or max(map(len, batch), default=0) <= max_chars:
        return batch
    out: list[str] = []
    for d in batch:
        if len(d) > max_chars:
            pieces = text_windows(d, max_chars)
            stats.windowed_documents += 1
            stats.windows += len(pieces)
            out += pieces
        else:
            out.append(d)
    return out


def _txt_batches(part: CorpusPart, max_chars: int | None, stats: ReadStats) -> Iterator[list[str]]:
    """Non-empty lines of a ``.txt`` byte range, a block at a time. With ``max_chars``, a line longer than a block
    is handed on in pieces cut at a space, each cut into windows."""
    pos = part.start  # file offset of buf[0]
    buf = b""
    inside = False  # buf starts inside a line whose first piece was handed on already
    with part.path.open("rb") as fh:
        fh.seek(part.start)
        while True:
            data = fh.read(min(BLOCK_BYTES, part.end - pos - len(buf)))
            buf += data
            cut, piece = len(buf), False
            if data:
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    if max_chars is None or len(buf) < BLOCK_BYTES:
                        continue  # keep reading the line
                    cut, piece = _cut_long_line(buf), True
            lines = _decode_lines(buf[:cut], part.path, pos)
            buf, pos = buf[cut:], pos + cut
            if (inside or piece) and lines:  # the first line continues, or is, a line longer than a block
                head = lines.pop(0)
                stats.documents += not inside
                stats.windowed_documents += not inside
                pieces = text_windows(head, max_chars) if max_chars else [head]  # type: ignore[arg-type]
                stats.windows += len(pieces)
                yield [x for x in pieces if x.strip()]
            inside = piece
            lines = [x for x in lines if x.strip()]
            stats.documents += len(lines)
            if lines:
                yield _windowed(lines, max_chars, stats)
            if not data:
                return


def _cut_long_line(buf: bytes) -> int:
    """Where to cut a piece of an over-long line: before a space that follows a non-space in the second half,
    else before any ASCII whitespace there, else at the last character boundary."""
    half = len(buf) // 2
    j = buf.rfind(b" ", half)
    while j > half and buf[j - 1] in b" \t\r\x0b\x0c":
        j = buf.rfind(b" ", half, j)
    if j > half:
        return j
    ws = max(buf.rfind(c, half) for c in (b"\t", b"\r", b"\x0b", b"\x0c"))
    if ws > half:
        return ws
    j = len(buf) - 1
    while j > 0 and buf[j] & 0xC0 == 0x80:  # never inside a UTF-8 sequence
        j -= 1
    return j


def _decode_lines(chunk: bytes, path: Path, offset: int) -> list[str]:
    """The lines of ``chunk`` (which starts at file ``offset``), ``\\r`` line ends removed; a UTF-8 error names the
    line and the byte within it."""
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno, col = _line_of(path, offset + e.start)
        raise KolmError(f"{path}:{lineno}: invalid UTF-8 ({e.reason} at byte {col})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [x.rstrip("\r") for x in lines]
    return lines


def _line_of(path: Path, offset: int) -> tuple[int, int]:
    """(1-based line number, byte within that line) of a file offset; read again only to report an error."""
    line, start, pos = 1, 0, 0
    with path.open("rb") as fh:
        while pos < offset:
            block = fh.read(min(1 << 20, offset - pos))
            if not block:
                break
            n = block.count(b"\n")
            if n:
                line += n
                start = pos + block.rfind(b"\n") + 1
            pos += len(block)
    return line, offset - start


def _line_blocks(part: CorpusPart) -> Iterator[tuple[int, list[bytes]]]:
    """(file offset of the first line, complete raw lines) of a byte range, a block at a time."""
    pos, buf = part.start, b""
    with part.path.open("rb") as fh:
        fh.seek(part.start)
        while True:
            data = fh.read(min(BLOCK_BYTES, part.end - pos - len(buf)))
            buf += data
            if not data:
                if buf:
                    yield pos, [buf]
                return
            cut = buf.rfind(b"\n") + 1
            if cut:
                yield pos, buf[:cut].split(b"\n")
                buf, pos = buf[cut:], pos + cut


def _jsonl_batches(part: CorpusPart, text_field: str) -> Iterator[list[str]]:
    for offset, raws in _line_blocks(part):
        batch = []
        for raw in raws:
            if raw.strip():
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise KolmError(f"{part.path}:{_line_of(part.path, offset)[0]}: not valid JSON ({e})") from None
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    raise KolmError(f"{part.path}:{_line_of(part.path, offset)[0]}: no string field {text_field!r}")
                if row[text_field].strip():
                    batch.append(row[text_field])
            offset += len(raw) + 1
        yield batch


def _parquet_batches(part: CorpusPart, text_field: str) -> Iterator[list[str]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(part.path)
    if text_field not in pf.schema_arrow.names:
        raise KolmError(f"{part.path}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
    groups = list(range(part.start, part.end))
    if not groups:
        return
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096, row_groups=groups):
        yield [t for t in batch.column(0).to_pylist() if isinstance(t, str) and t.strip()]


@dataclasses.dataclass
class Documents:
    """Documents read for scoring, and the ones left out for being longer than the size bound."""

    texts: list[str] = dataclasses.field(default_factory=list)
    skipped_docs: int = 0
    skipped_bytes: int = 0

    def add(self, doc: str, max_chars: int = 0) -> None:
        """Keep ``doc``, or count it as skipped when ``max_chars`` (0: no bound) is exceeded."""
        if max_chars and len(doc) > max_chars:
            self.skipped_docs += 1
            self.skipped_bytes += len(doc.encode("utf-8"))
        else:
            self.texts.append(doc)


def read_documents(paths: list[str] | list[Path], text_field: str = "text", max_docs: int | None = None,
                   nfc: bool = True, max_chars: int = 0) -> Documents:
    """Whole documents for scoring (``kolm eval --text`` and the online evaluation's ``eval.sets``): the files
    checked first (:func:`check_corpus_files`), then read in order by :func:`iter_corpus` up to ``max_docs`` kept
    documents (None or 0: all), documents over ``max_chars`` characters skipped and counted (0: none),
    NFC-normalised as ``kolm data build`` does unless ``nfc`` is false. A file set without any kept document is a
    one-line error."""
    import unicodedata

    files = check_corpus_files([str(p) for p in paths])
    docs = Documents()
    for doc in iter_corpus(files, text_field):
        docs.add(doc, max_chars)
        if max_docs and len(docs.texts) >= max_docs:
            break
    if not docs.texts:
        why = (f"{docs.skipped_docs} over max_doc_chars {max_chars} skipped" if docs.skipped_docs
               else "every line or row is blank")
        raise KolmError(f"no documents in {', '.join(map(str, files))} ({why})")
    if nfc:
        docs.texts = [unicodedata.normalize("NFC", d) for d in docs.texts]
    return docs
