"""``import.json``: what ``kolm model import`` turned into a model folder (written beside the imported model).

:func:`kolm.model.gguf.import_record` writes the whole record (the GGUF's name, SHA-256, quantization, the fixes kolm
applied, the check of the saved folder). Other stages read two fields through here: ``kolm push`` the Hub repository
the weights came from (``source_repo``, the ``base_model`` of everything made from the import), and
:mod:`kolm.model.zoo` the SHA-256 of the imported file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kolm.artifacts.names import IMPORT_FILE, folder_file
from kolm.io.files import read_json_object
from kolm.paths import is_repo_id


def read_import(folder_or_file: str | Path) -> dict[str, Any] | None:
    """The record of an imported model folder (or the file itself); None when there is none. A broken file is a
    one-line KolmError naming it."""
    path = folder_file(folder_or_file, IMPORT_FILE)
    return read_json_object(path, IMPORT_FILE) if path.is_file() else None


def imported_from(folder: str | Path) -> str | None:
    """The Hub repository an imported model folder's weights came from (``source_repo``), when it says one."""
    repo = (read_import(folder) or {}).get("source_repo")
    return repo if is_repo_id(repo) else None
