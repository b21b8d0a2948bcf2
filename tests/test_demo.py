"""`kolm demo` end to end, shortened (about a minute of training), on the embedded text; a rerun reuses steps."""

from __future__ import annotations

import json

import pytest

from kolm.cli import main
from kolm.demo.text import english_documents, korean_documents, split
from kolm.vocab.family import hangul_share


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
    assert main(["demo", "--output", str(out), "--minutes", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "Korean bpb" in printed
    assert (out / "report.html").is_file() and (out / "eval" / "results.json").is_file()
    table = (out / "summary.txt").read_text().splitlines()
    assert len(table) == 4 and "replay" in table[-1]
    assert (out / "text" / "SOURCES.md").is_file()
    # a second run reuses every finished step
    assert main(["demo", "--output", str(out), "--minutes", "0.5"]) == 0
    again = capsys.readouterr().out
    for step in ("text", "base", "vocab", "cpt-ko", "cpt-ko-en", "eval", "sft-dpo"):
        assert f"{step}: reused" in again
    results = json.loads((out / "eval" / "results.json").read_text())
    assert {r["lang"] for r in results["rows"]} == {"ko", "en"}
