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


def resolve_pretrained(name_or_path: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face hub id, downloaded (or read from the HF cache).

    Offline (``HF_HUB_OFFLINE=1`` or no network) an id that is not cached fails with a clear error.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    if p.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
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
# extended (extension.json) and resized (resize.json), which later stages read. tokenizer.model (SentencePiece)
# travels only where it belongs to the tokenizer.json beside it (carry_tokenizer_model).
TOKENIZER_MODEL = "tokenizer.model"
MODEL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                         "extension.json", "resize.json", TOKENIZER_MODEL)
# An extension's special tokens are its base's: these may come from the base folder when the extension lacks them.
BASE_FALLBACK_FILES = ("tokenizer_config.json", "special_tokens_map.json")


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
