"""Tokenizer files: which files make up a tokenizer, copying them beside a model (tokenizer.model only where it belongs
to the tokenizer.json), loading a ``tokenizers.Tokenizer``, and a tokenizer's content and fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from kolm.artifacts.names import VOCAB_RECORDS
from kolm.errors import KolmError
from kolm.io.files import read_json_object
from kolm.io.models import resolve_pretrained
from kolm.vocab.spm_model import TOKENIZER_MODEL, tokenizer_model_mismatch

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "generation_config.json", "config.json"]


# What a tokenizer may consist of on the hub (downloaded when a hub id names one).
TOKENIZER_HUB_PATTERNS = [*TOKENIZER_FILES, "vocab.*", "merges.txt", "*.model", "*.tiktoken", "added_tokens.json"]


# What a model folder carries beside its weights: the tokenizer, and kolm's records of how its vocabulary was
# extended (extension.json) and resized (resize.json), which later stages read. tokenizer.model (SentencePiece)
# travels only where it belongs to the tokenizer.json beside it (carry_tokenizer_model).
MODEL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                         *VOCAB_RECORDS, TOKENIZER_MODEL)
# An extension's special tokens and chat template are its base's: these may come from the base folder when the
# extension lacks them.
BASE_FALLBACK_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def copy_tokenizer_files(src: Path, dst: Path, *, keep_existing: bool = False, fallback: Path | None = None
                         ) -> list[str]:
    """Copy the :data:`MODEL_TOKENIZER_FILES` that ``src`` has into ``dst``; returns the names copied.

    ``fallback``: a folder whose :data:`BASE_FALLBACK_FILES` are used where ``src`` lacks them. tokenizer.model is
    copied only when it belongs to the tokenizer.json that ``dst`` ends up with (:func:`carry_tokenizer_model`).
    """
    copied = []
    for name in MODEL_TOKENIZER_FILES:
        source = src / name
        if not source.is_file() and fallback is not None and name in BASE_FALLBACK_FILES:
            source = fallback / name
        if name != TOKENIZER_MODEL and source.is_file() and not (keep_existing and (dst / name).exists()):
            shutil.copy2(source, dst / name)
            copied.append(name)
    if carry_tokenizer_model(dst, src) == src:
        copied.append(TOKENIZER_MODEL)
    return copied


def carry_tokenizer_model(dst: Path, *sources: Path) -> Path | None:
    """Give ``dst`` the tokenizer.model that belongs to ``dst/tokenizer.json``, if any; returns the folder it came from.

    ``dst``'s own file is kept when it belongs and removed when it does not; otherwise the first file of ``sources``
    that belongs is copied. A tokenizer.model that does not belong (e.g. the base SentencePiece model beside an
    extended vocabulary: llama.cpp's converter would read it and tokenize Korean wrongly) never travels, and a line
    says so. Belonging is :func:`kolm.vocab.spm_model.tokenizer_model_mismatch` against ``dst``'s tokenizer.json
    (the source folder's while ``dst`` has none): same pieces, in id order; without any tokenizer.json,
    tokenizer.model is the tokenizer and is copied.
    """
    for folder in (dst, *sources):
        file = folder / TOKENIZER_MODEL
        if not file.is_file():
            continue
        target = dst / "tokenizer.json" if (dst / "tokenizer.json").is_file() else folder / "tokenizer.json"
        why = tokenizer_model_mismatch(file, target)
        if why is None:
            if folder != dst:
                shutil.copy2(file, dst / TOKENIZER_MODEL)
            return folder
        print(f"warning: {file} {'removed' if folder == dst else 'left out'}: it does not belong to {target} "
              f"({why}); clients that need a tokenizer.model (llama.cpp's converter) will read tokenizer.json")
        if folder == dst:
            file.unlink()
    return None


def load_tokenizer_json(spec: str | Path, what: str = "tokenizer", *, allow_autotokenizer: bool = False,
                        trust_remote_code: bool = False) -> tuple[Any, Path]:
    """A ``tokenizers.Tokenizer`` for a folder holding tokenizer.json, the file itself or a hub id, and the file.

    ``allow_autotokenizer``: a folder without tokenizer.json is loaded with transformers' AutoTokenizer and its fast
    backend is used (then the path returned is the folder). Errors name ``what`` and the path.
    """
    from tokenizers import Tokenizer

    given = Path(spec).expanduser()
    if given.is_file():
        folder, file = given.parent, given
    else:
        folder = resolve_pretrained(str(spec), allow_patterns=TOKENIZER_HUB_PATTERNS)
        file = folder / "tokenizer.json"
    if file.is_file():
        try:
            return Tokenizer.from_file(str(file)), file
        except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exceptions
            raise KolmError(f"{what}: {file} is not a valid tokenizer.json ({e})") from None
    if not allow_autotokenizer:
        raise KolmError(f"{what}: no tokenizer.json in {folder}")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; all mean "cannot load"
        raise KolmError(f"{what}: {folder}: cannot load a tokenizer: {e}") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise KolmError(f"{what}: {folder}: only a slow tokenizer is available; save it with tokenizer.json")
    return backend, folder



def tokenizer_content(source: str | Path | Any) -> dict[str, Any]:
    """What a tokenizer maps between strings and ids, in a canonical form: the model type, the vocabulary in id
    order (Unigram: pieces with their scores), the BPE merges as pairs, and the added tokens as (id, text, special).

    ``source`` is a folder with ``tokenizer.json``, a ``tokenizer.json`` file, a ``tokenizers.Tokenizer`` or a fast
    transformers tokenizer. Everything else in the file (normalizer, pre-tokenizer, decoder, padding, truncation,
    JSON layout, the old ``"a b"`` vs the new ``["a", "b"]`` merge format) is left out: transformers rewrites some of
    it when it saves a tokenizer (e.g. its Llama class rebuilds the pre-tokenizer), which changes the file bytes but
    not which string each id (each embedding row) stands for.
    """
    if isinstance(source, (str, Path)):
        path = Path(source) / "tokenizer.json" if Path(source).is_dir() else Path(source)
        if not path.is_file():
            raise KolmError(f"{path}: not found (a fast tokenizer file is needed to compare tokenizers)")
        data = read_json_object(path, "tokenizer.json")
    else:
        backend = getattr(source, "backend_tokenizer", source)
        data = json.loads(backend.to_str())
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        vocab = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model.get("merges") or []]
    added = sorted([t["id"], t["content"], bool(t.get("special"))] for t in data.get("added_tokens") or [])
    return {"type": model.get("type"), "vocab": vocab or [], "merges": merges, "added": added}


def tokenizer_fingerprint(source: str | Path | Any) -> str:
    """SHA-256 (hex) of :func:`tokenizer_content`: equal exactly when two tokenizers give every id the same string,
    have the same merges and the same added tokens, however their files were written. Stages compare it wherever a
    model meets a tokenizer it must share its embedding rows with (e.g. ``kolm merge-lora``)."""
    canon = json.dumps(tokenizer_content(source), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()
