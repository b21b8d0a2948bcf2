"""Corrupt, foreign and oversized inputs; folders that are not kolm's; local paths that would go public.

Each test plants one fault a user meets (a cut weights file or data shard, a tokenizer of the same size but other
content, a folder kolm did not write, a 300,000-character line, a home-directory path in the records) and checks
the one-line refusal (exit status 2, the file named, no traceback, nothing left behind) or the counted skip.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
import yaml
from helpers import make_sp_tokenizer, tiny_llama
from huggingface_hub import HfApi

from kolm.cli import main
from kolm.io.tokenizers import tokenizer_fingerprint

VOCAB = 800  # embedding rows; the tiny tokenizers have fewer tokens


def _ko(rng: random.Random, n: int = 30) -> str:
    return " ".join("".join(chr(rng.randint(0xAC00, 0xAC00 + 400)) for _ in range(rng.randint(1, 3)))
                    for _ in range(n)) + "."


def _en(rng: random.Random, n: int = 30) -> str:
    return " ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) for _ in range(n)) + "."


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """tok_a/ and tok_b/ (same size, other merges), model/ (tiny Llama + tok_a), data/ (built with tok_a)."""
    root = tmp_path_factory.mktemp("harden")
    rng = random.Random(0)
    ko, en = [_ko(rng) for _ in range(160)], [_en(rng) for _ in range(160)]
    (root / "ko.txt").write_text("\n".join(ko) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    make_sp_tokenizer(ko + en, root / "tok_a", vocab_size=700)
    # tok_b: the same tokens and size, two of them with their ids swapped (the strings of rows 300 and 301 trade)
    shutil.copytree(root / "tok_a", root / "tok_b")
    tj = json.loads((root / "tok_a" / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    tj["model"]["vocab"][by_id[300]], tj["model"]["vocab"][by_id[301]] = 301, 300
    (root / "tok_b" / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    model = tiny_llama(VOCAB)
    model.config.max_position_embeddings = 128
    model.save_pretrained(str(root / "model"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "tok_a" / f, root / "model" / f)
    recipe = {"tokenizer": "tok_a", "seq_len": 64, "seed": 0, "mix": {"ko": 0.8, "en": 0.2},
              "sources": [{"name": "ko", "lang": "ko", "paths": ["ko.txt"]},
                          {"name": "en", "lang": "en", "paths": ["en.txt"]}],
              "validation": {"fraction": 0.05, "max_docs": 8, "min_docs": 0}, "num_proc": 0, "progress": False}
    (root / "data.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["data", "build", str(root / "data.yaml"), "--output", str(root / "data")]) == 0
    return root


def _fails(capsys, argv: list[str]) -> str:
    """Run a command that must be refused: exit status 2 and one line on stderr, no traceback."""
    capsys.readouterr()  # what earlier commands printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _cpt_recipe(root: Path, name: str, **extra) -> Path:
    r = {"model": str(root / "model"), "data": str(root / "data"), "output": str(root / "runs" / name),
         "micro_batch_size": 1, "grad_accum": 1, "stages": [{"name": "full", "kind": "full", "max_steps": 1}],
         "eval": {"every": 0}, "checkpoint": {"every": 10, "keep": 2}, **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------------------------- 14.5 corrupt files
def test_cut_weights_are_named_by_every_stage(root, tmp_path, capsys):
    cut = _copy(root / "model", tmp_path / "cut")
    _cut(cut / "model.safetensors")
    for argv in (["eval", "--model", str(cut), "--text", f"ko={root / 'ko.txt'}"],
                 ["train", "cpt", str(_cpt_recipe(root, "cut", model=str(cut)))],
                 ["model", "resize", "--model", str(cut), "--tokenizer", str(root / "tok_b"), "--output",
                  str(tmp_path / "resized")],
                 ["upscale", "--model", str(cut), "--drop-layers", "0", "--output", str(tmp_path / "up")],
                 ["push", str(cut), "--repo-id", "o/n", "--dry-run", "--output", str(tmp_path / "c.md")]):
        err = _fails(capsys, argv)
        assert f"{cut / 'model.safetensors'}: not a complete safetensors file" in err, (argv[0], err)
    # nothing was written: no run folder with a recipe.yaml, no half output
    assert not (root / "runs" / "cut").exists()
    assert not (tmp_path / "resized").exists() and not (tmp_path / "up").exists()


def test_cut_data_shard_is_named_before_anything_is_written(root, tmp_path, capsys):
    data = _copy(root / "data", tmp_path / "data")
    shard = sorted((data / "train").glob("*.arrow"))[0]
    _cut(shard)
    err = _fails(capsys, ["train", "cpt", str(_cpt_recipe(root, "cutdata", data=str(data)))])
    assert f"{shard} is not a complete Arrow file" in err
    assert not (root / "runs" / "cutdata").exists()  # no recipe.yaml / data_manifest.json left behind
    # a cut validation split is named too (the online evaluation reads it)
    data2 = _copy(root / "data", tmp_path / "data2")
    val = sorted((data2 / "validation" / "en").glob("*.arrow"))[0]
    _cut(val)
    err = _fails(capsys, ["train", "cpt", str(_cpt_recipe(root, "cutval", data=str(data2), eval={"every": 1}))])
    assert f"{val} is not a complete Arrow file" in err
    err = _fails(capsys, ["eval", "--model", str(root / "model"), "--data", str(data2)])
    assert f"{val} is not a complete Arrow file" in err


def test_failure_while_loading_leaves_no_run_folder(root, monkeypatch, capsys):
    import kolm.train.cpt as cpt

    def broken(*a, **k):
        raise OSError("simulated: cannot allocate the model")

    monkeypatch.setattr(cpt, "_load_model", broken)
    with pytest.raises(OSError):
        main(["train", "cpt", str(_cpt_recipe(root, "loadfail"))])
    assert not (root / "runs" / "loadfail").exists()


# ----------------------------------------------------------------------------------------------- 14.7 foreign folders
def test_cpt_refuses_a_folder_that_is_not_its_run(root, capsys):
    out = root / "runs" / "foreign"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("my notes\n")
    foreign = '{"what": "another tool\'s metrics", "step": 3}\n'
    (out / "metrics.jsonl").write_text(foreign)
    err = _fails(capsys, ["train", "cpt", str(_cpt_recipe(root, "foreign"))])
    assert "is not a kolm run folder" in err and "--overwrite" in err
    assert "is not a kolm run folder" in _fails(capsys, ["train", "cpt", str(_cpt_recipe(root, "foreign")),
                                                         "--resume"])
    assert (out / "metrics.jsonl").read_text() == foreign and (out / "notes.txt").is_file()  # untouched
    # --resume continues only a kolm run
    assert "holds no run to resume" in _fails(capsys, ["train", "cpt", str(_cpt_recipe(root, "nothing")), "--resume"])
    # a kolm run folder of another model is not this recipe's either
    other = root / "runs" / "other-model"
    other.mkdir(parents=True)
    (other / "recipe.yaml").write_text(yaml.safe_dump({"model": str(root / "tok_b"), "data": str(root / "data"),
                                                       "stages": []}))
    assert "is a run of another model" in _fails(capsys, ["train", "cpt", str(_cpt_recipe(root, "other-model"))])
    # --overwrite replaces the foreign folder and trains
    assert main(["train", "cpt", str(_cpt_recipe(root, "foreign")), "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and (out / "final" / "model.safetensors").is_file()
    assert all(json.loads(x).get("what") is None for x in (out / "metrics.jsonl").read_text().splitlines())


def test_eval_refuses_a_results_json_it_did_not_write(root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    theirs = '{"accuracy": 0.9}\n'
    (out / "results.json").write_text(theirs)
    argv = ["eval", "--model", str(root / "model"), "--text", f"ko={root / 'ko.txt'}", "--max-docs", "3",
            "--output", str(out)]
    assert "was not written by kolm eval" in _fails(capsys, argv)
    assert (out / "results.json").read_text() == theirs
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["format"] == "kolm.eval/1"
    assert main(argv) == 0  # its own results are replaced without asking
    (out / "results.json").unlink()
    assert "results.md exists" in _fails(capsys, argv)


# ----------------------------------------------------------------------------------------------- 14.4 tokenizers
def test_same_size_foreign_tokenizer_is_refused_by_content(root, tmp_path, capsys):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    a, b = (Tokenizer.from_file(str(root / t / "tokenizer.json")) for t in ("tok_a", "tok_b"))
    assert a.get_vocab_size() == b.get_vocab_size() <= VOCAB  # the size check cannot tell them apart
    assert tokenizer_fingerprint(root / "tok_a") != tokenizer_fingerprint(root / "tok_b")
    # cpt: the model carries tok_b, the data was built with tok_a
    foreign = _copy(root / "model", tmp_path / "foreign")
    shutil.copy(root / "tok_b" / "tokenizer.json", foreign / "tokenizer.json")
    assert "built with another tokenizer" in _fails(capsys, ["train", "cpt", str(_cpt_recipe(
        root, "foreign-tok", model=str(foreign)))])
    # a re-saved identical tokenizer (other bytes, same content) passes
    resaved = _copy(root / "model", tmp_path / "resaved")
    AutoTokenizer.from_pretrained(str(root / "model")).save_pretrained(str(resaved))
    tj = json.loads((resaved / "tokenizer.json").read_text(encoding="utf-8"))  # as older `tokenizers` wrote it:
    tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]  # "a b" merges, no indent
    (resaved / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    assert (resaved / "tokenizer.json").read_bytes() != (root / "tok_a" / "tokenizer.json").read_bytes()
    from kolm.train.config import CptConfig
    from kolm.train.cpt import preflight

    cfg = CptConfig(model=str(resaved), data=str(root / "data"), output=str(tmp_path / "r"), max_steps=10)
    assert preflight(cfg).seq_len == 64
    # an old manifest (sha256 of the file only) still works, and still refuses the foreign tokenizer
    old = _copy(root / "data", tmp_path / "old-data")
    m = json.loads((old / "manifest.json").read_text())
    del m["tokenizer"]["fingerprint"]
    (old / "manifest.json").write_text(json.dumps(m))
    for model in (root / "model", resaved):
        assert preflight(CptConfig(model=str(model), data=str(old), output=str(tmp_path / "r"), max_steps=10)).seq_len \
            == 64
    with pytest.raises(Exception, match="another tokenizer"):
        preflight(CptConfig(model=str(foreign), data=str(old), output=str(tmp_path / "r"), max_steps=10))


def test_eval_and_push_check_the_tokenizer_against_the_records(root, tmp_path, capsys):
    from kolm.artifacts import ResizeRecord, TokenizerExtension

    model = _copy(root / "model", tmp_path / "resized")
    ResizeRecord(init="subword-mean", old_vocab_size=300, new_vocab_size=VOCAB, base_tokenizer_size=300).write(model)
    TokenizerExtension(added=[], base="meta-llama/Llama-2-7b-hf", base_vocab_size=300).write(model)
    assert ResizeRecord.read(model).tokenizer_fingerprint == tokenizer_fingerprint(root / "tok_a")
    assert TokenizerExtension.read(model).tokenizer_fingerprint == tokenizer_fingerprint(root / "tok_a")
    argv = ["eval", "--model", str(model), "--text", f"ko={root / 'ko.txt'}", "--max-docs", "2"]
    assert main(argv) == 0
    shutil.copy(root / "tok_b" / "tokenizer.json", model / "tokenizer.json")  # same size, other tokenizer
    err = _fails(capsys, argv)
    assert "is not the tokenizer" in err and "was written for" in err
    err = _fails(capsys, ["push", str(model), "--repo-id", "o/n", "--dry-run", "--output", str(tmp_path / "c.md")])
    assert "is not the tokenizer" in err
    # records written before fingerprints: checked no further, with a note
    for name in ("resize.json", "extension.json"):
        rec = json.loads((model / name).read_text())
        del rec["tokenizer_fingerprint"]
        (model / name).write_text(json.dumps(rec))
    assert main(argv) == 0
    assert "predates tokenizer fingerprints" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- 14.8 huge documents
def test_eval_skips_and_counts_huge_documents(root, tmp_path, capsys):
    rng = random.Random(1)
    huge = " ".join(_ko(rng) for _ in range(3000))  # ~300,000 characters on one line
    assert len(huge) > 200_000
    text = tmp_path / "ko.txt"
    text.write_text("\n".join([_ko(rng), huge, _ko(rng)]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["eval", "--model", str(root / "model"), "--text", f"ko={text}", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    ko = res["texts"]["ko"]
    assert ko["docs"] == 2 and ko["skipped_docs"] == 1 and ko["skipped_bytes"] == len(huge.encode())
    assert res["max_doc_chars"] == 200_000 and res["rows"][0]["docs"] == 2
    line = f"skipped 1 document(s) longer than 200,000 characters (max_doc_chars): ko 1 ({len(huge.encode()):,} bytes)"
    assert line in printed and line in (out / "results.md").read_text()
    # every document skipped: a clear error, not an empty table
    err = _fails(capsys, ["eval", "--model", str(root / "model"), "--text", f"ko={text}", "--max-doc-chars", "10"])
    assert "no documents" in err and "3 over max_doc_chars 10 skipped" in err


# ----------------------------------------------------------------------------------------------- 14.11 local paths
HOME = "alice-kolm-test"


def test_push_publishes_no_local_path(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    home = tmp_path / "home" / HOME
    model = _copy(root / "model", home / "runs" / "final")
    corpus, base_tok = home / "corpora" / "ko.txt", home / "tokenizers" / "llama2"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("가나다\n")
    _copy(root / "tok_a", base_tok)
    from kolm.artifacts import ResizeRecord, TokenizerExtension

    TokenizerExtension(added=[], base=str(base_tok), base_vocab_size=300, corpus=[str(corpus)],
                       details={"output": str(home / "tok"), "note": f"learned from {corpus} in 3 s"}).write(model)
    ResizeRecord(init="subword-mean", old_vocab_size=300, new_vocab_size=VOCAB,
                 details={"config": {"model": str(home / "base"), "tokenizer": str(home / "tok"),
                                     "corpus": [str(corpus)], "output": str(model)}}).write(model)
    (model / "merge.json").write_text(json.dumps({"base": str(home / "base"), "adapter": f"~/{HOME}/adapter",
                                                  "hub": "meta-llama/Llama-2-7b-hf"}))
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**cfg, "name_or_path": str(base_tok)}))
    local = {p: p.read_bytes() for p in model.iterdir()}

    staged, card = tmp_path / "staged", tmp_path / "card.md"
    assert main(["push", str(model), "--repo-id", "o/n", "--dry-run", "--output", str(card), "--stage",
                 str(staged)]) == 0
    printed = capsys.readouterr().out
    assert "uploaded without local paths: extension.json, merge.json, resize.json, tokenizer_config.json" in printed
    files = sorted(p.relative_to(staged) for p in staged.rglob("*") if p.is_file())
    assert [str(f) for f in files] == sorted(["config.json", "generation_config.json", "extension.json",
                                              "merge.json", "model.safetensors", "resize.json", "tokenizer.json",
                                              "tokenizer_config.json", "README.md"])
    for f in files:
        assert HOME.encode() not in (staged / f).read_bytes(), f
    assert HOME not in card.read_text() and "| llama2 |" in card.read_text()  # the card names the folder
    ext = json.loads((staged / "extension.json").read_text())
    assert ext["base"] == "llama2" and ext["corpus"] == ["ko.txt"] and ext["note"] == "learned from ko.txt in 3 s"
    assert json.loads((staged / "merge.json").read_text())["hub"] == "meta-llama/Llama-2-7b-hf"  # hub ids stay
    assert (staged / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert {p: p.read_bytes() for p in model.iterdir() if p.name != "README.md"} == local  # local files unchanged

    # the real push uploads the same publishable copies (mocked HfApi; the files are read at upload time)
    uploaded: dict[str, bytes] = {}

    def upload_folder(self, *, folder_path, **kw):
        for p in Path(folder_path).rglob("*"):
            if p.is_file():
                uploaded[str(p.relative_to(folder_path))] = p.read_bytes()
        return mock.Mock(commit_url="https://huggingface.co/o/n/commit/1")

    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    with mock.patch.object(HfApi, "create_repo", autospec=True, return_value="https://huggingface.co/o/n"), \
            mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload_folder):
        assert main(["push", str(model), "--repo-id", "o/n"]) == 0
    assert sorted(uploaded) == [str(f) for f in files]
    for name, data in uploaded.items():
        assert HOME.encode() not in data, name
    assert os.environ["HF_TOKEN"].encode() not in b"".join(uploaded.values())
