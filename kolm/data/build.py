"""``kolm data build RECIPE.yaml --output DIR``: raw Korean/English sources to packed, mixed training shards.

Steps: check everything that can be checked up front (recipe, tokenizer, files, fields; :mod:`.sources`), then
phase 1 (:mod:`.scan`: stream, clean, mask PII, filter, dedup, tokenize, spill, with checkpoints), the mixing
plan (:mod:`.mix`: exact token share per language), and phase 2 (:mod:`.pack`: fixed-length train shards and
whole-document validation splits). Output::

    DIR/train/                  datasets folder, column input_ids: int32[seq_len], no padding
    DIR/validation/<lang>/      datasets folder, whole documents: text, input_ids, n_bytes, n_tokens, source
    DIR/manifest.json           per source: read, kept, dropped by reason, bytes, tokens, epochs; shares per
                                language; tokenizer sha256, vocab size, EOS id; the resolved recipe
    DIR/recipe.yaml             the resolved recipe

An interrupted build (Ctrl-C, crash, kill) leaves ``DIR/.work``; running the same command again resumes from
the last phase-1 checkpoint and skips train shards already written. The output is identical to an
uninterrupted build and does not depend on ``num_proc``.

Memory bound. What grows with the corpus is only per-document index data; text is held a batch at a time:
  reading/cleaning: at most 4 * num_proc + 1 batches of ~``batch_bytes`` (default 1 MiB) in flight (2 * num_proc
  being cleaned, 2 * num_proc being tokenized: raw records, cleaned texts, ~4 bytes per token), plus one record of
  at most ``max_record_bytes`` (a longer line is skipped while streaming, never held);
  dedup: 3 key sets (raw, exact, near) of sorted uint64 runs; runs under 2^20 keys stay in memory (< ~16 MB per set),
  larger ones are memory-mapped from ``DIR/.work`` (8 bytes x (bands + 2) per kept document, on disk);
  mixing and packing: ~16 bytes per kept train document (lengths, offsets) and ~36 bytes per sampled document
  (shuffled order, cumulative ends), one record batch of ~8 MB (shards are written batch by batch) and the
  validation rows (<= validation.max_docs per language). Tokens are read per document from the spill files.
So 10x more input means the same text buffers and ~50 bytes more per additional kept document.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kolm import __version__
from kolm.config import dump_yaml, to_dict
from kolm.data.config import DataBuildConfig
from kolm.data.filters import load_filters
from kolm.errors import KolmError
from kolm.io import TOKENIZER_FILES, file_sha256, resolve_pretrained

__all__ = ["DataBuildConfig", "run", "load_tokenizer"]

MEMORY_BOUND = ("<= (4*num_proc+1) x batch_bytes of text in flight + max_record_bytes; dedup runs < 2^20 keys in "
                "memory per key set, larger runs memory-mapped (8 B x (bands+2) per kept doc on disk); "
                "~16 B per kept doc + ~36 B per sampled doc for mixing; one ~8 MB record batch while packing")
_NOT_OUTPUT = ("output", "resume", "overwrite", "keep_work", "progress", "num_proc", "batch_bytes", "checkpoint_mb",
               "recipe_dir")


def load_tokenizer(spec: str, base: Path) -> dict[str, Any]:
    """Find and load the tokenizer; return its file, sha256, vocab size and EOS/BOS ids. Errors name the path."""
    from tokenizers import Tokenizer

    p = Path(os.path.expanduser(spec))
    cand = Path(os.path.normpath(p if p.is_absolute() else base / p))
    if cand.is_dir():
        folder = cand
    elif cand.exists():
        raise KolmError(f"tokenizer: {cand} is a file; give the tokenizer folder (with tokenizer.json)")
    elif spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise KolmError(f"tokenizer folder not found: {cand}")
    else:
        folder = resolve_pretrained(spec, allow_patterns=TOKENIZER_FILES)
    tj = folder / "tokenizer.json"
    if not tj.is_file():
        raise KolmError(f"tokenizer: {folder} has no tokenizer.json (a fast tokenizer is required)")
    try:
        tok = Tokenizer.from_file(str(tj))
    except Exception as e:  # noqa: BLE001 - the Rust library raises a generic Exception
        raise KolmError(f"tokenizer: cannot load {tj}: {e}") from None
    conf: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        try:
            conf = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except ValueError as e:
            raise KolmError(f"tokenizer: {folder / 'tokenizer_config.json'} is not valid JSON: {e}") from None

    def token(name: str, fallbacks: tuple[str, ...]) -> tuple[str | None, int | None]:
        val = conf.get(name)
        if isinstance(val, dict):
            val = val.get("content")
        for t in ([val] if val else []) + list(fallbacks):
            tid = tok.token_to_id(t)
            if tid is not None:
                return t, tid
        return None, None

    eos, eos_id = token("eos_token", ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"))
    if eos_id is None:
        raise KolmError(f"tokenizer: {folder} defines no EOS token found in its vocabulary (set eos_token in "
                        f"tokenizer_config.json); documents are joined with EOS")
    bos, bos_id = token("bos_token", ("<s>", "<|begin_of_text|>", "<bos>"))
    return {"path": str(folder), "file": str(tj), "sha256": file_sha256(tj),
            "vocab_size": tok.get_vocab_size(with_added_tokens=True), "eos_token": eos, "eos_id": eos_id,
            "bos_token": bos, "bos_id": bos_id}


def _build_key(cfg: DataBuildConfig, tok: dict[str, Any], sources: list[Any], filters: list[str]) -> str:
    """What the output depends on: the recipe (less the run-time switches), tokenizer, input files, filters."""
    recipe = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_OUTPUT}
    files = [[f, os.path.getsize(f) if os.path.isfile(f) else 0,
              int(os.path.getmtime(f)) if os.path.exists(f) else 0] for s in sources for f in s.files]
    blob = json.dumps({"recipe": recipe, "tokenizer": tok["sha256"], "files": files, "filters": filters, "v": 1},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _prepare_output(out: Path, cfg: DataBuildConfig, key: str) -> tuple[Path, bool]:
    work = out / ".work"
    marker = work / "build.json"
    if out.exists() and not out.is_dir():
        raise KolmError(f"output {out} exists and is a file")
    if out.is_dir() and any(out.iterdir()):
        if (out / "manifest.json").is_file() and not cfg.overwrite:
            raise KolmError(f"{out} already holds a finished build (manifest.json); pass --overwrite to rebuild")
        same = marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("key") == key
        if same and cfg.resume and not (out / "manifest.json").is_file():
            print(f"kolm data build: resuming the unfinished build in {out}", file=sys.stderr)
            return work, True
        if not cfg.overwrite:
            what = "an unfinished build of a different recipe or inputs" if marker.is_file() else "other files"
            raise KolmError(f"output {out} is not empty (it holds {what}); pass --overwrite to replace it")
        shutil.rmtree(out)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"key": key}), encoding="utf-8")
    return work, False


def run(cfg: DataBuildConfig) -> dict[str, Any]:
    """Build the data set described by ``cfg``; return the manifest (also written to ``<output>/manifest.json``)."""
    from kolm.data.scan import Scanner, worker_spec
    from kolm.data.sources import resolve_sources

    t0 = time.perf_counter()
    if not cfg.output:
        raise KolmError("--output DIR is required")
    base = Path(cfg.recipe_dir) if cfg.recipe_dir else Path.cwd()
    out = Path(cfg.output).expanduser().resolve()
    tok = load_tokenizer(cfg.tokenizer, base)
    if cfg.add_bos and tok["bos_id"] is None:
        raise KolmError(f"add_bos: tokenizer {tok['path']} has no BOS token")
    sources = resolve_sources(cfg.sources, base)
    bands, rows = cfg.dedup.lsh_params()
    spec = worker_spec(cfg, sources, tok["file"], tok["eos_id"], tok["bos_id"] if cfg.add_bos else None)
    key = _build_key(cfg, tok, sources, spec.filters)
    work, resumed = _prepare_output(out, cfg, key)
    stats = Scanner(cfg, sources, spec, work, progress=cfg.progress).run()
    t_scan = time.perf_counter() - t0
    for s, st in zip(sources, stats):
        if st.read != st.kept + sum(st.dropped.values()):
            raise KolmError(f"internal error: source {s.name}: read {st.read} != kept {st.kept} + dropped "
                            f"{sum(st.dropped.values())}")
    manifest = _pack_and_report(cfg, out, work, sources, stats, tok, key, (bands, rows), resumed)
    manifest["filters"] = [c.name for c in load_filters(spec.filters)]  # in order: a drop is the first one failed
    manifest["timings_s"] = {"scan": round(t_scan, 3), "total": round(time.perf_counter() - t0, 3)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "recipe.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    _summary(manifest, out)
    return manifest


def _pack_and_report(cfg: DataBuildConfig, out: Path, work: Path, sources: list[Any], stats: list[Any],
                     tok: dict[str, Any], key: str, lsh: tuple[int, int], resumed: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from kolm.data.mix import check_shares, make_plan
    from kolm.data.pack import TokenStore, fingerprint, write_lang_tokens, write_train, write_validation

    langs = list(cfg.mix)
    val_rows: dict[str, list[dict[str, Any]]] = {}
    for lang in langs:
        p = work / f"val.{lang}.jsonl"
        val_rows[lang] = [json.loads(x) for x in p.read_bytes().splitlines()] if p.is_file() else []
        if len(val_rows[lang]) < cfg.validation.min_docs:
            raise KolmError(f"validation: language {lang} got {len(val_rows[lang])} documents, fewer than "
                            f"validation.min_docs={cfg.validation.min_docs}; raise validation.fraction")
    stores = [TokenStore(work / f"src{s.index}.tokens.bin", work / f"src{s.index}.lengths.bin") for s in sources]
    plan = make_plan([st.lengths for st in stores], [s.lang for s in sources],
                     [s.cfg.max_epochs for s in sources], cfg.mix, cfg.seq_len, cfg.seed, cfg.max_train_tokens)
    check_shares(plan, cfg.mix)

    def bar(it: Any, total: int) -> Any:
        return tqdm(it, total=total, unit="shard", desc="pack", disable=not cfg.progress)

    try:
        train = write_train(out / "train", plan, stores, cfg.shard_size, fingerprint(key, "train"), progress=bar)
        lang_tokens = write_lang_tokens(out / "train_lang_tokens.npy", plan, [s.lang for s in sources])
    finally:
        for st in stores:
            st.close()
    val_info = {lang: write_validation(out / "validation" / lang, rows, fingerprint(key, "val", lang))
                for lang, rows in val_rows.items()}
    shares = plan.shares()
    src_out = {}
    for s, st, store, ep, n_tok in zip(sources, stats, stores, plan.epochs, plan.tokens_sampled):
        examples = {r: [f"{s.files[fi]}:{line}" for fi, line in locs] for r, locs in st.examples.items()}
        src_out[s.name] = {
            "lang": s.lang, "files": s.files, "read": st.read, "kept": st.kept,
            "dropped": dict(sorted(st.dropped.items())), "dropped_bytes": dict(sorted(st.dropped_bytes.items())),
            "bytes_read": st.bytes_read, "bytes_kept": st.bytes_kept, "tokens_kept": st.tokens_kept,
            "train_docs": st.train_docs, "validation_docs": st.val_docs,
            "train_pool_tokens": int(store.lengths.sum()), "max_epochs": s.cfg.max_epochs,
            "epochs": round(ep, 6), "train_tokens_sampled": n_tok,
            "pii_masked": dict(sorted(st.pii_masked.items())), "drop_examples": examples,
        }
    return {
        "format": "kolm.data/1", "kolm_version": __version__, "build_key": key, "resumed": resumed,
        "tokenizer": {"path": tok["path"], "sha256": tok["sha256"], "vocab_size": tok["vocab_size"],
                      "eos_token": tok["eos_token"], "eos_id": tok["eos_id"], "bos_token": tok["bos_token"],
                      "bos_id": tok["bos_id"], "add_bos": cfg.add_bos},
        "seq_len": cfg.seq_len, "seed": cfg.seed,
        "train": {**{k: v for k, v in train.items() if k != "shards_written_now"}, "path": "train",
                  "lang_tokens": lang_tokens,
                  "columns": {"input_ids": f"int32[{cfg.seq_len}]"}},
        "languages": {lang: {"target_share": cfg.mix[lang], "achieved_share": round(shares[lang], 6),
                             "train_tokens": plan.lang_tokens_packed[lang],
                             "budget_tokens": round(plan.budgets[lang], 1),
                             "validation": {"path": f"validation/{lang}", **val_info[lang]}} for lang in langs},
        "sources": src_out,
        "dedup": {"exact": cfg.dedup.exact, "near": cfg.dedup.near, "threshold": cfg.dedup.threshold,
                  "num_perm": cfg.dedup.num_perm, "bands": lsh[0], "rows": lsh[1], "ngram": cfg.dedup.ngram,
                  "scope": "global (within and across sources, train and validation)"},
        "validation_note": "input_ids of validation documents carry no BOS/EOS; n_bytes is the UTF-8 size of text",
        "memory_bound": MEMORY_BOUND,
        "recipe": to_dict(cfg),
    }


def _summary(m: dict[str, Any], out: Path) -> None:
    langs = ", ".join(f"{k} {v['achieved_share']:.4f} (target {v['target_share']})" for k, v in m["languages"].items())
    read = sum(s["read"] for s in m["sources"].values())
    kept = sum(s["kept"] for s in m["sources"].values())
    print(f"kolm data build: {out}: {m['train']['sequences']} sequences x {m['seq_len']} tokens in "
          f"{m['train']['shards']} shard(s); documents read {read}, kept {kept}; token shares {langs}")
