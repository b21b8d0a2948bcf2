"""A SentencePiece ``tokenizer.model`` for SentencePiece-family tokenizers extended by kolm, verified against
``tokenizer.json``, and the one test of whether a ``tokenizer.model`` belongs to a ``tokenizer.json``.

``kolm vocab extend`` calls :func:`write_tokenizer_model` for the SentencePiece family (Llama-2, Mistral/SOLAR, Yi).
Clients that read ``tokenizer.model`` (llama.cpp's ``convert_hf_to_gguf.py``, the ``sentencepiece`` library, slow
tokenizers) then tokenize as ``tokenizer.json`` does. A SentencePiece BPE model has no merge list: it repeatedly
merges the adjacent pair whose concatenation is the piece with the highest score (leftmost on ties), so merge
order lives in the scores:

* The base folder has a ``tokenizer.model`` (real Llama-2/Mistral/Yi checkpoints do) whose pieces are the base
  tokenizer.json's tokens: its pieces, scores, types, trainer and normalizer specs are kept exactly
  (``trainer_spec.vocab_size`` is set to the new piece count) and the new pieces are appended with scores below
  every existing score, in merge-rank order (new single characters first, in id order: a single character is never
  the result of a merge, so its score never decides anything).
* Otherwise (the shared Llama-2 and Mistral tokenizers ship only tokenizer.json) it is built from tokenizer.json:
  score = -(rank of the first merge that makes the piece), single characters below every merged piece,
  ``<0xNN>`` BYTE, the unknown token UNKNOWN, special added tokens CONTROL, other added tokens USER_DEFINED,
  byte fallback on, and the normalizer flags read from tokenizer.json (``▁`` escaping, no whitespace removal, a
  dummy prefix when tokenizer.json prepends ``▁``: a ``Prepend`` normalizer or ``Metaspace`` with
  ``prepend_scheme`` ``always``/``first``). transformers' ``legacy`` flag is not involved: it changes only how a
  *slow* tokenizer treats text right after a special token, and kolm's output loads tokenizer.json verbatim.

**Verification.** The ``sentencepiece`` library's ids must equal the ``tokenizers`` ids of tokenizer.json (no
special tokens added) on the extension's check sample and on seeded fuzzed strings (Korean, English, mixed,
whitespace runs, leading spaces, digits, emoji, characters that fall back to bytes, NFD Hangul, new tokens glued
together). Lines that contain an added token's text are not compared (tokenizer.json cuts added tokens out of the
text before normalising, SentencePiece sees plain text) and are counted. When the base has a tokenizer.model the
*base* pair is checked on the same lines (for a base without one: the model built from the base tokenizer.json, when
the new pair differs somewhere), so a difference the base already had is told apart from one kolm introduced. A
difference kolm introduced is an error (nothing is written) unless ``accept_mismatch`` is set: then the file is
written, the summary line says so in capitals and extension.json names the first differing lines. A difference
inherited from the base pair is reported the same way but is not an error: kolm cannot fix the base.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

from kolm.errors import KolmError
from kolm.vocab.chars import has_hangul

TOKENIZER_MODEL = "tokenizer.model"  # the SentencePiece model file of a tokenizer folder

MAX_LISTED = 5  # differing lines named in extension.json
_BYTE_PIECE = "<0x{:02X}>"

# Strings that stress what differs between the two encoders: whitespace, digits, emoji (multi-code-point), rare
# characters that fall back to bytes, NFD/compatibility Hangul, control characters and zero-width marks.
_SPICE = [" ", "  ", "   ", "\t", "\n", " \n ", "\u3000", "\u00a0", "0", "7", "12", "2024", "3.14", "1,000", "😀",
          "👍🏽", "🇰🇷", "👨‍👩‍👧", "𝔘", "鑫", "㐀", "ꥠ", "ힰ", "ㄱ", "ㅏ", unicodedata.normalize("NFD", "한국"), "\x00",
          "\u200b", "é", "e\u0301", "Ω", "—", "...", "!?", "(", ")", "'", '"', "<", ">", "/", "\\", "#", "@", "_"]


def _pb() -> Any:
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:  # protobuf missing or too old for the generated module
        raise KolmError(f"writing tokenizer.model needs the `sentencepiece` and `protobuf` packages ({e}); "
                        "pip install 'sentencepiece>=0.2' 'protobuf>=4'") from None
    return sentencepiece_model_pb2


# ----------------------------------------------------------------------------------------------- tokenizer.json


def id_tokens(tj: dict[str, Any]) -> list[str]:
    """Every token of a tokenizer.json (model vocabulary and added tokens) in id order; ids must be contiguous."""
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    for a in tj.get("added_tokens") or []:
        by_id.setdefault(a["id"], a["content"])
    n = max(by_id) + 1 if by_id else 0
    gaps = [i for i in range(n) if i not in by_id]
    if gaps:
        raise KolmError(f"tokenizer.json: ids are not contiguous (no token with id {gaps[0]})")
    return [by_id[i] for i in range(n)]


def _merge_pairs(tj: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in tj["model"]["merges"]]  # type: ignore


def first_merge_rank(tj: dict[str, Any]) -> dict[str, int]:
    """piece -> rank of the first merge of tokenizer.json that makes it."""
    out: dict[str, int] = {}
    for r, (a, b) in enumerate(_merge_pairs(tj)):
        out.setdefault(a + b, r)
    return out


def _components(node: Any) -> list[dict]:
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("normalizers", "pretokenizers", "pre_tokenizers"):
        for sub in node.get(key) or []:
            out += _components(sub)
    return out


def normalizer_flags(tj: dict[str, Any]) -> bool:
    """``add_dummy_prefix`` of the SentencePiece normalizer that behaves as tokenizer.json's normalizer and
    pre-tokenizer; raises KolmError naming the part SentencePiece cannot express."""
    prefix = False
    for part in _components(tj.get("normalizer")) + _components(tj.get("pre_tokenizer")):
        kind = part.get("type")
        if kind == "Sequence":
            continue
        if kind == "Prepend" and part.get("prepend") == "▁":
            prefix = True
        elif kind == "Replace" and part.get("pattern") == {"String": " "} and part.get("content") == "▁":
            pass
        elif kind == "Metaspace" and part.get("replacement", "▁") == "▁" and not part.get("split", False):
            prefix = prefix or part.get("prepend_scheme", "always") in ("always", "first")
        else:
            raise KolmError(f"tokenizer.json: {json.dumps(part)[:120]} has no SentencePiece equivalent")
    return prefix


# ----------------------------------------------------------------------------------------------- building


def _special_ids(folder: Path, tokens: list[str], unk: str | None) -> dict[str, tuple[int, str]]:
    """unk/bos/eos/pad -> (id, piece) from tokenizer_config.json (ids -1 when absent), for the trainer spec."""
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    index = {t: i for i, t in enumerate(tokens)}
    out = {}
    for name in ("unk", "bos", "eos", "pad"):
        value = (unk if name == "unk" else None) or cfg.get(f"{name}_token") or ("<unk>" if name == "unk" else None)
        value = value.get("content") if isinstance(value, dict) else value
        out[name] = (index[value], value) if value in index else (-1, "")
    return out


def build_from_tokenizer_json(tj: dict[str, Any], config_folder: Path) -> Any:
    """A ModelProto equivalent to ``tj`` (see the module docstring); ``config_folder`` holds tokenizer_config.json."""
    pb = _pb()
    kind = pb.ModelProto.SentencePiece.Type
    tokens = id_tokens(tj)
    add_prefix = normalizer_flags(tj)
    added = {a["id"]: a for a in tj.get("added_tokens") or []}
    ids = _special_ids(config_folder, tokens, tj["model"].get("unk_token"))
    unk_id = ids["unk"][0]
    if unk_id < 0:
        raise KolmError("tokenizer.json has no unknown token (SentencePiece needs one)")
    missing = [b for b in range(256) if _BYTE_PIECE.format(b) not in tj["model"]["vocab"]]
    if missing:
        raise KolmError(f"tokenizer.json lacks byte-fallback piece {_BYTE_PIECE.format(missing[0])}")
    rank = first_merge_rank(tj)
    n_merges = len(tj["model"]["merges"])
    proto = pb.ModelProto()
    for i, tok in enumerate(tokens):
        piece = proto.pieces.add(piece=tok, score=0.0)
        if i == unk_id:
            piece.type = kind.UNKNOWN
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):  # also when declared an added token
            piece.type = kind.BYTE
        elif i in added:
            piece.type = kind.CONTROL if added[i].get("special") else kind.USER_DEFINED
        else:
            piece.type = kind.NORMAL
            piece.score = -float(rank[tok]) if tok in rank else -float(n_merges + i)
    ts = proto.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    for name, (i, piece) in ids.items():
        setattr(ts, f"{name}_id", i)
        if piece:
            setattr(ts, f"{name}_piece", piece)
    proto.normalizer_spec.CopyFrom(pb.NormalizerSpec(name="identity", add_dummy_prefix=add_prefix,
                                                     remove_extra_whitespaces=False, escape_whitespaces=True))
    return proto


def extend_base_model(base: Any, tj: dict[str, Any]) -> Any:
    """``base`` (the base ModelProto, whose pieces are the first ids of ``tj``) plus the pieces of ``tj`` after it."""
    pb = _pb()
    kind = pb.ModelProto.SentencePiece.Type
    tokens = id_tokens(tj)
    n_base = len(base.pieces)
    added = {a["id"]: a for a in tj.get("added_tokens") or []}
    rank = first_merge_rank(tj)
    new = [i for i in range(n_base, len(tokens)) if i not in added]
    # single characters (never made by a merge) first, in id order, then merged pieces by the rank of their merge
    order = sorted(new, key=lambda i: (1, rank[tokens[i]], i) if tokens[i] in rank else (0, 0, i))
    floor = min((p.score for p in base.pieces), default=0.0)
    score = {i: floor - 1.0 - k for k, i in enumerate(order)}
    proto = pb.ModelProto()
    proto.CopyFrom(base)
    for i in range(n_base, len(tokens)):
        if i in added:
            proto.pieces.add(piece=tokens[i], score=0.0,
                             type=kind.CONTROL if added[i].get("special") else kind.USER_DEFINED)
        else:
            proto.pieces.add(piece=tokens[i], score=score[i], type=kind.NORMAL)
    proto.trainer_spec.vocab_size = len(tokens)
    return proto


def pieces_mismatch(proto: Any, tokens: list[str], *, prefix: bool = False) -> str | None:
    """Why ``proto``'s pieces are not ``tokens`` (in id order; ``prefix``: only the first pieces), or None."""
    kind = type(proto).SentencePiece.Type
    pieces = proto.pieces
    if len(pieces) > len(tokens) or (len(pieces) < len(tokens) and not prefix):
        return f"{len(pieces)} pieces for {len(tokens)} tokens"
    for i, p in enumerate(pieces):
        if p.piece != tokens[i]:
            return f"id {i} is {p.piece!r} in tokenizer.model and {tokens[i]!r} in tokenizer.json"
        if (p.type == kind.BYTE) != (len(p.piece) == 6 and p.piece.startswith("<0x")):
            return f"id {i} ({p.piece!r}) has the wrong type for a byte piece"
    return None


def _parse(data: bytes, where: str) -> Any:
    proto = _pb().ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise KolmError(f"{where}: not a SentencePiece model ({type(e).__name__})") from None
    return proto


def tokenizer_model_mismatch(model_file: Path, tokenizer_json: Path) -> str | None:
    """Why ``model_file`` (a tokenizer.model) does not belong to ``tokenizer_json``, or None when it does: its pieces
    are tokenizer.json's tokens in id order. None too when there is no tokenizer.json: then tokenizer.model is the
    tokenizer. Cheap: one protobuf parse and one JSON read, no encoding."""
    if not Path(tokenizer_json).is_file():
        return None
    try:
        tj = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        tokens = id_tokens(tj)
        proto = _parse(Path(model_file).read_bytes(), str(model_file))
    except (KolmError, json.JSONDecodeError, KeyError, TypeError, AttributeError, OSError, UnicodeDecodeError) as e:
        return f"{type(e).__name__}: {e}"
    return pieces_mismatch(proto, tokens)


# ----------------------------------------------------------------------------------------------- verifying


def fuzz_strings(tokens: list[str], sample: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` seeded strings mixing the vocabulary's Hangul and other pieces, sample lines cut, glued and re-spaced,
    and :data:`_SPICE`."""
    rnd = random.Random(seed)
    text = [t.replace("▁", " ") for t in tokens if not (t.startswith("<") and t.endswith(">"))]
    korean = [t for t in text if has_hangul(t)] or ["한국어"]
    other = [t for t in text if not has_hangul(t)] or ["a"]
    lines = [x for x in sample if x] or ["한국어 text"]
    out: list[str] = []
    while len(out) < n:
        mode = rnd.random()
        if mode < 0.5:  # glued pieces of every kind
            pool = (korean, korean, other, _SPICE)
            s = "".join(rnd.choice(rnd.choice(pool)) for _ in range(rnd.randint(1, 10)))
        elif mode < 0.8:  # a piece of a real line, re-spaced
            line = rnd.choice(lines)
            a = rnd.randrange(len(line))
            s = line[a:a + rnd.randint(1, 80)]
            op = rnd.randrange(4)
            s = (s.replace(" ", "") if op == 0 else s.replace(" ", rnd.choice(["  ", "\t", " \n"])) if op == 1
                 else " " * rnd.randint(1, 4) + s if op == 2 else s + rnd.choice(_SPICE))
        else:  # Korean pieces with spaces and digits between
            s = " ".join(rnd.choice(korean).strip() + rnd.choice(["", "", rnd.choice(_SPICE)])
                         for _ in range(rnd.randint(1, 6)))
        out.append(s)
    return out


def compare(processor: Any, hf: Any, lines: list[str], sources: list[str]) -> dict[str, Any]:
    """Encode ``lines`` with the sentencepiece ``processor`` and the ``tokenizers`` ``hf`` (no special tokens)."""
    skip = [a.content for a in hf.get_added_tokens_decoder().values() if a.content]
    added = re.compile("|".join(map(re.escape, skip))) if skip else None
    keep = [k for k, x in enumerate(lines) if added is None or not added.search(x)]
    todo = [lines[k] for k in keep]
    want = [e.ids for e in hf.encode_batch(todo, add_special_tokens=False)]
    got = processor.encode(todo)
    bad = [k for k, (a, b) in enumerate(zip(want, got)) if a != b]
    return {
        "lines": len(todo),
        "sample_lines": sum(sources[k] == "sample" for k in keep),
        "fuzz_lines": sum(sources[k] == "fuzz" for k in keep),
        "skipped_added_token_text": len(lines) - len(todo),
        "differences": len(bad),
        "differing": [todo[k] for k in bad],
        "first_differences": [_difference(todo[k], sources[keep[k]], want[k], got[k]) for k in bad[:MAX_LISTED]],
    }


def _difference(line: str, source: str, want: list[int], got: list[int]) -> dict[str, Any]:
    """A differing line for extension.json: the text, and both id lists from the first token where they part."""
    at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    return {"line": line[:200], "source": source, "from_token": at, "tokenizer_json": want[at:at + 20],
            "sentencepiece": got[at:at + 20]}


def _processor(proto: Any, where: str) -> Any:
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    except Exception as e:  # noqa: BLE001 - the C++ side raises RuntimeError/OSError with its own message
        raise KolmError(f"{where}: the sentencepiece library refuses the model: {e}") from None


def _hf(tj: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(tj))


# ----------------------------------------------------------------------------------------------- entry point


def _base_model(base_folder: Path, base_json: dict[str, Any], tokens: list[str], report: dict[str, Any]) -> Any:
    """The base folder's tokenizer.model when it belongs to the base tokenizer.json (and so to the first ids of the
    extension), else None with the reason in ``report["note"]``."""
    base_file = base_folder / TOKENIZER_MODEL
    if not base_file.is_file():
        return None
    proto = _parse(base_file.read_bytes(), str(base_file))
    why = pieces_mismatch(proto, id_tokens(base_json)) or pieces_mismatch(proto, tokens, prefix=True)
    if why is None and proto.trainer_spec.model_type != _pb().TrainerSpec.BPE:
        why = "it is not a BPE model"
    if why is None and not proto.trainer_spec.byte_fallback:
        why = "it has no byte fallback"
    if why is None:
        return proto
    report["note"] = f"the base {TOKENIZER_MODEL} does not belong to its tokenizer.json ({why}): built from " \
                     "tokenizer.json instead"
    return None


def write_tokenizer_model(base_folder: Path, new_tokenizer_json: dict[str, Any], out_folder: Path,
                          sample: list[str], *, accept_mismatch: bool = False, fuzz: int = 3000, seed: int = 0,
                          tokenizer: Any = None) -> dict[str, Any]:
    """Write ``out_folder/tokenizer.model`` for ``new_tokenizer_json`` (a kolm extension of the tokenizer in
    ``base_folder``; ``tokenizer``: its ``tokenizers.Tokenizer`` if the caller has it), verify it on ``sample`` plus
    ``fuzz`` seeded strings, and return the report (extension.json's ``tokenizer_model``).

    The base pair is checked on the same lines (``base_check``) when the base has a tokenizer.model, and otherwise
    when the new pair differs somewhere, with the model built from the base tokenizer.json the same way: what
    SentencePiece cannot express in the base is told apart from what kolm introduced. Raises KolmError when kolm
    introduced a difference and ``accept_mismatch`` is False. When tokenizer.json cannot be expressed as a
    SentencePiece model the file is not written and the report says why (``written: false``, ``reason``)."""
    t0 = time.perf_counter()
    base_folder, out_folder = Path(base_folder), Path(out_folder)
    tokens = id_tokens(new_tokenizer_json)
    report: dict[str, Any] = {"written": False, "file": TOKENIZER_MODEL}
    base_json = json.loads((base_folder / "tokenizer.json").read_text(encoding="utf-8"))
    base_proto = _base_model(base_folder, base_json, tokens, report)
    try:
        if base_proto is not None:
            proto, report["source"] = extend_base_model(base_proto, new_tokenizer_json), f"base {TOKENIZER_MODEL}"
        else:
            proto, report["source"] = build_from_tokenizer_json(new_tokenizer_json, base_folder), "tokenizer.json"
    except KolmError as e:
        report["reason"] = str(e)
        return report
    report["add_dummy_prefix"] = proto.normalizer_spec.add_dummy_prefix
    lines = list(sample) + fuzz_strings(tokens, list(sample), fuzz, seed)
    sources = ["sample"] * len(sample) + ["fuzz"] * (len(lines) - len(sample))
    check = compare(_processor(proto, "the new tokenizer.model"), tokenizer or _hf(new_tokenizer_json), lines,
                    sources)
    differing = check.pop("differing")
    base_differing: set[str] = set()
    if base_proto is not None or differing:
        base_proto = base_proto or build_from_tokenizer_json(base_json, base_folder)
        base_check = compare(_processor(base_proto, "the base tokenizer.model"), _hf(base_json), lines, sources)
        base_differing = set(base_check.pop("differing"))
        report["base_check"] = base_check
    introduced = [x for x in differing if x not in base_differing]
    check.update(introduced_by_kolm=len(introduced), inherited_from_base=len(differing) - len(introduced))
    report["check"] = check
    if introduced and not accept_mismatch:
        raise KolmError(f"{TOKENIZER_MODEL}: the sentencepiece library's ids differ from tokenizer.json's on "
                        f"{len(introduced)} of {check['lines']} checked lines, e.g. {introduced[0][:80]!r}; nothing "
                        "written (pass --accept-tokenizer-model-mismatch to write it anyway and list the lines in "
                        "extension.json)")
    data = proto.SerializeToString()
    (out_folder / TOKENIZER_MODEL).write_bytes(data)
    report.update(written=True, pieces=len(proto.pieces), sha256=hashlib.sha256(data).hexdigest(),
                  mismatch_accepted=bool(introduced), seconds=round(time.perf_counter() - t0, 3))
    return report


def summary(report: dict[str, Any]) -> str:
    """One clause for the ``kolm vocab extend`` summary line."""
    if not report.get("written"):
        return f"NO tokenizer.model ({report.get('reason', 'not written')}; llama.cpp will read tokenizer.json)"
    c = report["check"]
    if not c["differences"]:
        return f"tokenizer.model = tokenizer.json on {c['lines']}/{c['lines']} lines"
    return (f"WARNING tokenizer.model DIFFERS from tokenizer.json on {c['differences']}/{c['lines']} lines "
            f"({c['introduced_by_kolm']} by kolm, {c['inherited_from_base']} as in the base; see extension.json)")
