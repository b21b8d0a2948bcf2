"""A ``kolm data build`` output folder: its ``manifest.json``, the packed train split and the validation splits.

    DIR/manifest.json             what the build did (read by :class:`DataManifest`)
    DIR/train/                    datasets folder, column input_ids: int32[seq_len]
    DIR/train_lang_tokens.npy     cumulative tokens per language per packed sequence
    DIR/validation/<lang>/        datasets folder, whole documents: text, input_ids, n_bytes, n_tokens, source

``kolm train cpt`` checks the manifest against the model's tokenizer and evaluates online on the validation splits;
``kolm eval --data`` scores the same documents; the dashboard and the model card show the mix. The manifest is
written by :mod:`kolm.data.build`; everything else reads it through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kolm.artifacts.names import MANIFEST_FILE
from kolm.errors import KolmError
from kolm.io.files import atomic_write_text, read_json_object
from kolm.io.models import check_arrow_dataset


@dataclass
class LanguageInfo:
    target_share: float | None
    achieved_share: float | None
    train_tokens: int | None
    validation_path: str  # relative to the data folder


@dataclass
class DataManifest:
    """The fields of ``manifest.json`` that other stages use; ``raw`` is the whole file (for reports). Only
    ``languages`` (with their validation paths) and ``seq_len`` are required to read it: a data folder made by hand
    for ``kolm eval --data`` may lack the rest, which ``kolm train cpt`` then refuses by name."""

    tokenizer_sha256: str
    tokenizer_path: str
    vocab_size: int | None
    eos_id: int | None
    bos_id: int | None
    seq_len: int
    train_path: str
    languages: dict[str, LanguageInfo]
    lang_tokens: tuple[list[str], str] | None  # (languages, file) of the per-sequence token counts
    tokenizer_fingerprint: str = ""  # kolm.io.tokenizers.tokenizer_fingerprint ("" in manifests written before it)
    train_sequences: int | None = None
    train_tokens: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def prefix_id(self) -> int | None:
        """The token a validation document is scored after: BOS, else EOS."""
        return self.bos_id if self.bos_id is not None else self.eos_id

    @classmethod
    def read(cls, path: str | Path) -> DataManifest:
        path = Path(path)
        data = read_json_object(path, "kolm data manifest")
        try:
            tok, train = data.get("tokenizer") or {}, data.get("train") or {}
            langs = {lang: LanguageInfo(v.get("target_share"), v.get("achieved_share"), v.get("train_tokens"),
                                        str(v["validation"]["path"])) for lang, v in data["languages"].items()}
            lt = train.get("lang_tokens")
            return cls(tokenizer_sha256=str(tok.get("sha256", "")), tokenizer_path=str(tok.get("path", "")),
                       vocab_size=tok.get("vocab_size"), eos_id=tok.get("eos_id"), bos_id=tok.get("bos_id"),
                       seq_len=int(data["seq_len"]), train_path=str(train.get("path", "train")), languages=langs,
                       lang_tokens=(list(lt["languages"]), str(lt["path"])) if lt else None,
                       tokenizer_fingerprint=str(tok.get("fingerprint") or ""),
                       train_sequences=train.get("sequences"), train_tokens=train.get("tokens"), raw=data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise KolmError(f"{path}: not a kolm data manifest (missing or malformed {e})") from None


@dataclass
class ValidationSplit:
    """The first documents of one language's validation split (a column the split lacks comes back empty)."""

    lang: str
    path: Path
    texts: list[str]
    input_ids: list[list[int]]
    n_bytes: int


class DataFolder:
    """A data folder of ``kolm data build``; the manifest is read (and checked) on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._manifest: DataManifest | None = None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write ``manifest.json`` (by :mod:`kolm.data.build`, last and atomically: its presence marks a finished
        build)."""
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False))
        self._manifest = None

    def raw_manifest(self) -> dict[str, Any]:
        """The whole ``manifest.json`` as written, fields unchecked (for reports such as ``kolm data inspect``)."""
        return read_json_object(self.manifest_path, "kolm data manifest")

    @property
    def manifest(self) -> DataManifest:
        if self._manifest is None:
            if not self.exists():
                hint = " (an unfinished build: run `kolm data build` again to resume)" \
                    if (self.path / ".work").is_dir() else " (build it with `kolm data build`)"
                raise KolmError(f"data: {self.path} has no {MANIFEST_FILE}{hint}")
            self._manifest = DataManifest.read(self.manifest_path)
        return self._manifest

    @property
    def train_dir(self) -> Path:
        return self.path / self.manifest.train_path

    def validation_dir(self, lang: str) -> Path:
        return self.path / self.manifest.languages[lang].validation_path

    def check_splits(self, validation: bool = True) -> None:
        """Every split the manifest names exists and its Arrow files read to the end (before any slow work starts:
        a cut shard is named here, not met as an OSError deep inside training)."""
        if not self.train_dir.is_dir():
            raise KolmError(f"data: missing train split {self.train_dir}")
        check_arrow_dataset(self.train_dir, "data")
        for lang in self.manifest.languages if validation else ():
            if not self.validation_dir(lang).is_dir():
                raise KolmError(f"data: missing validation split for {lang!r}: {self.validation_dir(lang)}")
            check_arrow_dataset(self.validation_dir(lang), "data")

    def load_train(self) -> Any:
        from datasets import load_from_disk

        return load_from_disk(str(self.train_dir))

    def validation(self, lang: str, max_docs: int | None = None) -> ValidationSplit:
        """The first ``max_docs`` documents (all when None) of ``lang``'s validation split."""
        from datasets import load_from_disk

        path = self.validation_dir(lang)
        if not path.is_dir():
            raise KolmError(f"data: missing validation split for {lang!r}: {path}")
        check_arrow_dataset(path, "data")
        ds = load_from_disk(str(path))
        ds = ds.select(range(min(len(ds) if max_docs is None else max_docs, len(ds))))
        if len(ds) == 0:
            raise KolmError(f"data: the validation split for {lang!r} is empty: {path}")
        cols = set(ds.column_names)
        return ValidationSplit(lang, path, list(ds["text"]) if "text" in cols else [],
                               [list(x) for x in ds["input_ids"]] if "input_ids" in cols else [],
                               int(sum(ds["n_bytes"])))

    def lang_tokens(self) -> tuple[list[str], Any] | None:
        """(languages, cumulative tokens per language per packed sequence) when the build recorded them."""
        lt = self.manifest.lang_tokens
        if lt is None or not (self.path / lt[1]).is_file():
            return None
        import numpy as np

        return lt[0], np.load(self.path / lt[1])
