"""bench/llamacpp_parity.py's code path without llama.cpp: a stand-in byte-level "real model" (``--real-model``) is
extended and resized by kolm, "converted" and "tokenized" by stand-ins of convert_hf_to_gguf.py and llama-tokenize
that speak their command lines and output format (``[1, 2, 3]``), and compared. A tokenizer that doubles the new
tokens' ids must show up as differences. The real llama.cpp run is the bench itself
(docs/benchmarks.md has its table)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO, make_bytelevel_tokenizer, need_shared, tiny_llama

sys.path.insert(0, str(REPO / "bench"))
import llamacpp_parity as bench  # noqa: E402

# llama-tokenize -m GGUF --ids --no-bos --no-escape --stdin --log-disable; the "GGUF" is a tokenizer.json here.
# Added tokens are cut out of the text first and every piece is tokenized alone, as llama.cpp does.
FAKE_TOKENIZE = textwrap.dedent("""
    import os, sys
    from tokenizers import Tokenizer
    args = sys.argv[1:]
    assert {"--ids", "--no-bos", "--no-escape", "--stdin"} <= set(args), args
    tok = Tokenizer.from_file(args[args.index("-m") + 1])
    ids = tok.encode(sys.stdin.buffer.read().decode("utf-8"), add_special_tokens=False).ids
    first_new = int(os.environ.get("FAKE_DOUBLE_FROM", 1 << 30))
    ids = [j for i in ids for j in ([i, i] if i >= first_new else [i])]
    print("llama_model_loader: log lines go to stderr", file=sys.stderr)
    print("[" + ", ".join(map(str, ids)) + "]")
""")
# convert_hf_to_gguf.py MODEL --outfile OUT --outtype f16: the "GGUF" is the folder's tokenizer.json.
FAKE_CONVERT = textwrap.dedent("""
    import shutil, sys
    args = sys.argv[1:]
    shutil.copy(args[0] + "/tokenizer.json", args[args.index("--outfile") + 1])
""")


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> tuple[Path, list[str]]:
    """(tools folder, tokenize command): the stand-ins above."""
    root = tmp_path_factory.mktemp("fake-llamacpp")
    (root / "convert_hf_to_gguf.py").write_text(FAKE_CONVERT)
    (root / "llama_tokenize.py").write_text(FAKE_TOKENIZE)
    return root, [sys.executable, str(root / "llama_tokenize.py")]


@pytest.fixture(scope="module")
def real_model(tmp_path_factory) -> Path:
    """A stand-in for SmolLM2 from `kolm model import`: byte-level BPE (GPT-4-style split regex), tied embeddings."""
    shared = need_shared()
    root = tmp_path_factory.mktemp("standin")
    en = (shared / "corpora" / "en_dev.txt").read_text(encoding="utf-8").splitlines()[:3000]
    folder = make_bytelevel_tokenizer(en, root / "smol", vocab_size=1000)
    tiny_llama(1002, tie=True).save_pretrained(str(folder))
    return folder


def test_real_model_row_end_to_end(standin, real_model, tmp_path, capsys):
    tools, cmd = standin
    bench.main(["--bases", "", "--real-model", str(real_model), "--new-tokens", "300", "--adversarial", "400",
                "--work", str(tmp_path), "--tokenize-cmd", " ".join(cmd), "--converter-src", str(tools)])
    out = capsys.readouterr().out
    payload = json.loads(out.split("BENCH_JSON ", 1)[1])
    base, row = payload["rows"]  # the model as it is, then kolm's extension of it
    assert (base["base"], base["model"], row["base"], row["model"]) == ("real-smol", "base", "real-smol", "kolm +300")
    assert row["tokenizer.model"] == base["tokenizer.model"] == "- (byte-level)"
    for r in (base, row):
        detail = r["detail"]
        assert detail["ko held-out"]["agree"] == detail["ko held-out"]["strings"] > 250
        assert detail["en held-out"]["agree"] == detail["en held-out"]["strings"] > 1000
        assert r["adversarial differing"] == "0/400" and detail["adversarial"]["left_out"] == 0
    assert row["not in base"] == 0 and base["not in base"] == "-"
    resized = tmp_path / "model-real-smol"
    assert json.loads((resized / "resize.json").read_text())["new_tokens"] == 300
    assert (tmp_path / "real-smol-model-real-smol.gguf").is_file() and (tmp_path / "real-smol-smol.gguf").is_file()
    assert not (resized / "tokenizer.model").exists()


def test_differences_are_counted_and_named(standin, real_model, tmp_path, monkeypatch):
    _, cmd = standin
    _, folder = bench.extend_and_resize("smol", real_model, real_model, _korean(tmp_path), tmp_path, 200)
    monkeypatch.setenv("FAKE_DOUBLE_FROM", "1002")  # the stand-in tokenizer repeats every new token's id
    sets = {"ko": ["한국어 모델을 학습합니다", "서울의 날씨"], "en": ["plain English", " two  spaces"]}
    res = bench.compare(cmd, folder / "tokenizer.json", folder, sets)
    assert res["en"]["agree"] == 2 and res["ko"]["agree"] < 2
    assert res["ko"]["differing"] and set(res["ko"]["differing"]) <= set(sets["ko"])


def test_parse_ids_and_separator_checks(standin, real_model, tmp_path):
    assert bench.parse_ids("some log\n[1, 2, 3]\n\n") == [1, 2, 3] and bench.parse_ids("[]\n") == []
    _, cmd = standin
    _, folder = bench.extend_and_resize("smol2", real_model, real_model, _korean(tmp_path), tmp_path, 100)
    text, sid = bench.separator(folder)
    assert text == "<|end_of_text|>"
    strings = ["", "한국어", " a  b", "😀"]
    assert bench.client_ids(cmd, folder / "tokenizer.json", strings, (text, sid)) == [
        bench.parse_ids(__import__("subprocess").run([*cmd, "-m", str(folder / "tokenizer.json"), "--ids", "--no-bos",
                                                      "--no-escape", "--stdin"], input=s.encode(), capture_output=True,
                                                     check=True).stdout.decode()) for s in strings]
    with pytest.raises(SystemExit, match="pieces for"):  # a separator that is not a special token is refused
        bench.client_ids(cmd, folder / "tokenizer.json", strings, ("|", sid))


def _korean(tmp_path: Path) -> Path:
    ko = (need_shared() / "corpora" / "ko_dev.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "ko.txt").write_text("\n".join(ko[:1500]) + "\n", encoding="utf-8")
    return tmp_path / "ko.txt"
