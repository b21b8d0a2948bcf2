"""Files on disk: reading a JSON object, hashing a file, and writing files and folders so that a reader never sees
half of one, with the permissions of the user's umask.

Every kolm writer that replaces a file goes through :func:`atomic_path` (or its shorthands :func:`atomic_write_text`
and :func:`atomic_write_bytes`): the data goes to a temporary file beside the target, which then replaces the target
in one ``os.replace``. A kill in between leaves the old file (or none) and a temporary file that the next write
overwrites. Whole output folders go through :func:`atomic_output_dir` the same way.
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



def temp_name(path: Path, unique: bool = False) -> Path:
    """The temporary file beside ``path``: ``NAME.tmp``, or ``.NAME.tmp-PID`` with ``unique`` (for files that
    several processes may write at once)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}" if unique else f"{path.name}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, unique: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; when the block ends without error it
    replaces ``path`` (``os.replace``), on error it is removed. ``fsync``: flush the file to disk before the rename
    (for records that must survive a power loss, e.g. checkpoint markers)."""
    path = Path(path)
    tmp = temp_name(path, unique)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, unique: bool = False, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file (:func:`atomic_path`)."""
    with atomic_path(path, unique=unique, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes, *, unique: bool = False, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file (:func:`atomic_path`)."""
    with atomic_path(path, unique=unique, fsync=fsync) as tmp:
        tmp.write_bytes(data)


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
    move_into_place(tmp, out)


def move_into_place(tmp: str | Path, out: str | Path) -> None:
    """Give the finished folder ``tmp`` the umask's permissions and put it at ``out``, replacing what is there
    (the last step of every folder written under a temporary name: a kill before it leaves ``out`` as it was)."""
    tmp, out = Path(tmp), Path(out)
    apply_umask(tmp)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)
