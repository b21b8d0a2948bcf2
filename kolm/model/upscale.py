"""``kolm upscale``: depth up-scaling (SOLAR DUS) of a Llama / Mistral / Qwen2 / Qwen3 decoder.

    kolm upscale --model M --output O [--drop-layers 8 | --layer-map "0-23,8-31"] [--max-shard-size 5GB]
    kolm upscale --model M --output O --dry-run      # layer map and parameter counts; reads no weights
    kolm upscale --config train/solar_dus.yaml

SOLAR 10.7B: two copies of a 32-layer base, the last 8 layers dropped from the first and the first 8 from the
second, stacked into 48 layers (``--drop-layers 8``, the default; it is the layer map ``0-23,8-31``). Any other
stack is a ``--layer-map``: the source layer of every output layer, as comma-separated inclusive ranges or single
indices (``0-N`` with N the last layer is the identity). The up-scaled model then needs continual pretraining to
heal the seam (``train/solar_dus_cpt.yaml``).

Output: safetensors shards (``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``, or one
``model.safetensors``), ``config.json`` identical to the source's except ``num_hidden_layers`` and the per-layer
fields (``layer_types`` remapped through the layer map, Qwen's ``max_window_layers`` recounted), the tokenizer
files, ``generation_config.json``, ``extension.json`` and ``resize.json`` when present, and ``upscale.json``
(layer map, parameter counts, resolved config). Per-layer tensors ``model.layers.{i}.*`` are renamed to their new
index; everything else (embeddings, final norm, LM head: any vocabulary size, tied or not) is copied once, bit for
bit, in the source dtype.

Memory: tensors are streamed from the source files to one output shard at a time. ``safe_open`` maps the source
lazily, so a shard's tensors become resident only while that shard is written and are released after it: peak
memory above the baseline is about one output shard (``--max-shard-size``; a single tensor larger than that gets
a shard of its own). A source tensor that lands twice in the same shard is copied once more (safetensors refuses
aliased tensors), so the bound is 2x the largest shard in the worst case. ``bench/upscale.py`` measures it: peak
RSS above the post-import baseline is 0.97-0.99x the largest output shard (100 MB and 250 MB shards, a 542 MB
model up-scaled to 748 MB), against 2.1x the *whole source* for from_pretrained + deepcopy + save_pretrained.
The full model is never built, so no torch model class and no ``trust_remote_code`` is involved: the
architecture is read from ``config.json`` and only the families above are accepted.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.artifacts import VOCAB_RECORDS
from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io.files import atomic_output_dir
from kolm.io.models import check_safetensors, resolve_pretrained
from kolm.io.tokenizers import TOKENIZER_MODEL, carry_tokenizer_model

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
SOLAR_DROP = 8
# Copied verbatim from the source folder when present. The vocabulary does not change, so extension.json and
# resize.json stay true (`kolm train cpt` finds the first added token id in them); licences travel with weights.
# tokenizer.model is carried only when it belongs to the tokenizer.json (kolm.io.tokenizers.carry_tokenizer_model).
COPY_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
              "merges.txt", "chat_template.jinja", "chat_template.json",
              "generation_config.json", *VOCAB_RECORDS, "LICENSE", "LICENSE.txt", "NOTICE",
              "USE_POLICY.md")
PER_LAYER_LISTS = ("layer_types",)  # config lists with one entry per decoder layer (transformers 5)
INDEX = "model.safetensors.index.json"
_LAYER_KEY = re.compile(r"^((?:model\.)?layers\.)(\d+)\.(.+)$")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: str | int) -> int:
    """``"2GB"`` -> 2e9 bytes, ``"512MiB"`` -> 512 * 2**20; a plain number is bytes (transformers' units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", str(value), re.IGNORECASE)
    if not m or (m.group(2) or "").upper() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 2GB, 500MB, 4GiB or a number of bytes)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper()])


def parse_layer_map(spec: str) -> list[int]:
    """``"0-23,8-31"`` -> [0, ..., 23, 8, ..., 31]: inclusive ranges and single indices, comma-separated."""
    out: list[int] = []
    for part in (p.strip() for p in str(spec).split(",")):
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"cannot read {part!r} in {spec!r}: use ranges and indices like 0-23,8-31")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ValueError(f"range {part!r} in {spec!r} runs backwards")
        out.extend(range(a, b + 1))
    return out


def format_layer_map(layers: list[int]) -> str:
    """Inverse of :func:`parse_layer_map`: consecutive runs as ranges."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


@dataclass
class UpscaleConfig:
    """Options of ``kolm upscale``."""

    model: str = field(None, help="source model folder (safetensors weights) or hub id", path=True, hub=True)
    output: str = field(None, help="output model folder", path=True)
    drop_layers: int | None = field(None, help="SOLAR DUS: drop the last N layers of the first copy and the first N "
                                               f"of the second (default {SOLAR_DROP} when no --layer-map)")
    layer_map: str | None = field(None, help="source layer of every output layer, inclusive ranges: \"0-23,8-31\"")
    max_shard_size: str = field("5GB", help="largest output shard (e.g. 2GB, 500MB, 4GiB); peak memory follows it")
    overwrite: bool = field(False, help="replace an existing output folder")

    def __post_init__(self) -> None:
        for name in ("model", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")
        if self.layer_map is not None and self.drop_layers is not None:
            raise ConfigError("drop_layers and layer_map: give one, not both (set drop_layers=null to use a layer map "
                              "with a recipe that sets drop_layers)")
        if self.layer_map is None and self.drop_layers is None:
            self.drop_layers = SOLAR_DROP
        if self.drop_layers is not None and self.drop_layers < 0:
            raise ConfigError(f"drop_layers: must be >= 0, got {self.drop_layers}")
        if self.layer_map is not None:
            try:
                parse_layer_map(self.layer_map)
            except ValueError as e:
                raise ConfigError(f"layer_map: {e}") from None
        try:
            if parse_size(self.max_shard_size) < 1:
                raise ValueError("must be at least 1 byte")
        except ValueError as e:
            raise ConfigError(f"max_shard_size: {e}") from None


# ----------------------------------------------------------------------------------------------- source
@dataclass
class TensorInfo:
    file: Path
    dtype: str
    shape: list[int]
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Source:
    dir: Path
    config: dict[str, Any]
    model_type: str
    num_layers: int
    tensors: dict[str, TensorInfo] | None  # None: no weight files here (a dry run on config.json alone)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes, shapes and sizes from a safetensors header (8-byte length + JSON); no data read."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError(f"header length {n}")
            header = json.loads(fh.read(n))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as e:
        raise KolmError(f"{path}: not a readable safetensors file ({e})") from None
    header.pop("__metadata__", None)
    return {k: TensorInfo(path, v["dtype"], list(v["shape"]), v["data_offsets"][1] - v["data_offsets"][0])
            for k, v in header.items()}


def _model_type(config: dict[str, Any], where: Path) -> str:
    mt = config.get("model_type")
    if mt is None:
        archs = config.get("architectures") or []
        prefixes = {"LlamaFor": "llama", "MistralFor": "mistral", "Qwen2For": "qwen2", "Qwen3For": "qwen3"}
        mt = next((t for a in archs for p, t in prefixes.items() if str(a).startswith(p)), None)
    if mt not in SUPPORTED:
        raise KolmError(f"{where}: unknown architecture (model_type {config.get('model_type')!r}, architectures "
                        f"{config.get('architectures')}); kolm upscale supports {', '.join(SUPPORTED)}")
    return mt


def load_source(model_dir: Path, need_weights: bool = True) -> Source:
    """Read config.json and the safetensors headers (never tensor data); check they agree."""
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise KolmError(f"{model_dir}: no config.json")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KolmError(f"{cfg_file}: not valid JSON ({e})") from None
    mt = _model_type(config, cfg_file)
    if config.get("quantization_config"):
        raise KolmError(f"{cfg_file}: quantized checkpoints are not supported; up-scale the unquantized model")
    n = config.get("num_hidden_layers")
    if not isinstance(n, int) or n < 1:
        raise KolmError(f"{cfg_file}: num_hidden_layers missing or invalid ({n!r})")

    index = model_dir / INDEX
    files: list[Path]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise KolmError(f"{index}: not a valid safetensors index ({e})") from None
        files = [model_dir / f for f in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            if need_weights:
                raise KolmError(f"{index} names shards that are missing: {', '.join(missing[:3])}")
            return Source(model_dir, config, mt, n, None)
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in [*model_dir.glob("*.bin"), *model_dir.glob("*.pt"), *model_dir.glob("*.pth")])
        if pickles and need_weights:
            raise KolmError(f"{model_dir}: only pickle weights ({', '.join(pickles[:3])}); kolm reads safetensors only "
                            "(convert them with safetensors.torch.save_file first)")
        if need_weights:
            raise KolmError(f"{model_dir}: no *.safetensors weights found")
        return Source(model_dir, config, mt, n, None)

    tensors: dict[str, TensorInfo] = {}
    if need_weights:
        for f in files:  # sizes as the headers say: a cut shard is named before any output is written
            check_safetensors(f)
    for f in files:
        for k, info in read_header(f).items():
            if k in tensors:
                raise KolmError(f"{model_dir}: tensor {k} is in both {tensors[k].file.name} and {f.name}")
            tensors[k] = info
    found = sorted({int(m.group(2)) for k in tensors if (m := _LAYER_KEY.match(k))})
    if found != list(range(n)):
        raise KolmError(f"{cfg_file}: num_hidden_layers is {n} but the weights hold layers "
                        f"{format_layer_map(found) or 'none'}")
    return Source(model_dir, config, mt, n, tensors)


# ----------------------------------------------------------------------------------------------- plan
def resolve_layer_map(cfg: UpscaleConfig, num_layers: int, where: str = "config.json") -> list[int]:
    """The source layer of every output layer, checked against the model's depth."""
    if cfg.layer_map is not None:
        layers = parse_layer_map(cfg.layer_map)
        bad = sorted({i for i in layers if i >= num_layers})
        if bad:
            raise KolmError(f"layer_map {cfg.layer_map!r}: layer {bad[0]} is out of range: {where} has {num_layers} "
                            f"layers (0-{num_layers - 1})")
        return layers
    d = cfg.drop_layers
    if 2 * d >= num_layers:
        raise KolmError(f"drop_layers: {d} must be less than half of the model's {num_layers} layers ({where}): "
                        f"dropping {d} from each copy leaves {2 * (num_layers - d)} layers, no deeper than the source")
    return [*range(num_layers - d), *range(d, num_layers)]


def upscale_config(config: dict[str, Any], layers: list[int]) -> dict[str, Any]:
    """config.json of the up-scaled model: ``num_hidden_layers`` and the per-layer fields follow the layer map."""
    n = config["num_hidden_layers"]
    out = dict(config)
    out["num_hidden_layers"] = len(layers)
    for key in PER_LAYER_LISTS:
        v = config.get(key)
        if isinstance(v, list):
            if len(v) != n:
                raise KolmError(f"config.json: {key} has {len(v)} entries for {n} layers")
            out[key] = [v[i] for i in layers]
    mwl = config.get("max_window_layers")
    if isinstance(mwl, int) and not isinstance(mwl, bool):
        # Qwen2/3: layers >= max_window_layers use sliding-window attention (when use_sliding_window is on).
        # Recount it, but keep the value when it still says "every layer full" (Qwen3 ships 28 for any depth).
        full = sum(1 for i in layers if i < mwl)
        out["max_window_layers"] = mwl if full == len(layers) and mwl >= len(layers) else full
        sliding = [i >= mwl for i in layers]
        if (config.get("use_sliding_window") and config.get("sliding_window") is not None
                and "layer_types" not in config and sliding != sorted(sliding)):
            # A count cannot say "full, sliding, full": spell every layer out (the config class would derive it).
            out["layer_types"] = ["sliding_attention" if s else "full_attention" for s in sliding]
    return out


def _plan(src: Source, layers: list[int]) -> list[tuple[str, str]]:
    """(output name, source name) for every output tensor: embeddings first, then the layers in order, then the rest."""
    assert src.tensors is not None
    per_layer: dict[int, list[tuple[str, str]]] = {}
    first, last = [], []
    for k in sorted(src.tensors):
        m = _LAYER_KEY.match(k)
        if m:
            per_layer.setdefault(int(m.group(2)), []).append((m.group(1), m.group(3)))
        else:
            (first if "embed" in k else last).append((k, k))
    body = [(f"{pre}{j}.{rest}", f"{pre}{i}.{rest}") for j, i in enumerate(layers) for pre, rest in per_layer[i]]
    return first + body + last


def _shards(plan: list[tuple[str, str]], src: Source, max_bytes: int) -> list[list[tuple[str, str]]]:
    assert src.tensors is not None
    shards: list[list[tuple[str, str]]] = [[]]
    size = 0
    for out_name, src_name in plan:
        nb = src.tensors[src_name].nbytes
        if shards[-1] and size + nb > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((out_name, src_name))
        size += nb
    return shards


@dataclass
class Counts:
    before: int
    after: int
    source: str  # "safetensors headers" or "config.json"


def _config_counts(c: dict[str, Any], mt: str) -> tuple[int, int]:
    """(parameters outside the layers, parameters of one layer) from config.json alone."""
    try:
        h, inter, v, nh = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_attention_heads"]
    except KeyError as e:
        raise KolmError(f"config.json: {e.args[0]} missing; cannot count parameters") from None
    nkv = c.get("num_key_value_heads") or nh
    hd = c.get("head_dim") or h // nh
    qkv = (nh + 2 * nkv) * hd
    layer = h * qkv + nh * hd * h + 3 * h * inter + 2 * h  # q, k, v, o, gate/up/down, two RMSNorms
    if mt == "qwen2":
        layer += qkv  # q/k/v biases are built in
    elif mt in ("llama", "qwen3") and c.get("attention_bias"):
        layer += qkv + h
    if mt == "llama" and c.get("mlp_bias"):
        layer += 2 * inter + h
    if mt == "qwen3":
        layer += 2 * hd  # q_norm, k_norm
    outside = v * h + h + (0 if c.get("tie_word_embeddings", False) else v * h)
    return outside, layer


def count_parameters(src: Source, layers: list[int]) -> Counts:
    """Parameter counts before/after: exact from the safetensors headers when present, else from config.json."""
    if src.tensors is not None:
        per_layer = [0] * src.num_layers
        outside = 0
        for k, t in src.tensors.items():
            m = _LAYER_KEY.match(k)
            if m:
                per_layer[int(m.group(2))] += t.numel
            else:
                outside += t.numel
        return Counts(outside + sum(per_layer), outside + sum(per_layer[i] for i in layers), "safetensors headers")
    outside, layer = _config_counts(src.config, src.model_type)
    return Counts(outside + layer * src.num_layers, outside + layer * len(layers), "config.json")


def human(n: int) -> str:
    """7241732096 -> "7.24B" (two decimals, SOLAR's 7.2B -> 10.7B style), 62112 -> "62.1K"."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}" if unit == "B" else f"{n / scale:.1f}{unit}"
    return str(n)


def _count(n: int) -> str:
    return f"{n:,} ({human(n)})"


def describe(src: Source, layers: list[int], counts: Counts) -> list[str]:
    """Human-readable plan: the layer map as output-range <- source-range runs, and the parameter counts."""
    lines = [f"source: {src.dir} ({src.model_type}, {src.num_layers} layers)",
             f"layer map: {format_layer_map(layers)} -> {len(layers)} layers"]
    j = 0
    for part in format_layer_map(layers).split(","):
        a, _, b = part.partition("-")
        k = int(b or a) - int(a) + 1
        lines.append(f"  output {j}-{j + k - 1} <- source {part}" if k > 1 else f"  output {j} <- source {part}")
        j += k
    lines.append(f"parameters: {_count(counts.before)} -> {_count(counts.after)} (from {counts.source})")
    return lines


# ----------------------------------------------------------------------------------------------- command
def dry_run(cfg: UpscaleConfig) -> dict[str, Any]:
    """``--dry-run``: print the layer map and the parameter counts before/after as YAML comments (so the dry run's
    output stays a loadable recipe). Reads config.json and safetensors headers only; works without weights."""
    model_dir = resolve_pretrained(cfg.model, allow_patterns=["*.json"])
    src = load_source(model_dir, need_weights=False)
    layers = resolve_layer_map(cfg, src.num_layers, str(model_dir / "config.json"))
    counts = count_parameters(src, layers)
    for line in describe(src, layers, counts):
        print(f"# {line}")
    return {"layer_map": layers, "parameters": [counts.before, counts.after], "counted_from": counts.source}


def _write_shard(src: Source, shard: list[tuple[str, str]], path: Path) -> None:
    """Write one output shard. Source handles and tensors are locals: the lazily mapped pages they touched are
    released when this returns, so at most one shard's data is resident at a time."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    assert src.tensors is not None
    handles: dict[Path, Any] = {}
    tensors: dict[str, Any] = {}
    used: set[str] = set()
    for out_name, src_name in shard:
        file = src.tensors[src_name].file
        if file not in handles:
            handles[file] = safe_open(str(file), framework="pt")
        t = handles[file].get_tensor(src_name)
        # The same source tensor twice in one shard is the same memory, which safetensors refuses to save.
        tensors[out_name] = t.clone() if src_name in used else t
        used.add(src_name)
    save_file(tensors, str(path), metadata={"format": "pt"})


def run(cfg: UpscaleConfig) -> dict[str, Any]:
    """``kolm upscale``: check everything, then stream the tensors into the output shards (atomically)."""
    model_dir = resolve_pretrained(cfg.model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                              "*.jinja", "LICENSE*", "NOTICE", "USE_POLICY.md"])
    out = Path(cfg.output).expanduser()
    if out.resolve() == model_dir.resolve() or model_dir.resolve() in out.resolve().parents:
        raise KolmError(f"output {out} must not be the source folder {model_dir} or inside it")
    src = load_source(model_dir)
    layers = resolve_layer_map(cfg, src.num_layers, str(model_dir / "config.json"))
    new_config = upscale_config(src.config, layers)
    counts = count_parameters(src, layers)
    shards = _shards(_plan(src, layers), src, parse_size(cfg.max_shard_size))
    names = ([f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
             if len(shards) > 1 else ["model.safetensors"])
    weight_map = {out_name: name for name, shard in zip(names, shards) for out_name, _ in shard}
    total = sum(src.tensors[s].nbytes for shard in shards for _, s in shard)  # type: ignore[index]
    with atomic_output_dir(out, overwrite=cfg.overwrite) as tmp:
        for name, shard in zip(names, shards):
            _write_shard(src, shard, tmp / name)
        if len(shards) > 1:
            index = {"metadata": {"total_parameters": counts.after, "total_size": total},
                     "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(new_config, indent=2) + "\n", encoding="utf-8")
        copied = [f for f in COPY_FILES if (model_dir / f).is_file()]
        for f in copied:
            shutil.copyfile(model_dir / f, tmp / f)
        if carry_tokenizer_model(tmp, model_dir):
            copied.append(TOKENIZER_MODEL)
        stats = {"source": cfg.model, "layer_map": format_layer_map(layers), "layers": layers,
                 "num_hidden_layers": [src.num_layers, len(layers)], "parameters": [counts.before, counts.after],
                 "shards": len(shards), "total_size": total, "copied": copied, "config": to_dict(cfg)}
        (tmp / "upscale.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not any(f.startswith("tokenizer") for f in copied):
        print(f"note: no tokenizer files in {model_dir}; the output has none either")
    print(f"up-scaled {cfg.model}: {src.num_layers} -> {len(layers)} layers (map {format_layer_map(layers)}), "
          f"{human(counts.before)} -> {human(counts.after)} parameters, {len(shards)} shard(s) -> {out}")
    return stats
