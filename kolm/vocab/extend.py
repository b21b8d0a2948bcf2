"""``kolm vocab extend``: learn Korean BPE merges on top of a base tokenizer's own merges.

    kolm vocab extend --base ../shared/tokenizers/llama2 --corpus ko.txt --num-new-tokens 16000 --output tok-ko

How it works (and why the guarantees hold):

1. The corpus is cut into the units the base tokenizer's BPE sees (``▁word`` for SentencePiece-style BPE, the
   pre-tokenizer's pieces for byte-level BPE); only units with Hangul are kept.
2. Each unit is segmented by the *base* BPE model itself, so learning continues from the base merges.
   SentencePiece-family: Hangul characters that fall back to bytes become candidate new single-character tokens.
3. The base segments are renamed to private-use characters and handed to the Rust ``tokenizers`` BpeTrainer,
   which learns the next merges. Segments are cut between two pieces that both lack Hangul (and, with
   ``--morpheme-aware``, at kiwipiepy morpheme boundaries), so learned merges attach to Hangul.
4. Learned merges are kept, in order, only if their result *forces Hangul* (see :mod:`kolm.vocab.family`) and
   their parts exist. They are appended after all base merges, new tokens get ids after every existing id.
   Hence: original ids never move, and text without Hangul can never trigger a new merge (same ids as the base).
5. Every new token is checked to be produced by the BPE model from its own string; any that is not is pruned
   (with everything built from it) and counted. Round trips and non-Hangul identity are checked on the corpus.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.config import ConfigError, field
from kolm.errors import KolmError
from kolm.vocab.family import (
    HANGUL_RE,
    detect_family,
    has_hangul,
    is_hangul,
    token_bytes,
    token_forces_hangul,
    token_text,
)


@dataclass
class ExtendConfig:
    """Options of ``kolm vocab extend``."""

    base: str = field(None, help="base tokenizer: a folder with tokenizer.json, or a hub id (online)", path=True,
                      hub=True)
    corpus: list[str] = field(default_factory=list, path=True,
                              help="Korean corpus files (.txt one document per line, .jsonl, .parquet)")
    num_new_tokens: int = field(0, help="how many new tokens to add (new single Hangul characters count too)")
    output: str = field(None, help="output tokenizer folder", path=True)
    morpheme_aware: bool = field(False, help="cut training units at kiwipiepy morpheme boundaries")
    min_frequency: int = field(2, help="a merge must be seen at least this often in the corpus")
    max_char_share: float = field(
        0.25, help="SentencePiece family: at most this share of the new tokens is spent on new single characters")
    text_field: str = field("text", help="field of .jsonl rows / column of .parquet files holding the text")
    allow_fewer: bool = field(False, help="accept fewer new tokens than asked when the corpus supports no more")
    check_lines: int = field(2000, help="corpus lines used for the built-in invariant checks and measurements")
    accept_tokenizer_model_mismatch: bool = field(
        False, help="SentencePiece family: write tokenizer.model even where the sentencepiece library's ids differ "
                    "from tokenizer.json's (the lines are named in extension.json); default: such a difference is an "
                    "error")
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


# ----------------------------------------------------------------------------------------------- loading


def load_base(base: str) -> tuple[Path, dict[str, Any]]:
    """Locate the base tokenizer folder (local or hub) and read its tokenizer.json."""
    from kolm.io import TOKENIZER_FILES, resolve_pretrained

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


def merge_pairs(merges: list) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------- units


_WORD_RE = re.compile(r"[^ ]+")  # SentencePiece-style BPE sees spaces as `▁` word starts


def _units(texts: list[str], family: str, pre_tokenizer: Any, boundaries: list[list[int]] | None) -> Counter:
    """Count (unit, morpheme-boundary byte offsets) pairs over the Hangul-bearing units of ``texts``."""
    counts: Counter = Counter()
    if family == "sentencepiece" and boundaries is None:  # fast path: no offsets needed
        # documents joined by a space split into exactly the words of each document
        words = Counter(" ".join(texts).split(" "))
        words.pop("", None)  # runs of spaces
        counts.update({("▁" + w, ()): c for w, c in words.items() if HANGUL_RE.search(w)})
        return counts
    for i, text in enumerate(texts):
        bounds = boundaries[i] if boundaries is not None else ()
        if family == "sentencepiece":
            spans = [(m.start(), m.end(), "▁" + m.group()) for m in _WORD_RE.finditer(text)]
            prefix = len("▁".encode())
        else:
            spans = [(s, e, piece) for piece, (s, e) in pre_tokenizer.pre_tokenize_str(text)]
            prefix = 0
        for s, e, unit in spans:
            if not has_hangul(text[s:e]):
                continue
            inner = tuple(prefix + len(text[s:c].encode()) for c in bounds if s < c < e) if bounds else ()
            counts[(unit, inner)] += 1
    return counts


class _Segmenter:
    """Cuts base-BPE pieces of a unit into training segments; per-token facts are cached (hot loop)."""

    def __init__(self, family: str, model: Any, new_chars: set[str]):
        self.family, self.model, self.new_chars = family, model, new_chars
        self.info: dict[str, tuple[int, bool, bool]] = {}  # token -> (n bytes, touches Hangul, is a fallback byte)

    def _info(self, tok: str) -> tuple[int, bool, bool]:
        got = self.info.get(tok)
        if got is None:
            b = token_bytes(tok, self.family)
            if self.family == "byte_level":
                # non-ASCII pieces inside a Hangul unit are (parts of) Hangul or its neighbours; the final
                # forces-Hangul filter decides what is kept, this only decides where training segments are cut
                got = (len(b), any(x >= 0x80 for x in b), False)
            else:
                is_byte = len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">")
                got = (len(b), has_hangul(tok), is_byte)
            self.info[tok] = got
        return got

    def __call__(self, unit: str, bounds: tuple[int, ...]) -> list[list[str]]:
        """Segments (lists of >= 2 token strings) of one unit; cut at fallback bytes of characters that are not
        new tokens, between two pieces without Hangul, and at morpheme boundaries (byte offsets ``bounds``)."""
        toks = [t.value for t in self.model.tokenize(unit)]
        out: list[list[str]] = []
        cur: list[str] = []
        pos, i, prev_touch = 0, 0, True
        while i < len(toks):
            n_bytes, touches, is_byte = self._info(toks[i])
            tok: str | None = toks[i]
            start = pos
            if is_byte:  # a character that fell back to bytes: a new single-character token, or a hard break
                raw = bytes(int(t[3:5], 16) for t in toks[i:i + _lead_len(int(toks[i][3:5], 16))])
                ch = raw.decode("utf-8", errors="replace")
                tok = ch if ch in self.new_chars else None
                i += max(1, len(raw))
                pos += len(raw)
                touches = True
            else:
                i += 1
                pos += n_bytes
            if tok is None or (bounds and start in bounds) or (not touches and not prev_touch):
                if len(cur) > 1:
                    out.append(cur)
                cur = []
            if tok is not None:
                cur.append(tok)
            prev_touch = touches or tok is None
        if len(cur) > 1:
            out.append(cur)
        return out


def _lead_len(b: int) -> int:
    return 2 if 0xC0 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF8 else 1


def _pua(k: int) -> str:
    return chr(0xF0000 + k) if k < 65534 else chr(0x100000 + k - 65534)


# ----------------------------------------------------------------------------------------------- learning


@dataclass
class Extension:
    """What was learned: new single characters, new tokens from merges (in order) and the merges themselves."""

    family: str
    new_chars: list[str]
    new_tokens: list[str]
    merges: list[tuple[str, str]]
    merges_to_existing: int
    exhausted: bool
    pruned_unreachable: int = 0
    unreachable_left: list[str] = dataclasses.field(default_factory=list)  # after pruning (always empty)


def learn(texts: list[str], base_json: dict[str, Any], base: Any, n: int, *, min_frequency: int = 2,
          max_char_share: float = 0.25, morpheme_aware: bool = False, exclude: frozenset[str] = frozenset()
          ) -> Extension:
    """Learn up to ``n`` new tokens (chars + merges) continuing the base BPE (``base``: its Tokenizer) on ``texts``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    family = detect_family(base_json)
    vocab: dict[str, int] = base_json["model"]["vocab"]
    boundaries = None
    if morpheme_aware:
        from kolm.vocab.morph import morpheme_boundaries

        boundaries = morpheme_boundaries(texts)
    units = _units(texts, family, base.pre_tokenizer, boundaries)
    if not units:
        raise KolmError("the corpus contains no Hangul: nothing to learn Korean tokens from")

    new_chars: list[str] = []
    if family == "sentencepiece":
        char_counts: Counter = Counter()
        for (unit, _), c in units.items():
            for ch in unit:
                if is_hangul(ch) and ch not in vocab and ch not in exclude:
                    char_counts[ch] += c
        cap = int(max_char_share * n)
        new_chars = [ch for ch, c in char_counts.most_common() if c >= min_frequency][:cap]
    chars_set = set(new_chars)

    sym: dict[str, str] = {}
    seg_counts: Counter = Counter()
    segmenter = _Segmenter(family, base.model, chars_set)
    for (unit, bounds), c in units.items():
        for seg in segmenter(unit, frozenset(bounds) if bounds else frozenset()):
            key = "".join(sym.setdefault(t, _pua(len(sym))) for t in seg)
            seg_counts[key] += c
    back = {v: k for k, v in sym.items()}
    want = n - len(new_chars)
    base_merges = set(merge_pairs(base_json["model"]["merges"]))
    available = set(vocab) | chars_set
    ask = int(want * 1.03) + 64  # a few learned merges fail the filter; asking for far more costs training time
    while True:
        trainer = trainers.BpeTrainer(vocab_size=len(sym) + ask, min_frequency=min_frequency, show_progress=False)
        learner = Tokenizer(models.BPE())
        learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        learner.train_from_iterator(((k + " ") * c for k, c in seg_counts.items()), trainer)
        learned = merge_pairs(json.loads(learner.to_str())["model"]["merges"])
        exhausted = len(learned) < ask
        have = set(available)
        new_tokens: list[str] = []
        merges: list[tuple[str, str]] = []
        to_existing = 0
        for pa, pb in learned:
            if len(new_tokens) >= want:
                break
            a = "".join(back[c] for c in pa)
            b = "".join(back[c] for c in pb)
            r = a + b
            if a not in have or b not in have or (a, b) in base_merges or r in exclude:
                continue
            if not token_forces_hangul(r, family):
                continue
            merges.append((a, b))
            if r in have:
                to_existing += 1
                continue
            have.add(r)
            new_tokens.append(r)
        if len(new_tokens) >= want or exhausted:
            break
        # more merges failed the filter than expected: ask again, scaled by the share that passed
        ask = int(ask * min(4.0, 1.1 * want / max(1, len(new_tokens)))) + 256
    return Extension(family, new_chars, new_tokens, merges, to_existing, exhausted and len(new_tokens) < want)


def build_tokenizer_json(base_json: dict[str, Any], ext: Extension) -> dict[str, Any]:
    """Base tokenizer.json plus the new vocabulary entries (ids after every existing id) and merges (appended)."""
    out = dict(base_json)
    out["model"] = dict(base_json["model"])
    vocab = out["model"]["vocab"] = dict(base_json["model"]["vocab"])
    added_ids = {t["id"]: t["content"] for t in out.get("added_tokens", [])}
    next_id = max([*vocab.values(), *added_ids]) + 1
    # `tokenizers` needs the model's ids to be contiguous once we append after the added tokens (Llama-3 keeps
    # its 256 specials outside the BPE vocab): the specials fill those ids in the model vocab too. No pre-token
    # can equal them (they are still matched first as added tokens), so encoding is unchanged.
    used = set(vocab.values())
    for i in range(next_id):
        if i not in used:
            if i not in added_ids:
                raise KolmError(f"tokenizer.json: id {i} is used by no token; kolm cannot append after a gap")
            vocab[added_ids[i]] = i
    for t in [*ext.new_chars, *ext.new_tokens]:
        vocab[t] = next_id
        next_id += 1
    as_str = bool(out["model"]["merges"]) and isinstance(out["model"]["merges"][0], str)
    out["model"]["merges"] = base_json["model"]["merges"] + [f"{a} {b}" if as_str else [a, b] for a, b in ext.merges]
    return out


def unreachable(tok: Any, tokens: list[str]) -> list[str]:
    """Tokens that the BPE model does not produce from their own string (model level: no `▁` prefix added)."""
    return [t for t in tokens if [x.value for x in tok.model.tokenize(t)] != [t]]


# ----------------------------------------------------------------------------------------------- checks


def check_invariants(base_tok: Any, new_tok: Any, unreachable_tokens: list[str], lines: list[str]
                     ) -> tuple[dict[str, Any], dict[str, dict[str, float | None]]]:
    """Measure the guarantees on ``lines``: ids kept, non-Hangul identity, round trip (``unreachable_tokens``: the
    result of :func:`unreachable` on ``new_tok``, passed through). Also returns the compression of both tokenizers
    on the same encodings (``compression_base`` / ``compression_extended``)."""
    bv, nv = base_tok.get_vocab(with_added_tokens=True), new_tok.get_vocab(with_added_tokens=True)
    moved = [t for t, i in bv.items() if nv.get(t) != i]
    korean = [has_hangul(x) for x in lines]
    ids_base = [e.ids for e in base_tok.encode_batch(lines, add_special_tokens=False)]
    ids_new = [e.ids for e in new_tok.encode_batch(lines, add_special_tokens=False)]
    changed = sum(a != b for a, b, k in zip(ids_base, ids_new, korean, strict=True) if not k)
    decoded = new_tok.decode_batch(ids_new, skip_special_tokens=False)
    bad_rt = [x for x, d in zip(lines, decoded, strict=True) if d != x]
    return {
        "base_tokens_moved": len(moved),
        "non_hangul_lines_checked": korean.count(False),
        "non_hangul_lines_changed": changed,
        "roundtrip_lines_checked": len(lines),
        "roundtrip_failures": len(bad_rt),
        "unreachable_tokens": len(unreachable_tokens),
    }, {
        "compression_base": compression(lines, korean, ids_base),
        "compression_extended": compression(lines, korean, ids_new),
    }


def compression(lines: list[str], korean: list[bool], ids: list[list[int]]) -> dict[str, float | None]:
    """Characters per token on Hangul-bearing lines and on lines without Hangul (``korean``: which is which)."""
    out = {}
    for name, want in (("korean", True), ("other", False)):
        n_chars = sum(len(x) for x, k in zip(lines, korean, strict=True) if k == want)
        n_tok = sum(len(t) for t, k in zip(ids, korean, strict=True) if k == want)
        out[f"{name}_chars_per_token"] = round(n_chars / n_tok, 4) if n_tok else None
    return out


# ----------------------------------------------------------------------------------------------- command


def extend_tokenizer(base_json: dict[str, Any], texts: list[str], n: int, *, min_frequency: int = 2,
                     max_char_share: float = 0.25, morpheme_aware: bool = False, allow_fewer: bool = False,
                     base: Any = None) -> tuple[dict[str, Any], Any, Extension]:
    """Learn and build the extended tokenizer (its JSON and `tokenizers.Tokenizer`); prune unreachable tokens.

    ``base`` is the base `tokenizers.Tokenizer` when the caller has it already (else built from ``base_json``).
    """
    from tokenizers import Tokenizer

    base = base or Tokenizer.from_str(json.dumps(base_json))
    exclude: set[str] = set()
    pruned = 0
    for _ in range(10):
        ext = learn(texts, base_json, base, n, min_frequency=min_frequency, max_char_share=max_char_share,
                    morpheme_aware=morpheme_aware, exclude=frozenset(exclude))
        out = build_tokenizer_json(base_json, ext)
        new_tok = Tokenizer.from_str(json.dumps(out))
        bad = unreachable(new_tok, ext.new_chars + ext.new_tokens)
        if not bad:
            break
        exclude.update(bad)
        pruned += len(bad)
    else:
        raise KolmError("could not remove all unreachable tokens in 10 rounds (please report this as a bug)")
    ext.pruned_unreachable, ext.unreachable_left = pruned, bad
    added = len(ext.new_chars) + len(ext.new_tokens)
    if added < n and not allow_fewer:
        raise KolmError(f"the corpus supports only {added} new tokens at min_frequency={min_frequency} "
                        f"(asked for {n}): give more Korean text, lower --num-new-tokens, or pass --allow-fewer")
    return out, new_tok, ext


def run(cfg: ExtendConfig) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from kolm.io import atomic_output_dir, check_corpus_files, file_sha256, iter_corpus

    t0 = time.perf_counter()
    files = check_corpus_files(cfg.corpus)
    folder, base_json = load_base(cfg.base)
    family = detect_family(base_json, where=str(folder / "tokenizer.json"))
    out_path = Path(cfg.output)
    if out_path.exists() and not cfg.overwrite and (not out_path.is_dir() or any(out_path.iterdir())):
        raise KolmError(f"output exists and is not empty: {out_path} (pass --overwrite to replace it)")
    # NFC: kolm's data stage composes Hangul, so the vocabulary is learned on composed text too.
    texts = [unicodedata.normalize("NFC", t) for t in iter_corpus(files, cfg.text_field)]
    if not texts:
        raise KolmError(f"the corpus is empty: {', '.join(map(str, files))}")
    base_tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    t_read = time.perf_counter()
    new_json, new_tok, ext = extend_tokenizer(base_json, texts, cfg.num_new_tokens, min_frequency=cfg.min_frequency,
                                              max_char_share=cfg.max_char_share, morpheme_aware=cfg.morpheme_aware,
                                              allow_fewer=cfg.allow_fewer, base=base_tok)
    t_learn = time.perf_counter()
    sample = texts[:: max(1, len(texts) // cfg.check_lines)][: cfg.check_lines]
    checks, comp = check_invariants(base_tok, new_tok, ext.unreachable_left, sample)
    t_check = time.perf_counter()
    if checks["base_tokens_moved"] or checks["non_hangul_lines_changed"] or checks["unreachable_tokens"]:
        raise KolmError(f"internal invariant violated, nothing written (please report): {checks}")
    vocab = new_json["model"]["vocab"]
    added = [{"id": vocab[t], "token": t, "text": token_text(t, family), "kind": kind,
              "base_ids": [x.id for x in base_tok.model.tokenize(t)]}
             for kind, toks in (("char", ext.new_chars), ("merge", ext.new_tokens)) for t in toks]
    report = {
        "kolm_version": __import__("kolm").__version__,
        "family": family,
        "base": cfg.base,
        "base_tokenizer_sha256": file_sha256(folder / "tokenizer.json"),
        "base_vocab_size": base_tok.get_vocab_size(with_added_tokens=True),
        "vocab_size": new_tok.get_vocab_size(with_added_tokens=True),
        "num_new_tokens_requested": cfg.num_new_tokens,
        "num_added": len(added),
        "num_new_chars": len(ext.new_chars),
        "num_new_merge_tokens": len(ext.new_tokens),
        "num_new_merges": len(ext.merges),
        "merges_to_existing_tokens": ext.merges_to_existing,
        "pruned_unreachable": ext.pruned_unreachable,
        "morpheme_aware": cfg.morpheme_aware,
        "min_frequency": cfg.min_frequency,
        "corpus": [str(f) for f in files],
        "corpus_documents": len(texts),
        "checks": checks,
        **comp,
        "seconds": {"read": round(t_read - t0, 3), "learn": round(t_learn - t_read, 3),
                    "check": round(t_check - t_learn, 3)},
        "added": added,
    }
    with atomic_output_dir(out_path, overwrite=cfg.overwrite) as tmp:
        new_tok.save(str(tmp / "tokenizer.json"))
        for name in ("special_tokens_map.json", "chat_template.jinja", "generation_config.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        write_tokenizer_config(folder, tmp, report)
        _check_transformers_load(tmp, new_tok, sample)
        if family == "sentencepiece":  # clients such as llama.cpp's converter read tokenizer.model (spm_model.py)
            from kolm.vocab.spm_model import write_tokenizer_model

            report["tokenizer_model"] = write_tokenizer_model(
                folder, new_json, tmp, sample, accept_mismatch=cfg.accept_tokenizer_model_mismatch, tokenizer=new_tok)
        report["seconds"]["total"] = round(time.perf_counter() - t0, 3)
        (tmp / "extension.json").write_text(_report_json(report), encoding="utf-8")
    c0, c1 = report["compression_base"], report["compression_extended"]
    from kolm.vocab.spm_model import summary as spm_summary

    print(f"kolm vocab extend: {family} base, +{len(added)} tokens ({len(ext.new_chars)} chars, "
          f"{len(ext.new_tokens)} merges), Korean chars/token {c0['korean_chars_per_token']} -> "
          f"{c1['korean_chars_per_token']}, non-Hangul lines changed: {checks['non_hangul_lines_changed']}, "
          f"unreachable: {checks['unreachable_tokens']}"
          + (f", {spm_summary(report['tokenizer_model'])}" if "tokenizer_model" in report else "") + f" -> {out_path}")
    return report


def _report_json(report: dict[str, Any]) -> str:
    """extension.json: indented, with one line per added token (json's indenting encoder is slow on 100k entries)."""
    head = json.dumps({k: v for k, v in report.items() if k != "added"}, ensure_ascii=False, indent=2)
    rows = ",\n".join("    " + json.dumps(a, ensure_ascii=False) for a in report["added"])
    return head[:-2] + ',\n  "added": [\n' + rows + "\n  ]\n}\n"


def write_tokenizer_config(base_folder: Path, out: Path, report: dict[str, Any]) -> None:
    """Copy the base tokenizer_config.json, pointing transformers at tokenizer.json verbatim.

    transformers 5's model-specific classes (e.g. LlamaTokenizer) rebuild their pre-tokenization from code and
    then disagree with tokenizer.json (Llama-2, leading spaces: `▁` + `▁▁` vs `▁▁▁`). PreTrainedTokenizerFast loads
    tokenizer.json as is, so training sees exactly the tokenizer kolm measured.
    """
    src = base_folder / "tokenizer_config.json"
    cfg = json.loads(src.read_text(encoding="utf-8")) if src.is_file() else {}
    report["base_tokenizer_class"] = cfg.get("tokenizer_class")
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")


def _check_transformers_load(folder: Path, new_tok: Any, sample: list[str]) -> None:
    """The folder must load with AutoTokenizer and give the same ids as `tokenizers` (invariant 5)."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder))
    lines = sample[:200]
    got = hf(lines, add_special_tokens=False)["input_ids"]
    want = [e.ids for e in new_tok.encode_batch(lines, add_special_tokens=False)]
    if got != want or len(hf) != new_tok.get_vocab_size(with_added_tokens=True):
        raise KolmError(f"{folder}: transformers' AutoTokenizer disagrees with tokenizer.json "
                        f"({type(hf).__name__}); nothing written")
