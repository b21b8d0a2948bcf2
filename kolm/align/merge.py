"""``kolm merge-lora``: fold a LoRA adapter into its base model and write a standalone model.

    kolm merge-lora --base out/run-llama2-7b-ko/final --adapter out/sft-llama2-7b-ko --output out/sft-merged
                    [--dtype bf16] [--overwrite]

The adapter must belong to the base's vocabulary. That is checked before any weights load, from what the adapter
folder records: ``kolm_adapter.json`` (written by ``kolm train sft|dpo``), embedding or LM-head weights saved in the
adapter, the ids of trained token rows in ``adapter_config.json``, and the tokenizer itself, compared by content
(:func:`kolm.io.tokenizers.tokenizer_fingerprint`: vocabulary, merges, added tokens) with the base's: the adapter
folder's ``tokenizer.json`` and the fingerprint ``kolm_adapter.json`` recorded at training time. An adapter trained on
another vocabulary size (e.g. before or after ``kolm model resize``) is refused with both sizes named, one trained with
a different tokenizer of the same size (Mistral's over Llama-2, both 32,000) with the first id that differs. Corrupt
inputs (a broken ``adapter_config.json``, cut adapter or base safetensors) are refused with one line naming the file.
The output is written atomically: safetensors weights, ``config.json`` whose ``vocab_size`` equals the embedding
rows, the tokenizer the adapter was trained with (and its chat template), the base's ``extension.json`` and
``resize.json`` if it has them, and ``merge.json`` (with both tokenizer fingerprints).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolm.align.model import ADAPTER_META, embedding_rows, load_fast_tokenizer, log, model_folder
from kolm.artifacts import VOCAB_RECORDS
from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io.files import atomic_output_dir, read_json_object
from kolm.io.models import check_safetensors
from kolm.io.tokenizers import carry_tokenizer_model, tokenizer_content, tokenizer_fingerprint

EMBEDDING_KEYS = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_in.weight", "embed_out.weight")


@dataclass
class MergeConfig:
    """Options of ``kolm merge-lora``."""

    base: str = field(None, path=True, hub=True, help="the base model folder (or hub id) the adapter was trained on")
    adapter: str = field(None, path=True, help="adapter folder (output of `kolm train sft` / `kolm train dpo`)")
    output: str = field(None, path=True, help="output model folder")
    dtype: Literal["auto", "fp32", "bf16"] = field("auto", help="weights dtype of the output (auto: the base's)")
    trust_remote_code: bool = field(False, help="allow custom model code from the hub (off by default)")
    overwrite: bool = field(False, help="replace an existing output folder")

    def __post_init__(self) -> None:
        for name in ("base", "adapter", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file()


def check_adapter_files(adapter: Path) -> dict[str, Any]:
    """The adapter folder holds a readable peft config and complete safetensors weights; returns the config."""
    from peft import PeftConfig

    path = adapter / "adapter_config.json"
    if not path.is_file():
        raise KolmError(f"{adapter}: no adapter_config.json; not a peft adapter folder")
    cfg = read_json_object(path, "peft adapter config")
    try:
        PeftConfig.from_peft_type(**cfg)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise KolmError(f"{path}: not a valid peft adapter config ({type(e).__name__}: {e})") from None
    if not any(adapter.glob("adapter_model*.safetensors")) and any(adapter.glob("adapter_model*.bin")):
        raise KolmError(f"{adapter}: the adapter weights are a pickle (.bin); kolm loads safetensors only")
    check_safetensors(adapter, "adapter_model*.safetensors")
    return cfg


def adapter_vocab_evidence(adapter: Path, adapter_cfg: dict[str, Any]) -> list[tuple[int, str, bool]]:
    """(rows, where it was read, exact) for every record of the vocabulary an adapter was trained on. ``exact`` is
    False for lower bounds (a trained token id: padded vocabularies may have more rows)."""
    from safetensors import safe_open

    out: list[tuple[int, str, bool]] = []
    meta = adapter / ADAPTER_META
    if meta.is_file():
        try:
            out.append((int(read_json_object(meta, "kolm adapter record")["vocab_size"]), str(meta), True))
        except (KeyError, TypeError, ValueError) as e:
            raise KolmError(f"{meta}: no valid vocab_size ({e})") from None
    for f in sorted(adapter.glob("adapter_model*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                if k.endswith(EMBEDDING_KEYS):
                    out.append((int(st.get_slice(k).get_shape()[0]), f"{f.name}: {k}", True))
    tti = adapter_cfg.get("trainable_token_indices") or {}
    ids = [i for v in (tti.values() if isinstance(tti, dict) else [tti]) for i in v]
    if ids:
        out.append((max(ids) + 1, f"{adapter / 'adapter_config.json'}: trainable_token_indices", False))
    return out


def check_adapter_vocab(adapter: Path, adapter_cfg: dict[str, Any], base: Path, base_rows: int) -> list[str]:
    """Raise if the adapter was trained on another vocabulary size than ``base``; return what was checked."""
    checked = []
    for n, where, exact in adapter_vocab_evidence(adapter, adapter_cfg):
        if (exact and n != base_rows) or n > base_rows:
            raise KolmError(f"adapter {adapter} was trained on a vocabulary of {n} rows ({where}) but base model "
                            f"{base} has {base_rows}: merge it into the model it was trained on (after `kolm model "
                            "resize` the vocabulary changes; retrain the adapter on the resized model)")
        checked.append(where)
    return checked


def describe_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How two :func:`kolm.io.tokenizers.tokenizer_content` records differ, in a few words with a first example."""
    parts = []
    diff = [i for i, (x, y) in enumerate(zip(a["vocab"], b["vocab"])) if x != y]
    if diff or len(a["vocab"]) != len(b["vocab"]):
        i = diff[0] if diff else min(len(a["vocab"]), len(b["vocab"]))
        ex = f"id {i}: {a['vocab'][i] if i < len(a['vocab']) else None!r} vs " \
             f"{b['vocab'][i] if i < len(b['vocab']) else None!r}"
        parts.append(f"vocabulary of {len(a['vocab'])} vs {len(b['vocab'])} entries, {len(diff)} ids hold other "
                     f"strings (first {ex})")
    if a["merges"] != b["merges"]:
        parts.append(f"{len(a['merges'])} vs {len(b['merges'])} merges")
    if a["added"] != b["added"]:
        parts.append(f"added tokens differ ({len(a['added'])} vs {len(b['added'])})")
    return "; ".join(parts) or f"model type {a['type']} vs {b['type']}"


def check_tokenizers(adapter: Path, base: Path) -> dict[str, str | None]:
    """The adapter's tokenizer (its folder's, and the one ``kolm_adapter.json`` says it was trained with) must have
    the base's content (:func:`kolm.io.tokenizers.tokenizer_fingerprint`); returns the fingerprints, for merge.json."""
    fp = {"base": tokenizer_fingerprint(base) if _has_tokenizer(base) else None,
          "adapter": tokenizer_fingerprint(adapter) if _has_tokenizer(adapter) else None,
          "trained_with": None}
    if (adapter / ADAPTER_META).is_file():
        record = read_json_object(adapter / ADAPTER_META, "kolm adapter record")
        fp["trained_with"] = record.get("tokenizer_fingerprint")
    for key, where in (("adapter", adapter / "tokenizer.json"), ("trained_with", adapter / ADAPTER_META)):
        if fp["base"] and fp[key] and fp[key] != fp["base"]:
            detail = describe_difference(tokenizer_content(adapter), tokenizer_content(base)) \
                if key == "adapter" else f"fingerprint {fp[key][:12]}... vs {fp['base'][:12]}..."
            raise KolmError(f"adapter {adapter} belongs to another tokenizer than base model {base} ({where} vs "
                            f"{base / 'tokenizer.json'}: {detail}): its rows and ids mean other tokens. Merge it "
                            "into the model it was trained on.")
    return fp


def run(cfg: MergeConfig) -> dict[str, Any]:
    """``kolm merge-lora``: check (before any weights load), merge, save (atomically) and write merge.json."""
    from transformers import AutoConfig

    adapter = Path(cfg.adapter)
    adapter_cfg = check_adapter_files(adapter)
    base = model_folder(cfg.base, cfg.trust_remote_code)
    try:
        mcfg = AutoConfig.from_pretrained(base, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise KolmError(f"{base}: cannot read config.json ({e})") from None
    check_safetensors(base)
    base_rows = int(mcfg.get_text_config().vocab_size)
    checked = check_adapter_vocab(adapter, adapter_cfg, base, base_rows)
    fingerprints = check_tokenizers(adapter, base)
    checked += [f"tokenizer content ({k}: {v})" for k, v in fingerprints.items() if v and k != "base"]
    tok_src = adapter if _has_tokenizer(adapter) else base
    if not _has_tokenizer(tok_src):
        raise KolmError(f"neither {adapter} nor {base} holds a tokenizer (tokenizer.json)")
    tokenizer = load_fast_tokenizer(tok_src, cfg.trust_remote_code)
    if len(tokenizer) > base_rows:
        raise KolmError(f"tokenizer {tok_src} has {len(tokenizer)} tokens but base model {base} has {base_rows} rows")
    record = {"base": str(base), "adapter": str(adapter), "vocab_size": base_rows, "tokenizer": str(tok_src),
              "tokenizer_len": len(tokenizer), "tokenizer_fingerprint": fingerprints,
              "vocab_checked_against": checked, "config": to_dict(cfg)}
    with atomic_output_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        merged = _merge(cfg, base, adapter, base_rows)
        merged.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)  # PreTrainedTokenizerFast writes no tokenizer.model: carry the one that fits
        carry_tokenizer_model(tmp, tok_src, base)
        for name in VOCAB_RECORDS:
            if (base / name).is_file():
                shutil.copyfile(base / name, tmp / name)
        record["dtype"] = str(merged.dtype)
        (tmp / "merge.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"merged {adapter} into {base} -> {cfg.output} (vocab {base_rows}, tokenizer from {tok_src})")
    return record


def _merge(cfg: MergeConfig, base: Path, adapter: Path, base_rows: int) -> Any:
    """Load the base (safetensors), apply the adapter, fold it in, and check the merged vocabulary."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(cfg.dtype, "auto")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=dtype,
                                                     trust_remote_code=cfg.trust_remote_code)
    except OSError as e:
        raise KolmError(f"{base}: cannot load the model from safetensors weights ({e})") from None
    try:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:  # shapes or module names that do not fit this base
        raise KolmError(f"adapter {adapter} does not fit base model {base}: {str(e).splitlines()[0]}") from None
    n_in, out_emb = embedding_rows(merged.get_input_embeddings()), merged.get_output_embeddings()
    n_out = embedding_rows(out_emb) if out_emb is not None else n_in
    if not n_in == n_out == base_rows == merged.config.get_text_config().vocab_size:
        raise KolmError(f"merged model is inconsistent: {n_in} embedding rows, {n_out} LM-head rows, "
                        f"config vocab_size {merged.config.get_text_config().vocab_size}")
    return merged
