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
