"""End-to-end tests of ``kolm data build`` / ``kolm data inspect`` on generated files and on ../shared/corpora.

Generated corpora are random Korean/English "documents" (so that no filter or dedup fires by accident) with
planted exact duplicates, near-duplicates, PII, NFD text and broken records, whose fate is checked exactly.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import unicodedata
from pathlib import Path

import pytest

from kolm.config import from_dict
from kolm.data import clean
from kolm.data.build import run
from kolm.data.config import DataBuildConfig
from kolm.errors import KolmError
from tests.helpers import SHARED, make_sp_tokenizer, need_shared, real_tokenizer

SEQ = 128


# -- generated data -----------------------------------------------------------------------------------------------
def ko_doc(rng: random.Random, n: int = 40) -> str:
    words = ["".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(rng.randint(1, 4))) for _ in range(n)]
    return " ".join(words) + "."


def en_doc(rng: random.Random, n: int = 40) -> str:
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def write_lines(path: Path, docs: list[str]) -> Path:
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    """The real Llama-2 tokenizer when ../shared is there, else a tiny one trained here."""
    if (SHARED / "tokenizers" / "llama2" / "tokenizer.json").is_file():
        return SHARED / "tokenizers" / "llama2"
    rng = random.Random(0)
    texts = [ko_doc(rng) for _ in range(300)] + [en_doc(rng) for _ in range(300)]
    return make_sp_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=800)


def cfg_for(tok: Path, out: Path, sources: list[dict], mix: dict, **kw) -> DataBuildConfig:
    data = {"tokenizer": str(tok), "sources": sources, "mix": mix, "output": str(out), "seq_len": SEQ,
            "num_proc": 0, "progress": False, "validation": {"fraction": 0.05, "max_docs": 40, "min_docs": 0}}
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return from_dict(DataBuildConfig, data)


def build(tok: Path, out: Path, sources: list[dict], mix: dict, **kw) -> dict:
    return run(cfg_for(tok, out, sources, mix, **kw))


def train_rows(out: Path) -> list[list[int]]:
    import datasets

    ds = datasets.load_from_disk(str(out / "train"))
    assert ds.features["input_ids"].length == SEQ or len(ds) == 0
    return [list(r) for r in ds.with_format("numpy")[:]["input_ids"]] if len(ds) else []


def stream_docs(out: Path, eos: int) -> list[list[int]]:
    """The packed stream cut at EOS: whole documents, then the cut-off head of one (the dropped tail's doc)."""
    docs, cur = [], []
    for row in train_rows(out):
        for t in row:
            if t == eos:
                docs.append(cur)
                cur = []
            else:
                cur.append(int(t))
    docs.append(cur)
    return docs


def file_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "recipe.yaml")}


def stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("timings_s", "resumed")}


def check_invariants(m: dict) -> None:
    for name, s in m["sources"].items():
        assert s["read"] == s["kept"] + sum(s["dropped"].values()), name
        assert s["kept"] == s["train_docs"] + s["validation_docs"], name
    for lang, v in m["languages"].items():
        assert abs(v["achieved_share"] - v["target_share"]) <= 0.005, lang


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Korean and English files with planted duplicates, near-duplicates and PII."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    ko = [ko_doc(rng, rng.randint(20, 60)) for _ in range(700)]
    en_a = [en_doc(rng, rng.randint(20, 60)) for _ in range(500)]
    en_b = [en_doc(rng, rng.randint(20, 60)) for _ in range(500)]
    planted = {"exact": 0, "near": 0}
    # Exact duplicates: same text after NFC, whitespace and case normalisation; one across sources.
    ko.append(unicodedata.normalize("NFD", ko[3]))
    ko.append("  " + ko[4].replace(" ", "   ") + " ")
    en_a.append(en_a[7].upper())
    en_b.append(en_a[8])
    planted["exact"] = 4
    # Near-duplicates: 120-word documents with one word changed (Jaccard of 3-grams ~0.95).
    for i in range(5):
        base = ko_doc(rng, 120)
        words = base.split()
        words[60] = "변경" + str(i)
        ko += [base, " ".join(words)]
        base = en_doc(rng, 120)
        words = base.split()
        words[60] = "changed"
        en_b += [base, " ".join(words)]
    planted["near"] = 10
    pii_ko = ko_doc(rng, 30) + " 연락처 hong.gildong@example.co.kr 또는 010-1234-5678, 주민번호 900101-1234567."
    pii_en = en_doc(rng, 30) + " Mail john.smith@example.com or call (555) 123-4567 from 10.0.0.12 today."
    ko.append(pii_ko)
    en_a.append(pii_en)
    return {"dir": d, "ko": write_lines(d / "ko.txt", ko), "en_a": write_lines(d / "en_a.txt", en_a),
            "en_b": write_lines(d / "en_b.txt", en_b), "planted": planted, "pii": [pii_ko, pii_en],
            "texts": ko + en_a + en_b}


def sources(corpus: dict) -> list[dict]:
    return [{"name": "ko", "lang": "ko", "paths": [str(corpus["ko"])]},
            {"name": "en_a", "lang": "en", "paths": [str(corpus["en_a"])]},
            {"name": "en_b", "lang": "en", "paths": [str(corpus["en_b"])]}]


@pytest.fixture(scope="module")
def reference(tok, corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "out"
    m = build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3})
    return {"out": out, "manifest": m}


# -- the main build -----------------------------------------------------------------------------------------------
def test_ratio_invariants_and_outputs(reference, tok):
    import datasets

    m, out = reference["manifest"], reference["out"]
    check_invariants(m)
    assert m["sources"]["ko"]["read"] == 700 + 2 + 10 + 1
    assert m["tokenizer"]["sha256"] == hashlib.sha256((tok / "tokenizer.json").read_bytes()).hexdigest()
    assert m["tokenizer"]["vocab_size"] > 0 and m["seq_len"] == SEQ and m["recipe"]["mix"] == {"ko": 0.7, "en": 0.3}
    rows = train_rows(out)
    assert len(rows) == m["train"]["sequences"] > 0 and all(len(r) == SEQ for r in rows)
    ds = datasets.load_from_disk(str(out / "train"))
    assert str(ds.features["input_ids"].feature.dtype) == "int32"
    for lang in ("ko", "en"):
        val = datasets.load_from_disk(str(out / "validation" / lang))
        assert len(val) == m["languages"][lang]["validation"]["docs"] > 0
        for r in val:
            assert r["n_bytes"] == len(r["text"].encode("utf-8")) and r["n_tokens"] == len(r["input_ids"])


def test_share_recounted_from_the_shards(reference, tok):
    """Re-derive each language's share from the packed tokens themselves (Hangul in a document => ko)."""
    from tokenizers import Tokenizer

    m, out = reference["manifest"], reference["out"]
    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    eos = m["tokenizer"]["eos_id"]
    counts = {"ko": 0, "en": 0}
    docs = stream_docs(out, eos)
    for i, d in enumerate(docs):
        text = t.decode(d)
        lang = "ko" if any("\uac00" <= c <= "\ud7a3" for c in text) else "en"
        counts[lang] += len(d) + (1 if i < len(docs) - 1 else 0)  # + its EOS, except the cut-off last one
    total = sum(counts.values())
    assert total == m["train"]["tokens"]
    assert abs(counts["ko"] / total - 0.7) <= 0.005
    assert counts == {k: v["train_tokens"] for k, v in m["languages"].items()}


def test_packing_has_no_padding_and_keeps_documents_whole(reference, tok, corpus):
    from tokenizers import Tokenizer

    m, out = reference["manifest"], reference["out"]
    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    cleaned = set()
    for text in corpus["texts"]:
        c, _ = clean.mask_pii(clean.normalize(text), ["email", "phone", "kr_rrn", "ip"],
                              {"email": "|||EMAIL_ADDRESS|||", "phone": "|||PHONE_NUMBER|||",
                               "kr_rrn": "|||KR_RRN|||", "ip": "|||IP_ADDRESS|||"})
        cleaned.add(c)
    docs = stream_docs(out, m["tokenizer"]["eos_id"])
    whole = docs[:-1]
    assert len(whole) > 100
    for d in whole:  # every piece between EOS tokens is one whole cleaned document, in order
        assert t.decode(d) in cleaned
    assert t.decode(docs[-1]) == "" or any(c.startswith(t.decode(docs[-1])[:20]) for c in cleaned)


def test_dedup_catches_planted_duplicates(reference):
    m = reference["manifest"]
    dropped = {k: sum(s["dropped"].get(k, 0) for s in m["sources"].values())
               for k in ("exact_duplicate", "near_duplicate")}
    assert dropped == {"exact_duplicate": 4, "near_duplicate": 10}
    assert m["sources"]["en_b"]["dropped"].get("exact_duplicate") == 1  # the copy across sources
    assert m["sources"]["ko"]["drop_examples"]["exact_duplicate"][0].endswith("ko.txt:701")  # the NFD copy


def test_pii_masked_everywhere(reference, tok):
    from tokenizers import Tokenizer

    m, out = reference["manifest"], reference["out"]
    assert m["sources"]["ko"]["pii_masked"] == {"email": 1, "kr_rrn": 1, "phone": 1}
    assert m["sources"]["en_a"]["pii_masked"] == {"email": 1, "ip": 1, "phone": 1}
    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    import datasets

    texts = [t.decode(r) for r in train_rows(out)]
    for lang in ("ko", "en"):
        texts += datasets.load_from_disk(str(out / "validation" / lang))["text"]
    blob = "\n".join(texts)
    for secret in ("hong.gildong@example.co.kr", "010-1234-5678", "900101-1234567", "john.smith@example.com",
                   "123-4567", "10.0.0.12"):
        assert secret not in blob


# -- determinism and resume ---------------------------------------------------------------------------------------
def test_same_seed_same_shards_and_num_proc_independent(reference, tok, corpus, tmp_path):
    m2 = build(tok, tmp_path / "again", sources(corpus), {"ko": 0.7, "en": 0.3}, num_proc=2, batch_bytes=8192)
    assert file_digests(tmp_path / "again") == file_digests(reference["out"])
    assert stable(m2) | {"recipe": None} == stable(reference["manifest"]) | {"recipe": None}
    m3 = build(tok, tmp_path / "seed1", sources(corpus), {"ko": 0.7, "en": 0.3}, seed=1)
    assert file_digests(tmp_path / "seed1")["train/data-00000-of-00001.arrow"] != \
        file_digests(reference["out"])["train/data-00000-of-00001.arrow"]
    check_invariants(m3)


def test_resume_after_interruption_in_phase_1(reference, tok, corpus, tmp_path, monkeypatch):
    from kolm.data import scan

    calls = {"n": 0}
    orig = scan.Scanner._handle_clean

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(scan.Scanner, "_handle_clean", flaky)
    out = tmp_path / "out"
    kw = {"batch_bytes": 8192, "checkpoint_mb": 0.03}
    with pytest.raises(KeyboardInterrupt):
        build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3}, **kw)
    state = json.loads((out / ".work" / "scan_state.json").read_text())
    assert not state["done"] and state["position"] != [0, 0, 0] and not (out / "manifest.json").exists()
    monkeypatch.setattr(scan.Scanner, "_handle_clean", orig)
    m = build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3}, **kw)
    assert m["resumed"] is True
    assert file_digests(out) == file_digests(reference["out"])
    assert stable(m) | {"recipe": None} == stable(reference["manifest"]) | {"recipe": None}


def test_resume_after_interruption_in_packing_skips_finished_shards(tok, corpus, tmp_path, monkeypatch):
    from kolm.data import pack

    kw = {"shard_size": 8}  # many shards; each also written in several record batches below
    ref = tmp_path / "ref"
    build(tok, ref, sources(corpus), {"ko": 0.7, "en": 0.3}, **kw)
    orig = pack._write_batches
    written = []

    def flaky(path, *a, **k):
        if len(written) == 2:
            raise KeyboardInterrupt
        orig(path, *a, **k)
        written.append(path)

    monkeypatch.setattr(pack, "_write_batches", flaky)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3}, **kw)
    before = {p.name: p.stat().st_mtime_ns for p in written}
    monkeypatch.setattr(pack, "_write_batches", orig)
    build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3}, **kw)
    assert {p.name: p.stat().st_mtime_ns for p in written} == before  # not redone
    assert file_digests(out) == file_digests(ref)
    assert len(list((out / "train").glob("*.arrow"))) > 2


def test_existing_output_is_protected(reference, tok, corpus):
    with pytest.raises(KolmError, match="already holds a finished build"):
        build(tok, reference["out"], sources(corpus), {"ko": 0.7, "en": 0.3})


# -- bad input ----------------------------------------------------------------------------------------------------
def test_bad_records_are_counted_skips(tok, tmp_path):
    import datasets

    rng = random.Random(5)
    good = [ko_doc(rng) for _ in range(60)]
    nfd = [unicodedata.normalize("NFD", ko_doc(rng)) for _ in range(20)]
    assert all(not unicodedata.is_normalized("NFC", x) for x in nfd)
    raw = tmp_path / "mixed.txt"
    with open(raw, "wb") as f:
        for x in good[:30]:
            f.write(x.encode() + b"\n")
        f.write(b"\xff\xfe broken \xc3\x28 bytes\n")  # line 31: invalid UTF-8
        f.write(b"\n")  # line 32: empty document
        f.write(b"   \t \n")  # line 33: blank after normalisation
        f.write(("가" * 10).encode() + b" " + b"x" * (50 << 20) + b"\n")  # line 34: a 50 MB line
        for x in good[30:] + nfd:
            f.write(x.encode() + b"\n")
    js = tmp_path / "rows.jsonl"
    lines = [json.dumps({"text": ko_doc(rng)}, ensure_ascii=False) for _ in range(10)]
    lines += ['{"text": "broken', json.dumps({"body": "no text field"}), json.dumps(["not", "an", "object"]),
              json.dumps({"text": ""}), json.dumps({"text": 42})]
    js.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    m = build(tok, tmp_path / "out", [{"name": "txt", "lang": "ko", "paths": [str(raw)]},
                                      {"name": "js", "lang": "ko", "paths": [str(js)]}], {"ko": 1.0})
    check_invariants(m)
    t = m["sources"]["txt"]
    assert t["read"] == 60 + 20 + 4
    assert t["dropped"] == {"invalid_utf8": 1, "empty": 2, "record_too_large": 1}
    assert t["drop_examples"]["invalid_utf8"] == [f"{raw}:31"]
    assert t["drop_examples"]["record_too_large"] == [f"{raw}:34"]
    assert t["dropped_bytes"]["record_too_large"] > 50 << 20
    j = m["sources"]["js"]
    assert j["read"] == 15 and j["dropped"] == {"bad_json": 2, "missing_field": 2, "empty": 1}
    assert j["drop_examples"]["bad_json"] == [f"{js}:11", f"{js}:13"]
    # NFD input ends up composed, in validation text and in the train tokens alike.
    texts = []
    for lang_dir in (tmp_path / "out" / "validation").iterdir():
        texts += datasets.load_from_disk(str(lang_dir))["text"]
    assert all(unicodedata.is_normalized("NFC", x) for x in texts)
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(tok / "tokenizer.json"))
    decoded = [tk.decode(d) for d in stream_docs(tmp_path / "out", m["tokenizer"]["eos_id"])]
    assert all(unicodedata.is_normalized("NFC", x) for x in decoded)
    missing = {unicodedata.normalize("NFC", x) for x in nfd} - set(decoded) - set(texts)
    assert len(missing) <= 1  # every NFD document made it, composed (one may be the cut-off tail)


@pytest.mark.parametrize("case,msg", [
    ("missing_file", "file not found: .*nope.txt"),
    ("empty_glob", "glob 'none_\\*.txt' matched no files"),
    ("missing_tokenizer", "tokenizer folder not found: .*no_such_tokenizer"),
    ("no_text_field", r"rows.jsonl:1: no string field 'text' .*\['body', 'id'\]"),
    ("parquet_column", r"no column 'text' \(columns: \['content'\]\)"),
    ("unknown_format", "unknown format"),
    ("hub_offline", "needs the network"),
])
def test_errors_name_the_culprit_before_work_starts(tok, tmp_path, case, msg, monkeypatch):
    good = write_lines(tmp_path / "good.txt", [ko_doc(random.Random(0)) for _ in range(5)])
    src = {"name": "s", "lang": "ko", "paths": [str(good)]}
    tokenizer = tok
    if case == "missing_file":
        src["paths"] = [str(tmp_path / "nope.txt")]
    elif case == "empty_glob":
        src["paths"] = ["none_*.txt"]
    elif case == "missing_tokenizer":
        tokenizer = tmp_path / "no_such_tokenizer"
    elif case == "no_text_field":
        (tmp_path / "rows.jsonl").write_text(json.dumps({"id": 1, "body": "x"}) + "\n", encoding="utf-8")
        src["paths"] = [str(tmp_path / "rows.jsonl")]
    elif case == "parquet_column":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"content": ["a"]}), tmp_path / "t.parquet")
        src["paths"] = [str(tmp_path / "t.parquet")]
    elif case == "unknown_format":
        (tmp_path / "data.csv").write_text("a,b\n")
        src["paths"] = [str(tmp_path / "data.csv")]
    elif case == "hub_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        src = {"name": "s", "lang": "ko", "hub": "someone/korean-web"}
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # relative source paths are relative to the working directory
    cfg = cfg_for(tokenizer, out, [src], {"ko": 1.0})
    with pytest.raises(KolmError, match=msg):
        run(cfg)
    assert not out.exists()  # nothing started


# -- formats ------------------------------------------------------------------------------------------------------
def test_all_input_formats(tok, tmp_path, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rng = random.Random(9)
    docs = [ko_doc(rng) for _ in range(60)]
    rows = [json.dumps({"meta": {"body": d}}, ensure_ascii=False) for d in docs[:10]]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("\n".join(json.dumps({"meta": {"body": d}}, ensure_ascii=False) for d in docs[10:20]) + "\n").encode()))
    pq.write_table(pa.table({"text": docs[20:30] + [None]}), tmp_path / "c.parquet")
    datasets.Dataset.from_dict({"text": docs[30:40]}).save_to_disk(str(tmp_path / "d_saved"))
    (tmp_path / "e.txt").write_text("\n\n".join(d.replace(" ", "\n", 1) for d in docs[40:50]) + "\n",
                                    encoding="utf-8")
    srcs = [{"name": "jsonl", "lang": "ko", "paths": ["*.jsonl.*"], "text_field": "meta.body"},
            {"name": "parquet", "lang": "ko", "paths": ["c.parquet"]},
            {"name": "saved", "lang": "ko", "paths": ["d_saved"]},
            {"name": "para", "lang": "ko", "paths": ["e.txt"], "txt_mode": "paragraph"}]
    monkeypatch.chdir(tmp_path)
    m = build(tok, tmp_path / "out", srcs, {"ko": 1.0})
    check_invariants(m)
    got = {k: (v["read"], v["kept"]) for k, v in m["sources"].items()}
    assert got == {"jsonl": (20, 20), "parquet": (11, 10), "saved": (10, 10), "para": (10, 10)}
    assert m["sources"]["parquet"]["dropped"] == {"missing_field": 1}


# -- CLI and shared corpora -----------------------------------------------------------------------------------------
def test_cli_build_and_inspect_with_relative_recipe_paths(tok, tmp_path, capsys):
    from kolm.cli import main

    rdir = tmp_path / "recipes"
    (rdir / "data").mkdir(parents=True)
    rng = random.Random(3)
    write_lines(rdir / "data" / "ko.txt", [ko_doc(rng) for _ in range(200)])
    write_lines(rdir / "data" / "en.txt", [en_doc(rng) for _ in range(200)])
    recipe = rdir / "r.yaml"
    recipe.write_text(f"tokenizer: {os.path.relpath(tok, rdir)}\nseq_len: {SEQ}\nmix: {{ko: 0.6, en: 0.4}}\n"
                      "sources:\n  - {lang: ko, paths: [data/ko.txt]}\n  - {lang: en, paths: [data/*.txt]}\n"
                      "validation: {fraction: 0.05, min_docs: 1}\nprogress: false\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["data", "build", str(recipe), "--output", str(out), "num_proc=0"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    check_invariants(m)
    assert m["recipe"]["sources"][0]["paths"] == [str(rdir.resolve() / "data" / "ko.txt")]  # relative to the recipe
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--samples", "1"]) == 0
    shown = capsys.readouterr().out
    assert "achieved" in shown and "ko_0" in shown and "== ko: validation" in shown and "EOS" in shown
    assert main(["data", "inspect", str(tmp_path / "nothing")]) == 2


def test_shared_corpora_recipe_end_to_end(tmp_path):
    need_shared()
    from kolm.cli import main

    recipe = Path(__file__).resolve().parents[1] / "data_recipes" / "ko_en_replay.yaml"
    out = tmp_path / "out"
    assert main(["data", "build", str(recipe), "--output", str(out), "seq_len=512", "num_proc=0",
                 "progress=false", f"tokenizer={real_tokenizer('mistral')}"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    check_invariants(m)
    assert m["sources"]["ko_dev"]["read"] == 2922 and m["sources"]["en_dev"]["read"] == 12000
    assert m["sources"]["ko_dev"]["epochs"] == pytest.approx(1.0) and m["sources"]["en_dev"]["epochs"] < 1
    assert m["tokenizer"]["eos_id"] == 2 and m["tokenizer"]["vocab_size"] == 32000
    assert m["languages"]["ko"]["validation"]["docs"] > 10 and m["languages"]["en"]["validation"]["docs"] > 10


# -- failures name their cause; a failed build does not block the corrected one ------------------------------------
def en_as_ko(tmp_path: Path, n: int = 45) -> Path:
    """A 'Korean' file that holds English (n documents) and 5 documents too short for any language."""
    rng = random.Random(11)
    return write_lines(tmp_path / "ko.txt", [en_doc(rng) for _ in range(n)] + [f"hi {i}" for i in range(5)])


def two_sources(ko: Path, en: Path, ko_first: bool = True) -> list[dict]:
    s = [{"name": "ko_web", "lang": "ko", "paths": [str(ko)]}, {"name": "en_web", "lang": "en", "paths": [str(en)]}]
    return s if ko_first else s[::-1]


@pytest.mark.parametrize("ko_first", [True, False])
def test_language_that_lost_everything_is_blamed_on_its_sources(tok, tmp_path, monkeypatch, ko_first):
    from kolm.data import sources as sources_mod

    rng = random.Random(12)
    en = write_lines(tmp_path / "en.txt", [en_doc(rng) for _ in range(80)])
    read, orig = [], sources_mod.iter_records

    def spy(src, fi, skip=0):
        read.append(src.name)
        return orig(src, fi, skip)

    monkeypatch.setattr(sources_mod, "iter_records", spy)
    want = (r"^language ko has no documents left after cleaning and dedup: source ko_web \(ko.txt\): all 50 documents "
            r"dropped: low_hangul 45 \(min_hangul_ratio 0.3\), too_short 5 \(min_chars 20\)$")
    with pytest.raises(KolmError, match=want):
        build(tok, tmp_path / "out", two_sources(en_as_ko(tmp_path), en, ko_first), {"ko": 0.8, "en": 0.2})
    # Korean is checked as soon as its last source is read: English is not scanned for nothing when it comes after.
    assert read == (["ko_web"] if ko_first else ["en_web", "ko_web"])


def test_failed_build_does_not_block_the_corrected_recipe(tok, tmp_path, capsys):
    rng = random.Random(13)
    en = write_lines(tmp_path / "en.txt", [en_doc(rng) for _ in range(80)])
    good_ko = write_lines(tmp_path / "good_ko.txt", [ko_doc(rng) for _ in range(80)])
    out = tmp_path / "out"
    bad_ko = en_as_ko(tmp_path)
    with pytest.raises(KolmError, match="language ko has no documents left"):
        build(tok, out, two_sources(bad_ko, en), {"ko": 0.8, "en": 0.2})
    assert (out / ".work").is_dir() and not (out / "manifest.json").exists()
    from kolm.cli import main

    assert main(["data", "inspect", str(out)]) == 2  # says what is there
    assert "a build that failed: language ko has no documents left" in capsys.readouterr().err
    # The same recipe again resumes (and fails the same way); it is not refused.
    with pytest.raises(KolmError, match="language ko has no documents left"):
        build(tok, out, two_sources(bad_ko, en), {"ko": 0.8, "en": 0.2})
    assert "resuming the unfinished build" in capsys.readouterr().err
    # The corrected recipe runs without --overwrite and gives what a build into a fresh folder gives.
    m = build(tok, out, two_sources(good_ko, en), {"ko": 0.8, "en": 0.2})
    assert "holds a build that failed; the inputs changed (sources[0].paths, input files)" in capsys.readouterr().err
    check_invariants(m)
    fresh = build(tok, tmp_path / "fresh", two_sources(good_ko, en), {"ko": 0.8, "en": 0.2})
    assert file_digests(out) == file_digests(tmp_path / "fresh") and not (out / ".work").exists()
    assert stable(m) | {"recipe": None} == stable(fresh) | {"recipe": None} and m["warnings"] == []


def interrupted_build(tok: Path, corpus: dict, out: Path, monkeypatch) -> Path:
    """``out`` after a build of the main corpus that was interrupted (Ctrl-C) at its first batch."""
    from kolm.data import scan

    with monkeypatch.context() as mp:
        mp.setattr(scan.Scanner, "_handle_clean", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3})
    return out


def test_interrupted_build_of_another_recipe_is_still_protected(tok, corpus, tmp_path, monkeypatch):
    out = interrupted_build(tok, corpus, tmp_path / "out", monkeypatch)
    with pytest.raises(KolmError, match=r"holds an interrupted build of other inputs \(changed: cleaning.min_chars, "
                                        r"seed\); run that recipe again to resume it, or pass --overwrite"):
        build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3}, seed=5, cleaning={"min_chars": 30})
    m = build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3})  # the original recipe resumes
    assert m["resumed"] is True


def test_second_build_into_a_running_output_is_refused(tok, corpus, tmp_path, monkeypatch):
    import fcntl

    out = interrupted_build(tok, corpus, tmp_path / "out", monkeypatch)
    fd = os.open(out / ".work" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running build holds it
        for kw in ({}, {"overwrite": True}):
            with pytest.raises(KolmError, match=rf"another kolm data build \(pid {os.getpid()}\) is writing to"):
                build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3}, **kw)
    finally:
        os.close(fd)
    assert build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3})["resumed"] is True


def test_empty_files_are_refused_or_reported_before_work(tok, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(14)
    write_lines(tmp_path / "en.txt", [en_doc(rng) for _ in range(80)])
    (tmp_path / "ko.txt").write_bytes(b"")
    (tmp_path / "ko.jsonl").write_bytes(b"\n\n  \n")  # blank lines are layout: no record
    with gzip.open(tmp_path / "ko.txt.gz", "wb") as f:
        f.write(b"")
    srcs = [{"name": "ko_web", "lang": "ko", "paths": ["ko.txt", "ko.txt.gz"]},
            {"name": "ko_js", "lang": "ko", "paths": ["ko.jsonl"]},
            {"name": "ko_capped", "lang": "ko", "paths": ["en.txt"], "max_docs": 0},
            {"name": "en_web", "lang": "en", "paths": ["en.txt"]}]
    out = tmp_path / "out"
    with pytest.raises(KolmError, match=r"^language ko has nothing to read: source ko_web: its 2 files are empty; "
                                        r"source ko_js: ko.jsonl is empty; source ko_capped: max_docs is 0; fix"):
        build(tok, out, srcs, {"ko": 0.8, "en": 0.2})
    assert not out.exists()
    write_lines(tmp_path / "ko2.txt", [ko_doc(rng) for _ in range(80)])
    srcs[0]["paths"] = ["ko.txt", "ko2.txt"]  # one empty file beside a good one: a warning, and the build runs
    m = build(tok, out, srcs, {"ko": 0.8, "en": 0.2})
    assert m["warnings"][:3] == [f"source ko_web: {tmp_path / 'ko.txt'} is empty",
                                 "source ko_js adds nothing: ko.jsonl is empty",
                                 "source ko_capped adds nothing: max_docs is 0"]
    assert "kolm data build: warning: source ko_js adds nothing: ko.jsonl is empty" in capsys.readouterr().err
    check_invariants(m)


def test_source_that_lost_everything_is_reported_when_its_language_survives(tok, tmp_path):
    rng = random.Random(15)
    srcs = [{"name": "ko_good", "lang": "ko", "paths": [str(write_lines(tmp_path / "k.txt", [ko_doc(rng)] * 1 +
                                                                         [ko_doc(rng) for _ in range(60)]))]},
            {"name": "ko_web", "lang": "ko", "paths": [str(en_as_ko(tmp_path, 10))]}]
    m = build(tok, tmp_path / "out", srcs, {"ko": 1.0})
    assert m["warnings"] == ["source ko_web (ko.txt): all 15 documents dropped: low_hangul 10 (min_hangul_ratio 0.3), "
                             "too_short 5 (min_chars 20)"]
    assert m["sources"]["ko_web"]["kept"] == 0 and m["sources"]["ko_good"]["kept"] == 61


@pytest.mark.parametrize("validation,msg", [
    ({"fraction": 0.001, "min_docs": 1}, r"language ko kept 20 documents and validation.fraction=0.001 held out 0 "
                                         r"of them, fewer than validation.min_docs=1; raise validation.fraction"),
    ({"fraction": 0.999, "min_docs": 1}, r"every one of the 20 documents language ko kept went to the validation "
                                         r"split \(validation.fraction=0.999\), none is left to train on"),
])
def test_split_shortages_say_what_was_kept(tok, tmp_path, validation, msg):
    rng = random.Random(16)
    ko = write_lines(tmp_path / "ko.txt", [ko_doc(rng) for _ in range(20)])
    with pytest.raises(KolmError, match=msg):
        build(tok, tmp_path / "out", [{"name": "ko", "lang": "ko", "paths": [str(ko)]}], {"ko": 1.0},
              validation=validation)


def test_truncated_compressed_file_keeps_what_was_read(tok, tmp_path, monkeypatch):
    import functools

    from kolm.data import sources as src_mod

    monkeypatch.setattr(src_mod, "_iter_lines", functools.partial(src_mod._iter_lines, chunk=4096))
    monkeypatch.chdir(tmp_path)
    rng = random.Random(17)
    docs = [ko_doc(rng) for _ in range(300)]
    blob = gzip.compress(("\n".join(docs) + "\n").encode())
    (tmp_path / "cut.txt.gz").write_bytes(blob[: len(blob) * 2 // 3])
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(KolmError, match=r"sources\[0\] \(ko\): .*bad.txt.gz: cannot be read \(BadGzipFile"):
        build(tok, tmp_path / "out", [{"name": "ko", "lang": "ko", "paths": ["*.txt.gz"]}], {"ko": 1.0})
    m = build(tok, tmp_path / "out", [{"name": "ko", "lang": "ko", "paths": ["cut.txt.gz"]}], {"ko": 1.0})
    s = m["sources"]["ko"]
    assert 50 < s["read"] < 300 and s["kept"] == s["read"]  # the documents before the cut, all of them
    assert m["warnings"] == [f"source ko: {tmp_path / 'cut.txt.gz'} is truncated or corrupt after record "
                             f"{s['read']} (EOFError: Compressed file ended before the end-of-stream marker was "
                             f"reached); the records before it were used, the rest of the file was skipped"]


def test_disk_full_is_one_line_and_the_same_command_resumes(reference, tok, corpus, tmp_path, monkeypatch):
    import errno

    from kolm.data import pack

    orig = pack._write_batches

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pack, "_write_batches", full)
    out = tmp_path / "out"
    with pytest.raises(KolmError, match=rf"^no space left in {re.escape(str(out))}: the rest of the build \(train "
                                        r"shards of about .* each, then the validation splits\) needs about .*; .* "
                                        r"free of .* on .*; free some space and run the same command again to resume$"):
        build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3})
    monkeypatch.setattr(pack, "_write_batches", orig)
    m = build(tok, out, sources(corpus), {"ko": 0.7, "en": 0.3})
    assert m["resumed"] is True and file_digests(out) == file_digests(reference["out"])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(KolmError, match=r"^output .*a_file/out: Not a directory"):
        build(tok, tmp_path / "a_file" / "out", sources(corpus), {"ko": 0.7, "en": 0.3})
