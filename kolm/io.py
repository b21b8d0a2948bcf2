"""Shared I/O: reading corpora, resolving model/tokenizer locations, and writing output folders atomically.

Everything here is small and dependency-light; heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import contextlib
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

    Broken input raises a KolmError naming the file and line (vocabulary learning is short; failing
    loudly is better than learning from a silently truncated corpus).
    """
    for p in map(Path, paths):
        if p.name.endswith(".txt"):
            with p.open("rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise KolmError(f"{p}:{lineno}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
                    line = line.rstrip("\r\n")
                    if line.strip():
                        yield line
        elif p.name.endswith(".jsonl"):
            with p.open("rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    if not raw.strip():
                        continue
                    try:
                        row = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError) as e:
                        raise KolmError(f"{p}:{lineno}: not valid JSON ({e})") from None
                    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                        raise KolmError(f"{p}:{lineno}: no string field {text_field!r}")
                    if row[text_field].strip():
                        yield row[text_field]
        elif p.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(p)
            if text_field not in pf.schema_arrow.names:
                raise KolmError(f"{p}: no column {text_field!r} (columns: {pf.schema_arrow.names})")
            for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
                for t in batch.column(0).to_pylist():
                    if isinstance(t, str) and t.strip():
                        yield t
        else:
            raise KolmError(f"{p}: unsupported corpus format")


def read_documents(paths: list[str] | list[Path], text_field: str = "text", max_docs: int | None = None,
                   nfc: bool = True) -> list[str]:
    """Whole documents for scoring (``kolm eval --text``, the online ``eval.sets``): the files are checked first
    (:func:`check_corpus_files`), then read in order by :func:`iter_corpus` up to ``max_docs`` documents, NFC-normalised
    as ``kolm data build`` does unless ``nfc`` is false. A file set without any document is a one-line error."""
    import itertools
    import unicodedata

    files = check_corpus_files([str(p) for p in paths])
    docs = list(itertools.islice(iter_corpus(files, text_field), max_docs))
    if not docs:
        raise KolmError(f"no documents in {', '.join(map(str, files))} (every line or row is blank)")
    return [unicodedata.normalize("NFC", d) for d in docs] if nfc else docs


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


# What a model folder carries beside its weights: the tokenizer, and kolm's records of how its vocabulary was
# extended (extension.json) and resized (resize.json), which later stages read.
MODEL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                         "extension.json", "resize.json")


def copy_tokenizer_files(src: Path, dst: Path, *, keep_existing: bool = False) -> list[str]:
    """Copy the :data:`MODEL_TOKENIZER_FILES` that ``src`` has into ``dst``; returns the names copied."""
    import shutil

    copied = []
    for name in MODEL_TOKENIZER_FILES:
        if (src / name).is_file() and not (keep_existing and (dst / name).exists()):
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def check_model_folder(folder: Path, what: str = "model") -> Path:
    """A loadable model folder: config.json, safetensors weights (never pickle) and a tokenizer beside them."""
    if not (folder / "config.json").is_file():
        raise KolmError(f"{what}: {folder} is not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        raise KolmError(f"{what}: {folder} has no .safetensors weights (kolm loads safetensors only, never pickle)")
    if not any((folder / m).is_file() for m in TOKENIZER_MARKERS):
        raise KolmError(f"{what}: {folder} has no tokenizer (no {', '.join(TOKENIZER_MARKERS)}); a model is used "
                        f"with its own tokenizer: copy the tokenizer files into the folder")
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


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it is renamed to ``out``, on error removed.

    No partial output folder is ever left behind under the final name.
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
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)
