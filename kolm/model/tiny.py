"""``kolm model init``: a small Llama-architecture model built from config for a tokenizer (no download).

    kolm model init --tokenizer ../shared/tokenizers/llama2 --output out/tiny --hidden-size 64 --layers 2

Used by the CPU smoke run and `kolm demo`, and handy for trying a recipe end to end before renting GPUs. The
weights are random (seeded); the tokenizer files are copied beside them so the folder is a complete model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kolm.config import ConfigError, field
from kolm.errors import KolmError
from kolm.io.tokenizers import copy_tokenizer_files


@dataclass
class InitConfig:
    tokenizer: str = field(None, help="tokenizer folder (tokenizer.json)", path=True)
    output: str = field(None, help="output model folder", path=True)
    hidden_size: int = field(64, help="hidden size")
    layers: int = field(2, help="decoder layers")
    heads: int = field(4, help="attention heads")
    kv_heads: int = field(2, help="key/value heads (grouped-query attention)")
    intermediate_size: int | None = field(None, help="MLP size (default: 8/3 of hidden, rounded to 32)")
    max_position_embeddings: int = field(512, help="context length")
    tie_word_embeddings: bool = field(False, help="share the input embedding and the LM head")
    seed: int = field(0, help="initialisation seed")
    overwrite: bool = field(False, help="replace an existing output folder")

    def __post_init__(self) -> None:
        if not self.tokenizer or not self.output:
            raise ConfigError("tokenizer and output are required")
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ConfigError("hidden_size must be divisible by heads, and heads by kv_heads")


def build(cfg: InitConfig, out: Path) -> int:
    """Write the model into ``out``; returns the parameter count."""
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    src = Path(cfg.tokenizer)
    if not (src / "tokenizer.json").is_file():
        raise KolmError(f"tokenizer: {src} has no tokenizer.json")
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    conf = json.loads((src / "tokenizer_config.json").read_text()) if (src / "tokenizer_config.json").is_file() else {}
    vocab = tok.get_vocab(with_added_tokens=True)

    def tid(name: str) -> int | None:
        t = conf.get(name)
        t = t.get("content") if isinstance(t, dict) else t
        return vocab.get(t) if t else None

    inter = cfg.intermediate_size or (int(cfg.hidden_size * 8 / 3) + 31) // 32 * 32
    mc = LlamaConfig(vocab_size=tok.get_vocab_size(with_added_tokens=True), hidden_size=cfg.hidden_size,
                     intermediate_size=inter, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                     num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.max_position_embeddings,
                     tie_word_embeddings=cfg.tie_word_embeddings, bos_token_id=tid("bos_token"),
                     eos_token_id=tid("eos_token"), pad_token_id=tid("pad_token"))
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(mc)
    model.save_pretrained(str(out))
    copy_tokenizer_files(src, out)
    return sum(p.numel() for p in model.parameters())


def run(cfg: InitConfig) -> Path:
    from kolm.io.files import atomic_output_dir

    with atomic_output_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        n = build(cfg, tmp)
    print(f"kolm model init: Llama {cfg.layers} layers x {cfg.hidden_size}, {n / 1e6:.2f}M parameters -> "
          f"{cfg.output}")
    return Path(cfg.output)
