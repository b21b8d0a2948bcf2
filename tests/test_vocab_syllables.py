"""`kolm vocab extend --mode syllables`: whole Hangul syllables first, then merges (kolm/vocab/syllables.py).

The guarantees of every extension (ids kept, non-Hangul identity, reachability, round trips, transformers,
tokenizer.model) are checked on this mode by the `extended` fixture of test_vocab_extend.py (its `-syllables`
params); here: the syllable cells, the confined BPE, the budget, and the compression it buys at small sizes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import make_bytelevel_tokenizer, read_lines, real_tokenizer
from tokenizers import Tokenizer

from kolm.cli import main
from kolm.vocab.chars import bl_to_bytes, forces_hangul, is_hangul
from kolm.vocab.families import detect
from kolm.vocab.families.byte_level import to_byte_level
from kolm.vocab.learn import merge_pairs
from kolm.vocab.report import measure
from kolm.vocab.syllables import learn_cell_merges, pair_counts, syllable_cells, worth_keeping


@pytest.fixture(scope="module")
def tiny_bl(tmp_path_factory):
    """A byte-level BPE that knows no Hangul (trained on English): every syllable is 3 byte pieces."""
    return make_bytelevel_tokenizer(read_lines("en_dev.txt", 3000), tmp_path_factory.mktemp("bl") / "base", 800)


def heldout_split(folder: Path) -> tuple[Path, list[str]]:
    """(a corpus file of 9 of every 10 lines of ko_dev.txt, the other lines): learn on one, measure on the other."""
    ko = read_lines("ko_dev.txt")
    corpus = folder / "ko_train.txt"
    corpus.write_text("\n".join(x for i, x in enumerate(ko) if i % 10) + "\n", encoding="utf-8")
    return corpus, [x for i, x in enumerate(ko) if i % 10 == 0]


def _units(texts: dict[str, int]) -> Counter:
    return Counter({(to_byte_level(t), ()): c for t, c in texts.items()})


def test_cells_hold_one_syllable_each(tiny_bl):
    tj = json.loads((tiny_bl / "tokenizer.json").read_text())
    fam, tok = detect(tj), Tokenizer.from_file(str(tiny_bl / "tokenizer.json"))
    cells = syllable_cells(_units({" 한국어": 3, "(한": 2, "abc": 5}), fam, fam.segmenting_model(tok))
    texts = Counter()
    for cell, c in cells.items():
        text = b"".join(bl_to_bytes(p) for p in cell).decode("utf-8")
        assert sum(map(is_hangul, text)) == 1 and len(cell) > 1
        texts[text] += c
    # the leading space is glued to its syllable only where a base piece holds both; "(" is its own piece here
    lead = [t for t in texts if "한" in t]
    assert sum(texts[t] for t in lead) == 5 and texts["국"] == 3 and texts["어"] == 3
    assert not any("abc" in t for t in texts)


def test_confined_bpe_shares_intermediates_and_keeps_to_the_rules():
    """Syllables of one 64-code-point block share a two-byte intermediate, learned first; two continuation bytes
    (they do not force Hangul) and base tokens are never merge results; the budget counts intermediates."""
    b = {ch: to_byte_level(ch) for ch in "한할함"}
    cells = Counter({tuple(b[ch]): c for ch, c in (("한", 10), ("할", 6), ("함", 4))})
    base = {to_byte_level("할")}  # pretend the base has this syllable as a token its merges do not make

    def allowed(t: str) -> bool:
        return forces_hangul(bl_to_bytes(t)) and t not in base

    def made(steps: list) -> list[str]:
        return [a + c for (a, c), _ in steps]

    steps = learn_cell_merges(cells, allowed, budget=10, min_frequency=1)
    lead = to_byte_level("한")[:2]
    assert steps[0] == ((lead[0], lead[1]), 20)  # shared by all three: saves 20 tokens
    assert made(steps) == [lead, b["한"], b["함"]]  # 할 is a base token: not made by a new merge
    assert [saved for _, saved in steps] == [20, 10, 4]
    assert all(forces_hangul(bl_to_bytes(t)) for t in made(steps))
    assert made(learn_cell_merges(cells, allowed, budget=2, min_frequency=1)) == [lead, b["한"]]
    assert made(learn_cell_merges(cells, allowed, budget=10, min_frequency=5)) == [lead, b["한"]]
    # the order of the cells does not matter
    rev = Counter(dict(reversed(list(cells.items()))))
    assert learn_cell_merges(rev, allowed, budget=10, min_frequency=1) == steps


def test_syllable_steps_are_kept_while_they_save_more_than_the_merges_they_displace():
    assert worth_keeping([20, 10, 4], [15, 5, 1], 3) == 2  # 20, 15, 10: the third slot goes to a merge
    assert worth_keeping([20, 10, 4], [15, 5, 1], 4) == 2  # then 5 > 4
    assert worth_keeping([20, 10, 4], [], 2) == 2
    assert worth_keeping([], [3], 2) == 0
    assert worth_keeping([5, 5], [5], 3) == 2  # a tie goes to the syllable
    units = Counter({("▁한국어", ()): 3, ("▁한", ()): 2, ("abc", ()): 9})
    fam = detect(json.loads((real_tokenizer("llama2") / "tokenizer.json").read_text()))
    assert pair_counts(units, fam) == [5, 3, 3]  # ▁한, 한국, 국어


def test_syllables_mode_learns_syllables_before_merges(tiny_bl, tmp_path):
    corpus, held = heldout_split(tmp_path)
    out = {}
    for mode in ("bpe", "syllables"):
        out[mode] = tmp_path / mode
        assert main(["vocab", "extend", "--base", str(tiny_bl), "--corpus", str(corpus), "--num-new-tokens", "600",
                     "--mode", mode, "--output", str(out[mode])]) == 0
    info = json.loads((out["syllables"] / "extension.json").read_text())
    first = info["num_syllable_tokens"]
    assert info["mode"] == "syllables" and 100 < first < 600
    tj = json.loads((out["syllables"] / "tokenizer.json").read_text())
    base_merges = len(json.loads((tiny_bl / "tokenizer.json").read_text())["model"]["merges"])
    new = merge_pairs(tj["model"]["merges"])[base_merges:]

    def syllables(a: str, b: str) -> int:
        return sum(map(is_hangul, bl_to_bytes(a + b).decode("utf-8", errors="ignore")))

    assert all(syllables(a, b) <= 1 for a, b in new[:first])  # the syllable merges come first, each in one syllable
    assert any(syllables(a, b) > 1 for a, b in new[first:])  # then multi-syllable ones
    assert info["checks"]["expansion_lines_differing"] == 0 and info["checks"]["expansion_lines_checked"] > 0
    got = {m: measure(Tokenizer.from_file(str(f / "tokenizer.json")), held) for m, f in out.items()}
    whole = {m: 1 - g["ko_split_char_share"] for m, g in got.items()}
    assert whole["syllables"] > whole["bpe"] + 0.1, whole
    assert got["syllables"]["bytes_per_token"] > got["bpe"]["bytes_per_token"], got


@pytest.mark.slow
@pytest.mark.realmodel
def test_smollm2_syllables_first_compresses_held_out_korean_more(smollm2, tmp_path, capsys):
    """Measured in docs/vocab.md: at +2,000 SmolLM2's held-out Korean goes from 1.20 to 3.39 bytes per token with
    merges only and to 4.46 with syllables first (97.5% of syllable occurrences whole)."""
    corpus, held = heldout_split(tmp_path)
    bpt = {}
    for mode in ("bpe", "syllables"):
        assert main(["vocab", "extend", "--base", str(smollm2), "--corpus", str(corpus), "--num-new-tokens", "2000",
                     "--min-frequency", "1", "--mode", mode, "--output", str(tmp_path / mode)]) == 0
        bpt[mode] = measure(Tokenizer.from_file(str(tmp_path / mode / "tokenizer.json")), held)["bytes_per_token"]
    line = capsys.readouterr().out
    assert "mode syllables" in line and "bytes/token 1.2" in line
    assert bpt["syllables"] > 1.15 * bpt["bpe"], bpt


def test_mode_is_validated(capsys):
    args = ["vocab", "extend", "--base", "b", "--corpus", "x.txt", "--num-new-tokens", "7", "--output", "o"]
    with pytest.raises(SystemExit):
        main([*args, "--mode", "words"])
    assert "invalid choice: 'words'" in capsys.readouterr().err
    assert main([*args, "mode=words"]) == 2
    assert "'words' is not one of ['bpe', 'syllables']" in capsys.readouterr().err
    assert main([*args, "--mode", "syllables", "--dry-run"]) == 0
    assert "mode: syllables" in capsys.readouterr().out


@pytest.mark.slow
def test_sentencepiece_syllables_mode_adds_new_characters_by_what_they_save(tmp_path):
    """Llama-2 lacks many syllables (byte fallback): in this mode they come first, by frequency, as many as save more
    than the merges they displace, beyond the max_char_share cap that mode bpe keeps; then merges. The
    tokenizer.model kolm writes agrees with tokenizer.json."""
    base = real_tokenizer("llama2")
    corpus = base.parents[1] / "corpora" / "ko_dev.txt"
    infos = {}
    for mode in ("bpe", "syllables"):
        assert main(["vocab", "extend", "--base", str(base), "--corpus", str(corpus), "--num-new-tokens", "400",
                     "--mode", mode, "--output", str(tmp_path / mode)]) == 0
        infos[mode] = json.loads((tmp_path / mode / "extension.json").read_text())
    assert infos["bpe"]["num_new_chars"] == 100  # 0.25 of 400
    syl = infos["syllables"]
    assert syl["num_new_chars"] > 100
    chars = [a for a in syl["added"] if a["kind"] == "char"]
    assert [a["id"] for a in chars] == sorted(a["id"] for a in chars) and chars[0]["id"] == syl["added"][0]["id"]
    assert syl["tokenizer_model"]["written"] and syl["tokenizer_model"]["check"]["differences"] == 0
