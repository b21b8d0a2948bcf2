"""Streamed, parallel counting for `kolm vocab extend` (kolm.vocab.count) and the corpus reader it uses
(kolm.io.corpus).

The same units, in the same order, whatever the number of processes, files and part sizes; huge lines read in
bounded memory and cut into windows that change nothing the SentencePiece family counts; the seeded samples; and
errors that name the file and line from inside worker processes.
"""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
from pathlib import Path

import pytest
from helpers import read_lines, real_tokenizer
from test_vocab_extend import GOLDEN

from kolm.cli import main
from kolm.errors import KolmError
from kolm.io import corpus
from kolm.io.corpus import ReadStats, corpus_parts, iter_corpus, iter_part, text_windows, whole_file
from kolm.vocab.count import BottomK, count_corpus, plan
from kolm.vocab.families import detect


def _family(name: str):
    return detect(json.loads((real_tokenizer(name) / "tokenizer.json").read_text()))


@pytest.fixture(scope="module")
def ko_dev() -> Path:
    return real_tokenizer("llama2").parents[1] / "corpora" / "ko_dev.txt"


@pytest.fixture(scope="module")
def halves(tmp_path_factory, ko_dev) -> list[Path]:
    """ko_dev.txt cut into two files at a line boundary."""
    tmp = tmp_path_factory.mktemp("halves")
    lines = ko_dev.read_bytes().split(b"\n")
    a, b = tmp / "a.txt", tmp / "b.txt"
    a.write_bytes(b"\n".join(lines[:1200]) + b"\n")
    b.write_bytes(b"\n".join(lines[1200:]))
    assert a.read_bytes() + b.read_bytes() == ko_dev.read_bytes()
    return [a, b]


# ------------------------------------------------------------------------------------------------ reading


def test_iter_corpus_reads_lines_as_before(tmp_path):
    raw = ("첫 줄\r\n\n   \n가운데\r줄\r\r\n\u2028구분자 포함\u2029\n\t\n마지막 줄, 줄바꿈 없음").encode()
    p = tmp_path / "t.txt"
    p.write_bytes(raw)
    want = [x.rstrip("\r\n") for x in raw.decode().split("\n")]
    assert list(iter_corpus([p])) == [x for x in want if x.strip()]
    assert list(iter_corpus([p])) == ["첫 줄", "가운데\r줄", "\u2028구분자 포함\u2029", "마지막 줄, 줄바꿈 없음"]


def test_invalid_utf8_names_line_and_byte(tmp_path, monkeypatch):
    p = tmp_path / "bad.txt"
    p.write_bytes("좋은 줄\n".encode() * 3000 + b"ok \xff\xfe broken\n" + b"more\n")
    with pytest.raises(KolmError, match=r"bad.txt:3001: invalid UTF-8 \(invalid start byte at byte 3\)"):
        list(iter_corpus([p]))
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 1000)  # the error lies in a later block and a later part
    with pytest.raises(KolmError, match=r"bad.txt:3001: invalid UTF-8"):
        for part in corpus_parts([p], 5000):
            list(iter_part(part, max_chars=100))


def test_jsonl_and_parquet_parts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [f"문서 {i} 한국어" for i in range(3000)]
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)) + "\n\n")
    pa_file = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": docs}), pa_file, row_group_size=500)
    for f in (jl, pa_file):
        parts = corpus_parts([f], 10_000)
        assert len(parts) > 2
        assert [d for part in parts for b in iter_part(part) for d in b] == docs == list(iter_corpus([f]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n' * 5 + "{broken\n")
    with pytest.raises(KolmError, match=r"bad.jsonl:6: not valid JSON"):
        list(iter_corpus([bad]))


def test_parts_cover_the_file_at_line_starts(ko_dev, tmp_path):
    data = ko_dev.read_bytes()
    for size in (1, 999, 50_000, 10**9):
        parts = corpus_parts([ko_dev], size)
        assert parts[0].start == 0 and parts[-1].end == len(data)
        assert all(a.end == b.start for a, b in zip(parts, parts[1:]))
        assert all(data[p.start - 1:p.start] == b"\n" for p in parts[1:])
        lines = [d for part in parts for b in iter_part(part) for d in b]
        assert lines == list(iter_corpus([ko_dev]))
    # one line longer than a part: the parts do not split it
    long = tmp_path / "long.txt"
    long.write_bytes(b"a" * 50_000 + b"\nb\n")
    assert [(p.start, p.end) for p in corpus_parts([long], 10_000)] == [(0, 50_001), (50_001, 50_003)]


def test_windows_cut_before_a_word_and_keep_the_text():
    rng = random.Random(0)
    for _ in range(200):
        # short words and runs of spaces: every window has a space after a non-space to cut before
        text = "".join(rng.choice(["한국", "어", "x", "😀"]) * rng.randint(1, 4) + " " * rng.randint(1, 3)
                       for _ in range(rng.randint(0, 80)))
        n = rng.randint(100, 150)
        pieces = text_windows(text, n)
        assert "".join(pieces) == text and all(len(p) <= n for p in pieces)
        for prev, p in zip(pieces, pieces[1:]):
            assert p[0] == " " and not prev[-1].isspace(), (prev[-5:], p[:5])
    assert text_windows("가" * 250, 100) == ["가" * 100, "가" * 100, "가" * 50]  # no space at all: hard cuts
    assert text_windows("가" * 80 + "\t" + "나" * 100, 100) == ["가" * 80, "\t" + "나" * 99, "나"]  # other whitespace
    assert text_windows("", 100) == [""]


def test_huge_line_is_read_in_bounded_memory(tmp_path, monkeypatch):
    line = ("한국어 문장을 길게 씁니다 " * 120_000).encode()  # 3.7 MB, one line
    p = tmp_path / "one.txt"
    p.write_bytes(line + b"\nnext\n")
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 64 << 10)
    stats = ReadStats()
    digest, sizes, last = hashlib.sha256(), [], ""
    tracemalloc.start()
    for batch in iter_part(whole_file(p), max_chars=2000, stats=stats):
        for d in batch:  # consumed as they come, as the counter does
            digest.update(last.encode())
            sizes.append(len(d))
            last = d
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak  # a few blocks, not the 3.7 MB line (UTF-8) or its 2.5 MB str
    assert digest.hexdigest() == hashlib.sha256(line).hexdigest() and last == "next"
    assert max(sizes) <= 2000
    assert stats.documents == 2 and stats.windowed_documents == 1 and stats.windows == len(sizes) - 1
    assert list(iter_corpus([p])) == [line.decode(), "next"]  # without windows, documents come whole


# ------------------------------------------------------------------------------------------------ counting


@pytest.mark.parametrize("name,morph", [("llama2", False), ("llama3", False),
                                        pytest.param("llama3", True, marks=pytest.mark.slow)])
def test_same_units_whatever_the_processes_and_parts(name, morph, ko_dev, halves, tmp_path):
    fam = _family(name)
    files, runs = halves, ((1, 20_000), (2, 20_000), (2, 10**9))
    if morph:  # kiwi is slow and loads in every worker: a smaller corpus, still in several parts, one 2-process run
        small = tmp_path / "small.txt"
        small.write_text("\n".join(read_lines("ko_dev.txt", 300)) + "\n")
        files, ko_dev, runs = [small], small, ((2, 10_000),)
    ref = count_corpus([ko_dev], fam, morpheme_aware=morph, num_proc=1)
    assert ref.parts == 1
    samples = []
    for procs, part_bytes in runs:
        got = count_corpus(files, fam, morpheme_aware=morph, num_proc=procs, part_bytes=part_bytes)
        assert list(got.units.items()) == list(ref.units.items())  # same counts, same first-appearance order
        assert got.stats.documents == ref.stats.documents == len(list(iter_corpus([ko_dev])))
        assert got.num_proc == min(procs, got.parts) and got.parts > 1 or part_bytes > 10**6
        samples.append((part_bytes, got.sample))
    if not morph:  # the check sample depends on the parts, not on the processes
        assert samples[0] == samples[1] and len(samples[0][1]) == 2000
        assert set(samples[2][1]) != set(samples[0][1]) and len(set(samples[2][1])) == 2000
    if morph:
        assert any(bounds for _, bounds in ref.units)  # morpheme boundaries were counted


def test_windows_change_no_sentencepiece_unit(ko_dev, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text(" ".join(read_lines("ko_dev.txt")) + "\n")
    fam = _family("llama2")
    lines = count_corpus([ko_dev], fam, num_proc=1)
    windowed = count_corpus([one], fam, num_proc=1, max_chars=700)
    assert windowed.stats.windowed_documents == 1 and windowed.stats.windows > 200
    assert list(windowed.units.items()) == list(lines.units.items())
    assert sum(map(len, windowed.sample)) <= 400_000 and max(map(len, windowed.sample)) <= 700


def test_bottom_k_is_uniform_and_merges_across_parts():
    import heapq

    n, k, trials = 300, 30, 600
    hits = [0] * n
    for t in range(trials):
        cands = []
        for j, (a, b) in enumerate([(0, 100), (100, 101), (101, 300)]):
            s = BottomK(k, random.Random(f"{t}:{j}"))
            docs = [str(i) for i in range(a, b)]
            for c in range(0, len(docs), 17):
                s.add(docs[c:c + 17])
            cands += s.items()
        hits_t = [int(d) for _, d in heapq.nsmallest(k, cands)]
        assert len(set(hits_t)) == k
        for i in hits_t:
            hits[i] += 1
    p = k / n
    sd = (p * (1 - p) / trials) ** 0.5
    rates = [h / trials for h in hits]
    assert all(abs(r - p) < 5 * sd for r in rates)  # every position about equally likely
    assert abs(sum(rates[:100]) / 100 - p) < 2 * sd and abs(sum(rates[101:]) / 199 - p) < 2 * sd


def test_sample_plan_is_seeded_and_meets_the_budget(tmp_path, ko_dev):
    big = tmp_path / "big.txt"
    big.write_bytes(ko_dev.read_bytes() * 12)  # 5.2 MB
    size = big.stat().st_size
    everything, total = plan([big])
    assert total == size and sum(p.nbytes for p in everything) == size
    for budget in (1, 1_500_000, 3_000_000):
        parts, _ = plan([big], max_bytes=budget, seed=1)
        got = sum(p.nbytes for p in parts)
        assert budget <= got < budget + (1 << 20) + 200_000
        assert parts == plan([big], max_bytes=budget, seed=1)[0]
        assert len({tuple(plan([big], max_bytes=budget, seed=k)[0]) for k in range(10)}) > 1
        assert all(big.read_bytes()[p.start - 1:p.start] in (b"", b"\n") for p in parts)
    half, _ = plan([big], fraction=0.5, seed=0)
    assert 0.5 * size <= sum(p.nbytes for p in half) < 0.5 * size + (1 << 20) + 200_000


# ------------------------------------------------------------------------------------------------ command


def _hash(folder: Path) -> str:
    return hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()


def test_two_files_two_processes_give_the_reference_output(halves, tmp_path):
    out = tmp_path / "ext"
    assert main(["vocab", "extend", "--base", str(real_tokenizer("llama2")), "--corpus", *map(str, halves),
                 "--num-new-tokens", "3000", "--output", str(out), "--num-proc", "2"]) == 0
    info = json.loads((out / "extension.json").read_text())
    assert info["num_proc"] == 2 and info["corpus_documents"] == 2922
    assert _hash(out) == GOLDEN["llama2"][0]


def test_one_huge_line_is_windowed_and_learns_the_same(tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text(" ".join(read_lines("ko_dev.txt")) + "\n")
    out = tmp_path / "ext"
    assert main(["vocab", "extend", "--base", str(real_tokenizer("llama2")), "--corpus", str(one),
                 "--num-new-tokens", "3000", "--output", str(out), "max_document_chars=2000"]) == 0
    assert "1 long ones windowed" in capsys.readouterr().out
    info = json.loads((out / "extension.json").read_text())
    assert info["long_documents"]["windowed"] == 1 and info["long_documents"]["windows"] > 50
    assert info["corpus_documents"] == 1
    assert _hash(out) == GOLDEN["llama2"][0]  # windows cut before words: the same units as the lines


def test_max_bytes_learns_from_a_reported_sample(tmp_path, ko_dev, capsys):
    big = tmp_path / "big.txt"
    big.write_bytes(ko_dev.read_bytes() * 8)
    out = tmp_path / "ext"
    assert main(["vocab", "extend", "--base", str(real_tokenizer("llama3")), "--corpus", str(big),
                 "--num-new-tokens", "500", "--output", str(out), "--max-bytes", "1M", "--seed", "3"]) == 0
    assert "sample)" in capsys.readouterr().out
    info = json.loads((out / "extension.json").read_text())
    assert info["sample"] == {"max_bytes": 1 << 20, "fraction": 1.0, "seed": 3, "sampled": True,
                              "parts_read": info["sample"]["parts_read"]}
    assert 1 << 20 <= info["corpus_bytes_read"] < info["corpus_bytes"] == big.stat().st_size
    assert info["checks"]["unit_cut_documents_checked"] > 0 and info["checks"]["unit_cut_documents_differing"] == 0


def test_bad_sizes_and_worker_errors(tmp_path, ko_dev, capsys):
    base = str(real_tokenizer("llama2"))
    args = ["vocab", "extend", "--base", base, "--num-new-tokens", "10", "--output", str(tmp_path / "o")]
    assert main([*args, "--corpus", str(ko_dev), "--max-bytes", "lots"]) == 2
    assert "max_bytes: expected a size" in capsys.readouterr().err
    assert main([*args, "--corpus", str(ko_dev), "--sample", "0"]) == 2
    assert "sample: must be in (0, 1]" in capsys.readouterr().err
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_bytes(ko_dev.read_bytes())
    bad.write_bytes(ko_dev.read_bytes() + b"\xc3\x28 broken\n")
    assert main([*args, "--corpus", str(good), str(bad), "--num-proc", "2"]) == 2
    assert "bad.txt:2923: invalid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
