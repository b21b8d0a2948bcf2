"""kolm.vocab.families: one class per tokenizer family, detected from tokenizer.json.

Detection and refusals, the SentencePiece dummy prefix (Gemma has none), the byte-level regex shortcut against the
tokenizer's own pre-tokenizer, and a Gemma-style tokenizer extended end to end.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import read_lines, real_tokenizer
from test_vocab_extend import MIXED, fuzz_lines

from kolm.cli import main
from kolm.errors import KolmError
from kolm.vocab.families import Family, by_name, detect, families
from kolm.vocab.families.byte_level import ByteLevelFamily, fast_split
from kolm.vocab.families.sentencepiece import SentencePieceFamily, dummy_prefix


def _json(name: str) -> dict:
    return json.loads((real_tokenizer(name) / "tokenizer.json").read_text())


def _units(family: Family, docs: list[str], morph: bool = False) -> Counter:
    c = family.counter(morph)
    c.add(docs, [[] for _ in docs] if morph else None)
    return c.units()


def test_registry_finds_both_families():
    names = {cls.name for cls in families()}
    assert {"sentencepiece", "byte_level"} <= names
    assert by_name("byte_level") is ByteLevelFamily and by_name("sentencepiece") is SentencePieceFamily
    with pytest.raises(KolmError, match="unknown tokenizer family"):
        by_name("wordpiece")


@pytest.mark.parametrize("name,family,prefix", [("llama2", "sentencepiece", True), ("mistral", "sentencepiece", True),
                                                ("llama3", "byte_level", None)])
def test_real_tokenizers_are_detected(name, family, prefix):
    f = detect(_json(name))
    assert f.name == family
    if prefix is not None:
        assert f.dummy_prefix is prefix


def _sp_json(normalizer=None, pre_tokenizer=None, byte_fallback=True) -> dict:
    return {"normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
            "model": {"type": "BPE", "vocab": {}, "merges": [], "byte_fallback": byte_fallback}}


METASPACE = {"type": "Metaspace", "replacement": "▁", "split": False}


@pytest.mark.parametrize("normalizer,pre,want", [
    ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                          {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}, None,
     True),  # Llama-2 / Mistral as converted by transformers
    ({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, None, False),  # Gemma
    (None, {**METASPACE, "prepend_scheme": "first"}, True),
    (None, {**METASPACE, "prepend_scheme": "always"}, True),
    (None, {**METASPACE, "prepend_scheme": "never"}, False),
    (None, {**METASPACE, "add_prefix_space": True}, True),  # older tokenizers.json
    (None, {**METASPACE, "add_prefix_space": False}, False),
])
def test_dummy_prefix_is_read_from_tokenizer_json(normalizer, pre, want):
    tj = _sp_json(normalizer, pre)
    assert dummy_prefix(tj) is want
    fam = detect(tj)
    assert isinstance(fam, SentencePieceFamily) and fam.dummy_prefix is want


def test_sentencepiece_units_follow_the_dummy_prefix():
    docs = ["한국어 문장 English 한국어", " 앞에 공백", "문장"]
    with_prefix = _units(SentencePieceFamily(_sp_json({"type": "Prepend", "prepend": "▁"})), docs)
    assert with_prefix == Counter({("▁한국어", ()): 2, ("▁문장", ()): 2, ("▁앞에", ()): 1, ("▁공백", ()): 1})
    gemma = SentencePieceFamily(_sp_json({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}))
    without = _units(gemma, docs)
    assert without == Counter({("한국어", ()): 1, ("▁한국어", ()): 1, ("▁문장", ()): 1, ("문장", ()): 1,
                               ("▁앞에", ()): 1, ("▁공백", ()): 1})
    # the per-document path (used with morpheme boundaries) cuts the same units
    assert _units(gemma, docs, morph=True) == without
    assert _units(SentencePieceFamily(_sp_json({"type": "Prepend", "prepend": "▁"})), docs, morph=True) == with_prefix


def test_refusals_name_the_file():
    with pytest.raises(KolmError, match="x.json: SentencePiece-style BPE without byte_fallback"):
        detect(_sp_json({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, byte_fallback=False),
               where="x.json")
    with pytest.raises(KolmError, match="model type 'Unigram'"):
        detect({"model": {"type": "Unigram"}})
    with pytest.raises(KolmError, match="no kolm family recognises"):
        detect({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}})
    with pytest.raises(KolmError, match="continuing_subword_prefix"):
        detect({"model": {"type": "BPE", "continuing_subword_prefix": "##"}})


# ------------------------------------------------------------------------------------------------ byte level


def _bl_lines() -> list[str]:
    return (read_lines("ko_dev.txt", 600) + read_lines("en_dev.txt", 300) + MIXED + fuzz_lines(500, seed=3)
            + ["한국어\n\n다음 줄", "  한국어  ", "한국어's 123한국어 ㅋㅋ!!", "\t한글\r\n", "😀한글😀", ""])


def test_llama3_regex_shortcut_matches_its_pre_tokenizer():
    fam = detect(_json("llama3"))
    assert isinstance(fam, ByteLevelFamily) and fam.fast is not None
    lines = _bl_lines()
    assert fam.check_units(lines) == (len(lines), 0)
    # and the span path (morpheme-aware) cuts the same units as the tokenizer's own pre-tokenizer
    exact = ByteLevelFamily({**_json("llama3"), "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        *_json("llama3")["pre_tokenizer"]["pretokenizers"], {"type": "Sequence", "pretokenizers": []}]}})
    assert exact.fast is None and exact.check_units(lines) is None
    assert _units(fam, lines) == _units(exact, lines) == _units(fam, lines, morph=True)


@pytest.mark.parametrize("add_prefix_space", [False, True])
def test_gpt2_bytelevel_regex_shortcut(add_prefix_space):
    tj = {"model": {"type": "BPE", "vocab": {}, "merges": []},
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True,
                            "use_regex": True}}
    fam = detect(tj)
    assert isinstance(fam, ByteLevelFamily) and fast_split(tj["pre_tokenizer"])[1] is add_prefix_space
    lines = _bl_lines()
    assert fam.check_units(lines) == (len(lines), 0)
    assert fam._pre_tokenizer().pre_tokenize_str("한국")[0][0].startswith("Ġ") is add_prefix_space
    units = _units(fam, lines)
    assert units == _units(fam, lines, morph=True)
    assert any(u.startswith("Ġ") for u, _ in units)


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


@pytest.mark.parametrize("pre", [
    {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Removed",
                                            "invert": False}, {**BYTE_LEVEL, "use_regex": False}]},
    {**BYTE_LEVEL, "use_regex": False},
])
def test_other_byte_level_shapes_use_the_pre_tokenizer_itself(pre):
    fam = detect({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": pre})
    assert fam.fast is None
    units = _units(fam, ["한국어 문장", "한국어"])
    assert units and all(len(k[0]) > 0 for k in units)


def test_families_pickle_without_their_caches():
    import pickle

    fam = detect(_json("llama3"))
    _units(fam, ["한국어 문장"])
    assert fam._cache
    again = pickle.loads(pickle.dumps(fam))
    assert again._cache == {} and _units(again, ["한국어 문장"]) == _units(fam, ["한국어 문장"])


# ------------------------------------------------------------------------------------------------ Gemma


def make_gemma_style_tokenizer(texts: list[str], out: Path, vocab_size: int = 800) -> Path:
    """A tiny Gemma-style SentencePiece BPE: byte fallback, spaces as `▁`, and NO dummy prefix (the normalizer only
    replaces spaces, the decoder strips nothing), as in google/gemma's tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # trained on `▁word` pieces (no piece spans a space), then used as Gemma is: no pre-tokenizer at all
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", *(f"<0x{i:02X}>" for i in range(256))]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       show_progress=False))
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
        "pad_token": "<pad>", "add_bos_token": True}))
    return out


def test_gemma_style_extension_learns_first_words_without_a_space(tmp_path):
    from tokenizers import Tokenizer

    base = make_gemma_style_tokenizer(read_lines("en_dev.txt", 2000), tmp_path / "gemma")
    ko = tmp_path / "ko.txt"
    # many documents start with the same words: only a tokenizer without a dummy prefix sees them without `▁`
    ko.write_text("\n".join(read_lines("ko_dev.txt") + [f"그러나 {x}" for x in read_lines("ko_dev.txt", 800)]) + "\n")
    out = tmp_path / "ext"
    assert main(["vocab", "extend", "--base", str(base), "--corpus", str(ko), "--num-new-tokens", "1500",
                 "--output", str(out)]) == 0
    info = json.loads((out / "extension.json").read_text())
    assert info["family"] == "sentencepiece" and info["checks"]["unreachable_tokens"] == 0
    tokens = {a["token"]: a["id"] for a in info["added"]}
    assert "그러나" in tokens and "▁그러나" in tokens
    tok, b = Tokenizer.from_file(str(out / "tokenizer.json")), Tokenizer.from_file(str(base / "tokenizer.json"))
    assert tok.encode("그러나 한국어", add_special_tokens=False).tokens[0] == "그러나"
    assert tok.encode("이것 그러나", add_special_tokens=False).tokens[-1] == "▁그러나"
    # every `▁`-token is produced from its text with the space; the others from their text alone
    for t, i in tokens.items():
        assert tok.encode(t.replace("▁", " "), add_special_tokens=False).ids == [i], t
    # the invariants of the real families hold here too
    en = read_lines("en_dev.txt")[-500:] + MIXED + fuzz_lines(300, seed=5)
    assert [e.ids for e in tok.encode_batch(en)] == [e.ids for e in b.encode_batch(en)]
    for x in read_lines("ko_dev.txt", 100) + ["  앞뒤 공백  ", "😀한글", ""]:
        assert tok.decode(tok.encode(x, add_special_tokens=False).ids, skip_special_tokens=False) == x
