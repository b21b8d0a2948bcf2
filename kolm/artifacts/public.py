"""The publishable form of kolm's records and cards: what reaches the Hub names hub ids, file names or nothing.

kolm's records keep the paths a stage was given (``extension.json``: the corpus and the base tokenizer folder;
``resize.json``: the resolved command config; ``merge.json``, ``import.json``, ``upscale.json``...), which is what a
local user wants to read back, and what must not be published: ``/home/<name>/...`` names a person and a machine.
``kolm push`` uploads :func:`public_json` copies (the local files stay as they are) and a card run through
:func:`public_text`.

A local path becomes the hub id it is a snapshot of (``.../models--ORG--NAME/snapshots/SHA`` -> ``ORG/NAME``),
else its last component (``/home/alice/corpus/ko.txt`` -> ``ko.txt``). Hub ids (``ORG/NAME`` that is not a local
path) and URLs stay. Token lists (``added``, ``added_tokens_decoder``) are data, not paths, and are left alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kolm.paths import is_hub_id

# an absolute or home-relative path of at least two components, inside any text: not after a word character, a dot,
# a colon (URLs) or another slash
_EMBEDDED = re.compile(r"(?<![\w.:/~-])(~?/(?:[^/\s\"'`<>|()\[\]{},;]+/)+[^/\s\"'`<>|()\[\]{},;]*)")
_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
TOKEN_KEYS = frozenset({"added", "added_tokens_decoder", "added_tokens", "vocab", "merges"})


def hub_id_of_path(value: str) -> str | None:
    """The repo a hub snapshot folder in the HF cache belongs to (``.../models--ORG--NAME/snapshots/SHA``)."""
    m = _SNAPSHOT.search(value)
    return f"{m.group(1)}/{m.group(2)}" if m else None


def _is_local_path(value: str) -> bool:
    if value.startswith(("/", "~", "./", "../", "\\\\")) or _DRIVE.match(value):
        return len(value) > 1
    return ("/" in value or "\\" in value) and not is_hub_id(value) and "://" not in value \
        and Path(value).expanduser().exists()


def public_path(value: str) -> str:
    """A local path as the hub id it is a snapshot of, else its file or folder name."""
    hub = hub_id_of_path(value)
    if hub:
        return hub
    name = re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    return name or "."


def public_string(value: str) -> str:
    """``value`` with every local path in it replaced (:func:`public_path`); hub ids and URLs unchanged."""
    if _is_local_path(value):
        return public_path(value)
    return _EMBEDDED.sub(lambda m: public_path(m.group(1)), value)


def public_json(value: Any, key: str | None = None) -> Any:
    """A JSON value with every local path in its strings replaced; token lists are left as they are."""
    if key in TOKEN_KEYS:
        return value
    if isinstance(value, str):
        return public_string(value)
    if isinstance(value, dict):
        return {k: public_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [public_json(v) for v in value]
    return value


def public_text(text: str) -> str:
    """Free text (a model card, YAML, a template) with every absolute or home-relative path replaced."""
    return _EMBEDDED.sub(lambda m: public_path(m.group(1)), text)


def public_file(path: Path) -> bytes | None:
    """The publishable bytes of a small text file (``.json``, ``.yaml``/``.yml``, ``.md``, ``.txt``, ``.jinja``),
    or None when it needs no change (or is no such file). JSON keeps its layout when nothing changes and is
    re-indented when something does."""
    if path.suffix not in (".json", ".yaml", ".yml", ".md", ".txt", ".jinja") or path.stat().st_size > 64 << 20:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if data is not None:
            public = public_json(data)
            return None if public == data else (json.dumps(public, indent=2, ensure_ascii=False) + "\n").encode()
    public_txt = public_text(text)
    return None if public_txt == text else public_txt.encode("utf-8")
