"""One rule for local paths and one for Hugging Face hub ids, used by every stage and by the config layer.

Paths. A relative path written in a recipe YAML is relative to the recipe's folder; a relative path given on the
command line (a flag, a positional argument or a ``key=value`` override) is relative to the working directory.
The config layer applies this once, while it reads the recipe (:func:`kolm.config.rebase_paths` calls
:func:`rebase` for every field declared with ``field(path=True)``), so that every stage receives paths that are
absolute or relative to the working directory and never needs to know where its recipe was.

Hub ids. A value names a Hub repository (not a local path) when :func:`is_hub_id` says so: it is ``ORG/NAME``
(exactly one ``/``, the characters and length that ``huggingface_hub.utils.validate_repo_id`` accepts), does not
start with ``.``, ``/`` or ``~``, does not end with the suffix of a file kolm reads (``.jsonl``, ``.yaml``, ...),
and nothing exists at that path locally. Everything else is a local path; a bare name without ``ORG/`` is always
local (write hub ids with their organisation, as the Hub itself does: ``openai-community/gpt2``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeGuard

# Suffixes of files kolm reads or writes. A value ending in one is a file path, never a hub repo, so that a missing
# ``org/train.jsonl`` is reported as a missing file instead of an unreachable repository.
FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".arrow", ".csv", ".yaml", ".yml", ".gz", ".zst",
                 ".safetensors", ".bin", ".pt", ".model", ".jinja", ".html", ".md")


def is_hub_id(value: object, base_dir: str | Path | None = None) -> bool:
    """True when ``value`` names a Hub repository ``ORG/NAME`` rather than a local path (see the module docstring).

    ``base_dir`` is the folder a relative path would be read from (default: the working directory): a value that
    exists there is a local path even when it looks like ``ORG/NAME``.
    """
    if not is_repo_id(value) or value.lower().endswith(FILE_SUFFIXES):
        return False
    return not (Path(base_dir) / value if base_dir is not None else Path(value)).exists()


def is_repo_id(value: object) -> TypeGuard[str]:
    """``value`` is spelled as a Hub repository id ``ORG/NAME`` (exactly one ``/``, what
    ``huggingface_hub.utils.validate_repo_id`` accepts, no leading ``.``/``/``/``~``), whatever exists locally: for
    ids read from records, which never name local folders."""
    if not isinstance(value, str) or value.count("/") != 1 or value.startswith((".", "/", "~")) or "\\" in value:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def rebase(value: str, base_dir: str | Path, *, hub: bool = False, keywords: Iterable[str] = (),
           sep: str | None = None) -> str:
    """``value`` as it reads from ``base_dir``: a relative path becomes ``base_dir/value`` (normalised).

    Left unchanged: absolute paths (``~`` counts as absolute), empty values, one of ``keywords`` (e.g. the DeepSpeed
    presets ``zero2``/``zero3``), and with ``hub=True`` a hub id. With ``sep`` the path is the part after the first
    ``sep`` (``ko=ko.txt`` with ``sep="="``); a value without ``sep`` is left for the config's own check to refuse.
    """
    if not isinstance(value, str) or not value:
        return value
    if sep is not None:
        head, found, tail = value.partition(sep)
        if not found:
            return value
        return head + sep + rebase(tail.strip(), base_dir, hub=hub, keywords=keywords)
    if value in set(keywords) or Path(value).expanduser().is_absolute() or (hub and is_hub_id(value, base_dir)):
        return value
    return os.path.normpath(Path(base_dir) / value)
