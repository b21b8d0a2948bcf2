"""Test helpers: where the shared corpora live, tiny tokenizers trained in-process, tiny Llama models."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KOLM_SHARED", REPO.parent / "shared"))
REAL_TOKENIZERS = ("llama2", "mistral", "llama3")
PORTS: set[int] = set()  # every port free_port handed out (conftest checks the runs on them left no shared memory)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a distributed run's MASTER_PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    PORTS.add(port)
    return port


def need_shared() -> Path:
    if not (SHARED / "corpora" / "ko_dev.txt").is_file():
        pytest.skip(f"shared corpora/tokenizers not found at {SHARED} (set KOLM_SHARED)")
    return SHARED


def read_lines(name: str, limit: int | None = None) -> list[str]:
    lines = [x for x in (need_shared() / "corpora" / name).read_text(encoding="utf-8").splitlines() if x.strip()]
    return lines[:limit] if limit else lines


def real_tokenizer(name: str) -> Path:
    return need_shared() / "tokenizers" / name


def _save(tok, out: Path, config: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def make_sp_tokenizer(texts: list[str], out: Path, vocab_size: int = 600) -> Path:
    """A tiny Llama-2-style tokenizer: BPE with byte fallback, `▁` for spaces, <unk>/<s>/</s> at ids 0-2."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", *bytes_],
                                  show_progress=False)
    # Sentencepiece-style training units: words with a leading `▁`.
    tok.train_from_iterator(("▁" + t.replace(" ", " ▁") for t in texts), trainer)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    # the trainer took the byte pieces as special tokens to put them at ids 3-258; in Llama-2's tokenizer.json they
    # are plain vocabulary (decode skips special tokens: it dropped every character the vocabulary spells in bytes)
    spec = json.loads(tok.to_str())
    byte_pieces = set(bytes_)
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] not in byte_pieces]
    tok = Tokenizer.from_str(json.dumps(spec))
    return _save(tok, out, {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                            "unk_token": "<unk>", "add_bos_token": True, "model_max_length": 4096})


def make_bytelevel_tokenizer(texts: list[str], out: Path, vocab_size: int = 600) -> Path:
    """A tiny Llama-3-style byte-level BPE with the GPT-4 split regex and two special tokens at the end."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    return _save(tok, out, {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                            "eos_token": "<|end_of_text|>", "model_max_length": 4096})


def tiny_llama(vocab_size: int, *, hidden: int = 32, layers: int = 2, tie: bool = False, seed: int = 0):
    """A tiny LlamaForCausalLM built from config (no download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg)


def ko_en_data(root: Path, tokenizer: str, seq_len: int) -> Path:
    """``kolm data build`` of ``root``'s ko.txt and en.txt (80% / 20%) with ``tokenizer`` (a folder under ``root``)
    into ``root/data``."""
    import yaml

    from kolm.cli import main

    recipe = {"tokenizer": tokenizer, "seq_len": seq_len, "seed": 0, "mix": {"ko": 0.8, "en": 0.2},
              "sources": [{"name": "ko", "lang": "ko", "paths": ["ko.txt"]},
                          {"name": "en", "lang": "en", "paths": ["en.txt"]}],
              "validation": {"fraction": 0.02, "max_docs": 20}, "num_proc": 1, "progress": False}
    (root / "data.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["data", "build", str(root / "data.yaml"), "--output", str(root / "data")]) == 0
    return root / "data"


def wait_for(path: Path, proc, timeout: float = 300) -> None:
    """Wait until ``path`` exists; fail with the process's output if it ends first."""
    import time

    t = time.time()
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"run ended before {path} appeared (rc {proc.returncode}): {out[-2000:]}")
        assert time.time() - t < timeout, f"timed out waiting for {path}"
        time.sleep(0.2)


def kill_and_resume(launch, ref: str, crash: str, checkpoint: Path) -> None:
    """Run ``launch(ref)`` to the end; run ``launch(crash)``, SIGKILL its process group once ``checkpoint`` (a
    checkpoint folder of the crash run) is complete, then ``launch(crash, "--resume")`` to the end."""
    import signal

    proc = launch(ref)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    proc = launch(crash)
    wait_for(checkpoint / "kolm_complete.json", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc = launch(crash, "--resume")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
