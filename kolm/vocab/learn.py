"""Learning Korean merges on top of a base BPE: segment the counted units with the base merges, train the next
merges with the Rust ``tokenizers`` BpeTrainer, keep the ones that are safe, build the extended tokenizer.json,
and prune any new token that its model does not produce. :mod:`kolm.vocab.extend` explains the guarantees.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kolm.errors import KolmError
from kolm.vocab.families import Family, detect


def merge_pairs(merges: list) -> list[tuple[str, str]]:
    """tokenizer.json merges (``"a b"`` strings or ``[a, b]`` pairs) as pairs."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]  # type: ignore[misc]


class _Segmenter:
    """Cuts base-BPE pieces of a unit into training segments; per-token facts are cached (hot loop)."""

    def __init__(self, family: Family, model: Any, new_chars: set[str]):
        self.family, self.model, self.new_chars = family, model, new_chars
        self.info: dict[str, tuple[int, bool, bool]] = {}  # token -> (n bytes, touches Hangul, is a fallback byte)

    def _info(self, tok: str) -> tuple[int, bool, bool]:
        got = self.info.get(tok)
        if got is None:
            got = self.info[tok] = self.family.piece_info(tok)
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
    """The k-th private-use character, in increasing code point order (the trainer orders its alphabet by code
    point, so only the order matters): the BMP block first (3 UTF-8 bytes; the trainer's per-byte bookkeeping
    is cheaper), then planes 15 and 16."""
    if k < 6400:
        return chr(0xE000 + k)
    k -= 6400
    return chr(0xF0000 + k) if k < 65534 else chr(0x100000 + k - 65534)


# ----------------------------------------------------------------------------------------------- learning


@dataclass
class Extension:
    """What was learned: new single characters, new tokens from merges (in order) and the merges themselves."""

    family: str
    new_chars: list[str]
    new_tokens: list[str]
    merges: list[tuple[str, str]]
    merges_to_existing: int  # kept merges whose result is an earlier new token (the same string by another split)
    exhausted: bool
    merges_to_base_dropped: int = 0  # learned merges whose result is a base token, not kept (see _Filter)
    syllable_tokens: int = 0  # the first new_tokens, that make whole syllables (mode syllables)
    pruned_unreachable: int = 0
    unreachable_left: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # after pruning: all empty


MODES = ("bpe", "syllables")


def learn(units: Counter, base_json: dict[str, Any], base: Any, family: Family, n: int, *, min_frequency: int = 2,
          max_char_share: float = 0.25, exclude: frozenset[str] = frozenset(), mode: str = "bpe") -> Extension:
    """Learn up to ``n`` new tokens (chars + merges) continuing the base BPE (``base``: its Tokenizer) on ``units``
    (training units and their counts, from :func:`kolm.vocab.count.count_corpus`).

    ``mode`` ``bpe``: new single characters (at most ``max_char_share`` of ``n``), then the BpeTrainer's merges.
    ``syllables``: whole syllables first (:mod:`kolm.vocab.syllables`): new single characters by frequency, then the
    merges that make whole syllables out of base pieces, each kept while it saves at least as many tokens as the
    multi-syllable merge it displaces; then the BpeTrainer's merges with what is left."""
    if not units:
        raise KolmError("the corpus contains no Hangul: nothing to learn Korean tokens from")
    if mode not in MODES:
        raise KolmError(f"unknown extension mode {mode!r} (known: {', '.join(MODES)})")
    vocab: dict[str, int] = base_json["model"]["vocab"]
    char_counts = family.char_counts(units, vocab, exclude)
    new_chars = [ch for ch, c in char_counts.most_common() if c >= min_frequency]
    model = family.segmenting_model(base)
    first: list[str] = []  # tokens that make whole syllables (mode syllables), learned before the BpeTrainer's
    first_merges: list[tuple[str, str]] = []
    if mode == "syllables":
        from kolm.vocab.syllables import pair_counts, worth_keeping

        others = pair_counts(units, family)
        # a new character saves all but one of the byte pieces the base falls back to, at each occurrence
        saved = [(len(family.token_bytes(ch)) - 1) * char_counts[ch] for ch in new_chars]
        new_chars = new_chars[:worth_keeping(saved, others, n)]
        if len(new_chars) < n:
            first, first_merges, model = _syllables_first(units, base_json, family, model, n - len(new_chars),
                                                          new_chars, exclude, min_frequency, others)
    else:
        new_chars = new_chars[:int(max_char_share * n)]
    want = n - len(new_chars) - len(first)
    keep = _Filter(family, model, set(merge_pairs(base_json["model"]["merges"])) | set(first_merges),
                   set(vocab), set(new_chars) | set(first), exclude)
    new_tokens: list[str] = []
    merges: list[tuple[str, str]] = []
    exhausted = False
    if want > 0:
        seg_counts, back = _segments(units, _Segmenter(family, model, set(new_chars)))
        ask = int(want * 1.03) + 64  # a few learned merges fail the filter; asking for far more costs training time
        while True:
            learned = _train_merges(seg_counts, len(back) + ask, min_frequency)
            exhausted = len(learned) < ask
            new_tokens, merges = keep(learned, back, want)
            if len(new_tokens) >= want or exhausted:
                break
            # more merges failed the filter than expected: ask again, scaled by the share that passed
            ask = int(ask * min(4.0, 1.1 * want / max(1, len(new_tokens)))) + 256
    return Extension(family.name, new_chars, first + new_tokens, first_merges + merges, keep.to_existing,
                     exhausted and len(new_tokens) < want, merges_to_base_dropped=keep.to_base,
                     syllable_tokens=len(first))


def _syllables_first(units: Counter, base_json: dict[str, Any], family: Family, model: Any, budget: int,
                     new_chars: list[str], exclude: frozenset[str], min_frequency: int, others: list[int]
                     ) -> tuple[list[str], list[tuple[str, str]], Any]:
    """The merges that make whole syllables (:mod:`kolm.vocab.syllables`), as many as save more than the
    multi-syllable merges they would displace (``others``: what those save, largest first), their new tokens, and
    the model that segments units for the learner after them: the base merges plus these, alone (as
    :meth:`Family.segmenting_model`)."""
    from kolm.vocab.families import merges_only
    from kolm.vocab.syllables import learn_cell_merges, syllable_cells, worth_keeping

    vocab = base_json["model"]["vocab"]
    taken = set(new_chars) | exclude

    def allowed(token: str) -> bool:
        return token not in vocab and token not in taken and family.forces_hangul(token)

    steps = learn_cell_merges(syllable_cells(units, family, model), allowed, budget, min_frequency)
    merges = [pair for pair, _ in steps[:worth_keeping([saved for _, saved in steps], others, budget)]]
    tokens = list(dict.fromkeys(a + b for a, b in merges))
    if merges:
        ext = Extension(family.name, new_chars, tokens, merges, 0, False)
        model = merges_only(build_tokenizer_json(base_json, ext)).model
    return tokens, merges, model


class _Filter:
    """Which learned merges are kept, in order: both parts exist and can be made by merges, the pair is not a
    base merge, the result is not excluded, forces Hangul and is not a base token.

    "Can be made by merges": a base token that the segmenting model (the base merges alone) does not produce
    from its own string exists only through ignore_merges' whole-pre-token lookup (Llama-3's `` 스타``); a new
    token built on it would be made by that lookup alone, never inside a longer pre-token.

    "Not a base token": a merge whose result is a base token (Llama-3's ``데이`` + ``트`` -> ``데이트``, a base
    token that only the lookup makes) would make the extended tokenizer emit that base id where the base emits
    other pieces, so expanding extended ids into base ids (:func:`kolm.artifacts.extension.expand`) would no longer
    give the base tokenization. Such merges are dropped (counted in ``to_base``); so is everything the trainer built
    on their result, unless the base merges make it. A merge whose result is an earlier *new* token (the same
    string by another split) is kept (counted in ``to_existing``): it still covers whole base pieces.
    """

    def __init__(self, family: Family, model: Any, base_merges: set, base_vocab: set[str], new: set[str],
                 exclude: frozenset[str]):
        self.family, self.model, self.base_merges = family, model, base_merges
        self.base_vocab, self.new, self.exclude = base_vocab, new, exclude
        self.by_merges: dict[str, bool] = {}  # base token -> its merges make it (cached across rounds)
        self.to_existing = self.to_base = 0

    def _made_by_merges(self, token: str, made: set[str]) -> bool:
        if not self.family.ignore_merges or token in made or token in self.new:
            return True
        got = self.by_merges.get(token)
        if got is None:
            got = self.by_merges[token] = [t.value for t in self.model.tokenize(token)] == [token]
        return got

    def __call__(self, learned: list[tuple[str, str]], back: dict[str, str], want: int
                 ) -> tuple[list[str], list[tuple[str, str]]]:
        """(new tokens, kept merges) from the learned merges; sets ``to_existing`` and ``to_base``."""
        have, made = self.base_vocab | self.new, set()
        new_tokens: list[str] = []
        merges: list[tuple[str, str]] = []
        self.to_existing = self.to_base = 0
        for pa, pb in learned:
            if len(new_tokens) >= want:
                break
            a = "".join(back[c] for c in pa)
            b = "".join(back[c] for c in pb)
            r = a + b
            if a not in have or b not in have or (a, b) in self.base_merges or r in self.exclude:
                continue
            if not self.family.forces_hangul(r) or not (self._made_by_merges(a, made)
                                                         and self._made_by_merges(b, made)):
                continue
            if r in self.base_vocab:
                self.to_base += 1
                continue
            merges.append((a, b))
            made.add(r)
            if r in have:
                self.to_existing += 1
                continue
            have.add(r)
            new_tokens.append(r)
        return new_tokens, merges


def _segments(units: Counter, segmenter: _Segmenter) -> tuple[Counter, dict[str, str]]:
    """Training segments with their counts, each base piece renamed to one private-use character (in order of
    first appearance), and the map back from those characters to the pieces."""
    sym: dict[str, str] = {}
    seg_counts: Counter = Counter()
    for (unit, bounds), c in units.items():
        for seg in segmenter(unit, frozenset(bounds) if bounds else frozenset()):
            key = "".join(sym.setdefault(t, _pua(len(sym))) for t in seg)
            seg_counts[key] += c
    return seg_counts, {v: k for k, v in sym.items()}


def _train_merges(seg_counts: Counter, vocab_size: int, min_frequency: int) -> list[tuple[str, str]]:
    """The merges the Rust BpeTrainer learns on the segments (each fed as often as it occurs)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False)
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    learner.train_from_iterator(_repeated(seg_counts), trainer)
    return merge_pairs(json.loads(learner.to_str())["model"]["merges"])


def _repeated(seg_counts: Counter, most_chars: int = 4096) -> Iterator[str]:
    """Each segment as often as it was counted, in strings of at most ``most_chars`` characters (the trainer
    buffers a few hundred of them: memory stays small however large the counts are)."""
    for k, c in seg_counts.items():
        copies = max(1, most_chars // (len(k) + 1))
        while c > 0:
            m = min(c, copies)
            yield (k + " ") * m
            c -= m


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


def extend_tokenizer(base_json: dict[str, Any], units: Counter, n: int, *, min_frequency: int = 2,
                     max_char_share: float = 0.25, allow_fewer: bool = False, base: Any = None,
                     family: Family | None = None, mode: str = "bpe") -> tuple[dict[str, Any], Any, Extension]:
    """Learn from ``units`` and build the extended tokenizer (its JSON and `tokenizers.Tokenizer`); prune
    unreachable tokens (with everything learned on top of them) and learn again without them.

    ``base`` is the base `tokenizers.Tokenizer` when the caller has it already (else built from ``base_json``).
    """
    from tokenizers import Tokenizer

    base = base or Tokenizer.from_str(json.dumps(base_json))
    family = family or detect(base_json)
    exclude: set[str] = set()
    pruned = 0
    for _ in range(10):
        ext = learn(units, base_json, base, family, n, min_frequency=min_frequency, max_char_share=max_char_share,
                    exclude=frozenset(exclude), mode=mode)
        out = build_tokenizer_json(base_json, ext)
        new_tok = Tokenizer.from_str(json.dumps(out))
        bad = family.unreachable(new_tok, ext.new_chars + ext.new_tokens, out)
        if not any(bad.values()):
            break
        worst = set().union(*bad.values())
        exclude.update(worst)
        pruned += len(worst)
    else:
        raise KolmError("could not remove all unreachable tokens in 10 rounds (please report this as a bug)")
    ext.pruned_unreachable, ext.unreachable_left = pruned, bad
    added = len(ext.new_chars) + len(ext.new_tokens)
    if added < n and not allow_fewer:
        raise KolmError(f"the corpus supports only {added} new tokens at min_frequency={min_frequency} "
                        f"(asked for {n}): give more Korean text, lower --num-new-tokens, or pass --allow-fewer")
    return out, new_tok, ext
