"""Reading a JSON object from a kolm artifact with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kolm.errors import KolmError


def read_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a KolmError naming the file when it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise KolmError(f"{path}: not a valid {what} ({e})") from None
    if not isinstance(data, dict):
        raise KolmError(f"{path}: not a valid {what} (the top level must be a JSON object)")
    return data


def folder_file(folder_or_file: str | Path, name: str) -> Path:
    """``folder/name`` for a folder, the path itself for a file."""
    p = Path(folder_or_file)
    return p / name if p.is_dir() or not p.suffix else p


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
