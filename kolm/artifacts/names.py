"""The file names of kolm's records: the one place they are spelled (the owners beside this module read and write
the files; other stages import the names from :mod:`kolm.artifacts`). Importing this module imports nothing."""

from __future__ import annotations

from pathlib import Path

EXTENSION_FILE = "extension.json"  # beside an extended tokenizer (kolm vocab extend): kolm.artifacts.extension
RESIZE_FILE = "resize.json"  # beside a resized model (kolm model resize): kolm.artifacts.resized
MANIFEST_FILE = "manifest.json"  # in a data folder (kolm data build): kolm.artifacts.data_folder
IMPORT_FILE = "import.json"  # beside an imported model (kolm model import): kolm.artifacts.imported
# How a model's vocabulary was made; they travel with the model through every later stage (resize, cpt, upscale,
# merge-lora) because later stages find the first added token id in them.
VOCAB_RECORDS = (EXTENSION_FILE, RESIZE_FILE)


def folder_file(folder_or_file: str | Path, name: str) -> Path:
    """``folder/name`` for a folder, the path itself for a file."""
    p = Path(folder_or_file)
    return p / name if p.is_dir() or not p.suffix else p
