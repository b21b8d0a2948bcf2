"""``kolm model resize``: grow a model's embeddings and LM head to an extended tokenizer.

    kolm model resize --model base-model --tokenizer tok-ko --output model-ko [--init distill|subword-mean|mean|random]
                      [--corpus ko.txt] [--init-budget-s 280] [--init-steps N]
                      [--pad-to-multiple-of 64] [--base-tokenizer TOK] [--trust-remote-code]

The new tokenizer must *extend* the model's own one (``--base-tokenizer``, default: the tokenizer files in
MODEL): every base token keeps its id and string; new tokens come after. Original rows of the input embeddings
and the LM head are copied bit for bit; rows for new tokens are initialised by ``--init``, one class per method
in :mod:`kolm.model.inits` (adding a method is adding a file there):

* ``distill`` (the default when its corpus is at hand; otherwise ``subword-mean``, and kolm says why):
  subword-mean, then a short distillation of only the new rows against the base model's own predictions of the
  same text under the base tokenization (:mod:`kolm.model.inits.distill`). It reads the corpus the extension was
  learned on (``--corpus``, default: the files ``extension.json`` records) and stops at ``--init-steps`` or
  ``--init-budget-s`` (280 s). It needs the whole model in one process (not under ZeRO-3).
* ``subword-mean``: the mean of the base rows of the pieces the *base* tokenizer cuts the new token
  into (``extension.json`` from ``kolm vocab extend`` lists them; otherwise ``base.model.tokenize(token)``).
  The LM head gets the mean of the head rows of the same pieces. Rows past the tokenizer
  (``--pad-to-multiple-of``) get the plain mean of the base rows. Model-free and instant: it runs inside ZeRO-3.
* ``mean``: transformers' mean resizing (a sample of N(mean, 1e-9 * cov) of the old rows).
* ``random``: the model's own ``_init_weights`` (transformers' ``mean_resizing=False``), for ablations.

Why ``distill`` is the default (bench/init.py: SmolLM2-135M-Instruct + 8,000 Korean tokens, all 293 held-out
Korean documents the extension never saw and 100 English ones): right after resize, held-out Korean costs 0.996x
the base model's bits per byte with distill (274 s on 2 CPU cores), 1.265x with subword-mean and 1.844x with mean;
English moves +0.041%, +0.015% and +0.007%. The library function :func:`resize_model` keeps ``subword-mean`` as its
default: it is also called on partitioned models, where distill cannot run.

:func:`resize_model` is the library entry point (used by the CPT trainer): it works on a plain model and on a
model partitioned by DeepSpeed ZeRO-3 (``zero.Init``, before ``deepspeed.initialize``): the new weights are born
partitioned, filled on rank 0 inside ``GatheredParameters(..., modifier_rank=0)`` and repartitioned, so no rank
keeps a full copy. Output: safetensors weights, config.json with the new vocab_size, the new tokenizer's files
and ``resize.json`` (inits, sizes, per-init statistics and the resolved config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.artifacts import EXTENSION_FILE, AddedToken, ResizeRecord, TokenizerExtension
from kolm.config import ConfigError, field, to_dict
from kolm.errors import KolmError
from kolm.io.files import atomic_output_dir
from kolm.io.models import check_safetensors, resolve_pretrained
from kolm.io.tokenizers import copy_tokenizer_files, load_tokenizer_json
from kolm.model.inits import BUDGET_S, InitInputs, get_init, names

# The new tokenizer folder's files are copied into the output (kolm.io.tokenizers.copy_tokenizer_files:
# tokenizer.model only when it belongs to the new tokenizer.json, i.e. the one `kolm vocab extend` wrote, never a stale
# base model).
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.jinja", "tokenizer*"]


@dataclass
class ResizeConfig:
    """Options of ``kolm model resize``."""

    model: str = field(None, path=True, hub=True, help="model folder (safetensors weights) or hub id")
    tokenizer: str = field(None, path=True, hub=True, help="extended tokenizer folder (output of `kolm vocab extend`)")
    output: str = field(None, path=True, help="output model folder")
    init: str | None = field(None, help=f"how new rows are initialised: {', '.join(names())} (default: distill when "
                             "its corpus is at hand, i.e. --corpus or the files extension.json records; else "
                             "subword-mean, said)")
    corpus: list[str] = field(default_factory=list, help="text for a model-using init such as distill (default: "
                              "the corpus recorded in the tokenizer's extension.json)", path=True)
    init_budget_s: float = field(BUDGET_S, help="wall-clock budget of a model-using init, in seconds")
    init_steps: int | None = field(None, help="step cap of a model-using init (default: the method's own)")
    pad_to_multiple_of: int | None = field(None, help="pad the vocabulary dimension to a multiple of this")
    base_tokenizer: str | None = field(None, path=True, hub=True,
                                       help="the model's tokenizer (default: the tokenizer files in MODEL)")
    seed: int = field(0, help="random seed for the `mean` and `random` inits")
    trust_remote_code: bool = field(False, help="allow custom model code from the hub (off by default)")
    overwrite: bool = field(False, help="replace an existing output folder")

    def __post_init__(self) -> None:
        for name in ("model", "tokenizer", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")
        if self.init is not None and self.init not in names():
            raise ConfigError(f"init: {self.init!r} is not one of {names()}")
        if self.init_budget_s <= 0 or (self.init_steps is not None and self.init_steps < 1):
            raise ConfigError("init_budget_s must be > 0 and init_steps >= 1")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of: must be >= 1, got {self.pad_to_multiple_of}")


# ----------------------------------------------------------------------------------------------- tokenizers
@dataclass
class ExtensionPlan:
    """What the new tokenizer adds to the base one."""

    n_base: int  # ids below this belong to the base tokenizer
    n_tokens: int  # len(new tokenizer): max id + 1
    tokens: dict[int, str]  # new id -> token string
    pieces: dict[int, list[int]]  # new id -> base ids it is made of (may be empty: then the plain mean)
    pieces_from: str  # "extension.json", "base tokenizer" or "both"


def plan_extension(new: Any, base: Any, extension: list[AddedToken] | None = None, *, new_name: str = "tokenizer",
                   base_name: str = "base tokenizer") -> ExtensionPlan:
    """Check that ``new`` extends ``base`` (same id and string for every base token) and find each new token's pieces.

    ``extension`` is the ``added`` list of the tokenizer's :class:`~kolm.artifacts.TokenizerExtension`; tokens it
    does not cover are cut by the base BPE model itself (added/special tokens by the full base pipeline).
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
        i, tok, ids = e.id, e.token, e.base_ids
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


def _init_rows(model: Any, old_w: Any, old_b: Any, rows: list[int], init: Any, inputs: InitInputs,
               kind: str) -> tuple[Any, Any, dict[str, float]]:
    """Values (float32) for ``rows`` of one [vocab, dim] matrix (and its bias) from ``init``, and statistics."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(inputs.seed)
        w, b, stats = init.rows(model, old_w, old_b, rows, inputs, kind)
    base = old_w[: inputs.plan.n_base]
    norm = torch.linalg.vector_norm(base, dim=1, dtype=torch.float32).mean().item()
    new_norm = round(w.norm(dim=1).mean().item(), 6) if rows else 0.0
    return w, b, {"base_row_norm": round(norm, 6), "new_row_norm": new_norm, **stats}


def _grow(model: Any, module: Any, size_attr: str, target: int, rows: list[int], init: Any, inputs: InitInputs,
          kind: str) -> dict[str, float]:
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
            vals, bvals, st = _init_rows(model, w.data, None if b is None else b.data, rows, init, inputs, kind)
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


def _check_single_process(model: Any, init: str) -> None:
    import torch.distributed as dist

    zero = hasattr(model.get_input_embeddings().weight, "ds_id")
    if zero or (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        raise KolmError(f"init {init!r} uses the whole model and runs in a single process, not under ZeRO-3 or "
                        "several ranks: run `kolm model resize --init {init}` before training and train from its "
                        "output (the model-free inits subword-mean, mean and random run under ZeRO-3)")


def resize_model(model: Any, new_tokenizer: Any, base_tokenizer: Any, init: str = "subword-mean",
                 pad_to_multiple_of: int | None = None, seed: int = 0, extension: list[dict] | None = None,
                 plan: ExtensionPlan | None = None, corpus: list[str] | None = None, budget_s: float = BUDGET_S,
                 max_steps: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resize ``model``'s input embeddings and LM head (tied or not) to ``new_tokenizer``; return statistics.

    Tokenizers are ``tokenizers.Tokenizer`` objects (or HF fast tokenizers). Works on plain models and on models
    partitioned by ZeRO-3 (call it on every rank, before ``deepspeed.initialize``); every rank gets the stats.
    ``corpus``, ``budget_s``, ``max_steps`` and ``options`` feed model-using inits (``distill``), which refuse
    ZeRO-3 and several ranks. Raises KolmError when the new tokenizer does not extend the base one or the model is
    smaller than the base.
    """
    import torch

    method = get_init(init)
    if method.uses_model:
        _check_single_process(model, init)
    new_tok = getattr(new_tokenizer, "backend_tokenizer", new_tokenizer)
    base_tok = getattr(base_tokenizer, "backend_tokenizer", base_tokenizer)
    ext = plan or plan_extension(new_tok, base_tok, extension)
    inputs = InitInputs(ext, seed, new_tok, base_tok, list(corpus or []), budget_s, max_steps, dict(options or {}))
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
    stats = _plan_stats(init, ext, old_n, target, rows, tied)
    with torch.no_grad():
        stats["input_embeddings"] = _grow(model, inp, "num_embeddings", target, rows, method, inputs, "embedding")
        if tied:
            out.weight = inp.weight
        elif out is not None:
            inputs.seed = seed + 1
            stats["lm_head"] = _grow(model, out, "out_features", target, rows, method, inputs, "linear")
            inputs.seed = seed
        if out is not None and hasattr(out, "out_features"):
            out.out_features = target
    model.config.get_text_config().vocab_size = target
    if hasattr(model, "vocab_size"):
        model.vocab_size = target
    if method.uses_model:
        stats[init] = method.refine(model, inputs)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # only rank 0 saw the weights: share its numbers
        box = [stats]
        dist.broadcast_object_list(box, src=0)
        stats = box[0]
    return stats


def _plan_stats(init: str, ext: ExtensionPlan, old_n: int, target: int, rows: list[int], tied: bool) -> dict:
    return {
        "init": init, "old_vocab_size": old_n, "new_vocab_size": target, "base_tokenizer_size": ext.n_base,
        "tokenizer_size": ext.n_tokens, "new_tokens": len(ext.tokens), "new_rows": len(rows),
        "reused_rows": sum(1 for i in ext.tokens if i < old_n), "padding_rows": max(0, target - ext.n_tokens),
        "tied": tied, "pieces_from": ext.pieces_from if init in ("subword-mean", "distill") else None,
        "no_pieces": sum(1 for i in ext.tokens if not ext.pieces.get(i)),
    }


# ----------------------------------------------------------------------------------------------- command
def _check_weights(model_dir: Path) -> None:
    if any(model_dir.glob("*.safetensors")):
        check_safetensors(model_dir)  # a cut file is named here, before the output folder is made
        return
    pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt*"))
    if pickles:
        raise KolmError(f"{model_dir}: only pickle weights ({', '.join(pickles[:3])}); kolm loads safetensors only "
                        "(convert them with safetensors.torch.save_file first)")
    raise KolmError(f"{model_dir}: no *.safetensors weights found")


def _init_and_corpus(cfg: ResizeConfig, recorded: list[str], ext_file: Path) -> tuple[str, list[str]]:
    """The init and the text it reads (checked, :func:`_init_corpus`). Without ``--init``: ``distill`` (the best
    measured init, bench/init.py) when its corpus is at hand, else ``subword-mean``, said."""
    init = cfg.init or "distill"
    if not get_init(init).uses_model:
        return init, []
    if cfg.init or cfg.corpus:  # asked for, or its corpus given: their errors are the user's to see
        return init, _init_corpus(cfg, recorded, ext_file, init)
    try:
        return init, _init_corpus(cfg, recorded, ext_file, init)
    except KolmError as e:
        print(f"init subword-mean: no corpus for the default distill init ({e})")
        return "subword-mean", []


def _init_corpus(cfg: ResizeConfig, recorded: list[str], ext_file: Path, init: str) -> list[str]:
    """The text a model-using init reads: ``--corpus``, else the files extension.json records (relative paths are
    tried from the working directory, then from the tokenizer folder and its parent). Checked before any loading."""
    from kolm.io.corpus import check_corpus_files

    if cfg.corpus:
        return [str(p) for p in check_corpus_files(cfg.corpus)]
    if not recorded:
        raise KolmError(f"init {init}: needs text: pass --corpus (the tokenizer has no extension.json recording "
                        "the corpus it was learned on)")
    found = []
    for c in recorded:
        tries = [Path(c)] if Path(c).is_absolute() else [Path(c), ext_file.parent / c, ext_file.parent.parent / c]
        hit = next((t for t in tries if t.is_file()), None)
        if hit is None:
            raise KolmError(f"{ext_file}: corpus file {c!r} not found (tried {', '.join(map(str, tries))}); "
                            "pass --corpus")
        found.append(str(hit))
    return [str(p) for p in check_corpus_files(found)]


def run(cfg: ResizeConfig) -> dict[str, Any]:
    """``kolm model resize``: load, check, resize, save (atomically) and write resize.json."""
    model_dir = resolve_pretrained(cfg.model, allow_patterns=MODEL_PATTERNS)
    _check_weights(model_dir)
    base_src = cfg.base_tokenizer or model_dir
    base, base_file = load_tokenizer_json(base_src, "base_tokenizer" if cfg.base_tokenizer else "model")
    new, new_file = load_tokenizer_json(cfg.tokenizer, "tokenizer")
    ext_file = new_file.parent / EXTENSION_FILE
    extension = TokenizerExtension.read(ext_file)
    plan = plan_extension(new, base, extension.added if extension else None, new_name=str(new_file),
                          base_name=str(base_file))
    recorded = [str(c) for c in extension.corpus] if extension else []
    init, corpus = _init_and_corpus(cfg, recorded, ext_file)

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
        stats = resize_model(model, new, base, init, cfg.pad_to_multiple_of, cfg.seed, plan=plan,
                             corpus=corpus, budget_s=cfg.init_budget_s, max_steps=cfg.init_steps)
        model.save_pretrained(tmp)  # transformers 5 always writes safetensors
        copy_tokenizer_files(new_file.parent, tmp, fallback=base_file.parent)
        stats["config"] = to_dict(cfg)
        ResizeRecord.from_stats(stats).write(tmp)
    print(f"resized {cfg.model}: vocab {stats['old_vocab_size']} -> {stats['new_vocab_size']} "
          f"({stats['new_rows']} new rows, init {init}) -> {cfg.output}")
    return stats
