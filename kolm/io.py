"""Shared I/O: reading corpora, resolving model/tokenizer locations, and writing output folders atomically.

Everything here is small and dependency-light; heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kolm.errors import KolmError
from kolm.paths import is_hub_id

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

    ``max_chars``: documents longer than this are cut into windows (:func:`windows`), and a ``.txt`` line is read
    in bounded pieces, so no single line of any length sits in memory whole; without it documents come whole.
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


def windows(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters, each cut just before a space that follows a
    non-space (a word keeps the space in front of it and a run of spaces stays whole, as tokenizers cut words),
    else before any whitespace, else anywhere. ``"".join(windows(t, n)) == t``."""
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
            pieces = windows(d, max_chars)
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
                pieces = windows(head, max_chars) if max_chars else [head]  # type: ignore[arg-type]
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


def resolve_pretrained(name_or_path: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face hub id (``ORG/NAME``, :func:`kolm.paths.is_hub_id`), downloaded
    (or read from the HF cache).

    Offline (``HF_HUB_OFFLINE=1`` or no network) an id that is not cached fails with a clear error.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    if not is_hub_id(name_or_path):
        raise KolmError(f"not a folder: {name_or_path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=allow_patterns))
    except Exception as e:  # noqa: BLE001 - many hub/network error types; all mean the same to the user
        raise KolmError(f"{name_or_path!r} is neither a local folder nor a reachable hub repo: {e}") from None


TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "generation_config.json", "config.json"]


TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "vocab.json")
# What a tokenizer may consist of on the hub (downloaded when a hub id names one).
TOKENIZER_HUB_PATTERNS = [*TOKENIZER_FILES, "vocab.*", "merges.txt", "*.model", "*.tiktoken", "added_tokens.json"]


# What a model folder carries beside its weights: the tokenizer, and kolm's records of how its vocabulary was
# extended (extension.json) and resized (resize.json), which later stages read. tokenizer.model (SentencePiece)
# travels only where it belongs to the tokenizer.json beside it (carry_tokenizer_model).
TOKENIZER_MODEL = "tokenizer.model"
MODEL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                         "extension.json", "resize.json", TOKENIZER_MODEL)
# An extension's special tokens and chat template are its base's: these may come from the base folder when the
# extension lacks them.
BASE_FALLBACK_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def copy_tokenizer_files(src: Path, dst: Path, *, keep_existing: bool = False, fallback: Path | None = None
                         ) -> list[str]:
    """Copy the :data:`MODEL_TOKENIZER_FILES` that ``src`` has into ``dst``; returns the names copied.

    ``fallback``: a folder whose :data:`BASE_FALLBACK_FILES` are used where ``src`` lacks them. tokenizer.model is
    copied only when it belongs to the tokenizer.json that ``dst`` ends up with (:func:`carry_tokenizer_model`).
    """
    copied = []
    for name in MODEL_TOKENIZER_FILES:
        source = src / name
        if not source.is_file() and fallback is not None and name in BASE_FALLBACK_FILES:
            source = fallback / name
        if name != TOKENIZER_MODEL and source.is_file() and not (keep_existing and (dst / name).exists()):
            shutil.copy2(source, dst / name)
            copied.append(name)
    if carry_tokenizer_model(dst, src) == src:
        copied.append(TOKENIZER_MODEL)
    return copied


def carry_tokenizer_model(dst: Path, *sources: Path) -> Path | None:
    """Give ``dst`` the tokenizer.model that belongs to ``dst/tokenizer.json``, if any; returns the folder it came from.

    ``dst``'s own file is kept when it belongs and removed when it does not; otherwise the first file of ``sources``
    that belongs is copied. A tokenizer.model that does not belong (e.g. the base SentencePiece model beside an
    extended vocabulary: llama.cpp's converter would read it and tokenize Korean wrongly) never travels, and a line
    says so. Belonging is :func:`kolm.vocab.spm_model.tokenizer_model_mismatch` against ``dst``'s tokenizer.json
    (the source folder's while ``dst`` has none): same pieces, in id order; without any tokenizer.json,
    tokenizer.model is the tokenizer and is copied.
    """
    from kolm.vocab.spm_model import tokenizer_model_mismatch

    for folder in (dst, *sources):
        file = folder / TOKENIZER_MODEL
        if not file.is_file():
            continue
        target = dst / "tokenizer.json" if (dst / "tokenizer.json").is_file() else folder / "tokenizer.json"
        why = tokenizer_model_mismatch(file, target)
        if why is None:
            if folder != dst:
                shutil.copy2(file, dst / TOKENIZER_MODEL)
            return folder
        print(f"warning: {file} {'removed' if folder == dst else 'left out'}: it does not belong to {target} "
              f"({why}); clients that need a tokenizer.model (llama.cpp's converter) will read tokenizer.json")
        if folder == dst:
            file.unlink()
    return None


def load_tokenizer_json(spec: str | Path, what: str = "tokenizer", *, allow_autotokenizer: bool = False,
                        trust_remote_code: bool = False) -> tuple[Any, Path]:
    """A ``tokenizers.Tokenizer`` for a folder holding tokenizer.json, the file itself or a hub id, and the file.

    ``allow_autotokenizer``: a folder without tokenizer.json is loaded with transformers' AutoTokenizer and its fast
    backend is used (then the path returned is the folder). Errors name ``what`` and the path.
    """
    from tokenizers import Tokenizer

    given = Path(spec).expanduser()
    if given.is_file():
        folder, file = given.parent, given
    else:
        folder = resolve_pretrained(str(spec), allow_patterns=TOKENIZER_HUB_PATTERNS)
        file = folder / "tokenizer.json"
    if file.is_file():
        try:
            return Tokenizer.from_file(str(file)), file
        except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exceptions
            raise KolmError(f"{what}: {file} is not a valid tokenizer.json ({e})") from None
    if not allow_autotokenizer:
        raise KolmError(f"{what}: no tokenizer.json in {folder}")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; all mean "cannot load"
        raise KolmError(f"{what}: {folder}: cannot load a tokenizer: {e}") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise KolmError(f"{what}: {folder}: only a slow tokenizer is available; save it with tokenizer.json")
    return backend, folder


def check_model_folder(folder: Path, what: str = "model") -> Path:
    """A loadable model folder: config.json, safetensors weights (never pickle) that are complete
    (:func:`check_safetensors`: headers readable, sizes as the headers say) and a tokenizer beside them."""
    if not (folder / "config.json").is_file():
        raise KolmError(f"{what}: {folder} is not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        raise KolmError(f"{what}: {folder} has no .safetensors weights (kolm loads safetensors only, never pickle)")
    if not any((folder / m).is_file() for m in TOKENIZER_MARKERS):
        raise KolmError(f"{what}: {folder} has no tokenizer (no {', '.join(TOKENIZER_MARKERS)}); a model is used "
                        f"with its own tokenizer: copy the tokenizer files into the folder")
    read_json_object(folder / "config.json", f"{what} config.json")
    check_safetensors(folder)
    return folder


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_object(path: Path, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``; an unreadable file, bad JSON or another JSON type raises a one-line KolmError
    naming the file and ``what`` it should be."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KolmError(f"{path}: not a readable {what}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise KolmError(f"{path}: not a readable {what}: expected a JSON object, got {type(data).__name__}")
    return data


def tokenizer_content(source: str | Path | Any) -> dict[str, Any]:
    """What a tokenizer maps between strings and ids, in a canonical form: the model type, the vocabulary in id
    order (Unigram: pieces with their scores), the BPE merges as pairs, and the added tokens as (id, text, special).

    ``source`` is a folder with ``tokenizer.json``, a ``tokenizer.json`` file, a ``tokenizers.Tokenizer`` or a fast
    transformers tokenizer. Everything else in the file (normalizer, pre-tokenizer, decoder, padding, truncation,
    JSON layout, the old ``"a b"`` vs the new ``["a", "b"]`` merge format) is left out: transformers rewrites some of
    it when it saves a tokenizer (e.g. its Llama class rebuilds the pre-tokenizer), which changes the file bytes but
    not which string each id (each embedding row) stands for.
    """
    if isinstance(source, (str, Path)):
        path = Path(source) / "tokenizer.json" if Path(source).is_dir() else Path(source)
        if not path.is_file():
            raise KolmError(f"{path}: not found (a fast tokenizer file is needed to compare tokenizers)")
        data = read_json_object(path, "tokenizer.json")
    else:
        backend = getattr(source, "backend_tokenizer", source)
        data = json.loads(backend.to_str())
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        vocab = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model.get("merges") or []]
    added = sorted([t["id"], t["content"], bool(t.get("special"))] for t in data.get("added_tokens") or [])
    return {"type": model.get("type"), "vocab": vocab or [], "merges": merges, "added": added}


def tokenizer_fingerprint(source: str | Path | Any) -> str:
    """SHA-256 (hex) of :func:`tokenizer_content`: equal exactly when two tokenizers give every id the same string,
    have the same merges and the same added tokens, however their files were written. Stages compare it wherever a
    model meets a tokenizer it must share its embedding rows with (e.g. ``kolm merge-lora``)."""
    canon = json.dumps(tokenizer_content(source), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def check_safetensors(folder_or_file: str | Path, pattern: str = "*.safetensors") -> list[Path]:
    """Open every safetensors file (``pattern`` in a folder, or the one file) and the shard index if there is one,
    without loading tensors; a cut or corrupt file raises a one-line KolmError naming it. Returns the files."""
    from safetensors import SafetensorError, safe_open

    p = Path(folder_or_file)
    files = sorted(p.glob(pattern)) if p.is_dir() else [p]
    for index in sorted(p.glob("*.safetensors.index.json")) if p.is_dir() else []:
        weight_map = read_json_object(index, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise KolmError(f"{index}: no weight_map (not a safetensors index)")
        shards = {str(s) for s in weight_map.values()}
        missing = sorted(s for s in shards if not (p / s).is_file())
        if missing:
            raise KolmError(f"{index}: lists shards that are missing: {', '.join(missing)}")
    if not files:
        raise KolmError(f"{p}: no {pattern} weights")
    for f in files:
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise KolmError(f"{f}: not a complete safetensors file ({e}); it is cut short or corrupt, copy it "
                            "again") from None
    return files


def check_arrow_dataset(folder: str | Path, what: str = "data") -> list[Path]:
    """Read every ``*.arrow`` file of a ``datasets`` folder (``save_to_disk``) to its end through a memory map, so a
    cut or corrupt shard raises a one-line KolmError naming it before any long job starts; returns the files. Batch
    headers are parsed, the data is not copied (cheap even for a large split)."""
    import pyarrow as pa

    p = Path(folder)
    files = sorted(p.glob("*.arrow"))
    if not files:
        raise KolmError(f"{what}: {p} holds no .arrow files (not a `datasets` folder)")
    for f in files:
        try:
            with pa.memory_map(str(f)) as source:
                pa.ipc.open_stream(source).read_all()
        except (pa.ArrowException, OSError, ValueError) as e:
            raise KolmError(f"{what}: {f} is not a complete Arrow file ({type(e).__name__}: {e}); it is cut short or "
                            "corrupt: build the data again or copy it again") from None
    return files


def current_umask() -> int:
    """The process's umask (read from /proc on Linux, where reading it changes nothing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def apply_umask(path: str | Path) -> None:
    """Give ``path`` and everything below it at least the permissions that the user's umask gives new files and
    folders (``0666 & ~umask``, ``0777 & ~umask``); never removes one.

    Writers that go through temporary files create them private: ``tempfile.mkdtemp`` makes 0700 folders and
    safetensors (``save_file``, ``save_pretrained``) 0600 files, which the other users of a shared cluster then
    cannot read even with umask 022.
    """
    mask = current_umask()
    root = Path(path)
    for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode & 0o7777
        want = mode | ((0o777 if p.is_dir() else 0o666) & ~mask)
        if want != mode:
            os.chmod(p, want)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it is renamed to ``out``, on error removed.

    No partial output folder is ever left behind under the final name; the folder and its files get the
    permissions of the user's umask (:func:`apply_umask`), not the 0700 of a temporary folder.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) if out.is_dir() else out.exists():
        if not overwrite:
            raise KolmError(f"output exists and is not empty: {out} (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    apply_umask(tmp)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)
