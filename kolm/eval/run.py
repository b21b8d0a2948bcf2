"""``kolm eval``: bits per byte per language for causal LMs, so base and extended models compare fairly.

    kolm eval --model base --model run/final --text ko=ko_dev.txt --text en=en_dev.txt --output eval/
    kolm eval --model run/final --data data-ko-en --max-docs 200      # the data folder's validation splits
    kolm eval --model base --model run/final --tasks kolm_ko_mc          # + a benchmark task (lm-eval-harness)
    kolm eval --model base --model run/final --suite forgetting --output eval/   # KoBEST ... MMLU (online)

Every model is scored with its own tokenizer (loaded from the model folder) on the same documents; bits per byte
(:mod:`kolm.eval.bpb`) does not depend on the tokenizer, so a model with an extended vocabulary is compared with
its base directly. Text files: ``.txt`` (one document per line), ``.jsonl`` / ``.parquet`` (``--text-field``).
Documents are NFC-normalised by default, as ``kolm data build`` does (``--no-nfc`` scores the bytes as read).

Output: a table on stdout (model x language: bpb, change vs the first model, docs, bytes, tokens, bytes per
token) and, with ``--output DIR``, ``DIR/results.json`` and ``DIR/results.md``. ``results.json`` of the base model
saved as ``base_eval.json`` in a run folder is the reference line of ``kolm dashboard``.

Benchmark tasks (``--tasks``, ``--suite forgetting``) run through lm-evaluation-harness when it is installed
(``pip install 'lm-eval[hf]'``): kolm's local Korean task ``kolm_ko_mc``, lm-eval's own tasks, or task configs from
``--include-path``; see :mod:`kolm.eval.harness`. With tasks, ``--text``/``--data`` are optional.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolm.artifacts import DataFolder
from kolm.config import ConfigError, field, to_dict
from kolm.console import Progress
from kolm.errors import KolmError
from kolm.io.files import atomic_write_text
from kolm.tables import text_table

LANG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# Longer documents are skipped (and counted): scoring costs time and memory in proportion to a document's length,
# and one runaway line (a whole dump on one line: 50 MB took over 150 s and 4.8 GB before it was stopped) would
# dominate the run and the number. 200,000 characters is about a hundred pages, far above any real paragraph.
MAX_DOC_CHARS = 200_000
RESULTS_FORMAT = "kolm.eval/1"


@dataclass
class EvalConfig:
    """Options of ``kolm eval``."""

    model: list[str] = field(default_factory=list, path=True, hub=True,
                             help="model folder(s) (safetensors + tokenizer) or hub id(s); the first is the reference")
    text: list[str] = field(default_factory=list, path=True, sep="=",
                            help="LANG=FILE (repeatable; several files per language are concatenated)")
    data: str | None = field(None, path=True,
                             help="a `kolm data build` folder: score its validation splits (same docs as training)")
    output: str | None = field(None, path=True, help="folder for results.json and results.md")
    max_docs: int | None = field(None, help="at most N documents per language (the first N)")
    max_doc_chars: int = field(MAX_DOC_CHARS, help="skip documents longer than this many characters (counted in "
                                                   "the table and results.json; 0: no limit)")
    text_field: str = field("text", help="field of .jsonl rows / column of .parquet files holding the text")
    nfc: bool = field(True, help="NFC-normalise documents (as `kolm data build` does)")
    max_length: int | None = field(None, help="window in tokens (default: the data's seq_len with --data, else the "
                                              "model's limit, at most 4096)")
    stride: int | None = field(None, help="window stride for documents longer than the window (default: half)")
    batch_size: int = field(8, help="windows per forward pass")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        "auto", help="auto: bfloat16 on a GPU that has it, else float32")
    device: str = field("auto", help="auto | cpu | cuda | cuda:N")
    tasks: list[str] = field(default_factory=list, help="lm-evaluation-harness tasks or groups, e.g. kolm_ko_mc "
                                                          "(kolm's Korean task, offline), kobest, mmlu")
    suite: str | None = field(None, help="a task suite: `forgetting` (KoBEST, KMMLU, HAE-RAE, HellaSwag, ARC, MMLU; "
                                         "downloads their data)")
    include_path: str | None = field(None, path=True, help="folder of local lm-eval task configs")
    num_fewshot: int | None = field(None, help="lm-eval few-shot examples (default: the task's or the suite's)")
    task_limit: int | None = field(None, help="lm-eval: at most N examples per task (default: the suite's; all)")
    log_samples: bool = field(False, help="with --output: write every task example's choice log-likelihoods and "
                                          "prediction to DIR/samples/MODEL/TASK.jsonl")
    trust_remote_code: bool = field(False, help="allow custom model code from the hub (off by default)")
    overwrite: bool = field(False, help="replace a results.json/results.md in --output that kolm eval did not write")

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model: at least one model folder (--model DIR)")
        if not self.text and not self.data and not self.tasks and not self.suite:
            raise ConfigError("text: give --text LANG=FILE (e.g. --text ko=ko.txt --text en=en.txt), --data DIR, "
                              "--tasks TASK or --suite forgetting")
        self._check_tasks()
        self.text_files()  # validates the LANG=FILE syntax
        if self.max_docs is not None and self.max_docs <= 0:
            raise ConfigError(f"max_docs: must be > 0, got {self.max_docs}")
        if self.batch_size <= 0:
            raise ConfigError("batch_size: must be > 0")
        if self.max_doc_chars < 0:
            raise ConfigError(f"max_doc_chars: must be >= 0 (0: no limit), got {self.max_doc_chars}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError("max_length: must be >= 2")

    def _check_tasks(self) -> None:
        from kolm.eval.harness import SUITES

        if self.suite is not None and self.suite not in SUITES:
            raise ConfigError(f"suite: {self.suite!r} is not a suite; choose one of {', '.join(SUITES)}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ConfigError(f"num_fewshot: must be >= 0, got {self.num_fewshot}")
        if self.task_limit is not None and self.task_limit <= 0:
            raise ConfigError(f"task_limit: must be > 0, got {self.task_limit}")
        if self.log_samples and not self.output:
            raise ConfigError("log_samples: needs --output DIR (the samples go to DIR/samples/)")

    def text_files(self) -> dict[str, list[str]]:
        """``{lang: [files]}`` from the ``LANG=FILE`` entries, in order."""
        out: dict[str, list[str]] = {}
        for i, item in enumerate(self.text):
            lang, sep, path = item.partition("=")
            lang, path = lang.strip(), path.strip()
            if not sep or not path or not LANG_RE.match(lang):
                raise ConfigError(f"text[{i}]: {item!r} is not LANG=FILE (e.g. ko=ko_dev.txt)")
            out.setdefault(lang, []).append(path)
        return out


def load_texts(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """``{lang: {"texts": [...], "source": [...], "skipped_docs": n, "skipped_bytes": n}}`` from the text files
    and/or the data folder; documents over ``max_doc_chars`` are left out and counted."""
    from kolm.io.corpus import Documents, read_documents

    out: dict[str, dict[str, Any]] = {}
    for lang, files in cfg.text_files().items():
        try:
            docs = read_documents(files, cfg.text_field, cfg.max_docs, nfc=False, max_chars=cfg.max_doc_chars)
        except KolmError as e:
            raise KolmError(f"{lang}: {e}") from None
        out[lang] = {"texts": docs.texts, "source": files, "skipped_docs": docs.skipped_docs,
                     "skipped_bytes": docs.skipped_bytes}
    if cfg.data:
        splits, seq_len = _validation_splits(Path(cfg.data), cfg.max_docs)
        for lang, (texts, where) in splits.items():
            if lang in out:
                raise KolmError(f"language {lang!r} is given by --text and by --data {cfg.data}; choose one")
            docs = Documents()
            for doc in texts:
                docs.add(doc, cfg.max_doc_chars)
            out[lang] = {"texts": docs.texts, "source": [where], "seq_len": seq_len,
                         "skipped_docs": docs.skipped_docs, "skipped_bytes": docs.skipped_bytes}
    for lang, d in out.items():
        if cfg.nfc:
            d["texts"] = [unicodedata.normalize("NFC", t) for t in d["texts"]]
        if not d["texts"]:
            skipped = f" ({d['skipped_docs']} over max_doc_chars {cfg.max_doc_chars} skipped)" \
                if d["skipped_docs"] else ""
            raise KolmError(f"{lang}: no documents in {', '.join(d['source'])}{skipped}")
    return out


def _validation_splits(data: Path, max_docs: int | None) -> tuple[dict[str, tuple[list[str], str]], int | None]:
    """The validation documents per language and the data's seq_len (the window of the online evaluation)."""
    folder = DataFolder(data)
    out = {}
    for lang in folder.manifest.languages:
        split = folder.validation(lang, max_docs)
        out[lang] = (split.texts, str(split.path))
    return out, folder.manifest.seq_len


def resolve_model_folder(spec: str) -> Path:
    """A local model folder (or a cached/downloadable hub id) with config.json, safetensors and a tokenizer."""
    from kolm.io.models import check_model_folder, resolve_pretrained

    folder = resolve_pretrained(spec, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    check_model_folder(folder)
    return folder


def short_names(paths: list[str]) -> list[str]:
    """Readable, unique labels: the folder name, with parents added where names collide (run1/final, ...)."""
    parts = [Path(p.rstrip("/")).parts or (p,) for p in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(pp[-d:]) for pp, d in zip(parts, depth)]
        grow = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def _device_dtype(cfg: EvalConfig) -> tuple[Any, Any]:
    import torch

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def load_model(folder: Path, cfg: EvalConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = _device_dtype(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise KolmError(f"model: cannot load the tokenizer of {folder}: {e}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise KolmError(f"model: cannot load {folder}: {e}") from None
    n_emb = model.get_input_embeddings().weight.shape[0]
    if len(tok) > n_emb:
        raise KolmError(f"model: {folder}: the tokenizer has {len(tok)} tokens but the model only {n_emb} embedding "
                        f"rows; this is not the model's tokenizer (run `kolm model resize`?)")
    return model.to(device).eval(), tok


def text_bytes(texts: list[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


def score_model(model: Any, tok: Any, texts: dict[str, dict[str, Any]], cfg: EvalConfig, bar: Any = None,
                name: str = "") -> dict[str, Any]:
    """``{lang: bpb result}`` of one model; ``bar`` (:class:`kolm.console.Progress` over bytes) moves with it."""
    from kolm.eval.bpb import bits_per_byte, prefix_token

    try:
        prefix = prefix_token(tok)
    except ValueError as e:
        raise KolmError(f"model: {e}") from None
    max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    out = {}
    for lang, d in texts.items():
        # --data: the data's seq_len, the window `kolm train cpt` evaluates with, so the numbers match its metrics
        max_length = cfg.max_length or min(d.get("seq_len") or max_pos, max_pos, 4096)
        start, size = (bar.n, text_bytes(d["texts"])) if bar is not None else (0, 0)

        def tick(done: int, total: int, start: float = start, size: int = size) -> None:
            bar.set(start + size * done / max(total, 1))

        out[lang] = bits_per_byte(model, tok, d["texts"], prefix_id=prefix, max_length=max_length,
                                  stride=cfg.stride, batch_size=cfg.batch_size,
                                  on_batch=tick if bar is not None else None).as_dict()
        out[lang]["max_length"] = max_length
        if bar is not None:
            bar.set(start + size, last=f"{name} {lang} {out[lang]['bpb']:.4f} bpb".lstrip())
    return out


def result_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows model x language with the change vs the first model (``model``: as given, ``name``: its label)."""
    ref = result["models"][0]["bpb"]
    out = []
    for m in result["models"]:
        for lang, r in m["bpb"].items():
            base = ref.get(lang, {}).get("bpb")
            out.append({"model": m["model"], "name": m["name"], "lang": lang, "bpb": r["bpb"], "docs": r["docs"],
                        "bytes": r["bytes"], "tokens": r["tokens"], "bytes_per_token": r["bytes"] / max(r["tokens"], 1),
                        "delta_bpb": None if m is result["models"][0] or base is None else r["bpb"] - base,
                        "delta_pct": None if m is result["models"][0] or not base else 100 * (r["bpb"] - base) / base})
    return out


def format_table(rows_: list[dict[str, Any]]) -> str:
    head = ["model", "lang", "bpb", "vs first", "docs", "bytes", "tokens", "bytes/token"]
    body = [[r.get("name", r["model"]), r["lang"], f"{r['bpb']:.4f}",
             "-" if r["delta_bpb"] is None else f"{r['delta_bpb']:+.4f} ({r['delta_pct']:+.1f}%)",
             str(r["docs"]), str(r["bytes"]), str(r["tokens"]), f"{r['bytes_per_token']:.2f}"] for r in rows_]
    return text_table(head, body, left=2)


def format_markdown(rows_: list[dict[str, Any]]) -> str:
    out = ["| model | lang | bpb | vs first | docs | bytes | tokens | bytes/token |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows_:
        delta = "" if r["delta_bpb"] is None else f"{r['delta_bpb']:+.4f} ({r['delta_pct']:+.1f}%)"
        out.append(f"| {r.get('name', r['model'])} | {r['lang']} | {r['bpb']:.4f} | {delta} | {r['docs']} | "
                   f"{r['bytes']} | {r['tokens']} | {r['bytes_per_token']:.2f} |")
    return "\n".join(out) + "\n"


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Score every model on every language; print the table; write results.json/.md with ``--output``."""
    import kolm

    t0 = time.perf_counter()
    if cfg.output and not cfg.overwrite:
        check_output(Path(cfg.output))
    folders = _check_models(cfg.model)
    tasks = None
    if cfg.tasks or cfg.suite:  # task names and data are checked before any model is loaded
        from kolm.eval import harness

        tasks = harness.prepare(cfg.tasks, cfg.suite, cfg.num_fewshot, cfg.task_limit, cfg.include_path)
    texts = load_texts(cfg)
    names = short_names(cfg.model)
    models = []
    bar = Progress("kolm eval", len(folders) * sum(text_bytes(d["texts"]) for d in texts.values()), unit="B",
                   scale=True, enabled=bool(texts))
    for spec, folder, name in zip(cfg.model, folders, names):
        t = time.perf_counter()
        model, tok = load_model(folder, cfg)
        entry: dict[str, Any] = {"name": name, "model": spec, "path": str(folder), "tokenizer_size": len(tok),
                                 "bpb": score_model(model, tok, texts, cfg, bar, name)}
        if tasks is not None:
            entry["abspath"] = str(folder.resolve())  # ties the task scores to a run folder (kolm dashboard --eval)
            samples = Path(cfg.output) / "samples" / harness.safe_name(name) if cfg.log_samples else None
            entry |= harness.evaluate(model, tok, tasks, batch_size=cfg.batch_size, samples_dir=samples)
        entry["seconds"] = round(time.perf_counter() - t, 3)
        models.append(entry)
        del model
    bar.close(False)  # the table and the line below are the summary
    result: dict[str, Any] = {
        "format": RESULTS_FORMAT, "kolm_version": kolm.__version__,
        "texts": {lang: {"source": d["source"], "docs": len(d["texts"]),
                         "bytes": text_bytes(d["texts"]),
                         "skipped_docs": d["skipped_docs"], "skipped_bytes": d["skipped_bytes"]}
                  for lang, d in texts.items()},
        "max_doc_chars": cfg.max_doc_chars,
        "models": models, "config": to_dict(cfg),
    }
    result["rows"] = result_rows(result)
    if tasks is not None:
        result["suite"] = cfg.suite
        result["task_rows"] = harness.task_rows(models)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    skipped = skipped_line(result)
    if result["rows"]:
        print(format_table(result["rows"]) + (f"\n{skipped}" if skipped else ""))
    if tasks is not None:
        print(harness.format_task_table(result["task_rows"]))
    if cfg.output:
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        md = format_markdown(result["rows"]) + (f"\n{skipped}\n" if skipped else "") if result["rows"] else ""
        if tasks is not None:
            md += ("\n" if md else "") + harness.format_task_markdown(result["task_rows"])
        atomic_write_text(out / "results.md", md)
        what = " + ".join(([f"{len(texts)} language(s)"] if texts else [])
                          + ([f"{len(tasks.names)} task(s)"] if tasks is not None else []))
        print(f"kolm eval: {len(models)} model(s) x {what} -> {out / 'results.json'}")
    return result


def _check_models(specs: list[str]) -> list[Path]:
    """Every model folder checked before any (slow) loading: weights complete, and the tokenizer beside them the one
    their extension.json/resize.json were written for."""
    from kolm.artifacts.tokenizer_match import check_model_records

    folders = [resolve_model_folder(m) for m in specs]
    for spec, folder in zip(specs, folders):
        for note in check_model_records(folder, f"model {spec}"):
            print(f"note: {note}")
    return folders


def skipped_line(result: dict[str, Any]) -> str:
    """One line naming the documents left out for their length, per language ("" when none were)."""
    per = {lang: t for lang, t in result["texts"].items() if t.get("skipped_docs")}
    if not per:
        return ""
    return (f"skipped {sum(t['skipped_docs'] for t in per.values())} document(s) longer than "
            f"{result['max_doc_chars']:,} characters (max_doc_chars): "
            + ", ".join(f"{lang} {t['skipped_docs']} ({t['skipped_bytes']:,} bytes)" for lang, t in per.items()))


def check_output(out: Path) -> None:
    """Refuse an ``--output`` that would overwrite files kolm eval did not write (before any work)."""
    if out.exists() and not out.is_dir():
        raise KolmError(f"output: {out} is a file, not a folder")
    res, md = out / "results.json", out / "results.md"
    if res.exists():
        try:
            ours = json.loads(res.read_text(encoding="utf-8")).get("format") == RESULTS_FORMAT
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            ours = False
        if not ours:
            raise KolmError(f"output: {res} exists and was not written by kolm eval; choose another folder or pass "
                            "--overwrite to replace it")
    elif md.exists():
        raise KolmError(f"output: {md} exists and was not written by kolm eval; choose another folder or pass "
                        "--overwrite to replace it")
