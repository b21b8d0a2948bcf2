"""``extension.json``: what ``kolm vocab extend`` added to a base tokenizer (written beside the new tokenizer).

Later stages read it: ``kolm model resize`` (the base pieces of every new token, for the embedding init),
``kolm train cpt`` (where the added ids start), SFT/DPO (which rows ``lora.train_new_tokens`` trains), the
dashboard and the model card (the numbers). Model folders carry it unchanged
(see :data:`kolm.io.tokenizers.MODEL_TOKENIZER_FILES`).

The **expansion** of extended ids into base ids (:meth:`TokenizerExtension.expansion_table`, :func:`expand`) is
exact: ``kolm vocab extend`` checks on its check sample that expanding the extended tokenization of a text gives the
base tokenization of the same text (``checks.expansion_lines_differing``), so a teacher that only knows the base
vocabulary can be fed exactly the student's text, token for token.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolm.artifacts.names import EXTENSION_FILE, folder_file
from kolm.errors import KolmError
from kolm.io.files import atomic_write_text, read_json_object


@dataclass
class AddedToken:
    """One added vocabulary entry: its id, string, readable text, kind (``char`` or ``merge``) and the base ids the
    base tokenizer cuts its string into."""

    id: int
    token: str
    text: str
    kind: str
    base_ids: list[int]


@dataclass
class TokenizerExtension:
    """The record of one ``kolm vocab extend`` run. ``details`` keeps what no stage reads back (checks, timings...)."""

    added: list[AddedToken]
    family: str = ""
    base: str = ""
    base_vocab_size: int | None = None  # ids below this belong to the base tokenizer
    vocab_size: int | None = None
    base_tokenizer_sha256: str = ""
    # kolm.io.tokenizers.tokenizer_fingerprint of the extended tokenizer written beside this record ("" in older
    # records): a stage that finds the record beside a model checks that the tokenizer there is this one, not another
    # of the same size
    tokenizer_fingerprint: str = ""
    base_tokenizer_class: str | None = None
    num_new_tokens_requested: int = 0
    mode: str = "bpe"  # how the tokens were chosen: "bpe" (merges) or "syllables" (whole syllables first)
    morpheme_aware: bool = False
    min_frequency: int = 2
    corpus: list[str] = field(default_factory=list)
    corpus_documents: int = 0
    compression_base: dict[str, float | None] = field(default_factory=dict)
    compression_extended: dict[str, float | None] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    kolm_version: str = ""
    stored_counts: dict[str, int] = field(default_factory=dict, repr=False)  # counts as read from a file

    # ------------------------------------------------------------------------------------------- derived
    # (a file may state the counts without listing every token: then the stated counts are reported)
    @property
    def num_added(self) -> int:
        return self.stored_counts.get("num_added", len(self.added))

    @property
    def num_new_chars(self) -> int:
        return self.stored_counts.get("num_new_chars", sum(a.kind == "char" for a in self.added))

    @property
    def num_new_merge_tokens(self) -> int:
        return self.stored_counts.get("num_new_merge_tokens", sum(a.kind == "merge" for a in self.added))

    def added_ids(self) -> list[int]:
        return sorted(a.id for a in self.added)

    def expansion_table(self) -> dict[int, list[int]]:
        """Added id -> the base ids its string is made of (a base id, absent here, stands for itself); see
        :func:`expand`."""
        return {a.id: list(a.base_ids) for a in self.added}

    def korean_chars_per_token(self) -> tuple[float | None, float | None]:
        """Korean characters per token on the check sample: (base, extended)."""
        return (self.compression_base.get("korean_chars_per_token"),
                self.compression_extended.get("korean_chars_per_token"))

    def korean_bytes_per_token(self) -> tuple[float | None, float | None]:
        """Korean UTF-8 bytes per token on the check sample: (base, extended); None in records older than it."""
        return (self.compression_base.get("korean_bytes_per_token"),
                self.compression_extended.get("korean_bytes_per_token"))

    # ------------------------------------------------------------------------------------------- I/O
    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("added", "details", "stored_counts")
               and not (f.name == "tokenizer_fingerprint" and not self.tokenizer_fingerprint)}
        out.update(num_added=self.num_added, num_new_chars=self.num_new_chars,
                   num_new_merge_tokens=self.num_new_merge_tokens, **self.details)
        out["added"] = [dataclasses.asdict(a) for a in self.added]
        return out

    def public_json(self) -> dict[str, Any]:
        """The record as it may be published: local paths (corpus, base folder, output) as names or hub ids."""
        from kolm.artifacts.public import public_json

        return public_json(self.to_json())

    def write(self, folder: str | Path) -> Path:
        """``folder/extension.json``: indented, one line per added token (json's indenting encoder is slow on 100k
        entries). The fingerprint of ``folder/tokenizer.json`` (written first) is recorded."""
        from kolm.io.tokenizers import tokenizer_fingerprint

        if (Path(folder) / "tokenizer.json").is_file():
            self.tokenizer_fingerprint = tokenizer_fingerprint(folder)
        data = self.to_json()
        added = data.pop("added")
        head = json.dumps(data, ensure_ascii=False, indent=2)
        rows = ",\n".join("    " + json.dumps(a, ensure_ascii=False) for a in added)
        path = Path(folder) / EXTENSION_FILE
        atomic_write_text(path, head[:-2] + ',\n  "added": [\n' + rows + "\n  ]\n}\n")
        return path

    @classmethod
    def read(cls, folder_or_file: str | Path) -> TokenizerExtension | None:
        """The record in a folder (or the file itself); None when there is none. A broken file is a KolmError."""
        path = folder_file(folder_or_file, EXTENSION_FILE)
        if not path.is_file():
            return None
        return cls.from_json(read_json_object(path, EXTENSION_FILE), path)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str | Path = EXTENSION_FILE) -> TokenizerExtension:
        derived = {"num_added", "num_new_chars", "num_new_merge_tokens"}
        names = {f.name for f in dataclasses.fields(cls)} - {"details", "stored_counts"}
        try:
            added = [AddedToken(id=int(a["id"]), token=str(a["token"]), text=str(a.get("text", a["token"])),
                                kind=str(a.get("kind", "merge")), base_ids=[int(x) for x in a.get("base_ids", [])])
                     for a in data["added"]]
            kwargs = {k: v for k, v in data.items() if k in names and k != "added"}
            ext = cls(added=added, details={k: v for k, v in data.items() if k not in names | derived},
                      stored_counts={k: int(data[k]) for k in derived if data.get(k) is not None}, **kwargs)
            for name in ("base_vocab_size", "vocab_size"):
                if getattr(ext, name) is not None:
                    setattr(ext, name, int(getattr(ext, name)))
        except (KeyError, TypeError, ValueError) as e:
            raise KolmError(f"{where}: not a valid {EXTENSION_FILE} (missing or malformed {e})") from None
        return ext


def expand(ids: list[int], table: dict[int, list[int]]) -> tuple[list[int], list[int]]:
    """Extended ids -> (base ids, how many base ids each extended id became). ``table``:
    :meth:`TokenizerExtension.expansion_table`; an id not in it is a base id and stays itself (1 piece).
    ``sum(pieces) == len(base_ids)``, and the pieces of ``ids[k]`` are ``base_ids[sum(pieces[:k]):][:pieces[k]]``."""
    base: list[int] = []
    pieces: list[int] = []
    for i in ids:
        got = table.get(i)
        if got is None:
            base.append(i)
            pieces.append(1)
        else:
            base.extend(got)
            pieces.append(len(got))
    return base, pieces
