"""Test helpers for GGUF: write a tiny Hugging Face model + byte-level tokenizer as a GGUF file the way llama.cpp's
``convert_hf_to_gguf.py`` does (tensor names, Q/K row permutation for llama, metadata keys), and a reference
tokenizer that follows llama.cpp's byte-level BPE (split by the pre-tokenizer's regexes in turn, bytes to the GPT-2
alphabet, merges by rank), independent of the `tokenizers` pipelines kolm writes."""

from __future__ import annotations

import json
from pathlib import Path

# llama.cpp's regexes per pre-tokenizer (src/llama-vocab.cpp): applied one after the other; each splits the
# pieces of the previous one into matches and the text between matches.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
QWEN2_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_REGEXES = {"gpt2": [GPT2_REGEX], "smollm": [r"\p{N}", GPT2_REGEX], "qwen2": [QWEN2_REGEX]}


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def _split(text: str, regexes: list[str]) -> list[str]:
    import regex

    pieces = [text]
    for rx in regexes:
        out = []
        for p in pieces:
            pos = 0
            for m in regex.finditer(rx, p):
                if m.start() > pos:
                    out.append(p[pos:m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                pos = m.end()
            if pos < len(p):
                out.append(p[pos:])
        pieces = out
    return pieces


def reference_bpe(tokens: list[str], merges: list[str], pre: str):
    """A function text -> ids that tokenizes like llama.cpp's BPE tokenizer for pre-tokenizer ``pre``."""
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    alphabet = byte_alphabet()
    regexes = PRE_REGEXES[pre]
    cache: dict[str, list[int]] = {}

    def word(w: str) -> list[int]:
        if w not in cache:
            parts = [alphabet[b] for b in w.encode("utf-8")]
            while len(parts) > 1:
                pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
                rank, i = min(pairs)
                if rank == 1 << 30:
                    break
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            cache[w] = [vocab[p] for p in parts]
        return cache[w]

    return lambda text: [i for w in _split(text, regexes) for i in word(w)]


def _permute(w, n_head: int):
    """llama.cpp's Q/K row order for llama models (interleaved rotary halves)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_tensors(model, arch: str) -> dict:
    """GGUF name -> numpy float32 array, with llama.cpp's names and (for llama) permuted Q/K rows."""
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not cfg.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            for kind in ("weight", "bias"):
                key = f"model.layers.{i}.{hf}.{kind}"
                if key not in sd:
                    continue
                t = sd[key]
                if arch == "llama" and hf == "self_attn.q_proj":
                    t = _permute(t, cfg.num_attention_heads)
                elif arch == "llama" and hf == "self_attn.k_proj":
                    t = _permute(t, cfg.num_key_value_heads)
                out[f"blk.{i}.{gg}.{kind}"] = t
    return out


def write_gguf(model, tok_dir: Path, path: Path, *, arch: str = "llama", pre: str = "smollm", qtype: str = "F32",
               chat_template: str | None = None, special: dict[str, str] | None = None, license: str | None = None,
               extra_tensors: dict | None = None, extra=None) -> Path:
    """Write ``model`` (a tiny HF Llama/Qwen2/Qwen3) and the byte-level tokenizer in ``tok_dir`` as a GGUF file.

    ``special``: {"bos": token, "eos": token, "pad": token, "eot": token}; ``qtype``: F32, F16 or Q8_0 for the 2-D
    weights (norms stay F32, as llama.cpp keeps them); ``extra``: a function of the writer that adds metadata.
    """
    import gguf
    import numpy as np

    cfg = model.config
    j = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = {**j["model"]["vocab"], **{t["content"]: t["id"] for t in j["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda x: x[1])]
    assert len(tokens) == cfg.vocab_size, (len(tokens), cfg.vocab_size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    added = {t["content"] for t in j["added_tokens"]}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny {arch}")
    if license:
        w.add_license(license)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    w.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t in added else 1 for t in tokens])
    w.add_token_merges(merges)
    special = special or {}
    for key, fn in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id),
                    ("eot", w.add_eot_token_id)):
        if key in special:
            fn(vocab[special[key]])
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)
    if extra is not None:  # more metadata: a function of the writer
        extra(w)
    q = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
         "Q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7}[qtype])
    for name, t in {**hf_to_gguf_tensors(model, arch), **(extra_tensors or {})}.items():
        t = np.ascontiguousarray(t, dtype=np.float32)
        if t.ndim == 2 and q != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(t, q), raw_dtype=q)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
