"""Model folders: where a model is (a local folder or a hub id) and whether what a stage is about to load is
complete (config, safetensors weights, a tokenizer; Arrow data files), checked before any long job starts.
"""

from __future__ import annotations

from pathlib import Path

from kolm.errors import KolmError
from kolm.io.files import read_json_object
from kolm.paths import is_hub_id

# Any of these files in a folder means a tokenizer is there.
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "vocab.json")


def resolve_pretrained(name_or_path: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face hub id (``ORG/NAME``, :func:`kolm.paths.is_hub_id`), downloaded
    (or read from the HF cache).

    Offline (``HF_HUB_OFFLINE=1`` or no network) an id that is not cached fails with a clear error.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    if not is_hub_id(name_or_path):
        raise KolmError(f"not a folder: {name_or_path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=allow_patterns))
    except Exception as e:  # noqa: BLE001 - many hub/network error types; all mean the same to the user
        raise KolmError(f"{name_or_path!r} is neither a local folder nor a reachable hub repo: {e}") from None



def check_model_folder(folder: Path, what: str = "model") -> Path:
    """A loadable model folder: config.json, safetensors weights (never pickle) that are complete
    (:func:`check_safetensors`: headers readable, sizes as the headers say) and a tokenizer beside them."""
    if not (folder / "config.json").is_file():
        raise KolmError(f"{what}: {folder} is not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        raise KolmError(f"{what}: {folder} has no .safetensors weights (kolm loads safetensors only, never pickle)")
    if not any((folder / m).is_file() for m in TOKENIZER_MARKERS):
        raise KolmError(f"{what}: {folder} has no tokenizer (no {', '.join(TOKENIZER_MARKERS)}); a model is used "
                        f"with its own tokenizer: copy the tokenizer files into the folder")
    read_json_object(folder / "config.json", f"{what} config.json")
    check_safetensors(folder)
    return folder



def check_safetensors(folder_or_file: str | Path, pattern: str = "*.safetensors") -> list[Path]:
    """Open every safetensors file (``pattern`` in a folder, or the one file) and the shard index if there is one,
    without loading tensors; a cut or corrupt file raises a one-line KolmError naming it. Returns the files."""
    from safetensors import SafetensorError, safe_open

    p = Path(folder_or_file)
    files = sorted(p.glob(pattern)) if p.is_dir() else [p]
    for index in sorted(p.glob("*.safetensors.index.json")) if p.is_dir() else []:
        weight_map = read_json_object(index, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise KolmError(f"{index}: no weight_map (not a safetensors index)")
        shards = {str(s) for s in weight_map.values()}
        missing = sorted(s for s in shards if not (p / s).is_file())
        if missing:
            raise KolmError(f"{index}: lists shards that are missing: {', '.join(missing)}")
    if not files:
        raise KolmError(f"{p}: no {pattern} weights")
    for f in files:
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise KolmError(f"{f}: not a complete safetensors file ({e}); it is cut short or corrupt, copy it "
                            "again") from None
    return files


def check_arrow_dataset(folder: str | Path, what: str = "data") -> list[Path]:
    """Read every ``*.arrow`` file of a ``datasets`` folder (``save_to_disk``) to its end through a memory map, so a
    cut or corrupt shard raises a one-line KolmError naming it before any long job starts; returns the files. Batch
    headers are parsed, the data is not copied (cheap even for a large split)."""
    import pyarrow as pa

    p = Path(folder)
    files = sorted(p.glob("*.arrow"))
    if not files:
        raise KolmError(f"{what}: {p} holds no .arrow files (not a `datasets` folder)")
    for f in files:
        try:
            with pa.memory_map(str(f)) as source:
                pa.ipc.open_stream(source).read_all()
        except (pa.ArrowException, OSError, ValueError) as e:
            raise KolmError(f"{what}: {f} is not a complete Arrow file ({type(e).__name__}: {e}); it is cut short or "
                            "corrupt: build the data again or copy it again") from None
    return files
