"""Writing files and folders so that a reader never sees half of one, with the permissions of the user's umask.

Every kolm writer that replaces a file goes through :func:`atomic_path` (or its shorthands :func:`atomic_write_text`
and :func:`atomic_write_bytes`): the data goes to a temporary file beside the target, which then replaces the target
in one ``os.replace``. A kill in between leaves the old file (or none) and a temporary file that the next write
overwrites. Whole output folders go through :func:`atomic_output_dir` the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


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
