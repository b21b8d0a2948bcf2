"""``kolm model resize``: grow a model's embeddings and LM head to an extended tokenizer.

    kolm model resize --model base-model --tokenizer tok-ko --output model-ko [--init subword-mean|mean|random]
                      [--pad-to-multiple-of 64] [--base-tokenizer TOK] [--trust-remote-code]

The new tokenizer must *extend* the model's own one (``--base-tokenizer``, default: the tokenizer files in
MODEL): every base token keeps its id and string; new tokens come after. Original rows of the input embeddings
and the LM head are copied bit for bit; rows for new tokens are initialised by ``--init``:

* ``subword-mean`` (default): the mean of the base rows of the pieces the *base* tokenizer cuts the new token
  into (``extension.json`` from ``kolm vocab extend`` lists them; otherwise ``base.model.tokenize(token)``).
  The LM head gets the mean of the head rows of the same pieces, so a new token's logit starts at the mean of
  its pieces' logits. Rows past the tokenizer (``--pad-to-multiple-of``) get the plain mean of the base rows.
* ``mean``: transformers' mean resizing (a sample of N(mean, 1e-9 * cov) of the old rows).
* ``random``: the model's own ``_init_weights`` (transformers' ``mean_resizing=False``), for ablations.

:func:`resize_model` is the library entry point (used by the CPT trainer): it works on a plain model and on a
model partitioned by DeepSpeed ZeRO-3 (``zero.Init``, before ``deepspeed.initialize``): the new weights are born
partitioned, filled on rank 0 inside ``GatheredParameters(..., modifier_rank=0)`` and repartitioned, so no rank
keeps a full copy. Output: safetensors weights, config.json with the new vocab_size, the new tokenizer's files
and ``resize.json`` (inits, sizes, per-init statistics and the resolved config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io import atomic_output_dir, copy_tokenizer_files, resolve_pretrained

INITS = ("subword-mean", "mean", "random")
# The new tokenizer folder's files are copied into the output (kolm.io.copy_tokenizer_files: tokenizer.model only
# when it belongs to the new tokenizer.json, i.e. the one `kolm vocab extend` wrote, never a stale base model).
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.jinja", "tokenizer*"]


@dataclass
class ResizeConfig:
    """Options of ``kolm model resize``."""

    model: str = field(None, help="model folder (safetensors weights) or hub id")
    tokenizer: str = field(None, help="extended tokenizer folder (output of `kolm vocab extend`)")
    output: str = field(None, help="output model folder")
    init: Literal["subword-mean", "mean", "random"] = field("subword-mean", help="how new rows are initialised")
    pad_to_multiple_of: int | None = field(None, help="pad the vocabulary dimension to a multiple of this")
    base_tokenizer: str | None = field(None, help="the model's tokenizer (default: the tokenizer files in MODEL)")
    seed: int = field(0, help="random seed for the `mean` and `random` inits")
    trust_remote_code: bool = field(False, help="allow custom model code from the hub (off by default)")
    overwrite: bool = field(False, help="replace an existing output folder")

    def __post_init__(self) -> None:
        for name in ("model", "tokenizer", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")
        if self.init not in INITS:
            raise ConfigError(f"init: {self.init!r} is not one of {list(INITS)}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of: must be >= 1, got {self.pad_to_multiple_of}")


# ----------------------------------------------------------------------------------------------- tokenizers
def load_tokenizer(path: str | Path, what: str) -> tuple[Any, Path]:
    """A ``tokenizers.Tokenizer`` from a folder holding tokenizer.json (or the file itself, or a hub id)."""
    from tokenizers import Tokenizer

    p = Path(path).expanduser()
    file = p if p.is_file() else resolve_pretrained(str(path), allow_patterns=MODEL_PATTERNS) / "tokenizer.json"
    if not file.is_file():
        raise KolmError(f"{what}: no tokenizer.json in {file.parent}")
    try:
        return Tokenizer.from_file(str(file)), file
    except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exceptions
        raise KolmError(f"{file}: not a valid tokenizer.json ({e})") from None


@dataclass
class ExtensionPlan:
    """What the new tokenizer adds to the base one."""

    n_base: int  # ids below this belong to the base tokenizer
    n_tokens: int  # len(new tokenizer): max id + 1
    tokens: dict[int, str]  # new id -> token string
    pieces: dict[int, list[int]]  # new id -> base ids it is made of (may be empty: then the plain mean)
    pieces_from: str  # "extension.json", "base tokenizer" or "both"


def plan_extension(new: Any, base: Any, extension: list[dict] | None = None, *, new_name: str = "tokenizer",
                   base_name: str = "base tokenizer") -> ExtensionPlan:
    """Check that ``new`` extends ``base`` (same id and string for every base token) and find each new token's pieces.

    ``extension`` is the ``added`` list of ``extension.json`` ([{"id", "token", "base_ids"}]); tokens it does not
    cover are cut by the base BPE model itself (added/special tokens by the full base pipeline).
    """
    bv, nv = base.get_vocab(with_added_tokens=True), new.get_vocab(with_added_tokens=True)
    bad = [f"{t!r} (id {i} -> {nv.get(t)})" for t, i in sorted(bv.items(), key=lambda x: x[1]) if nv.get(t) != i]
    if bad:
        raise KolmError(f"{new_name} is not an extension of {base_name}: {len(bad)} of {len(bv)} base tokens are "
                        f"missing or have another id, e.g. {', '.join(bad[:3])}. Make it with `kolm vocab extend` "
                        "from this model's tokenizer (or pass the right --base-tokenizer).")
    n_base = max(bv.values()) + 1
    tokens = {i: t for t, i in nv.items() if t not in bv}
    clash = sorted(i for i in tokens if i < n_base)
    if clash:
        raise KolmError(f"{new_name}: new token {tokens[clash[0]]!r} has id {clash[0]} inside the base id range "
                        f"(< {n_base}); new tokens must come after every base id")
    pieces: dict[int, list[int]] = {}
    for e in extension or []:
        try:
            i, tok, ids = int(e["id"]), str(e["token"]), [int(x) for x in e["base_ids"]]
        except (KeyError, TypeError, ValueError):
            raise KolmError(f"extension.json: malformed entry {e!r} (need id, token, base_ids)") from None
        if tokens.get(i) != tok:
            raise KolmError(f"extension.json: entry id {i} token {tok!r} does not match {new_name} "
                            f"({tokens.get(i)!r}); the file belongs to another tokenizer")
        if any(not 0 <= x < n_base for x in ids):
            raise KolmError(f"extension.json: base_ids of {tok!r} are outside the base vocabulary ({ids})")
        pieces[i] = ids
    n_listed = len(pieces)
    special = new.get_added_tokens_decoder()
    unk = {bv[t] for t in [getattr(base.model, "unk_token", None)] if t in bv}
    for i, tok in tokens.items():
        if i in pieces:
            continue
        if i in special:  # an added token's content is plain text: cut it with the whole base pipeline
            ids = base.encode(special[i].content, add_special_tokens=False).ids
        else:  # model-level, so no dummy prefix; byte-level strings are already in the byte alphabet
            ids = [t.id for t in base.model.tokenize(tok)]
        pieces[i] = [x for x in ids if x not in unk and x < n_base]
    source = "extension.json" if n_listed == len(tokens) and tokens else "base tokenizer" if not n_listed else "both"
    return ExtensionPlan(n_base, max(nv.values()) + 1, tokens, pieces, source)


# ----------------------------------------------------------------------------------------------- weights
def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _mean_resizing_rows(old: Any, k: int) -> Any:
    """transformers' ``mean_resizing``: k samples of N(mean, 1e-9 * cov) of the old rows (float32)."""
    import torch
    from torch.distributions import constraints

    mean = old.mean(0)
    centered = old - mean
    cov = 1e-9 * (centered.T @ centered / old.shape[0])
    if constraints.positive_definite.check(cov).all():
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).sample((k,))
    return mean[None].repeat(k, 1)


def _init_rows(model: Any, old_w: Any, old_b: Any, rows: list[int], ext: ExtensionPlan, init: str, kind: str,
               seed: int) -> tuple[Any, Any, dict[str, float]]:
    """Values (float32) for ``rows`` of one [vocab, dim] matrix (and its bias), and statistics.

    Only ``mean`` makes a float32 copy of the whole matrix (for the covariance, as transformers does); the
    others read just the rows they need, which matters for a 128k x 4096 bf16 matrix gathered on one GPU.
    """
    import torch
    from torch import nn

    f32 = torch.float32
    base = old_w[: ext.n_base]
    n_pieces: list[int] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if init == "subword-mean":
            w = base.mean(0, dtype=f32)[None].repeat(len(rows), 1)
            b = None if old_b is None else old_b[: ext.n_base].mean(dtype=f32).repeat(len(rows))
            for r, i in enumerate(rows):
                ids = ext.pieces.get(i)
                if ids:
                    w[r] = old_w[ids].mean(0, dtype=f32)
                    if b is not None:
                        b[r] = old_b[ids].mean(dtype=f32)
                    n_pieces.append(len(ids))
        elif init == "mean":
            w = _mean_resizing_rows(old_w.to(f32), len(rows))
            b = None if old_b is None else old_b.mean(dtype=f32).repeat(len(rows))
        else:  # the model's own init, on a scratch module of just the new rows
            tmp = (nn.Embedding(len(rows), old_w.shape[1]) if kind == "embedding"
                   else nn.Linear(old_w.shape[1], len(rows), bias=old_b is not None))
            if hasattr(model, "_init_weights"):
                model._init_weights(tmp)
            w, b = tmp.weight.detach().float(), None if old_b is None else tmp.bias.detach().float()
    norm = torch.linalg.vector_norm(base, dim=1, dtype=f32).mean().item()
    stats = {"base_row_norm": round(norm, 6), "new_row_norm": round(w.norm(dim=1).mean().item(), 6) if rows else 0.0}
    if init == "subword-mean":
        stats["rows_from_pieces"] = len(n_pieces)
        stats["mean_pieces"] = round(sum(n_pieces) / max(len(n_pieces), 1), 3)
    return w, b, stats


def _grow(model: Any, module: Any, size_attr: str, target: int, rows: list[int], ext: ExtensionPlan, init: str,
          kind: str, seed: int) -> dict[str, float]:
    """Give ``module`` a [target, dim] weight (and bias): old rows copied, ``rows`` (re)initialised.

    A ZeRO-3 weight is replaced by a partitioned one made under ``zero.Init``; old and new are gathered, rank 0
    writes, and leaving ``GatheredParameters(modifier_rank=0)`` broadcasts and repartitions.
    """
    import torch
    from torch import nn

    w, b = module.weight, getattr(module, "bias", None)
    zero = hasattr(w, "ds_id")
    old_n, dim = tuple(getattr(w, "ds_shape", w.shape))
    stats: dict[str, float] = {}

    def fill(new_w: Any, new_b: Any) -> None:
        n = min(old_n, target)
        new_w.data[:n] = w.data[:n]
        if b is not None:
            new_b.data[:n] = b.data[:n]
        if rows:
            vals, bvals, st = _init_rows(model, w.data, None if b is None else b.data, rows, ext, init, kind, seed)
            idx = torch.tensor(rows, dtype=torch.long, device=new_w.device)
            new_w.data[idx] = vals.to(new_w.dtype)
            if b is not None:
                new_b.data[idx] = bvals.to(new_b.dtype)
            stats.update(st)

    if zero:
        import deepspeed
        from transformers.integrations.deepspeed import deepspeed_config

        # Same zero.Init arguments as transformers' from_pretrained (the dtype comes from the DeepSpeed config;
        # passing dtype= as well hits a DeepSpeed precedence bug that gives bf16 on CPU).
        cfg = deepspeed_config()
        with deepspeed.zero.Init(**({"config_dict_or_path": cfg} if cfg is not None else {"dtype": w.dtype})):
            holder = nn.Linear(dim, target, bias=b is not None)  # born partitioned: no full copy stays on any rank
        if holder.weight.dtype != w.dtype:
            raise KolmError(f"ZeRO-3 made {holder.weight.dtype} parameters for a {w.dtype} model: load the model "
                            "under the same DeepSpeed config (HfDeepSpeedConfig) that is active now")
        old_params = [w] + ([b] if b is not None else [])
        with deepspeed.zero.GatheredParameters(old_params, modifier_rank=None):
            with deepspeed.zero.GatheredParameters(list(holder.parameters()), modifier_rank=0):
                if _rank() == 0:
                    fill(holder.weight, holder.bias)
        new_w, new_b = holder.weight, holder.bias
    else:
        new_w = nn.Parameter(torch.empty(target, dim, dtype=w.dtype, device=w.device), w.requires_grad)
        new_b = None if b is None else nn.Parameter(torch.empty(target, dtype=b.dtype, device=b.device),
                                                     b.requires_grad)
        fill(new_w, new_b)
    new_w.requires_grad_(w.requires_grad)
    module.weight = new_w
    if b is not None:
        module.bias = new_b
    setattr(module, size_attr, target)
    return stats


def resize_model(model: Any, new_tokenizer: Any, base_tokenizer: Any, init: str = "subword-mean",
                 pad_to_multiple_of: int | None = None, seed: int = 0, extension: list[dict] | None = None,
                 plan: ExtensionPlan | None = None) -> dict[str, Any]:
    """Resize ``model``'s input embeddings and LM head (tied or not) to ``new_tokenizer``; return statistics.

    Tokenizers are ``tokenizers.Tokenizer`` objects (or HF fast tokenizers). Works on plain models and on models
    partitioned by ZeRO-3 (call it on every rank, before ``deepspeed.initialize``); every rank gets the stats.
    Raises KolmError when the new tokenizer does not extend the base one or the model is smaller than the base.
    """
    import torch

    if init not in INITS:
        raise KolmError(f"init: {init!r} is not one of {list(INITS)}")
    new_tok = getattr(new_tokenizer, "backend_tokenizer", new_tokenizer)
    base_tok = getattr(base_tokenizer, "backend_tokenizer", base_tokenizer)
    ext = plan or plan_extension(new_tok, base_tok, extension)
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    old_n = int(getattr(inp.weight, "ds_shape", inp.weight.shape)[0])
    if old_n < ext.n_base:
        raise KolmError(f"the model has {old_n} embedding rows but its base tokenizer has {ext.n_base} ids: "
                        "the base tokenizer does not belong to this model")
    target = max(ext.n_tokens, old_n)
    if pad_to_multiple_of:
        target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
    # New tokens may land in rows the model already had past its tokenizer (padding rows): re-initialise them.
    rows = sorted(set(ext.tokens) | set(range(old_n, target)))
    tied = out is not None and out.weight is inp.weight
    stats: dict[str, Any] = {
        "init": init, "old_vocab_size": old_n, "new_vocab_size": target, "base_tokenizer_size": ext.n_base,
        "tokenizer_size": ext.n_tokens, "new_tokens": len(ext.tokens), "new_rows": len(rows),
        "reused_rows": sum(1 for i in ext.tokens if i < old_n), "padding_rows": max(0, target - ext.n_tokens),
        "tied": tied, "pieces_from": ext.pieces_from if init == "subword-mean" else None,
        "no_pieces": sum(1 for i in ext.tokens if not ext.pieces.get(i)),
    }
    with torch.no_grad():
        stats["input_embeddings"] = _grow(model, inp, "num_embeddings", target, rows, ext, init, "embedding", seed)
        if tied:
            out.weight = inp.weight
        elif out is not None:
            stats["lm_head"] = _grow(model, out, "out_features", target, rows, ext, init, "linear", seed + 1)
        if out is not None and hasattr(out, "out_features"):
            out.out_features = target
    model.config.get_text_config().vocab_size = target
    if hasattr(model, "vocab_size"):
        model.vocab_size = target
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # only rank 0 saw the weights: share its numbers
        box = [stats]
        dist.broadcast_object_list(box, src=0)
        stats = box[0]
    return stats


# ----------------------------------------------------------------------------------------------- command
def _check_weights(model_dir: Path) -> None:
    if any(model_dir.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt*"))
    if pickles:
        raise KolmError(f"{model_dir}: only pickle weights ({', '.join(pickles[:3])}); kolm loads safetensors only "
                        "(convert them with safetensors.torch.save_file first)")
    raise KolmError(f"{model_dir}: no *.safetensors weights found")


def run(cfg: ResizeConfig) -> dict[str, Any]:
    """``kolm model resize``: load, check, resize, save (atomically) and write resize.json."""
    model_dir = resolve_pretrained(cfg.model, allow_patterns=MODEL_PATTERNS)
    _check_weights(model_dir)
    base_src = cfg.base_tokenizer or model_dir
    base, base_file = load_tokenizer(base_src, "base_tokenizer" if cfg.base_tokenizer else "model")
    new, new_file = load_tokenizer(cfg.tokenizer, "tokenizer")
    ext_file, extension = new_file.parent / "extension.json", None
    if ext_file.is_file():
        try:
            extension = json.loads(ext_file.read_text(encoding="utf-8"))["added"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise KolmError(f"{ext_file}: not a valid extension.json ({e})") from None
    plan = plan_extension(new, base, extension, new_name=str(new_file), base_name=str(base_file))

    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        mcfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise KolmError(f"{model_dir}: cannot read config.json ({e})") from None
    vocab = getattr(mcfg.get_text_config(), "vocab_size", None)
    if vocab is not None and vocab < plan.n_base:
        raise KolmError(f"{model_dir}/config.json: vocab_size {vocab} < {plan.n_base} ids of the base tokenizer "
                        f"{base_file}: the base tokenizer does not belong to this model")
    with atomic_output_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True,
                                                     trust_remote_code=cfg.trust_remote_code)
        stats = resize_model(model, new, base, cfg.init, cfg.pad_to_multiple_of, cfg.seed, plan=plan)
        model.save_pretrained(tmp)  # transformers 5 always writes safetensors
        copy_tokenizer_files(new_file.parent, tmp, fallback=base_file.parent)
        stats["config"] = to_dict(cfg)
        (tmp / "resize.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"resized {cfg.model}: vocab {stats['old_vocab_size']} -> {stats['new_vocab_size']} "
          f"({stats['new_rows']} new rows, init {cfg.init}) -> {cfg.output}")
    return stats
