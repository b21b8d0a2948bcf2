"""``kolm merge-lora``: fold a LoRA adapter into its base model and write a standalone model.

    kolm merge-lora --base out/run-llama2-7b-ko/final --adapter out/sft-llama2-7b-ko --output out/sft-merged
                    [--dtype bf16] [--overwrite]

The adapter must belong to the base's vocabulary. That is checked before any weights load, from what the adapter
folder records: ``kolm_adapter.json`` (written by ``kolm train sft|dpo``), embedding or LM-head weights saved in the
adapter, the ids of trained token rows in ``adapter_config.json``, and the adapter's tokenizer against the base's.
An adapter trained on another vocabulary size (e.g. before or after ``kolm model resize``) is refused with both
sizes named. The output is written atomically: safetensors weights, ``config.json`` whose ``vocab_size`` equals the
embedding rows, the tokenizer the adapter was trained with (and its chat template), the base's ``extension.json``
and ``resize.json`` if it has them, and ``merge.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolm.align.model import ADAPTER_META, load_tokenizer, log, model_folder, rows
from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io import atomic_output_dir, carry_tokenizer_model

VOCAB_RECORDS = ("extension.json", "resize.json")  # how the base's vocabulary was made: kept with the merged model
EMBEDDING_KEYS = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_in.weight", "embed_out.weight")


@dataclass
class MergeConfig:
    """Options of ``kolm merge-lora``."""

    base: str = field(None, path=True, help="the base model folder (or hub id) the adapter was trained on")
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


def adapter_vocab_evidence(adapter: Path) -> list[tuple[int, str, bool]]:
    """(rows, where it was read, exact) for every record of the vocabulary an adapter was trained on. ``exact`` is
    False for lower bounds (a trained token id, a tokenizer's length: padded vocabularies may have more rows)."""
    from safetensors import safe_open

    out: list[tuple[int, str, bool]] = []
    meta = adapter / ADAPTER_META
    if meta.is_file():
        try:
            out.append((int(json.loads(meta.read_text(encoding="utf-8"))["vocab_size"]), str(meta), True))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise KolmError(f"{meta}: unreadable ({e})") from None
    for f in sorted(adapter.glob("adapter_model*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                if k.endswith(EMBEDDING_KEYS):
                    out.append((int(st.get_slice(k).get_shape()[0]), f"{f.name}: {k}", True))
    cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    tti = cfg.get("trainable_token_indices") or {}
    ids = [i for v in (tti.values() if isinstance(tti, dict) else [tti]) for i in v]
    if ids:
        out.append((max(ids) + 1, f"{adapter / 'adapter_config.json'}: trainable_token_indices", False))
    return out


def check_adapter_vocab(adapter: Path, base: Path, base_rows: int, adapter_tok_len: int | None,
                        base_tok_len: int | None) -> list[str]:
    """Raise if the adapter was trained on another vocabulary than ``base``; return what was checked."""
    checked = []
    for n, where, exact in adapter_vocab_evidence(adapter):
        if (exact and n != base_rows) or n > base_rows:
            raise KolmError(f"adapter {adapter} was trained on a vocabulary of {n} rows ({where}) but base model "
                            f"{base} has {base_rows}: merge it into the model it was trained on (after `kolm model "
                            "resize` the vocabulary changes; retrain the adapter on the resized model)")
        checked.append(where)
    if adapter_tok_len is not None and base_tok_len is not None:
        if adapter_tok_len != base_tok_len:
            raise KolmError(f"adapter {adapter} was trained with a tokenizer of {adapter_tok_len} tokens but base "
                            f"model {base} has a tokenizer of {base_tok_len} tokens ({base_rows} embedding rows): "
                            "they belong to different vocabularies")
        checked.append(str(adapter / "tokenizer.json"))
    return checked


def run(cfg: MergeConfig) -> dict[str, Any]:
    """``kolm merge-lora``: check, merge, save (atomically) and write merge.json."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    adapter = Path(cfg.adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise KolmError(f"{adapter}: no adapter_config.json; not a peft adapter folder")
    base = model_folder(cfg.base, cfg.trust_remote_code)
    try:
        mcfg = AutoConfig.from_pretrained(base, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise KolmError(f"{base}: cannot read config.json ({e})") from None
    base_rows = int(mcfg.get_text_config().vocab_size)
    base_tok = load_tokenizer(base, cfg.trust_remote_code) if _has_tokenizer(base) else None
    adapter_tok = load_tokenizer(adapter, cfg.trust_remote_code) if _has_tokenizer(adapter) else None
    checked = check_adapter_vocab(adapter, base, base_rows, None if adapter_tok is None else len(adapter_tok),
                                  None if base_tok is None else len(base_tok))
    tok_src, tokenizer = (adapter, adapter_tok) if adapter_tok is not None else (base, base_tok)
    if tokenizer is None:
        raise KolmError(f"neither {adapter} nor {base} holds a tokenizer (tokenizer.json)")
    if len(tokenizer) > base_rows:
        raise KolmError(f"tokenizer {tok_src} has {len(tokenizer)} tokens but base model {base} has {base_rows} rows")

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(cfg.dtype, "auto")
    with atomic_output_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        try:
            model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=dtype,
                                                         trust_remote_code=cfg.trust_remote_code)
        except OSError as e:
            raise KolmError(f"{base}: cannot load the model from safetensors weights ({e})") from None
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        n_in, out_emb = rows(merged.get_input_embeddings()), merged.get_output_embeddings()
        n_out = rows(out_emb) if out_emb is not None else n_in
        if not n_in == n_out == base_rows == merged.config.get_text_config().vocab_size:
            raise KolmError(f"merged model is inconsistent: {n_in} embedding rows, {n_out} LM-head rows, "
                            f"config vocab_size {merged.config.get_text_config().vocab_size}")
        merged.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)  # PreTrainedTokenizerFast writes no tokenizer.model: carry the one that fits
        carry_tokenizer_model(tmp, tok_src, base)
        for name in VOCAB_RECORDS:
            if (base / name).is_file():
                shutil.copyfile(base / name, tmp / name)
        record = {"base": str(base), "adapter": str(adapter), "vocab_size": base_rows, "tokenizer": str(tok_src),
                  "tokenizer_len": len(tokenizer), "vocab_checked_against": checked, "dtype": str(merged.dtype),
                  "config": to_dict(cfg)}
        (tmp / "merge.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"merged {adapter} into {base} -> {cfg.output} (vocab {base_rows}, tokenizer from {tok_src})")
    return record
