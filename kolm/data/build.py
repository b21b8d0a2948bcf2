"""``kolm data build RECIPE.yaml --output DIR``: raw Korean/English sources to packed, mixed training shards.

Steps: check everything that can be checked up front (recipe, tokenizer, files, fields, a language with nothing
to read; :mod:`.sources`), then
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
uninterrupted build and does not depend on ``num_proc``. A build that fails with an error (e.g. a language whose
sources lost every document, named with the drop reasons) records the error in ``DIR/.work/build.json``: the
same recipe again resumes, and a changed recipe or changed input files replace the failed work without
``--overwrite``. An interrupted build is only replaced with ``--overwrite`` (the message names what changed),
and a build that is still running (it holds ``DIR/.work/lock``) is never touched. A full disk or an unwritable
output is one line (and the same command resumes); a compressed input found truncated part-way keeps the records
before the damage and becomes a warning in the manifest.

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

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kolm import __version__
from kolm.artifacts import MANIFEST_FILE, DataFolder
from kolm.config import dump_yaml, to_dict
from kolm.data.config import DataBuildConfig
from kolm.data.filters import load_filters
from kolm.errors import DiskFullError, KolmError
from kolm.io.files import atomic_write_text, disk_full, file_sha256, no_room, no_room_message, size_text
from kolm.io.models import resolve_pretrained
from kolm.io.tokenizers import TOKENIZER_FILES, tokenizer_fingerprint
from kolm.paths import is_hub_id

try:
    import fcntl
except ImportError:  # not on Windows: builds into one folder are then not guarded against running twice
    fcntl = None  # type: ignore[assignment]

__all__ = ["DataBuildConfig", "run", "load_tokenizer"]

MEMORY_BOUND = ("<= (4*num_proc+1) x batch_bytes of text in flight + max_record_bytes; dedup runs < 2^20 keys in "
                "memory per key set, larger runs memory-mapped (8 B x (bands+2) per kept doc on disk); "
                "~16 B per kept doc + ~36 B per sampled doc for mixing; one ~8 MB record batch while packing")
_NOT_OUTPUT = ("output", "resume", "overwrite", "keep_work", "progress", "num_proc", "batch_bytes", "checkpoint_mb")


def load_tokenizer(spec: str, base: Path) -> dict[str, Any]:
    """Find and load the tokenizer; return its file, sha256, vocab size and EOS/BOS ids. Errors name the path."""
    from tokenizers import Tokenizer

    p = Path(os.path.expanduser(spec))
    cand = Path(os.path.normpath(p if p.is_absolute() else base / p))
    if cand.is_dir():
        folder = cand
    elif cand.exists():
        raise KolmError(f"tokenizer: {cand} is a file; give the tokenizer folder (with tokenizer.json)")
    elif not is_hub_id(spec, base):
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
    return {"path": str(folder), "file": str(tj), "sha256": file_sha256(tj), "fingerprint": tokenizer_fingerprint(tj),
            "vocab_size": tok.get_vocab_size(with_added_tokens=True), "eos_token": eos, "eos_id": eos_id,
            "bos_token": bos, "bos_id": bos_id}


def _build_inputs(cfg: DataBuildConfig, tok: dict[str, Any], sources: list[Any], filters: list[str]) -> dict[str, Any]:
    """What the output depends on: the recipe (less the run-time switches), tokenizer, input files, filters."""
    recipe = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_OUTPUT}
    files = [[f, os.path.getsize(f) if os.path.isfile(f) else 0,
              int(os.path.getmtime(f)) if os.path.exists(f) else 0] for s in sources for f in s.files]
    return {"recipe": recipe, "tokenizer": tok["sha256"], "files": files, "filters": filters, "v": 1}


def _build_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix[:-1]}[{i}].").items()}
    return {prefix[:-1]: value}


def _changed(before: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """What differs between two builds' inputs, for messages: 'cleaning.min_chars, input files'."""
    if not before:
        return "a different recipe or inputs"
    names = {"tokenizer": "the tokenizer", "files": "input files", "filters": "data filters", "v": "kolm's format"}
    a, b = _flat(before.get("recipe", {})), _flat(now["recipe"])
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    diff += [label for k, label in names.items() if before.get(k) != now.get(k)]
    return ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")


class _Marker:
    """``<output>/.work/build.json``: the inputs of the unfinished build, its process id, and its failure if any.

    A build also holds an exclusive ``flock`` on ``.work/lock`` until it ends, so a second build into the same
    folder is refused instead of corrupting the first one's spills.
    """

    def __init__(self, work: Path):
        self.path = work / "build.json"
        self.lock_path = work / "lock"
        self.fd = -1

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.path, json.dumps(data))

    def busy(self) -> bool:
        """Whether another process holds the lock (a build is running)."""
        if fcntl is None or not self.lock_path.is_file():
            return False
        fd = os.open(self.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def lock(self) -> None:
        if fcntl is not None:
            self.fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def fail(self, message: str) -> None:
        """Record that this build failed: a changed recipe may then replace it without --overwrite. Best effort: on a
        full disk this write fails too, and the build then stays an interrupted one, which the same command resumes
        all the same (raising here hid the build's own error behind a second traceback)."""
        with contextlib.suppress(OSError):
            self.write({**(self.read() or {}), "failed": message})


def describe_unfinished(out: Path) -> str:
    """What an output folder without a manifest holds: a failed build (with its error), an interrupted one, or ""."""
    if not (out / ".work").is_dir():
        return ""
    prev = _Marker(out / ".work").read() or {}
    if prev.get("failed"):
        return f"a build that failed: {prev['failed']}"
    return "an unfinished build: run `kolm data build` again with the same recipe to resume"


def _prepare_output(out: Path, cfg: DataBuildConfig, inputs: dict[str, Any]) -> tuple[Path, _Marker, bool]:
    """Decide what happens to an existing output folder; return the work folder, its locked marker, and whether
    this run resumes.

    The same inputs resume an unfinished build (interrupted or failed). Other inputs replace a failed build (its
    work cannot serve them) but are refused over an interrupted one, which the original recipe can still resume,
    unless ``--overwrite``; a finished build or foreign files also need ``--overwrite``.
    """
    work = out / ".work"
    marker = _Marker(work)
    key = _build_key(inputs)
    if out.exists() and not out.is_dir():
        raise KolmError(f"output {out} exists and is a file")
    if out.is_dir() and any(out.iterdir()):
        prev = marker.read()
        if marker.busy():
            raise KolmError(f"another kolm data build (pid {(prev or {}).get('pid', '?')}) is writing to {out}; "
                            f"wait for it or choose another --output")
        finished = DataFolder(out).exists()
        if finished and not cfg.overwrite:
            raise KolmError(f"{out} already holds a finished build ({MANIFEST_FILE}); pass --overwrite to rebuild")
        if prev and prev.get("key") == key and cfg.resume and not finished:
            print(f"kolm data build: resuming the unfinished build in {out}", file=sys.stderr)
            marker.lock()
            marker.write({**prev, "failed": None, "pid": os.getpid()})
            return work, marker, True
        changed = _changed(prev.get("inputs"), inputs) if prev else ""
        if prev and prev.get("failed") and not finished:
            print(f"kolm data build: {out} holds a build that failed; the inputs changed ({changed}), so it is "
                  f"replaced", file=sys.stderr)
        elif not cfg.overwrite:
            what = (f"an interrupted build of other inputs (changed: {changed}); run that recipe again to resume it, "
                    f"or" if prev else "files that are not a kolm build;")
            raise KolmError(f"output {out} is not empty: it holds {what} pass --overwrite to replace it")
        shutil.rmtree(out)
    work.mkdir(parents=True, exist_ok=True)
    marker.lock()
    marker.write({"key": key, "inputs": inputs, "pid": os.getpid(), "failed": None})
    return work, marker, False


def run(cfg: DataBuildConfig) -> dict[str, Any]:
    """Build the data set described by ``cfg``; return the manifest (also written to ``<output>/manifest.json``).

    Everything that can be checked before reading the data is (recipe, tokenizer, files, fields, filters, a
    language with nothing to read); a build that fails after that records it in ``.work`` (see
    :func:`_prepare_output`).
    """
    from kolm.data.scan import worker_spec
    from kolm.data.sources import check_something_to_read, resolve_sources

    t0 = time.perf_counter()
    if not cfg.output:
        raise KolmError("--output DIR is required")
    base = Path.cwd()  # recipe paths were made relative to the recipe's folder when it was read
    out = Path(cfg.output).expanduser().resolve()
    tok = load_tokenizer(cfg.tokenizer, base)
    if cfg.add_bos and tok["bos_id"] is None:
        raise KolmError(f"add_bos: tokenizer {tok['path']} has no BOS token")
    sources = resolve_sources(cfg.sources, base)
    warnings = check_something_to_read(sources, list(cfg.mix))
    for w in warnings:
        print(f"kolm data build: warning: {w}", file=sys.stderr)
    spec = worker_spec(cfg, sources, tok["file"], tok["eos_id"], tok["bos_id"] if cfg.add_bos else None)
    inputs = _build_inputs(cfg, tok, sources, spec.filters)
    try:
        work, marker, resumed = _prepare_output(out, cfg, inputs)
    except OSError as e:
        raise _os_error(e, out) from None
    try:
        manifest = _build(cfg, out, work, sources, spec, tok, _build_key(inputs), resumed, warnings, t0)
    except OSError as e:
        if e.errno not in _USER_FIXABLE:
            raise
        err = _os_error(e, out)
        marker.fail(str(err))
        raise err from None
    except KolmError as e:
        marker.fail(str(e))
        raise
    finally:
        marker.release()
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    _summary(manifest, out)
    return manifest


_USER_FIXABLE = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR)
RESUME_HINT = "free some space and run the same command again to resume"


def _os_error(e: OSError, out: Path) -> KolmError:
    """One line for a file-system error of the build: where, what, and that the same command resumes."""
    if disk_full(e):
        return DiskFullError(no_room_message(out, "the build's records", None, RESUME_HINT))
    return KolmError(f"output {out}: {e.strerror or e} ({e.filename or out})")


def _build(cfg: DataBuildConfig, out: Path, work: Path, sources: list[Any], spec: Any, tok: dict[str, Any],
           key: str, resumed: bool, warnings: list[str], t0: float) -> dict[str, Any]:
    """Phase 1, the checks on what it kept, phase 2 and the manifest (written last, atomically)."""
    from kolm.data.scan import Scanner, check_kept, filter_hints

    scanner = Scanner(cfg, sources, spec, work, progress=cfg.progress)
    with no_room(out, "the rest of the build (phase 1's token spills and checkpoints in .work, then the train "
                      "shards)", scanner.space_needed, RESUME_HINT):
        stats = scanner.run()
    t_scan = time.perf_counter() - t0
    for s, st in zip(sources, stats):
        if st.read != st.kept + sum(st.dropped.values()):
            raise KolmError(f"internal error: source {s.name}: read {st.read} != kept {st.kept} + dropped "
                            f"{sum(st.dropped.values())}")
    filter_classes = load_filters(spec.filters)
    lost = [f"source {s.name}: {e}" for s, st in zip(sources, stats) for e in st.read_errors]
    lost += check_kept(sources, stats, list(cfg.mix), filter_hints(cfg, filter_classes))
    for line in lost:
        print(f"kolm data build: warning: {line}", file=sys.stderr)
    manifest = _pack_and_report(cfg, out, work, sources, stats, tok, key, cfg.dedup.lsh_params(), resumed)
    manifest["filters"] = [c.name for c in filter_classes]  # in order: a drop is the first one failed
    manifest["warnings"] = warnings + lost
    manifest["timings_s"] = {"scan": round(t_scan, 3), "total": round(time.perf_counter() - t0, 3)}
    with no_room(out, "the manifest", lambda: 2 * len(json.dumps(manifest, indent=2)), RESUME_HINT):
        (out / "recipe.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        DataFolder(out).write_manifest(manifest)
    return manifest


def _pack_and_report(cfg: DataBuildConfig, out: Path, work: Path, sources: list[Any], stats: list[Any],
                     tok: dict[str, Any], key: str, lsh: tuple[int, int], resumed: bool) -> dict[str, Any]:
    from kolm.console import Progress
    from kolm.data.mix import check_shares, make_plan
    from kolm.data.pack import TokenStore, fingerprint, write_lang_tokens, write_train, write_validation

    langs = list(cfg.mix)
    val_rows: dict[str, list[dict[str, Any]]] = {}
    for lang in langs:
        p = work / f"val.{lang}.jsonl"
        val_rows[lang] = [json.loads(x) for x in p.read_bytes().splitlines()] if p.is_file() else []
        _check_split(cfg, lang, len(val_rows[lang]), [st for s, st in zip(sources, stats) if s.lang == lang])
    stores = [TokenStore(work / f"src{s.index}.tokens.bin", work / f"src{s.index}.lengths.bin") for s in sources]
    plan = make_plan([st.lengths for st in stores], [s.lang for s in sources],
                     [s.cfg.max_epochs for s in sources], cfg.mix, cfg.seq_len, cfg.seed, cfg.max_train_tokens)
    check_shares(plan, cfg.mix)

    def bar(it: Any, total: int) -> Any:
        shown = Progress("kolm data build: pack", total, unit="shard", enabled=cfg.progress)
        try:
            for x in it:
                yield x
                shown.update(1)
        finally:
            shown.close(False)  # the build's summary line follows

    n_shards, shard_bytes = _shards(plan, cfg.shard_size)
    val_bytes = sum((work / f"val.{lang}.jsonl").stat().st_size for lang in langs if val_rows[lang])

    def need() -> int:  # the shards not written yet, the per-sequence language counts, the validation splits
        left = n_shards - sum(1 for _ in (out / "train").glob("data-*-of-*.arrow"))
        return left * shard_bytes + 8 * len(langs) * (plan.n_sequences + 1) + val_bytes

    with no_room(out, f"the rest of the build (train shards of about {size_text(shard_bytes)} each, then the "
                      f"validation splits)", need, RESUME_HINT):
        try:
            train = write_train(out / "train", plan, stores, cfg.shard_size, fingerprint(key, "train"), progress=bar)
            lang_tokens = write_lang_tokens(out / "train_lang_tokens.npy", plan, [s.lang for s in sources])
        finally:
            for st in stores:
                st.close()
        val_info = {lang: write_validation(out / "validation" / lang, rows, fingerprint(key, "val", lang))
                    for lang, rows in val_rows.items()}
    shares = plan.shares()
    src_out = {s.name: _source_report(s, st, int(store.lengths.sum()), ep, n_tok)
               for s, st, store, ep, n_tok in zip(sources, stats, stores, plan.epochs, plan.tokens_sampled)}
    return {
        "format": "kolm.data/1", "kolm_version": __version__, "build_key": key, "resumed": resumed,
        "tokenizer": {"path": tok["path"], "sha256": tok["sha256"], "fingerprint": tok["fingerprint"],
                      "vocab_size": tok["vocab_size"],
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


def _shards(plan: Any, shard_size: int) -> tuple[int, int]:
    """How many train shards the plan fills and the bytes of a full one (int32 tokens)."""
    return max(1, -(-plan.n_sequences // shard_size)), min(shard_size, plan.n_sequences) * plan.seq_len * 4


def _source_report(s: Any, st: Any, pool_tokens: int, epochs: float, sampled: int) -> dict[str, Any]:
    """The manifest entry of one source: every document accounted for, and what the mix took."""
    examples = {r: [f"{s.files[fi]}:{line}" for fi, line in locs] for r, locs in st.examples.items()}
    return {
        "lang": s.lang, "files": s.files, "read": st.read, "kept": st.kept,
        "dropped": dict(sorted(st.dropped.items())), "dropped_bytes": dict(sorted(st.dropped_bytes.items())),
        "bytes_read": st.bytes_read, "bytes_kept": st.bytes_kept, "tokens_kept": st.tokens_kept,
        "train_docs": st.train_docs, "validation_docs": st.val_docs, "train_pool_tokens": pool_tokens,
        "max_epochs": s.cfg.max_epochs, "epochs": round(epochs, 6), "train_tokens_sampled": sampled,
        "pii_masked": dict(sorted(st.pii_masked.items())), "drop_examples": examples,
    }


def _check_split(cfg: DataBuildConfig, lang: str, n_val: int, stats: list[Any]) -> None:
    """The language's kept documents must give both splits something: say how many it kept and what to change."""
    kept = sum(st.kept for st in stats)
    v = cfg.validation
    if n_val < v.min_docs:
        raise KolmError(f"validation: language {lang} kept {kept:,} documents and validation.fraction={v.fraction} "
                        f"held out {n_val} of them, fewer than validation.min_docs={v.min_docs}; raise "
                        f"validation.fraction or lower validation.min_docs")
    if not any(st.train_docs for st in stats):
        raise KolmError(f"validation: every one of the {kept:,} documents language {lang} kept went to the "
                        f"validation split (validation.fraction={v.fraction}), none is left to train on; lower "
                        f"validation.fraction or validation.max_docs")


def _summary(m: dict[str, Any], out: Path) -> None:
    langs = ", ".join(f"{k} {v['achieved_share']:.4f} (target {v['target_share']})" for k, v in m["languages"].items())
    read = sum(s["read"] for s in m["sources"].values())
    kept = sum(s["kept"] for s in m["sources"].values())
    print(f"kolm data build: {out}: {m['train']['sequences']} sequences x {m['seq_len']} tokens in "
          f"{m['train']['shards']} shard(s); documents read {read}, kept {kept}; token shares {langs}")
