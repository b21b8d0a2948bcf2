"""Small file helpers of the artifact owners (reading JSON objects is :func:`kolm.io.read_json_object`)."""

from __future__ import annotations

from pathlib import Path


def folder_file(folder_or_file: str | Path, name: str) -> Path:
    """``folder/name`` for a folder, the path itself for a file."""
    p = Path(folder_or_file)
    return p / name if p.is_dir() or not p.suffix else p

