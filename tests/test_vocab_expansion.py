"""Extended ids expand exactly into base ids (kolm/artifacts/extension.py `expand`, kolm/vocab/expansion.py).

A CPT teacher that knows only the base vocabulary is fed the student's text through `expand`: that must be the
base tokenization of the same text, id for id. Proven here on every tokenizer family in ../shared and on SmolLM2's
tokenizer, in both modes, on held-out Korean (ko_dev.txt lines not learned from), English, mixed and fuzzed lines.
The one exception the learner used to make (a merge whose result is a base token, Llama-3's `데이` + `트`) is
dropped by the learner and caught by the check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_lines, real_tokenizer
from test_vocab_extend import MIXED, fuzz_lines
from test_vocab_syllables import heldout_split
from tokenizers import Tokenizer

from kolm.artifacts.extension import AddedToken, TokenizerExtension, expand
from kolm.cli import main
from kolm.vocab.expansion import ExpansionCheck
from kolm.vocab.families import detect
from kolm.vocab.families.byte_level import to_byte_level
from kolm.vocab.learn import merge_pairs


def test_expand_maps_added_ids_to_their_base_pieces(tmp_path):
    ext = TokenizerExtension(added=[AddedToken(10, "ab", "ab", "merge", [1, 2]),
                                    AddedToken(11, "abc", "abc", "merge", [1, 2, 3]),
                                    AddedToken(12, "한", "한", "char", [7, 8, 9])], base_vocab_size=10)
    ext.write(tmp_path)
    table = TokenizerExtension.read(tmp_path).expansion_table()
    assert table == {10: [1, 2], 11: [1, 2, 3], 12: [7, 8, 9]}
    base, pieces = expand([4, 11, 10, 5, 12], table)
    assert base == [4, 1, 2, 3, 1, 2, 5, 7, 8, 9] and pieces == [1, 3, 2, 1, 3]
    assert expand([], table) == ([], [])
    table[10].append(99)  # a copy: the record is not changed through it
    assert ext.expansion_table()[10] == [1, 2]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """(training corpus file: 9 of every 10 lines of ko_dev.txt, the held-out lines + English, mixed and fuzzed)."""
    corpus, held = heldout_split(tmp_path_factory.mktemp("split"))
    en = read_lines("en_dev.txt", 1500)
    mixed = [f"{a} {b}" for a, b in zip(held[:200], en[-200:], strict=False)] + [f"{b} ({a[:40]})" for a, b in zip(
        held[200:], en[:100], strict=False)]
    return corpus, held + en + mixed + MIXED + fuzz_lines(500, seed=7)


def assert_exact(base: Path, ext: Path, lines: list[str]) -> None:
    """expand(extended ids) == base ids on every line; the message names the lines and the ids that differ."""
    b, e = Tokenizer.from_file(str(base / "tokenizer.json")), Tokenizer.from_file(str(ext / "tokenizer.json"))
    record = TokenizerExtension.read(ext)
    table = record.expansion_table()
    family = detect(json.loads((ext / "tokenizer.json").read_text()))
    check = ExpansionCheck(table, lambda i: len(family.token_bytes(e.id_to_token(i))), record.base_vocab_size)
    got = [x.ids for x in e.encode_batch(lines, add_special_tokens=False)]
    want = [x.ids for x in b.encode_batch(lines, add_special_tokens=False)]
    bad = []
    for line, g, w in zip(lines, got, want, strict=True):
        check.add(g, w)
        if expand(g, table)[0] != w:
            bad.append((line[:60], [(i, e.id_to_token(i)) for i in check.culprits_of(g, w)][:3]))
    assert not bad, f"{len(bad)}/{len(lines)} lines expand to other base ids, e.g. {bad[:3]}; {check.result()}"
    checks = record.checks
    assert checks["expansion_lines_checked"] > 1000 and checks["expansion_lines_differing"] == 0
    assert record.details["merges_to_existing_tokens"] >= 0  # recorded


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bpe", "syllables"])
@pytest.mark.parametrize("name", ["llama2", "mistral", "llama3"])
def test_expansion_is_the_base_tokenization_on_held_out_text(name, mode, split, tmp_path):
    corpus, lines = split
    base = real_tokenizer(name)
    assert main(["vocab", "extend", "--base", str(base), "--corpus", str(corpus), "--num-new-tokens", "2000",
                 "--mode", mode, "--output", str(tmp_path / "ext")]) == 0
    assert_exact(base, tmp_path / "ext", lines)


@pytest.mark.slow
@pytest.mark.realmodel
@pytest.mark.parametrize("mode", ["bpe", "syllables"])
def test_smollm2_expansion_is_the_base_tokenization_on_held_out_text(smollm2, mode, split, tmp_path):
    corpus, lines = split
    assert main(["vocab", "extend", "--base", str(smollm2), "--corpus", str(corpus), "--num-new-tokens", "2000",
                 "--mode", mode, "--output", str(tmp_path / "ext")]) == 0
    assert_exact(Path(smollm2), tmp_path / "ext", lines)


@pytest.fixture(scope="module")
def llama3_with_merge_to_base():
    """Llama-3 extended as the learner used to do it: a new token ``데이`` (from its base pieces), then a merge whose
    result is a base token that only Llama-3's whole-pre-token lookup makes: ``데이`` + ``트`` -> ``데이트``.
    Returns (base, extended, expansion table, the id of ``데이트``)."""
    from kolm.vocab.families import merges_only
    from kolm.vocab.learn import Extension, build_tokenizer_json

    bj = json.loads((real_tokenizer("llama3") / "tokenizer.json").read_text())
    day, t = to_byte_level("데이"), to_byte_level("트")
    assert day not in bj["model"]["vocab"] and day + t in bj["model"]["vocab"]
    pieces = [x.value for x in merges_only(bj).model.tokenize(day)]
    assert len(pieces) == 2
    ej = build_tokenizer_json(bj, Extension("byte_level", [], [day], [tuple(pieces), (day, t)], 0, False))
    base = Tokenizer.from_str(json.dumps(bj))
    table = {ej["model"]["vocab"][day]: [x.id for x in base.model.tokenize(day)]}
    return base, Tokenizer.from_str(json.dumps(ej)), table, bj["model"]["vocab"][day + t]


def test_the_check_names_a_merge_to_a_base_token(llama3_with_merge_to_base):
    """The extended tokenizer emits the base id of ``데이트`` inside ``업데이트는`` where the base emits three other
    pieces: the check counts the line and names that base id (the new ``데이`` expands exactly)."""
    from kolm.vocab.extend import check_invariants

    base, ext, table, culprit = llama3_with_merge_to_base
    family = detect(json.loads(base.to_str()))
    check = ExpansionCheck(table, lambda i: len(family.token_bytes(ext.id_to_token(i))),
                           base.get_vocab_size(with_added_tokens=True))
    lines = ["업데이트는 내일 합니다", "데이트", "English only", "데이트를", "데이터"]
    checks, _ = check_invariants(base, ext, {}, lines, expansion=check)
    assert checks["expansion_lines_checked"] == 5 and checks["expansion_lines_differing"] == 2
    assert checks["expansion_differing_base_ids"] == {str(culprit): 2}
    assert checks["expansion_differing_added_ids"] == {} and checks["expansion_differing_ids"] == 1


@pytest.mark.slow
def test_the_learner_drops_merges_to_base_tokens(tmp_path, split):
    """On Llama-3 the trainer learns two merges whose result is a base token (``데이트``, ``되었습니다``); kolm drops
    them (docs/vocab.md: they were worth 0.1% of held-out compression) and says so in extension.json."""
    corpus, _ = split
    base = real_tokenizer("llama3")
    assert main(["vocab", "extend", "--base", str(base), "--corpus", str(corpus), "--num-new-tokens", "1000",
                 "--min-frequency", "1", "--output", str(tmp_path / "ext")]) == 0
    info = json.loads((tmp_path / "ext" / "extension.json").read_text())
    assert info["merges_to_base_tokens_dropped"] == 2
    bj, ej = (json.loads((f / "tokenizer.json").read_text()) for f in (base, tmp_path / "ext"))
    new = merge_pairs(ej["model"]["merges"])[len(bj["model"]["merges"]):]
    assert not [a + b for a, b in new if a + b in bj["model"]["vocab"]]
