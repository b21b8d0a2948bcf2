"""One owner per artifact that one kolm stage writes and another reads.

Stages hand each other files: ``kolm vocab extend`` writes ``extension.json`` beside the extended tokenizer, ``kolm
model resize`` writes ``resize.json`` beside the resized model, ``kolm data build`` writes a data folder with its
``manifest.json``, ``kolm train cpt`` writes a run folder. Each has one module here that names its files, writes it
and reads it back into typed fields; no other module spells those file names or JSON keys (the way nanochat gives
checkpoints one manager). A new field is added in one place.

* :class:`TokenizerExtension` (``extension.json``): what ``kolm vocab extend`` added to a base tokenizer.
* :class:`ResizeRecord` (``resize.json``): how ``kolm model resize`` grew a model's embeddings.
* :class:`DataFolder`: a ``kolm data build`` output (manifest, train split, validation splits per language).
* :class:`RunFolder`: a ``kolm train cpt`` run folder (recipe, manifest copy, metrics, stages, final model).
* :mod:`kolm.artifacts.imported` (``import.json``): where ``kolm model import`` got a model from.
* :mod:`kolm.artifacts.tokenizer_match`: is the tokenizer beside a model the one these records were written for.
* :mod:`kolm.artifacts.names`: the file names above, spelled once.
* :mod:`kolm.artifacts.public`: the publishable form of a record (no local paths) for ``kolm push``.

Importing this package is cheap (no torch, no datasets at import time).
"""

from kolm.artifacts.data_folder import DataFolder, DataManifest, ValidationSplit
from kolm.artifacts.extension import AddedToken, TokenizerExtension
from kolm.artifacts.names import EXTENSION_FILE, IMPORT_FILE, MANIFEST_FILE, RESIZE_FILE, VOCAB_RECORDS
from kolm.artifacts.resized import ResizeRecord
from kolm.artifacts.run_folder import RunFolder, StageFolder

__all__ = ["AddedToken", "DataFolder", "DataManifest", "EXTENSION_FILE", "IMPORT_FILE", "MANIFEST_FILE", "RESIZE_FILE",
           "ResizeRecord", "RunFolder", "StageFolder", "TokenizerExtension", "ValidationSplit", "VOCAB_RECORDS",
           "find_new_token_start"]


def find_new_token_start(folder) -> int | None:  # noqa: ANN001 - str | Path
    """First id of the tokens added to a model folder's vocabulary: from ``resize.json``, else ``extension.json``
    (None when the folder has neither: its vocabulary was not extended by kolm)."""
    rec = ResizeRecord.read(folder)
    if rec is not None:
        return rec.base_tokenizer_size
    ext = TokenizerExtension.read(folder)
    return ext.base_vocab_size if ext is not None else None
