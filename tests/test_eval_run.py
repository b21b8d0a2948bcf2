"""``kolm eval``: bits per byte per language for several models with their own tokenizers; inputs; errors."""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

import pytest
from helpers import make_sp_tokenizer, tiny_llama

from kolm.cli import main
from kolm.eval.bpb import bits_per_byte
from kolm.eval.run import short_names

KO = ["한국어 문장입니다. 모델이 읽습니다.", "서울은 대한민국의 수도이다.", "오늘은 날씨가 맑고 따뜻하다.",
      "짧은 문서", "긴 문서 " * 30, "데이터를 섞어서 학습한다."]
EN = ["An English sentence for the model.", "Seoul is the capital of Korea.", "The weather is nice today.",
      "short", "a long document " * 30, "Mixing data for training."]


def _model(folder: Path, vocab_size: int, seed: int) -> Path:
    from tokenizers import Tokenizer

    make_sp_tokenizer((KO + EN) * 4, folder, vocab_size=vocab_size)
    n = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    tiny_llama(n, seed=seed).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_models")
    base = _model(root / "base", 300, seed=1)
    ext = _model(root / "ext", 420, seed=2)  # a bigger vocabulary: fewer tokens, same bytes
    ko, en = root / "ko.txt", root / "en.txt"
    ko.write_text("\n".join(KO) + "\n")
    en.write_text("\n".join(EN) + "\n")
    return base, ext, ko, en


def _direct_bpb(folder: Path, texts: list[str], max_length: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    return bits_per_byte(model, tok, texts, max_length=max_length).bpb


def test_two_models_two_languages(models, tmp_path, capsys):
    base, ext, ko, en = models
    out = tmp_path / "res"
    assert main(["eval", "--model", str(base), "--model", str(ext), "--text", f"ko={ko}", "--text", f"en={en}",
                 "--max-docs", "5", "--max-length", "64", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert [(r["name"], r["lang"]) for r in res["rows"]] == [("base", "ko"), ("base", "en"), ("ext", "ko"),
                                                            ("ext", "en")]
    assert [r["model"] for r in res["rows"]] == [str(base)] * 2 + [str(ext)] * 2  # as given on the command line
    assert res["texts"]["ko"]["docs"] == 5 and res["texts"]["ko"]["bytes"] == sum(len(t.encode()) for t in KO[:5])
    b, e = res["models"]
    for lang, texts in (("ko", KO[:5]), ("en", EN[:5])):
        # same documents and bytes for both models; each uses its own tokenizer
        assert b["bpb"][lang]["bytes"] == e["bpb"][lang]["bytes"] == res["texts"][lang]["bytes"]
        assert b["bpb"][lang]["docs"] == 5
        assert b["bpb"][lang]["bpb"] == pytest.approx(_direct_bpb(base, texts, 64), rel=1e-6)
        assert e["bpb"][lang]["bpb"] == pytest.approx(_direct_bpb(ext, texts, 64), rel=1e-6)
    assert e["bpb"]["ko"]["tokens"] < b["bpb"]["ko"]["tokens"]
    row = res["rows"][2]
    assert row["delta_bpb"] == pytest.approx(e["bpb"]["ko"]["bpb"] - b["bpb"]["ko"]["bpb"])
    assert res["rows"][0]["delta_bpb"] is None
    # the table on stdout and in results.md
    head = next(x for x in printed.splitlines() if not x.startswith("kolm eval: ")).split()  # after any progress line
    assert head[:3] == ["model", "lang", "bpb"] and "tokens" in head
    assert f"{e['bpb']['ko']['bpb']:.4f}" in printed and f"{row['delta_bpb']:+.4f}" in printed
    assert (out / "results.md").read_text().startswith("| model | lang | bpb |")
    assert res["config"]["model"] == [str(base), str(ext)]


def test_jsonl_input_nfc_and_data_folder(models, tmp_path, capsys):
    base, _, _, _ = models
    nfd = tmp_path / "ko.jsonl"
    nfd.write_text("".join(json.dumps({"body": unicodedata.normalize("NFD", t)}) + "\n" for t in KO[:3]))
    assert main(["eval", "--model", str(base), "--text", f"ko={nfd}", "--text-field", "body", "--output",
                 str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["texts"]["ko"]["bytes"] == sum(len(t.encode()) for t in KO[:3])  # NFC, as kolm data build
    # a `kolm data build` folder: its validation splits, first --max-docs documents
    from datasets import Dataset

    data = tmp_path / "data"
    for lang, texts in (("ko", KO), ("en", EN)):
        Dataset.from_dict({"text": texts, "n_bytes": [len(t.encode()) for t in texts]}).save_to_disk(
            str(data / "validation" / lang))
    (data / "manifest.json").write_text(json.dumps({"seq_len": 16, "languages": {
        lang: {"validation": {"path": f"validation/{lang}"}} for lang in ("ko", "en")}}))
    assert main(["eval", "--model", str(base), "--data", str(data), "--max-docs", "4", "--output",
                 str(tmp_path / "b")]) == 0
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {lang: t["docs"] for lang, t in res["texts"].items()} == {"ko": 4, "en": 4}
    assert res["texts"]["en"]["bytes"] == sum(len(t.encode()) for t in EN[:4])
    # the window of `kolm train cpt`'s online evaluation (the data's seq_len), so the numbers match its metrics
    assert res["models"][0]["bpb"]["en"]["max_length"] == 16
    assert res["models"][0]["bpb"]["en"]["bpb"] == pytest.approx(_direct_bpb(base, EN[:4], 16), rel=1e-6)


def test_bad_input(models, tmp_path, capsys):
    base, _, ko, _ = models
    notok = tmp_path / "notok"
    notok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (notok / name).write_bytes((base / name).read_bytes())
    assert main(["eval", "--model", str(base), "--model", str(notok), "--text", f"ko={ko}"]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer" in err and str(notok) in err
    assert main(["eval", "--model", str(base), "--text", f"ko:{ko}"]) == 2
    assert "LANG=FILE" in capsys.readouterr().err
    assert main(["eval", "--model", str(base), "--text", f"ko={tmp_path / 'missing.txt'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nomodel"), "--text", f"ko={ko}"]) == 2
    assert "nomodel" in capsys.readouterr().err
    assert main(["eval", "--model", str(base)]) == 2
    assert "--text" in capsys.readouterr().err
    broken = tmp_path / "bad.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    assert main(["eval", "--model", str(base), "--text", f"ko={broken}"]) == 2
    assert f"{broken}:2" in capsys.readouterr().err


def test_tasks_without_lm_eval_is_a_clear_error(models, monkeypatch, capsys):
    base, _, ko, _ = models
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # importing it raises ImportError
    assert main(["eval", "--model", str(base), "--text", f"ko={ko}", "--tasks", "hellaswag"]) == 2
    assert "lm-evaluation-harness" in capsys.readouterr().err


def test_short_names():
    assert short_names(["/a/run1/final", "/a/run2/final", "/b/base"]) == ["run1/final", "run2/final", "base"]
    assert short_names(["x/m", "y/m", "m"]) == ["x/m", "y/m", "m"]
