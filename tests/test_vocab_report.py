"""kolm vocab report / kolm.vocab.report.measure: figures checked by hand, Korean split, CLI, real tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kolm.cli import main
from kolm.config import ConfigError
from kolm.vocab import report
from kolm.vocab.report import ReportConfig, load_tokenizer, measure, measure_many
from tests.helpers import (
    REAL_TOKENIZERS,
    make_bytelevel_tokenizer,
    make_sp_tokenizer,
    read_lines,
    real_tokenizer,
)

TEXT = "한국어를 배웠다 hello world"
MERGES = [("한", "국"), ("한국", "어"), ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o")]


def _tiny(folder: Path) -> Path:
    """BPE with a few merges, split at whitespace: TEXT -> 한국어|를 배|웠|다 hello w|o|r|l|d (11 tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(set(TEXT.replace(" ", ""))))}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture
def tiny(tmp_path):
    return _tiny(tmp_path / "tiny")


def test_tiny_tokenizer_tokens(tiny):
    enc = load_tokenizer(tiny).encode(TEXT, add_special_tokens=False)
    assert enc.tokens == ["한국어", "를", "배", "웠", "다", "hello", "w", "o", "r", "l", "d"]


def test_figures_by_hand(tiny):
    pytest.importorskip("kiwipiepy")
    m = measure(load_tokenizer(tiny), [TEXT])
    # 20 characters (3 spaces), 34 UTF-8 bytes (7 syllables x 3 + 13 ASCII), 4 words, 11 tokens
    assert (m["docs"], m["chars"], m["bytes"], m["words"], m["tokens"]) == (1, 20, 34, 4, 11)
    assert m["chars_per_token"] == 20 / 11
    assert m["tokens_per_word"] == 11 / 4
    assert m["bytes_per_token"] == 34 / 11
    # Korean words 한국어를, 배웠다: 7 chars, 21 bytes, 5 tokens
    assert (m["ko_words"], m["ko_chars"], m["ko_bytes"], m["ko_tokens"]) == (2, 7, 21, 5)
    assert m["ko_chars_per_token"] == 7 / 5
    assert m["ko_tokens_per_word"] == 5 / 2
    assert m["ko_bytes_per_token"] == 21 / 5
    # other words hello, world: 10 chars, 6 tokens
    assert (m["other_words"], m["other_chars"], m["other_tokens"]) == (2, 10, 6)
    assert m["other_chars_per_token"] == 10 / 6
    assert m["other_tokens_per_word"] == 3.0
    # kiwi: 한국어|를, 배우+었 share 웠, 다 -> morpheme boundaries inside Hangul {3, 7};
    # token boundaries inside Hangul {3 (한국어|를), 6 (배|웠), 7 (웠|다)} -> 2 of 3 aligned, both morphemes hit
    assert (m["morph_bounds"], m["token_bounds"], m["aligned_bounds"]) == (2, 3, 2)
    assert m["morph_precision"] == 2 / 3
    assert m["morph_recall"] == 1.0
    assert m["ko_split_char_share"] == 0.0


def test_no_morphemes_skips_kiwi(tiny, monkeypatch):
    def boom(texts):
        raise AssertionError("kiwi must not run with morphemes=False")

    monkeypatch.setattr(report, "morpheme_boundaries", boom)
    m = measure(load_tokenizer(tiny), [TEXT], morphemes=False)
    assert m["morph_precision"] is None and m["morph_recall"] is None and m["token_bounds"] is None
    assert m["tokens"] == 11


def test_korean_split_by_whitespace_words(tiny):
    # "GIMP의" holds Hangul, so it is a Korean word with all of its characters; "x-y" is not.
    tok = load_tokenizer(tiny)
    m = measure(tok, ["GIMP의 x-y 한"], morphemes=False)
    assert (m["ko_words"], m["ko_chars"], m["other_words"], m["other_chars"]) == (2, 6, 1, 3)
    assert m["ko_tokens"] + m["other_tokens"] == m["tokens"]


def test_non_korean_only_text(tiny):
    m = measure(load_tokenizer(tiny), ["hello world"])
    assert m["ko_tokens"] == 0 and m["ko_chars_per_token"] is None
    assert m["other_chars_per_token"] == 10 / 6
    assert m["morph_precision"] is None  # no boundary inside Hangul at all


@pytest.mark.parametrize("make", [make_sp_tokenizer, make_bytelevel_tokenizer])
def test_leading_space_tokens_go_to_the_next_word(make, tmp_path):
    texts = read_lines("ko_dev.txt", limit=300) + read_lines("en_dev.txt", limit=300)
    tok = load_tokenizer(make(texts, tmp_path / "t", vocab_size=400))
    docs = texts[:50] + ["  앞에 공백", "뒤에 공백  ", "mixed 한국어 text"]
    m = measure(tok, docs, morphemes=False)
    assert m["ko_tokens"] + m["other_tokens"] == m["tokens"]
    assert m["tokens"] == sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
    # a document of Korean words only: every token, space markers included, is Korean
    only = measure(tok, ["한국어 문장 입니다"], morphemes=False)
    assert only["other_tokens"] == 0 and only["ko_tokens"] == only["tokens"]


def test_transformers_tokenizer_gives_same_figures(tiny):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(tiny / "tokenizer.json"))
    texts = [TEXT, "hello 한국어"]
    assert measure(hf, texts, morphemes=False) == measure(load_tokenizer(tiny), texts, morphemes=False)
    assert measure(str(tiny), texts, morphemes=False)["tokens"] == measure(hf, texts, morphemes=False)["tokens"]


def _write(tmp_path: Path) -> tuple[Path, Path]:
    ko = tmp_path / "ko.txt"
    ko.write_text("한국어를 배웠다 hello world\n\n나는 학교에 갔다.\n", encoding="utf-8")
    en = tmp_path / "en.jsonl"
    en.write_text(json.dumps({"body": "hello world"}) + "\n" + json.dumps({"body": "world"}) + "\n")
    return ko, en


def test_cli_json_rows(tiny, tmp_path, capsys):
    pytest.importorskip("kiwipiepy")
    other = _tiny(tmp_path / "other")
    ko, en = _write(tmp_path)
    rc = main(["vocab", "report", "--tokenizer", str(tiny), str(other), "--text", str(ko), str(en),
               "--text-field", "body", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert len(rows) == 4
    assert {(r["tokenizer_path"], r["file"]) for r in rows} == {(t, str(f)) for t in (str(tiny), str(other))
                                                               for f in (ko, en)}
    first = next(r for r in rows if r["file"] == str(ko) and r["tokenizer_path"] == str(tiny))
    assert first["docs"] == 2 and first["morph_precision"] is not None
    assert first["vocab_size"] == load_tokenizer(tiny).get_vocab_size()
    en_row = next(r for r in rows if r["file"] == str(en))
    assert en_row["docs"] == 2 and en_row["words"] == 3 and en_row["ko_tokens"] == 0


def test_cli_table(tiny, tmp_path, capsys):
    ko, _ = _write(tmp_path)
    assert main(["vocab", "report", "--tokenizer", str(tiny), "--text", str(ko), "--no-morphemes"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["tokenizer", "file", "vocab"]
    assert "tiny" in lines[2] and "ko.txt" in lines[2]
    assert len({len(x) for x in lines[:3]}) == 1  # fixed width


def test_cli_max_docs(tiny, tmp_path, capsys):
    ko, _ = _write(tmp_path)
    assert main(["vocab", "report", "--tokenizer", str(tiny), "--text", str(ko), "--max-docs", "1",
                 "--no-morphemes", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["docs"] == 1 and row["tokens"] == 11


def test_cli_repeated_flag(tiny, tmp_path, capsys):
    other = _tiny(tmp_path / "other")
    ko, _ = _write(tmp_path)
    assert main(["vocab", "report", "--tokenizer", str(tiny), "--tokenizer", str(other), "--text", str(ko),
                 "--no-morphemes", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 2


def test_cli_missing_file(tiny, tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert main(["vocab", "report", "--tokenizer", str(tiny), "--text", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "corpus file not found" in err and str(missing) in err


def test_cli_missing_tokenizer(tmp_path, capsys):
    ko, _ = _write(tmp_path)
    assert main(["vocab", "report", "--tokenizer", str(tmp_path / "none"), "--text", str(ko)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_folder_without_tokenizer(tmp_path, capsys):
    ko, _ = _write(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["vocab", "report", "--tokenizer", str(tmp_path / "empty"), "--text", str(ko)]) == 2
    assert "cannot load a tokenizer" in capsys.readouterr().err


def test_cli_jsonl_wrong_field(tiny, tmp_path, capsys):
    _, en = _write(tmp_path)
    assert main(["vocab", "report", "--tokenizer", str(tiny), "--text", str(en)]) == 2
    err = capsys.readouterr().err
    assert str(en) in err and "'text'" in err


def test_cli_blank_file(tiny, tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    assert main(["vocab", "report", "--tokenizer", str(tiny), "--text", str(blank)]) == 2
    assert "no non-empty documents" in capsys.readouterr().err


def test_tokenizer_json_file_is_accepted(tiny):
    assert measure(tiny / "tokenizer.json", [TEXT], morphemes=False)["tokens"] == 11


def test_config_checks():
    with pytest.raises(ConfigError, match="tokenizer"):
        ReportConfig(text=["a.txt"])
    with pytest.raises(ConfigError, match="text"):
        ReportConfig(tokenizer=["x"])
    with pytest.raises(ConfigError, match="max_docs"):
        ReportConfig(tokenizer=["x"], text=["a.txt"], max_docs=0)


def test_cli_config_error_and_dry_run(capsys):
    assert main(["vocab", "report", "--text", "a.txt"]) == 2
    assert "tokenizer" in capsys.readouterr().err
    assert main(["vocab", "report", "--tokenizer", "x", "--text", "a.txt", "--dry-run"]) == 0
    assert "morphemes: true" in capsys.readouterr().out


# ------------------------------------------------------------------------------ real tokenizers from ../shared


def _real(name: str) -> Path:
    p = real_tokenizer(name)
    if not (p / "tokenizer.json").is_file():
        pytest.skip(f"shared tokenizer {name} not found at {p}")
    return p


def test_real_tokenizers_korean_chars_per_token():
    lines = read_lines("ko_dev.txt")
    toks = {name: load_tokenizer(_real(name)) for name in REAL_TOKENIZERS}
    stats = dict(zip(toks, measure_many(list(toks.values()), lines, morphemes=False), strict=True))
    l2, mi, l3 = stats["llama2"], stats["mistral"], stats["llama3"]
    # shared/README: about 0.70 (Llama-2), 0.97 (Mistral), 1.79 (Llama-3) Korean chars/token
    assert 0.6 < l2["chars_per_token"] < 0.8
    assert 0.85 < mi["chars_per_token"] < 1.1
    assert 1.5 < l3["chars_per_token"] < 2.0
    assert l3["chars_per_token"] > mi["chars_per_token"] > l2["chars_per_token"]
    assert l3["ko_chars_per_token"] > l2["ko_chars_per_token"]
    for name, st in stats.items():
        assert st["ko_tokens"] + st["other_tokens"] == st["tokens"]
        direct = sum(len(e.ids) for e in toks[name].encode_batch(lines, add_special_tokens=False))
        assert st["tokens"] == direct


def test_real_tokenizers_morpheme_alignment():
    pytest.importorskip("kiwipiepy")
    lines = read_lines("ko_dev.txt", limit=400)
    l2, l3 = measure_many([load_tokenizer(_real("llama2")), load_tokenizer(_real("llama3"))], lines)
    # Llama-2 cuts Korean into single syllables (or bytes): every morpheme boundary is a token boundary,
    # but most of its boundaries are not morpheme boundaries. Llama-3 merges syllables: fewer, better ones.
    assert l2["morph_recall"] > 0.99
    assert l3["morph_precision"] > l2["morph_precision"]
    assert l3["token_bounds"] < l2["token_bounds"]
    assert l2["ko_split_char_share"] > l3["ko_split_char_share"] > 0
