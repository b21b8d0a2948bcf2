"""Tests of ``kolm model import`` (kolm/model/gguf.py) on tiny GGUF files written the way llama.cpp writes them
(tests/gguf_helpers.py): the imported folder reproduces the original Hugging Face model (weights, logits, tied
head, GQA, RoPE), its tokenizer matches llama.cpp's BPE algorithm, and bad files are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf_helpers import reference_bpe, write_gguf
from helpers import make_bytelevel_tokenizer

from kolm.errors import KolmError

gguf = pytest.importorskip("gguf")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Python 3.11 is 25% faster: 1234 + 5678 = 6912",
         "a  1  22   333\n\n\tx", "한국어 자연어 처리는 재미있습니다. 서울 2024년", "don't  stop   12ab", ""]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A byte-level BPE with ChatML markers as added tokens."""
    texts = [t for t in TEXTS if t] * 20 + ["hello world " * 5, "number 1 2 3 10 100"]
    d = make_bytelevel_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tok", vocab_size=400)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(d / "tokenizer.json"))
    return d


def _vocab_size(tok_dir: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def tiny(arch: str, vocab: int, *, tie: bool, theta: float = 100000.0, rope: dict | None = None, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[arch], vocab_size=vocab, hidden_size=64,
        intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, tie_word_embeddings=tie, rms_norm_eps=1e-5,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": theta})
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so a wrong mapping shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _import(path: Path, out: Path, **kw):
    from kolm.model.gguf import ImportConfig, run

    return run(ImportConfig(gguf=str(path), output=str(out), **kw))


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def _load(out: Path, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, **kw), AutoTokenizer.from_pretrained(out)


# ----------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("arch,tie,pre", [("llama", True, "smollm"), ("qwen2", False, "qwen2"),
                                          ("qwen3", True, "gpt2")])
def test_round_trip_reproduces_the_original_model(tok_dir, tmp_path, arch, tie, pre):
    import torch

    original = tiny(arch, _vocab_size(tok_dir), tie=tie)
    special = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|im_end|>"}
    path = write_gguf(original, tok_dir, tmp_path / "m.gguf", arch=arch, pre=pre, chat_template=CHATML,
                      special=special, license="apache-2.0")
    record = _import(path, tmp_path / "out")
    model, tok = _load(tmp_path / "out")
    # weights: the permuted Q/K rows of llama come back in Hugging Face order; every tensor equals the original
    ref = original.state_dict()
    assert model.state_dict().keys() == ref.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    c = model.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.rope_parameters["rope_theta"]) == (4, 2, 100000.0)
    ids = tok(TEXTS[1])["input_ids"]
    assert torch.allclose(_logits(model, ids), _logits(original, ids), atol=1e-5, rtol=0)
    # tokenizer: llama.cpp's algorithm for this pre-tokenizer, special tokens, template, no BOS added
    j = json.loads((tok_dir / "tokenizer.json").read_text())
    ref_tok = reference_bpe([t for t, _ in sorted(j["model"]["vocab"].items(), key=lambda x: x[1])],
                            [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]], pre)
    for text in TEXTS:
        assert tok(text, add_special_tokens=True)["input_ids"] == ref_tok(text), text
        assert tok.decode(tok(text)["input_ids"]) == text
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok.chat_template == CHATML
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok("<|im_end|>")["input_ids"] == [tok.convert_tokens_to_ids("<|im_end|>")]
    gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id and gen["bos_token_id"] == tok.bos_token_id
    assert record["architecture"] == arch and record["license"] == "apache-2.0" and record["quantization"] == "ALL_F32"
    assert record["verified"]["logits_equal"] and record["tie_word_embeddings"] == tie
    assert bool(record["fixes"]) == (pre == "smollm" or arch == "qwen3") and len(record["sha256"]) == 64
    assert "license: apache-2.0" in (tmp_path / "out" / "README.md").read_text()


def test_digit_split_fix_matters(tok_dir, tmp_path):
    """transformers' GGUF tokenizer ignores the smollm pre-tokenizer's digit split; kolm's import restores it."""
    from transformers import AutoTokenizer

    path = write_gguf(tiny("llama", _vocab_size(tok_dir), tie=True), tok_dir, tmp_path / "m.gguf", pre="smollm",
                      special={"bos": "<|im_start|>", "eos": "<|im_end|>"})
    _import(path, tmp_path / "out", verify=False)
    ours = AutoTokenizer.from_pretrained(tmp_path / "out")
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    j = json.loads((tok_dir / "tokenizer.json").read_text())
    ref = reference_bpe([t for t, _ in sorted(j["model"]["vocab"].items(), key=lambda x: x[1])],
                        [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]], "smollm")
    differ = [t for t in TEXTS if theirs(t)["input_ids"] != ref(t)]
    assert differ, "premise: the tiny vocabulary has digit merges that the GPT-2 regex alone would use"
    assert all(ours(t)["input_ids"] == ref(t) for t in TEXTS)


def test_quantized_and_bf16(tok_dir, tmp_path, capfd, monkeypatch):
    """A Q8_0 file: the import equals transformers' dequantization exactly and the original within the
    quantization error; --dtype bfloat16 saves bf16 copies of the same tensors. The command prints its own line
    only: transformers' dequantization bar (a tqdm of its own, on stderr) goes to the log."""
    import torch

    from kolm.cli import main

    monkeypatch.setenv("KOLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KOLM_VERBOSE", raising=False)
    original = tiny("llama", _vocab_size(tok_dir), tie=False)
    path = write_gguf(original, tok_dir, tmp_path / "q.gguf", qtype="Q8_0", special={"eos": "<|im_end|>"})
    capfd.readouterr()
    assert main(["model", "import", "--gguf", str(path), "--output", str(tmp_path / "q8")]) == 0
    out, err = capfd.readouterr()
    assert err == "" and len(out.strip().splitlines()) == 1 and out.startswith("kolm model import: "), (out, err)
    assert "Converting and de-quantizing" in (tmp_path / "cache" / "logs" / "kolm-model-import.log").read_text()
    record = json.loads((tmp_path / "q8" / "import.json").read_text())
    assert record["quantization"] == "Q8_0" and record["tensor_types"]["Q8_0"] > 0
    assert record["verified"]["logits_equal"]
    model, tok = _load(tmp_path / "q8")
    ids = tok(TEXTS[0])["input_ids"]
    err = (_logits(model, ids) - _logits(original, ids)).abs().max().item()
    assert 0 < err < 0.05, err
    _import(path, tmp_path / "bf16", dtype="bfloat16")
    bf, _ = _load(tmp_path / "bf16", dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    for k, v in bf.state_dict().items():
        assert torch.equal(v, model.state_dict()[k].to(torch.bfloat16)), k


def test_llama3_rope_and_end_of_turn(tok_dir, tmp_path):
    """Llama-3.1-style RoPE scaling lives in a rope_freqs tensor that transformers ignores: kolm matches it to the
    llama3 rope type, so logits equal the original's; an end-of-turn id joins the generation EOS ids."""
    import numpy as np
    import torch

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    original = tiny("llama", _vocab_size(tok_dir), tie=True, rope=rope)
    inv = original.model.rotary_emb.inv_freq.double().numpy()
    base = 1.0 / 500000.0 ** (np.arange(0, 16, 2) / 16)
    extra = {"rope_freqs.weight": (base / inv).astype(np.float32)}
    path = write_gguf(original, tok_dir, tmp_path / "l3.gguf", special={"eos": "<|im_end|>", "eot": "<|im_start|>"},
                      extra_tensors=extra)
    assert not np.allclose(base / inv, 1.0), "premise: the scaling changes some frequencies"
    with pytest.raises(KolmError, match="matches no Llama-3 scaling"):  # an original context kolm does not try
        _import(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    rope["original_max_position_embeddings"] = 8192
    original = tiny("llama", _vocab_size(tok_dir), tie=True, rope=rope)
    extra = {"rope_freqs.weight": (base / original.model.rotary_emb.inv_freq.double().numpy()).astype(np.float32)}
    path = write_gguf(original, tok_dir, tmp_path / "l3b.gguf", special={"eos": "<|im_end|>", "eot": "<|im_start|>"},
                      extra_tensors=extra)
    record = _import(path, tmp_path / "out")
    model, tok = _load(tmp_path / "out")
    assert model.config.rope_parameters["rope_type"] == "llama3" and any("Llama-3" in f for f in record["fixes"])
    ids = list(range(5, 105))
    assert torch.allclose(_logits(model, ids), _logits(original, ids), atol=1e-5, rtol=0)
    gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|im_start|>")]


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_files_are_refused_in_one_line(tok_dir, tmp_path):
    from kolm.cli import main

    good = write_gguf(tiny("llama", _vocab_size(tok_dir), tie=True), tok_dir, tmp_path / "good.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model\n")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(good.read_bytes()[:200])

    def other_arch(w):
        w.add_string("general.architecture", "gpt2")

    cases = {text: "not a GGUF file", truncated: "truncated", header_only: "truncated or corrupt",
             tmp_path / "missing.gguf": "file not found"}
    for path, msg in cases.items():
        with pytest.raises(KolmError, match=msg):
            _import(path, tmp_path / "out")
    import gguf as g

    w = g.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(KolmError, match=r"architecture 'gpt2' is not supported .*llama, qwen2, qwen3"):
        _import(tmp_path / "gpt2.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    assert main(["model", "import", "--gguf", str(text), "--output", str(tmp_path / "out")]) == 2
    assert main(["model", "import", "--gguf", str(good), "--output", str(tmp_path / "ok")]) == 0
    assert main(["model", "import", "--gguf", str(good), "--output", str(tmp_path / "ok")]) == 2  # exists


def test_source_repository_is_recorded(tok_dir, tmp_path):
    """import.json's source_repo (kolm push's base_model): --source-repo, else the file's
    general.source.huggingface.repository, else a huggingface.co general.source.url; None when the file says
    neither (as SmolLM2's GGUF); a value that is no repository id is refused before anything is written."""
    from kolm.artifacts.imported import imported_from
    from kolm.config import ConfigError

    model = tiny("llama", _vocab_size(tok_dir), tie=True)
    plain = write_gguf(model, tok_dir, tmp_path / "plain.gguf")
    tagged = write_gguf(model, tok_dir, tmp_path / "tagged.gguf",
                        extra=lambda w: w.add_string("general.source.huggingface.repository", "org-a/model-a"))
    hf_url = "https://huggingface.co/org-b/model-b/tree/main"
    url = write_gguf(model, tok_dir, tmp_path / "url.gguf", extra=lambda w: w.add_string("general.source.url", hf_url))
    dataset_url = write_gguf(model, tok_dir, tmp_path / "ds.gguf",
                             extra=lambda w: w.add_string("general.source.url", "https://huggingface.co/datasets/d/x"))
    assert _import(plain, tmp_path / "plain", verify=False)["source_repo"] is None
    assert imported_from(tmp_path / "plain") is None
    assert _import(tagged, tmp_path / "tagged", verify=False)["source_repo"] == "org-a/model-a"
    assert _import(url, tmp_path / "url", verify=False)["source_repo"] == "org-b/model-b"
    assert _import(dataset_url, tmp_path / "ds", verify=False)["source_repo"] is None
    given = _import(tagged, tmp_path / "given", verify=False, source_repo="org-c/model-c")
    assert given["source_repo"] == "org-c/model-c"
    assert imported_from(tmp_path / "given") == "org-c/model-c"
    with pytest.raises(ConfigError, match="source_repo: 'not a repo' is not a Hub repository id"):
        _import(plain, tmp_path / "bad", source_repo="not a repo")
    assert not (tmp_path / "bad").exists()
