"""``kolm vocab extend``: learn Korean BPE merges on top of a base tokenizer's own merges.

    kolm vocab extend --base ../shared/tokenizers/llama2 --corpus ko.txt --num-new-tokens 16000 --output tok-ko

How it works (and why the guarantees hold):

1. The corpus is cut into the units the base tokenizer's BPE sees (``▁word`` for SentencePiece-style BPE, the
   pre-tokenizer's pieces for byte-level BPE; :mod:`kolm.vocab.families`); only units with Hangul are kept.
   They are counted streamed and in parallel (:mod:`kolm.vocab.count`).
2. Each unit is segmented by the *base* BPE's merges, so learning continues from them (:mod:`kolm.vocab.learn`).
   SentencePiece-family: Hangul characters that fall back to bytes become candidate new single-character tokens.
3. The base segments are renamed to private-use characters and handed to the Rust ``tokenizers`` BpeTrainer,
   which learns the next merges. Segments are cut between two pieces that both lack Hangul (and, with
   ``--morpheme-aware``, at kiwipiepy morpheme boundaries), so learned merges attach to Hangul.
4. Learned merges are kept, in order, only if their result *forces Hangul* (see :mod:`kolm.vocab.chars`) and
   their parts exist and are made by merges. They are appended after all base merges, new tokens get ids after
   every existing id. Hence: original ids never move, and text without Hangul can never trigger a new merge
   (same ids as the base).
5. Every new token is checked to be produced by the BPE model from its own string, as it is and by its merges
   alone; any that is not is pruned (with everything built from it) and counted. Round trips, non-Hangul
   identity and the exact expansion of extended ids into base ids (:mod:`kolm.vocab.expansion`) are checked on a
   seeded sample of the corpus.

``--mode syllables`` adds whole Hangul syllables first (:mod:`kolm.vocab.syllables`), then merges as above with
what is left of the budget; ``bpe`` (the default) learns merges only, with new single characters capped.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolm.artifacts import AddedToken, TokenizerExtension
from kolm.config import ConfigError, field, parse_amount
from kolm.errors import KolmError
from kolm.vocab.chars import has_hangul
from kolm.vocab.count import CorpusCounts
from kolm.vocab.expansion import ExpansionCheck
from kolm.vocab.families import Family, OutputFiles, detect
from kolm.vocab.learn import Extension, extend_tokenizer
from kolm.vocab.recommend import parse_tokens, recommend


@dataclass
class ExtendConfig:
    """Options of ``kolm vocab extend``."""

    base: str = field(None, help="base tokenizer: a folder with tokenizer.json, or a hub id (online)", path=True,
                      hub=True)
    corpus: list[str] = field(default_factory=list, path=True,
                              help="Korean corpus files (.txt one document per line, .jsonl, .parquet)")
    num_new_tokens: int = field(0, help="how many new tokens to add (new single Hangul characters count too)")
    mode: Literal["bpe", "syllables"] = field(
        "bpe", help="bpe: learn merges on top of the base's (new single characters capped by max_char_share); "
                    "syllables: first make whole Hangul syllables single tokens (new characters, or the merges that "
                    "join a syllable's base pieces), then merges with what is left: more compression at small "
                    "budgets (+256 to +2,000) on byte-level bases")
    output: str = field(None, help="output tokenizer folder", path=True)
    morpheme_aware: bool = field(False, help="cut training units at kiwipiepy morpheme boundaries")
    min_frequency: int = field(2, help="a merge must be seen at least this often in the corpus")
    max_char_share: float = field(
        0.25, help="SentencePiece family, mode bpe: at most this share of the new tokens is spent on new single "
                   "characters (mode syllables spends up to all of them, by frequency)")
    text_field: str = field("text", help="field of .jsonl rows / column of .parquet files holding the text")
    allow_fewer: bool = field(False, help="accept fewer new tokens than asked when the corpus supports no more")
    check_lines: int = field(2000, help="documents in the seeded check sample (at most 400k characters) that the "
                                        "built-in invariant checks and the measurements in extension.json run on")
    num_proc: int = field(0, help="worker processes that read and count the corpus (and run kiwipiepy); "
                                  "0: one per available core")
    max_bytes: str = field("", help="learn from a seeded sample of about this many bytes of the corpus (e.g. 500M, "
                                    "2G; drawn in 1 MiB blocks of whole lines); empty: all of it")
    sample: float = field(1.0, help="learn from a seeded sample of this share of the corpus bytes (0 < x <= 1)")
    seed: int = field(0, help="seed of the corpus sample and of the check sample")
    max_document_chars: int = field(
        20000, help="documents longer than this many characters are cut into windows at spaces (counted in "
                    "extension.json); bounds memory and time on huge lines")
    accept_tokenizer_model_mismatch: bool = field(
        False, help="SentencePiece family: write tokenizer.model even where the sentencepiece library's ids differ "
                    "from tokenizer.json's (the lines are named in extension.json); default: such a difference is an "
                    "error")
    budget_tokens: str = field("", help="the tokens your CPT run will train on (e.g. 50M, 2B): also print how many new "
                                        "tokens kolm recommends for that budget (kolm.vocab.recommend)")
    overwrite: bool = field(False, help="replace an existing output folder")
    trust_remote_code: bool = field(False, help="allow custom tokenizer code from the hub (off by default)")

    def __post_init__(self) -> None:
        if not self.base:
            raise ConfigError("base: required (a tokenizer folder or hub id)")
        if not self.output:
            raise ConfigError("output: required")
        if not self.corpus:
            raise ConfigError("corpus: at least one file is required")
        if self.num_new_tokens <= 0:
            raise ConfigError(f"num_new_tokens: must be > 0, got {self.num_new_tokens}")
        if self.min_frequency < 1:
            raise ConfigError("min_frequency: must be >= 1")
        if not 0.0 <= self.max_char_share <= 1.0:
            raise ConfigError("max_char_share: must be in [0, 1]")
        if self.check_lines < 1:
            raise ConfigError(f"check_lines: must be >= 1, got {self.check_lines}")
        if self.num_proc < 0:
            raise ConfigError(f"num_proc: must be >= 0 (0: all cores), got {self.num_proc}")
        if not 0.0 < self.sample <= 1.0:
            raise ConfigError(f"sample: must be in (0, 1], got {self.sample}")
        if self.max_document_chars < 100:
            raise ConfigError(f"max_document_chars: must be >= 100, got {self.max_document_chars}")
        parse_size(self.max_bytes, "max_bytes")  # fail early on a bad size
        parse_tokens(self.budget_tokens)


def parse_size(text: str | int, where: str) -> int:
    """``"500M"``, ``"2G"``, ``"1.5GB"``, ``"1e9"``, ``"123"`` -> bytes (K/M/G/T are powers of 1024); empty -> 0."""
    return parse_amount(text, where, base=1024, units={"K": 1, "M": 2, "G": 3, "T": 4}, suffix="i?[bB]",
                        what="a size such as 500M, 2G or 1000000")


# ----------------------------------------------------------------------------------------------- loading


def load_base(base: str) -> tuple[Path, dict[str, Any]]:
    """Locate the base tokenizer folder (local or hub) and read its tokenizer.json."""
    from kolm.io.models import resolve_pretrained
    from kolm.io.tokenizers import TOKENIZER_FILES

    folder = resolve_pretrained(base, allow_patterns=TOKENIZER_FILES)
    tj = folder / "tokenizer.json"
    if not tj.is_file():
        raise KolmError(f"{folder}: no tokenizer.json (kolm needs a fast tokenizer; convert it with transformers' "
                        "AutoTokenizer(...).save_pretrained first)")
    try:
        data = json.loads(tj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KolmError(f"{tj}: not valid JSON: {e}") from None
    return folder, data


# ----------------------------------------------------------------------------------------------- checks


def check_invariants(base_tok: Any, new_tok: Any, unreachable_tokens: dict[str, list[str]], lines: list[str],
                     chunk: int = 256, expansion: ExpansionCheck | None = None, korean_ids: Counter | None = None
                     ) -> tuple[dict[str, Any], dict[str, dict[str, float | None]]]:
    """Measure the guarantees on ``lines``: ids kept, non-Hangul identity, round trip (``unreachable_tokens``: the
    result of the family's reachability checks on ``new_tok``, passed through) and, given ``expansion``, that
    expanding the extended ids gives the base ids. Also returns the compression of both tokenizers on the same
    encodings (``compression_base`` / ``compression_extended``) and, given ``korean_ids``, counts there the extended
    ids of the Hangul-bearing lines (what :func:`kolm.vocab.recommend.recommend` reads). Lines are encoded ``chunk``
    at a time, so memory does not grow with the sample."""
    bv, nv = base_tok.get_vocab(with_added_tokens=True), new_tok.get_vocab(with_added_tokens=True)
    moved = [t for t, i in bv.items() if nv.get(t) != i]
    non_hangul = changed = bad_rt = 0
    sizes = {(tok, k): [0, 0, 0] for tok in ("base", "extended") for k in (True, False)}  # [chars, bytes, tokens]
    for i in range(0, len(lines), chunk):
        part = lines[i:i + chunk]
        korean = [has_hangul(x) for x in part]
        ids_base = [e.ids for e in base_tok.encode_batch(part, add_special_tokens=False)]
        ids_new = [e.ids for e in new_tok.encode_batch(part, add_special_tokens=False)]
        non_hangul += korean.count(False)
        changed += sum(a != b for a, b, k in zip(ids_base, ids_new, korean, strict=True) if not k)
        decoded = new_tok.decode_batch(ids_new, skip_special_tokens=False)
        bad_rt += sum(d != x for x, d in zip(part, decoded, strict=True))
        if expansion is not None:
            for a, b in zip(ids_new, ids_base, strict=True):
                expansion.add(a, b)
        if korean_ids is not None:
            for ids, k in zip(ids_new, korean, strict=True):
                if k:
                    korean_ids.update(ids)
        for name, ids in (("base", ids_base), ("extended", ids_new)):
            for x, t, k in zip(part, ids, korean, strict=True):
                acc = sizes[(name, k)]
                acc[0] += len(x)
                acc[1] += len(x.encode("utf-8"))
                acc[2] += len(t)
    return {
        "base_tokens_moved": len(moved),
        "non_hangul_lines_checked": non_hangul,
        "non_hangul_lines_changed": changed,
        "roundtrip_lines_checked": len(lines),
        "roundtrip_failures": bad_rt,
        "unreachable_tokens": len(unreachable_tokens.get("model", [])),
        **{f"unreachable_tokens_{k}": len(v) for k, v in unreachable_tokens.items() if k != "model"},
        **(expansion.result() if expansion is not None else {}),
    }, {f"compression_{name}": compression(sizes, name) for name in ("base", "extended")}


def compression(sizes: dict[tuple[str, bool], list[int]], name: str) -> dict[str, float | None]:
    """Characters and UTF-8 bytes per token of tokenizer ``name`` on Hangul-bearing lines and on lines without
    Hangul (``sizes``: [chars, bytes, tokens] per tokenizer and kind of line)."""
    out = {}
    for label, korean in (("korean", True), ("other", False)):
        n_chars, n_bytes, n_tok = sizes[(name, korean)]
        out[f"{label}_chars_per_token"] = round(n_chars / n_tok, 4) if n_tok else None
        out[f"{label}_bytes_per_token"] = round(n_bytes / n_tok, 4) if n_tok else None
    return out


def expansion_check(family: Family, base_tok: Any, new_tok: Any, added: list[AddedToken]) -> ExpansionCheck:
    """An :class:`ExpansionCheck` for the extension ``added`` of ``base_tok``: pieces are aligned by the bytes the
    family says each token stands for."""
    table = {a.id: a.base_ids for a in added}
    sizes: dict[int, int] = {}

    def token_bytes(i: int) -> int:
        got = sizes.get(i)
        if got is None:
            got = sizes[i] = len(family.token_bytes(new_tok.id_to_token(i) or ""))
        return got

    return ExpansionCheck(table, token_bytes, base_tok.get_vocab_size(with_added_tokens=True))


# ----------------------------------------------------------------------------------------------- command


def run(cfg: ExtendConfig) -> dict[str, Any]:
    """``kolm vocab extend``: count, learn, check, write the output folder (atomically) and print one line."""
    from tokenizers import Tokenizer

    from kolm.io.corpus import check_corpus_files

    t0 = time.perf_counter()
    files = check_corpus_files(cfg.corpus)
    folder, base_json = load_base(cfg.base)
    family = detect(base_json, where=str(folder / "tokenizer.json"))
    out_path = Path(cfg.output)
    if out_path.exists() and not cfg.overwrite and (not out_path.is_dir() or any(out_path.iterdir())):
        raise KolmError(f"output exists and is not empty: {out_path} (pass --overwrite to replace it)")
    counts = count(cfg, files, family)
    base_tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    t_read = time.perf_counter()
    new_json, new_tok, ext = extend_tokenizer(base_json, counts.units, cfg.num_new_tokens,
                                              min_frequency=cfg.min_frequency, max_char_share=cfg.max_char_share,
                                              allow_fewer=cfg.allow_fewer, base=base_tok, family=family,
                                              mode=cfg.mode)
    t_learn = time.perf_counter()
    added = added_tokens(family, base_tok, new_json, ext)
    korean_ids: Counter = Counter()
    checks, comp = check_invariants(base_tok, new_tok, ext.unreachable_left, counts.sample, korean_ids=korean_ids,
                                    expansion=expansion_check(family, base_tok, new_tok, added))
    unit_check = family.check_units(counts.sample)
    if unit_check is not None:
        checks["unit_cut_documents_checked"], checks["unit_cut_documents_differing"] = unit_check
    t_check = time.perf_counter()
    if (checks["base_tokens_moved"] or checks["non_hangul_lines_changed"] or checks["expansion_lines_differing"]
            or any(v for k, v in checks.items() if k.startswith("unreachable_tokens"))):
        raise KolmError(f"internal invariant violated, nothing written (please report): {checks}")
    record = _record(cfg, folder, family, base_tok, new_tok, added, ext, counts, checks, comp)
    advice = None
    if cfg.budget_tokens:
        advice = recommend(korean_ids, [t.id for t in added], parse_tokens(cfg.budget_tokens))
        record.details["recommendation"] = advice.as_dict()
    record.details["seconds"] = {"read": round(t_read - t0, 3), "learn": round(t_learn - t_read, 3),
                         "check": round(t_check - t_learn, 3)}
    _write(out_path, cfg.overwrite, folder, family, new_json, new_tok, counts.sample, record, t0,
           cfg.accept_tokenizer_model_mismatch)
    print(summary_line(record, family, ext, counts, out_path) + (f"; {advice.text()}" if advice else ""))
    return record.to_json()


def summary_line(record: TokenizerExtension, family: Family, ext: Extension, counts: CorpusCounts,
                 out_path: Path) -> str:
    """The one line ``kolm vocab extend`` prints: what was added, Korean compression of base and extended on the
    check sample, the invariant counts, the family's files."""
    checks = record.checks
    c0, c1 = record.korean_chars_per_token()
    b0, b1 = record.korean_bytes_per_token()
    long = counts.stats.windowed_documents
    syllables = f", {ext.syllable_tokens} for whole syllables" if ext.syllable_tokens else ""
    return (f"kolm vocab extend: {family.name} base, +{record.num_added} tokens ({len(ext.new_chars)} chars, "
            f"{len(ext.new_tokens)} merges{syllables}; mode {record.mode}) from {counts.stats.documents:,} documents"
            + (f" ({counts.bytes_read / counts.corpus_bytes:.1%} sample)" if counts.sampled else "")
            + (f", {long:,} long ones windowed" if long else "")
            + f", Korean chars/token {c0} -> {c1}, bytes/token {b0} -> {b1}, non-Hangul "
            f"lines changed: {checks['non_hangul_lines_changed']}, unreachable: {checks['unreachable_tokens']} "
            f"(by merges alone: {checks['unreachable_tokens_merges_only']}), expansion = base ids on "
            f"{checks['expansion_lines_checked'] - checks['expansion_lines_differing']}/"
            f"{checks['expansion_lines_checked']} lines"
            + (f", {files}" if (files := family.files_summary(record.details)) else "") + f" -> {out_path}")


def added_tokens(family: Family, base_tok: Any, new_json: dict[str, Any], ext: Extension) -> list[AddedToken]:
    """The added vocabulary entries, each with the base ids the base model cuts its string into."""
    vocab = new_json["model"]["vocab"]
    return [AddedToken(vocab[t], t, family.token_text(t), kind, [x.id for x in base_tok.model.tokenize(t)])
            for kind, toks in (("char", ext.new_chars), ("merge", ext.new_tokens)) for t in toks]


def count(cfg: ExtendConfig, files: list[Path], family: Family) -> CorpusCounts:
    """Count the corpus's training units as ``cfg`` says (streamed, parallel; :mod:`kolm.vocab.count`)."""
    from kolm.vocab.count import count_corpus

    counts = count_corpus(files, family, text_field=cfg.text_field, morpheme_aware=cfg.morpheme_aware,
                          num_proc=cfg.num_proc, max_bytes=parse_size(cfg.max_bytes, "max_bytes"),
                          fraction=cfg.sample, seed=cfg.seed, check_docs=cfg.check_lines,
                          max_chars=cfg.max_document_chars)
    if not counts.stats.documents:
        raise KolmError(f"the corpus is empty: {', '.join(map(str, files))}")
    return counts


def _record(cfg: ExtendConfig, folder: Path, family: Family, base_tok: Any, new_tok: Any, added: list[AddedToken],
            ext: Extension, counts: CorpusCounts, checks: dict[str, Any], comp: dict[str, Any]) -> TokenizerExtension:
    """What extension.json records (the caller adds ``seconds`` to its details)."""
    from kolm.io.files import file_sha256

    details = {
        "num_new_merges": len(ext.merges),
        "num_syllable_tokens": ext.syllable_tokens,
        "merges_to_existing_tokens": ext.merges_to_existing,
        "merges_to_base_tokens_dropped": ext.merges_to_base_dropped,
        "pruned_unreachable": ext.pruned_unreachable,
        "corpus_bytes": counts.corpus_bytes,
        "corpus_bytes_read": counts.bytes_read,
        "sample": {"max_bytes": parse_size(cfg.max_bytes, "max_bytes") or None, "fraction": cfg.sample,
                   "seed": cfg.seed, "sampled": counts.sampled, "parts_read": counts.parts},
        "long_documents": {"max_chars": cfg.max_document_chars, "windowed": counts.stats.windowed_documents,
                           "windows": counts.stats.windows},
        "num_proc": counts.num_proc,
        "distinct_units": len(counts.units),
        "check_sample": {"documents": len(counts.sample), "seed": cfg.seed,
                         "how": "uniform over the documents read (bottom-k of a seeded key per document)"},
    }
    return TokenizerExtension(
        added=added, family=family.name, base=cfg.base, base_vocab_size=base_tok.get_vocab_size(with_added_tokens=True),
        vocab_size=new_tok.get_vocab_size(with_added_tokens=True),
        base_tokenizer_sha256=file_sha256(folder / "tokenizer.json"), num_new_tokens_requested=cfg.num_new_tokens,
        mode=cfg.mode, morpheme_aware=cfg.morpheme_aware, min_frequency=cfg.min_frequency,
        corpus=[str(Path(f)) for f in cfg.corpus], corpus_documents=counts.stats.documents,
        compression_base=comp["compression_base"], compression_extended=comp["compression_extended"],
        checks=checks, details=details, kolm_version=__import__("kolm").__version__)


def _write(out_path: Path, overwrite: bool, folder: Path, family: Family, new_json: dict[str, Any], new_tok: Any,
           sample: list[str], record: TokenizerExtension, t0: float, accept_mismatch: bool = False) -> None:
    """The output folder, complete or not at all: tokenizer.json, the base's side files, tokenizer_config.json,
    the family's own files, extension.json (after transformers loaded the folder and agreed)."""
    from kolm.io.files import atomic_output_dir

    with atomic_output_dir(out_path, overwrite=overwrite) as tmp:
        new_tok.save(str(tmp / "tokenizer.json"))
        for name in ("special_tokens_map.json", "chat_template.jinja", "generation_config.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        record.base_tokenizer_class = write_tokenizer_config(folder, tmp)
        family.write_files(tmp, OutputFiles(folder, new_json, new_tok, sample, accept_mismatch), record.details)
        _check_transformers_load(tmp, new_tok, sample)
        record.details["seconds"]["total"] = round(time.perf_counter() - t0, 3)
        record.write(tmp)


def write_tokenizer_config(base_folder: Path, out: Path) -> str | None:
    """Copy the base tokenizer_config.json, pointing transformers at tokenizer.json verbatim; returns the base's
    tokenizer class (recorded in extension.json).

    transformers 5's model-specific classes (e.g. LlamaTokenizer) rebuild their pre-tokenization from code and
    then disagree with tokenizer.json (Llama-2, leading spaces: `▁` + `▁▁` vs `▁▁▁`). PreTrainedTokenizerFast loads
    tokenizer.json as is, so training sees exactly the tokenizer kolm measured.
    """
    src = base_folder / "tokenizer_config.json"
    cfg = json.loads(src.read_text(encoding="utf-8")) if src.is_file() else {}
    base_class = cfg.get("tokenizer_class")
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    return base_class


def _check_transformers_load(folder: Path, new_tok: Any, sample: list[str]) -> None:
    """The folder must load in transformers and give the same ids as `tokenizers` (invariant 5).

    It is loaded with the class AutoTokenizer picks from the tokenizer_config.json written above,
    PreTrainedTokenizerFast: importing AutoTokenizer imports torch (0.25 GB, seconds), which a tokenizer step does
    not need. The tests load the output with AutoTokenizer itself.
    """
    from transformers import PreTrainedTokenizerFast

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    if config.get("tokenizer_class") != "PreTrainedTokenizerFast":
        raise KolmError(f"{folder}: tokenizer_config.json names {config.get('tokenizer_class')!r}; nothing written")
    hf = PreTrainedTokenizerFast.from_pretrained(str(folder))
    lines, budget = [], 100_000  # characters: enough to catch a disagreement, cheap for any document length
    for x in sample[:200]:
        lines.append(x[:budget])
        budget -= len(lines[-1])
        if budget <= 0:
            break
    got = hf(lines, add_special_tokens=False)["input_ids"]
    want = [e.ids for e in new_tok.encode_batch(lines, add_special_tokens=False)]
    if got != want or len(hf) != new_tok.get_vocab_size(with_added_tokens=True):
        raise KolmError(f"{folder}: transformers' PreTrainedTokenizerFast disagrees with tokenizer.json "
                        f"({type(hf).__name__}); nothing written")
