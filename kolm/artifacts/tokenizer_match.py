"""Is the tokenizer beside a model the one kolm's records were written for? Compared by content, not size.

``extension.json`` and ``resize.json`` record :func:`kolm.io.tokenizers.tokenizer_fingerprint` of the tokenizer they
were written beside, and a data folder's manifest that of the tokenizer the data was tokenized with. Two tokenizers of
the same size (Llama-2 and Mistral: 32,000 each) pass every size check but give the same id different strings, so a
stage that meets a model folder and a record compares fingerprints: ``kolm eval`` and ``kolm push`` (the records in the
model folder), ``kolm train cpt`` (the data manifest). Records written before the fingerprint existed are skipped
with a note.
"""

from __future__ import annotations

from pathlib import Path

from kolm.artifacts.data_folder import DataManifest
from kolm.artifacts.extension import TokenizerExtension
from kolm.artifacts.names import EXTENSION_FILE, RESIZE_FILE
from kolm.artifacts.resized import ResizeRecord
from kolm.errors import KolmError


def recorded_fingerprints(folder: str | Path) -> dict[str, str | None]:
    """``{record file name: fingerprint}`` for the records present in ``folder`` (None: written before
    fingerprints were recorded)."""
    out: dict[str, str | None] = {}
    ext, rec = TokenizerExtension.read(folder), ResizeRecord.read(folder)
    if ext is not None:
        out[EXTENSION_FILE] = ext.tokenizer_fingerprint or None
    if rec is not None:
        out[RESIZE_FILE] = rec.tokenizer_fingerprint or None
    return out


def check_model_records(folder: str | Path, what: str = "model") -> list[str]:
    """Refuse a model folder whose tokenizer.json is not the one its extension.json/resize.json were written for
    (a one-line KolmError naming both); returns notes for records too old to hold a fingerprint (nothing to check)
    and for a folder without tokenizer.json."""
    from kolm.io.tokenizers import tokenizer_fingerprint

    folder = Path(folder)
    recorded = recorded_fingerprints(folder)
    if not recorded:
        return []
    if not (folder / "tokenizer.json").is_file():
        return [f"{what}: {folder} has no tokenizer.json: its tokenizer was not compared with "
                f"{', '.join(recorded)}"]
    have = tokenizer_fingerprint(folder)
    notes = []
    for name, fp in recorded.items():
        if fp is None:
            notes.append(f"{what}: {folder / name} predates tokenizer fingerprints: the tokenizer beside it was not "
                         "compared with it")
        elif fp != have:
            raise KolmError(f"{what}: {folder / 'tokenizer.json'} is not the tokenizer {name} was written for "
                            f"(content fingerprint {have[:12]}..., recorded {fp[:12]}...): another tokenizer, even "
                            "of the same size, gives the embedding rows other strings; put the model's own "
                            "tokenizer back")
    return notes


def check_manifest_tokenizer(manifest: DataManifest, tokenizer_json: Path, data: Path) -> None:
    """Refuse training a model on data tokenized with another tokenizer. Compares content fingerprints, so a
    re-saved identical tokenizer passes and a same-size foreign one fails; a manifest written before fingerprints
    is compared by the file's sha256, then by the fingerprint of the tokenizer folder it names, when that is
    still there."""
    from kolm.io.files import file_sha256
    from kolm.io.tokenizers import tokenizer_fingerprint

    have = tokenizer_fingerprint(tokenizer_json)
    if manifest.tokenizer_fingerprint:
        same, recorded = manifest.tokenizer_fingerprint == have, manifest.tokenizer_fingerprint
    else:
        recorded = manifest.tokenizer_sha256
        same = recorded == file_sha256(tokenizer_json)
        named = Path(manifest.tokenizer_path) / "tokenizer.json"
        if not same and manifest.tokenizer_path and named.is_file():
            same = tokenizer_fingerprint(named) == have
    if not same:
        raise KolmError(f"data: {data} was built with another tokenizer (manifest {recorded[:12]}..., model "
                        f"tokenizer {have[:12]}..., compared by content); rebuild the data with the model's "
                        "tokenizer")
