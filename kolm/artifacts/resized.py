"""``resize.json``: how ``kolm model resize`` grew a model's embeddings (written beside the resized model).

``kolm train cpt`` reads where the added rows start (``base_tokenizer_size``); ``kolm push`` reads the init and the
sizes for the model card and the source model to find the base model's hub id and license.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolm.artifacts.names import RESIZE_FILE, folder_file
from kolm.errors import KolmError
from kolm.io.files import atomic_write_text, read_json_object


@dataclass
class ResizeRecord:
    """Sizes and init of one resize. ``details`` keeps per-matrix statistics and the resolved command config.
    Every field is optional when read (a hand-written or older file may hold only some)."""

    init: str | None = None
    old_vocab_size: int | None = None
    new_vocab_size: int | None = None
    base_tokenizer_size: int | None = None  # ids below this belong to the base tokenizer: the first added row
    tokenizer_size: int | None = None
    new_tokens: int | None = None
    new_rows: int | None = None
    tied: bool | None = None
    # kolm.io.tokenizers.tokenizer_fingerprint of the tokenizer saved beside the resized weights (None in older records)
    tokenizer_fingerprint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def source_model(self) -> str | None:
        """The model the resize started from, as given on the command line (a folder or a hub id)."""
        model = (self.details.get("config") or {}).get("model")
        return model if isinstance(model, str) else None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "details"}
        if self.tokenizer_fingerprint is None:  # none known: the key stays out, as in records before it
            del out["tokenizer_fingerprint"]
        return {**out, **self.details}

    def public_json(self) -> dict[str, Any]:
        """The record as it may be published: the paths of the resolved config as names or hub ids."""
        from kolm.artifacts.public import public_json

        return public_json(self.to_json())

    def write(self, folder: str | Path) -> Path:
        """``folder/resize.json``, with the fingerprint of ``folder/tokenizer.json`` when it is there (copy the
        tokenizer first)."""
        from kolm.io.tokenizers import tokenizer_fingerprint

        if (Path(folder) / "tokenizer.json").is_file():
            self.tokenizer_fingerprint = tokenizer_fingerprint(folder)
        path = Path(folder) / RESIZE_FILE
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> ResizeRecord:
        """From the statistics dict of :func:`kolm.model.resize.resize_model` (plus ``config``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"details"}
        try:
            rec = cls(**{k: stats[k] for k in names if k in stats},
                      details={k: v for k, v in stats.items() if k not in names})
            for name in ("old_vocab_size", "new_vocab_size", "base_tokenizer_size", "tokenizer_size", "new_tokens",
                         "new_rows"):
                if getattr(rec, name) is not None:
                    setattr(rec, name, int(getattr(rec, name)))
        except (KeyError, TypeError, ValueError) as e:
            raise KolmError(f"not a valid {RESIZE_FILE} (missing or malformed {e})") from None
        return rec

    @classmethod
    def read(cls, folder_or_file: str | Path) -> ResizeRecord | None:
        """The record in a folder (or the file itself); None when there is none. A broken file is a KolmError."""
        path = folder_file(folder_or_file, RESIZE_FILE)
        if not path.is_file():
            return None
        try:
            return cls.from_stats(read_json_object(path, RESIZE_FILE))
        except KolmError as e:
            raise KolmError(f"{path}: {e}") from None
