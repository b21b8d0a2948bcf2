"""The SentencePiece ``tokenizer.model`` that ``kolm vocab extend`` writes for the SentencePiece family
(kolm/vocab/spm_model.py): the base model kept exactly, pieces/scores/types built from tokenizer.json, and the
``sentencepiece`` library giving the ids of tokenizer.json on held-out Korean and English (real Llama-2 and
Mistral extensions when ../shared is present, tiny tokenizers built here otherwise)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from helpers import make_sp_tokenizer, read_lines, real_tokenizer
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import Tokenizer

from kolm.cli import main
from kolm.demo.text import english_documents, korean_documents
from kolm.vocab import spm_model
from kolm.vocab.spm_model import (
    build_from_tokenizer_json,
    first_merge_rank,
    fuzz_strings,
    id_tokens,
    normalizer_flags,
    tokenizer_model_mismatch,
    write_tokenizer_model,
)

TYPE = pb.ModelProto.SentencePiece.Type
PREPEND = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                               {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    """Korean (kiwipiepy's user guide) and English (stdlib docstrings) on this machine: every 10th document held
    out; the training parts as files."""
    root = tmp_path_factory.mktemp("texts")
    ko, _ = korean_documents()
    en, _ = english_documents(1500)
    out = {"ko_held": [x for i, x in enumerate(ko) if i % 10 == 0],
           "en_held": [x for i, x in enumerate(en) if i % 10 == 0]}
    for name, docs in (("ko", ko), ("en", en)):
        (root / f"{name}.txt").write_text("\n".join(x for i, x in enumerate(docs) if i % 10) + "\n", encoding="utf-8")
        out[name] = root / f"{name}.txt"
    return out


def spm_base(out: Path, en_file: Path, *, legacy_json: bool = True) -> Path:
    """A base folder as real Llama checkpoints have it: a tokenizer.model trained by sentencepiece (BPE, byte
    fallback) and the tokenizer.json that transformers converts from it. ``legacy_json`` rewrites that JSON's
    Metaspace pre-tokenizer into the Prepend normalizer of Llama-2's own tokenizer.json (which, unlike Metaspace,
    adds the `▁` to text that starts with a space, as sentencepiece does)."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True)
    spm.SentencePieceTrainer.train(input=str(en_file), model_prefix=str(out / "tokenizer"), vocab_size=800,
                                   model_type="bpe", byte_fallback=True, split_digits=True,
                                   allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity", num_threads=1, minloglevel=2)
    (out / "tokenizer.vocab").unlink()
    cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "legacy": True, "add_bos_token": True, "model_max_length": 4096}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    converted = out.with_name(out.name + "-converted")
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(converted))
    tj = json.loads((converted / "tokenizer.json").read_text(encoding="utf-8"))
    assert tj["pre_tokenizer"]["type"] == "Metaspace"  # what transformers 5 writes
    if legacy_json:
        tj["normalizer"], tj["pre_tokenizer"] = PREPEND, None
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    return out


def extend(base: Path, corpus: Path, out: Path, n: int, *extra: str) -> dict:
    assert main(["vocab", "extend", "--base", str(base), "--corpus", str(corpus), "--num-new-tokens", str(n),
                 "--output", str(out), "--min-frequency", "1", *extra]) == 0
    return json.loads((out / "extension.json").read_text(encoding="utf-8"))


def proto(folder: Path):
    m = pb.ModelProto()
    m.ParseFromString((folder / "tokenizer.model").read_bytes())
    return m


def agree(folder: Path, lines: list[str]) -> tuple[int, int]:
    """(lines where sentencepiece's ids equal tokenizer.json's, lines)."""
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    want = [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]
    return sum(a == b for a, b in zip(want, sp.encode(lines))), len(lines)


@pytest.fixture(scope="module")
def with_base_model(tmp_path_factory, texts) -> tuple[Path, Path, dict]:
    """(base folder with tokenizer.model, kolm's extension of it, its extension.json)."""
    root = tmp_path_factory.mktemp("spm-a")
    base = spm_base(root / "base", texts["en"])
    return base, root / "tok", extend(base, texts["ko"], root / "tok", 600)


@pytest.fixture(scope="module")
def from_json(tmp_path_factory, texts) -> tuple[Path, Path, dict]:
    """(a base with only tokenizer.json, trained by `tokenizers`, kolm's extension of it, its extension.json)."""
    root = tmp_path_factory.mktemp("spm-b")
    en = texts["en"].read_text(encoding="utf-8").splitlines()
    base = make_sp_tokenizer(en, root / "base", vocab_size=800)
    return base, root / "tok", extend(base, texts["ko"], root / "tok", 600)


# ----------------------------------------------------------------------------------------------- writing


def test_base_model_is_kept_and_new_pieces_score_below_it_in_merge_order(with_base_model):
    base, tok, info = with_base_model
    old, new = proto(base), proto(tok)
    n = len(old.pieces)
    assert [p.SerializeToString() for p in new.pieces[:n]] == [p.SerializeToString() for p in old.pieces]
    assert new.normalizer_spec == old.normalizer_spec and new.denormalizer_spec == old.denormalizer_spec
    trainer = pb.TrainerSpec()
    trainer.CopyFrom(new.trainer_spec)
    assert trainer.vocab_size == len(new.pieces) == info["vocab_size"] == n + info["num_added"]
    trainer.vocab_size = old.trainer_spec.vocab_size
    assert trainer == old.trainer_spec
    added = new.pieces[n:]
    assert all(p.type == TYPE.NORMAL for p in added)
    assert max(p.score for p in added) < min(p.score for p in old.pieces)
    scores = [p.score for p in added]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)  # strictly decreasing
    tj = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))
    rank = first_merge_rank(tj)
    merged = [p for p in added if p.piece in rank]
    chars = [p for p in added if p.piece not in rank]
    assert len(chars) == info["num_new_chars"] and all(len(p.piece) == 1 for p in chars)
    assert [p.piece for p in merged] == sorted((p.piece for p in merged), key=rank.__getitem__)
    assert min(p.score for p in chars) > max(p.score for p in merged)  # characters first (ids), then merges
    report = info["tokenizer_model"]
    assert report["source"] == "base tokenizer.model" and report["written"]
    assert report["base_check"]["differences"] == 0 and report["check"]["differences"] == 0


@pytest.mark.parametrize("case", ["with_base_model", "from_json"])
def test_sentencepiece_gives_the_ids_of_tokenizer_json(case, request, texts):
    base, tok, info = request.getfixturevalue(case)
    report = info["tokenizer_model"]
    data = (tok / "tokenizer.model").read_bytes()
    assert report["written"] and report["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["pieces"] == info["vocab_size"] == len(proto(tok).pieces)
    check = report["check"]
    assert check["differences"] == 0 and check["lines"] >= 3000 and check["sample_lines"] > 0
    assert check["lines"] == check["sample_lines"] + check["fuzz_lines"]
    held = texts["ko_held"] + texts["en_held"]
    assert agree(tok, held) == (len(held), len(held))
    assert agree(tok, fuzz_strings(id_tokens(json.loads((tok / "tokenizer.json").read_text())), held, 2000, 7))[0] \
        == 2000
    # the base without kolm's file disagrees with the extension on Korean: the file is not decoration
    if (base / "tokenizer.model").is_file():
        stale = tok.with_name("stale")
        shutil.copytree(tok, stale)
        shutil.copy(base / "tokenizer.model", stale / "tokenizer.model")
        assert agree(stale, texts["ko_held"])[0] < len(texts["ko_held"]) // 2


def test_built_from_tokenizer_json_types_scores_and_flags(from_json):
    base, tok, info = from_json
    m = proto(tok)
    tj = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))
    assert info["tokenizer_model"]["source"] == "tokenizer.json" and info["tokenizer_model"]["add_dummy_prefix"]
    assert [p.piece for p in m.pieces] == id_tokens(tj)
    assert [p.type for p in m.pieces[:3]] == [TYPE.UNKNOWN, TYPE.CONTROL, TYPE.CONTROL]
    assert all(m.pieces[3 + b].type == TYPE.BYTE and m.pieces[3 + b].piece == f"<0x{b:02X}>" for b in range(256))
    rank = first_merge_rank(tj)
    normal = [p for p in m.pieces if p.type == TYPE.NORMAL]
    assert all(p.score == -rank[p.piece] for p in normal if p.piece in rank)
    singles = [p for p in normal if p.piece not in rank]
    assert singles and all(len(p.piece) == 1 for p in singles)
    assert max(p.score for p in singles) < -len(tj["model"]["merges"]) + 1  # below every merged piece
    t, n = m.trainer_spec, m.normalizer_spec
    assert (t.model_type, t.byte_fallback, t.unk_id, t.bos_id, t.eos_id, t.pad_id) == (pb.TrainerSpec.BPE, True, 0,
                                                                                        1, 2, -1)
    assert (n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces) == ("identity", True,
                                                                                              False, True)
    assert "base_check" not in info["tokenizer_model"]  # checked only when the new pair differs somewhere


@pytest.mark.parametrize("normalizer,pre_tokenizer,prefix", [
    (PREPEND, None, True),
    (None, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": False}, True),
    (None, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}, True),
    (None, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": False}, False),
    ({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, None, False),  # Gemma: no dummy prefix
    ({"type": "NFKC"}, None, None),
    (None, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}, None),
])
def test_normalizer_flags(normalizer, pre_tokenizer, prefix):
    tj = {"normalizer": normalizer, "pre_tokenizer": pre_tokenizer}
    if prefix is None:
        with pytest.raises(Exception, match="no SentencePiece equivalent"):
            normalizer_flags(tj)
    else:
        assert normalizer_flags(tj) is prefix


def test_no_dummy_prefix_and_unsupported_normalizer(from_json, tmp_path, texts):
    """A Gemma-style tokenizer.json (no dummy prefix) gets add_dummy_prefix false and agrees; one whose normaliser
    sentencepiece cannot express gets no tokenizer.model, with the reason."""
    base, tok, _ = from_json
    sample = texts["ko_held"] + texts["en_held"]
    for name, normalizer, written in (("gemma", {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, True),
                                      ("nfkc", {"type": "Sequence", "normalizers": [{"type": "NFKC"}, PREPEND]},
                                       False)):
        folder = tmp_path / name
        shutil.copytree(tok, folder)
        tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        tj["normalizer"] = normalizer
        (folder / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
        (folder / "tokenizer.model").unlink()
        report = write_tokenizer_model(folder, tj, folder, sample)
        assert report["written"] is written and (folder / "tokenizer.model").is_file() is written
        if written:
            assert report["add_dummy_prefix"] is False and report["check"]["differences"] == 0
            assert agree(folder, sample)[0] == len(sample)
        else:
            assert "NFKC" in report["reason"] and "NO tokenizer.model" in spm_model.summary(report)


def test_differences_inherited_from_the_base_pair_are_reported_not_fatal(tmp_path, texts, capsys):
    """transformers 5 converts a tokenizer.model into a Metaspace tokenizer.json that adds no `▁` before text that
    starts with a space; sentencepiece does. kolm keeps such a base as it is, says so, and blames the base."""
    base = spm_base(tmp_path / "base", texts["en"], legacy_json=False)
    info = extend(base, texts["ko"], tmp_path / "tok", 400)
    line = capsys.readouterr().out
    check = info["tokenizer_model"]["check"]
    assert check["differences"] > 0 and check["introduced_by_kolm"] == 0
    assert check["inherited_from_base"] == check["differences"] == info["tokenizer_model"]["base_check"]["differences"]
    assert all(d["line"].startswith(" ") for d in check["first_differences"])
    assert "DIFFERS" in line and f"{check['differences']} as in the base" in line


def _scramble_new_ranks(monkeypatch, n_base_merges: int) -> None:
    """A deliberate bug: the new merges' scores in reverse order."""
    real = spm_model.first_merge_rank

    def reversed_new(tj):
        rank = real(tj)
        top = len(tj["model"]["merges"])
        return {p: (r if r < n_base_merges else top + n_base_merges - r) for p, r in rank.items()}

    monkeypatch.setattr(spm_model, "first_merge_rank", reversed_new)


def test_a_difference_kolm_introduces_is_an_error_unless_accepted(from_json, tmp_path, texts, monkeypatch, capsys):
    base, _, _ = from_json
    n_base = len(json.loads((base / "tokenizer.json").read_text())["model"]["merges"])
    _scramble_new_ranks(monkeypatch, n_base)
    args = ["vocab", "extend", "--base", str(base), "--corpus", str(texts["ko"]), "--num-new-tokens", "600",
            "--min-frequency", "1"]
    assert main([*args, "--output", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.model" in err and "differ" in err and "--accept-tokenizer-model-mismatch" in err
    assert not (tmp_path / "refused").exists()
    assert main([*args, "--output", str(tmp_path / "accepted"), "--accept-tokenizer-model-mismatch"]) == 0
    assert "WARNING tokenizer.model DIFFERS" in capsys.readouterr().out
    report = json.loads((tmp_path / "accepted" / "extension.json").read_text())["tokenizer_model"]
    assert report["written"] and report["mismatch_accepted"]
    assert report["check"]["introduced_by_kolm"] > 0 and report["base_check"]["differences"] == 0
    first = report["check"]["first_differences"][0]
    assert first["tokenizer_json"] != first["sentencepiece"] and first["line"]


def test_fuzz_strings_are_seeded_and_cover_the_hard_cases(from_json, texts):
    _, tok, _ = from_json
    tokens = id_tokens(json.loads((tok / "tokenizer.json").read_text(encoding="utf-8")))
    a = fuzz_strings(tokens, texts["ko_held"], 3000, seed=1)
    assert a == fuzz_strings(tokens, texts["ko_held"], 3000, seed=1) != fuzz_strings(tokens, texts["ko_held"], 3000, 2)
    joined = "".join(a)
    for needle in ("  ", "\t", "\n", "😀", "𝔘", "\u3000", "2024", "\u1112\u1161"):  # ... and NFD Hangul
        assert needle in joined, needle
    assert sum(x.startswith(" ") for x in a) > 100 and sum(x.isascii() for x in a) > 50


def test_tokenizer_model_mismatch(with_base_model, tmp_path):
    base, tok, _ = with_base_model
    assert tokenizer_model_mismatch(tok / "tokenizer.model", tok / "tokenizer.json") is None
    assert tokenizer_model_mismatch(base / "tokenizer.model", base / "tokenizer.json") is None
    why = tokenizer_model_mismatch(base / "tokenizer.model", tok / "tokenizer.json")
    assert why and "800 pieces for 1400 tokens" in why
    (tmp_path / "bad.model").write_bytes(b"\x00garbage" * 10)
    assert tokenizer_model_mismatch(tmp_path / "bad.model", tok / "tokenizer.json")
    assert tokenizer_model_mismatch(tok / "tokenizer.model", tmp_path / "none.json") is None  # it is the tokenizer
    tj = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))
    m = build_from_tokenizer_json(tj, tok)
    m.pieces[900].piece = "▁swapped"
    (tmp_path / "swapped.model").write_bytes(m.SerializeToString())
    assert "id 900" in tokenizer_model_mismatch(tmp_path / "swapped.model", tok / "tokenizer.json")


# ----------------------------------------------------------------------------------------------- real tokenizers


@pytest.mark.parametrize("name", ["llama2", "mistral"])
def test_real_16k_extensions_agree_on_held_out_korean_and_english(name, tmp_path):
    """Llama-2 and Mistral extended by 16,000 Korean tokens learned from 90% of ko_dev.txt: the sentencepiece library
    gives tokenizer.json's ids on 100% of the held-out Korean lines and every 10th line of en_dev.txt."""
    ko = read_lines("ko_dev.txt")
    (tmp_path / "ko.txt").write_text("\n".join(x for i, x in enumerate(ko) if i % 10) + "\n", encoding="utf-8")
    info = extend(real_tokenizer(name), tmp_path / "ko.txt", tmp_path / "tok", 16000)
    assert info["num_added"] == 16000 and info["tokenizer_model"]["check"]["differences"] == 0
    held = [x for i, x in enumerate(ko) if i % 10 == 0] + read_lines("en_dev.txt")[::10]
    assert agree(tmp_path / "tok", held) == (len(held), len(held))


# ----------------------------------------------------------------------------------------------- later stages


@pytest.fixture(scope="module")
def resized(tmp_path_factory, with_base_model) -> Path:
    """A tiny Llama on the base tokenizer (the folder also holds the base's tokenizer.model, as real checkpoints do),
    resized by kolm to the extension."""
    from helpers import tiny_llama

    base, tok, _ = with_base_model
    root = tmp_path_factory.mktemp("carry")
    tiny_llama(len(proto(base).pieces)).save_pretrained(str(root / "base-model"))
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        shutil.copy(base / f, root / "base-model" / f)
    assert main(["model", "resize", "--model", str(root / "base-model"), "--tokenizer", str(tok),
                 "--output", str(root / "resized")]) == 0
    return root / "resized"


def carried(folder: Path, tok: Path) -> bool:
    """``folder`` holds the extension's own tokenizer.model, and it agrees with the tokenizer.json beside it."""
    same = (folder / "tokenizer.model").read_bytes() == (tok / "tokenizer.model").read_bytes()
    return same and tokenizer_model_mismatch(folder / "tokenizer.model", folder / "tokenizer.json") is None


def with_stale_model(src: Path, dst: Path, stale: Path) -> Path:
    shutil.copytree(src, dst)
    shutil.copy(stale / "tokenizer.model", dst / "tokenizer.model")
    return dst


def test_resize_carries_the_extensions_model_never_the_base_one(resized, with_base_model, tmp_path, capsys):
    base, tok, _ = with_base_model
    assert carried(resized, tok)
    # an extended tokenizer folder that holds the base's tokenizer.model: it is left out, loudly
    stale_tok = with_stale_model(tok, tmp_path / "stale-tok", base)
    assert main(["model", "resize", "--model", str(resized.with_name("base-model")), "--tokenizer", str(stale_tok),
                 "--output", str(tmp_path / "out")]) == 0
    assert "left out" in capsys.readouterr().out
    assert (tmp_path / "out" / "tokenizer.json").is_file() and not (tmp_path / "out" / "tokenizer.model").exists()


def test_upscale_carries_it_and_drops_a_stale_one(resized, with_base_model, tmp_path, capsys):
    base, tok, _ = with_base_model
    args = ["--layer-map", "0-1,0-1"]
    assert main(["upscale", "--model", str(resized), "--output", str(tmp_path / "dus"), *args]) == 0
    assert carried(tmp_path / "dus", tok)
    assert "tokenizer.model" in json.loads((tmp_path / "dus" / "upscale.json").read_text())["copied"]
    stale = with_stale_model(resized, tmp_path / "stale", base)
    assert main(["upscale", "--model", str(stale), "--output", str(tmp_path / "dus2"), *args]) == 0
    assert "left out" in capsys.readouterr().out and not (tmp_path / "dus2" / "tokenizer.model").exists()


def test_merge_lora_carries_it(resized, with_base_model, tmp_path, texts):
    """An adapter folder as `kolm train sft` leaves it (adapter + tokenizer saved by transformers, which writes no
    tokenizer.model): the merged model gets the extension's tokenizer.model from the base model folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, tok, _ = with_base_model
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(resized)),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(str(tmp_path / "adapter"))
    AutoTokenizer.from_pretrained(str(resized)).save_pretrained(str(tmp_path / "adapter"))
    assert not (tmp_path / "adapter" / "tokenizer.model").exists()
    assert main(["merge-lora", "--base", str(resized), "--adapter", str(tmp_path / "adapter"),
                 "--output", str(tmp_path / "merged")]) == 0
    assert carried(tmp_path / "merged", tok)
    held = texts["ko_held"] + texts["en_held"]
    assert agree(tmp_path / "merged", held) == (len(held), len(held))


def test_push_leaves_out_a_stale_model(resized, with_base_model, tmp_path, capsys):
    base, _, _ = with_base_model
    assert main(["push", str(resized), "--repo-id", "org/name", "--dry-run", "--output", str(tmp_path / "a.md")]) == 0
    out = capsys.readouterr().out
    assert "  tokenizer.model  (" in out and "left out" not in out
    stale = with_stale_model(resized, tmp_path / "stale", base)
    assert main(["push", str(stale), "--repo-id", "org/name", "--dry-run", "--output", str(tmp_path / "b.md")]) == 0
    out = capsys.readouterr().out
    assert "  tokenizer.model  (" not in out
    assert "warning:" in out and "left out (1): tokenizer.model (does not belong to tokenizer.json)" in out
