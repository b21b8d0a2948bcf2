"""Unit tests of the data stage's pieces: cleaning, PII, filter measures, MinHash/LSH, key sets, mixing, configs,
recipes. The filter pipeline itself is tested in test_data_filters.py."""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kolm.config import ConfigError, from_dict, resolve
from kolm.data import clean
from kolm.data.config import CleaningConfig, DataBuildConfig, DedupConfig, optimal_lsh_params
from kolm.data.dedup import KeySet, MinHasher, ngram_hashes
from kolm.data.mix import _sample_source, check_shares, make_plan
from kolm.errors import KolmError

REPO = Path(__file__).resolve().parents[1]
TOKENS = CleaningConfig().pii.tokens


def mask(text: str) -> tuple[str, dict[str, int]]:
    return clean.mask_pii(text, ["email", "phone", "kr_rrn", "ip"], TOKENS)


# -- normalisation ------------------------------------------------------------------------------------------------
def test_nfd_hangul_is_composed():
    nfc = "한국어 위키백과에 오신 것을 환영합니다"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc and len(nfd) > len(nfc)
    out = clean.normalize(nfd)
    assert out == nfc
    assert unicodedata.is_normalized("NFC", out)


def test_control_characters_and_whitespace():
    raw = "\ufeff  Hello\u200b\x00 world\u00a0\u3000again\t\tand\r\nnext  line \u2028\n\n\n\nend\x7f  "
    assert clean.normalize(raw) == "Hello world again and\nnext line\n\nend"
    assert clean.normalize(clean.normalize(raw)) == clean.normalize(raw)  # idempotent


# -- PII ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind", [
    ("연락처: kim.minsu@example.co.kr로 보내세요", "email"),
    ("write to jane_doe+news@mail.example.com today", "email"),
    ("휴대폰 010-1234-5678 로 연락", "phone"),
    ("서울 02-123-4567 입니다", "phone"),
    ("국제전화 +82 10-9876-5432", "phone"),
    ("번호는 01098765432번", "phone"),
    ("call (555) 123-4567 now", "phone"),
    ("call +1 555 123 4567 now", "phone"),
    ("주민등록번호 900101-1234567 입니다", "kr_rrn"),
    ("RRN 850312 - 2345678 here", "kr_rrn"),
    ("server at 192.168.0.1.", "ip"),
    ("loopback 127.0.0.1 and more", "ip"),
])
def test_pii_is_masked(text, kind):
    out, counts = mask(text)
    assert counts == {kind: 1}, (out, counts)
    assert TOKENS[kind] in out
    assert "@" not in out or kind != "email"


@pytest.mark.parametrize("text", [
    "Python 3.11.7 was released on 2023-12-04.",
    "1.2.3.4. 이미지 창 제목표시줄",  # a section number, not an address
    "ISBN 978-3-16-148410-0",
    "그림 17.420. 애니메이션 필터 메뉴",
    "The value 1234567890123 is an integer.",
    "x12010-1234-5678",
])
def test_pii_leaves_non_pii_alone(text):
    assert mask(text) == (text, {})


def test_pii_types_and_tokens_configurable():
    out, counts = clean.mask_pii("a@b.com 010-1234-5678", ["phone"], {**TOKENS, "phone": "<PHONE>"})
    assert out == "a@b.com <PHONE>" and counts == {"phone": 1}


# -- filters ------------------------------------------------------------------------------------------------------
def test_hangul_ratio_vectorised_matches_definition():
    texts = ["한국어 text 입니다", "English only", "", "123 !!! ...", "ㄱㄴㄷ 자모 ﾟ"]
    got = clean.hangul_ratios(texts)
    assert got[0] == pytest.approx(6 / 10)
    assert got[1] == 0 and got[2] == 0 and got[3] == 0
    assert got[4] == pytest.approx(5 / 6)


def _naive_repetition(words: list[bytes]) -> tuple[float, float]:
    total = sum(map(len, words))
    grams = Counter(zip(words, words[1:]))
    top = max((c * (len(a) + len(b)) for (a, b), c in grams.items() if c > 1), default=0)
    g5 = [tuple(words[i:i + 5]) for i in range(len(words) - 4)]
    c5 = Counter(g5)
    covered = set()
    for i, g in enumerate(g5):
        if c5[g] > 1:
            covered.update(range(i, i + 5))
    return top / total, sum(len(words[i]) for i in covered) / total


def test_repetition_fracs_match_naive():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}".encode() * (1 + i % 3) for i in range(40)]
    docs = [[vocab[j] for j in rng.integers(0, 40 if d % 2 else 8, size=rng.integers(25, 80))] for d in range(12)]
    docs.append([b"short", b"doc"])
    import zlib

    flat = [w for d in docs for w in d]
    wh = np.array([zlib.crc32(w) for w in flat], dtype=np.uint32)
    wl = np.array([len(w) for w in flat], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    top2, dup5 = clean.repetition_fracs(wh, wl, offsets, min_words=20)
    for d, (t, u) in enumerate(zip(top2, dup5)):
        if len(docs[d]) < 20:
            assert t == 0 and u == 0
            continue
        nt, nu = _naive_repetition(docs[d])
        assert t == pytest.approx(nt) and u == pytest.approx(nu)


@pytest.mark.parametrize("texts", [
    ["Hello World", "", "한국어  문장 입니다", "x"],
    ["with a \x00 sentinel word", "plain text"],  # falls back to one split per document
    ["one"],
])
def test_split_words_matches_per_document_split(texts):
    words, start, end = clean.split_words(texts)
    assert [words[a:b] for a, b in zip(start, end)] == [t.lower().encode().split() for t in texts]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_line_reader_chunks_and_caps(chunk):
    import io

    from kolm.data.sources import _iter_lines

    data = b"ab\r\n" + b"x" * 25 + b"\n\nlast-line"
    got = list(_iter_lines(io.BytesIO(data), cap=10, chunk=chunk))
    assert got == [(1, b"ab", 4), (2, None, 26), (3, b"", 1), (4, b"last-line", 9)]
    got = list(_iter_lines(io.BytesIO(b"x" * 30), cap=10, chunk=chunk))
    assert got == [(1, None, 30)]


# -- MinHash / LSH --------------------------------------------------------------------------------------------------
def test_minhash_equals_datasketch():
    datasketch = pytest.importorskip("datasketch")
    hasher = MinHasher(num_perm=64, seed=7, bands=8, rows=8)
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 2**32, size=n, dtype=np.uint32) for n in (1, 5, 300, 40)]
    shingles = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    hasher.chunk = 50  # force the chunked path to cross document boundaries
    sig = hasher.signatures(shingles, offsets)
    for d, hv in enumerate(docs):
        m = datasketch.MinHash(num_perm=64, seed=7, hashfunc=lambda x: x, scheme="affine32")
        m.update_batch(hv.tolist())
        assert np.array_equal(sig[d], m.hashvalues.astype(np.uint32))


def test_ngram_hashes_and_near_duplicate_bands():
    hasher = MinHasher(num_perm=128, seed=1, bands=9, rows=13)
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**32, size=120, dtype=np.uint32)
    near = base.copy()
    near[60] ^= 12345  # one word changed: Jaccard of 3-grams ~ 0.95
    other = rng.integers(0, 2**32, size=120, dtype=np.uint32)
    short = base[:2]
    words = np.concatenate([base, near, other, short, np.zeros(0, np.uint32)])
    offsets = np.array([0, 120, 240, 360, 362, 362])
    sh, sh_off = ngram_hashes(words, offsets, 3)
    assert list(np.diff(sh_off)) == [118, 118, 118, 1, 0]
    bands = hasher.band_keys(hasher.signatures(sh, sh_off))
    assert len(set(bands[0]) & set(bands[1])) > 0
    assert len(set(bands[0]) & set(bands[2])) == 0
    sh2, _ = ngram_hashes(words[:120], np.array([0, 120]), 3)
    assert np.array_equal(sh2, sh[:118])  # a document's shingles do not depend on its neighbours


def test_optimal_lsh_params_match_datasketch():
    assert optimal_lsh_params(0.8, 128) == (9, 13)
    b, r = DedupConfig(threshold=0.8, num_perm=128, bands=16).lsh_params()
    assert (b, r) == (16, 8)


def test_keyset_runs_merge_and_reload(tmp_path):
    ks = KeySet(tmp_path, "k", mmap_at=200)
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**63, size=1000, dtype=np.uint64)
    for i in range(0, 1000, 37):
        ks.add(keys[i:i + 37])
    assert 1 <= len(ks.runs) <= 8 and len(ks) == 1000
    assert any(f is not None for f in ks.files)  # big runs live on disk, memory-mapped
    assert ks.contains(keys).all()
    others = rng.integers(0, 2**63, size=1000, dtype=np.uint64)
    assert not ks.contains(others).any()
    mixed = np.concatenate([others[:5], keys[:5]])
    assert ks.contains(mixed).tolist() == [False] * 5 + [True] * 5
    state = ks.checkpoint()
    ks.add(others[:10].tolist())
    ks2 = KeySet.load(tmp_path, "k", state)
    assert ks2.contains(keys).all() and not ks2.contains(others[:10]).any()
    assert ks2.contains(keys.reshape(10, 100)).shape == (10, 100)


# -- mixing -------------------------------------------------------------------------------------------------------
def test_sample_source_comes_closest():
    rng = np.random.default_rng(0)
    lengths = np.full(100, 10, dtype=np.int64)
    docs = _sample_source(lengths, 254.0, rng)
    assert lengths[docs].sum() == 250
    docs = _sample_source(lengths, 2.5 * 1000, rng)  # 2.5 epochs: every doc twice, half of them thrice
    c = np.bincount(docs, minlength=100)
    assert lengths[docs].sum() == 2500 and set(c) == {2, 3}


def test_plan_shares_and_epochs():
    rng = np.random.default_rng(5)
    ko = rng.integers(50, 400, size=3000)
    en = rng.integers(50, 400, size=9000)
    plan = make_plan([ko, en], ["ko", "en"], [1.0, 1.0], {"ko": 0.8, "en": 0.2}, 256, seed=0)
    check_shares(plan, {"ko": 0.8, "en": 0.2})
    assert abs(plan.shares()["ko"] - 0.8) < 0.005
    assert plan.epochs[0] == pytest.approx(1.0)  # Korean is the limiting language: all of it, once
    assert plan.epochs[1] < 1.0
    # Upsampling: Korean may be repeated up to 3 times, so more English fits.
    plan3 = make_plan([ko, en], ["ko", "en"], [3.0, 1.0], {"ko": 0.8, "en": 0.2}, 256, seed=0)
    assert plan3.epochs[0] == pytest.approx(3.0, rel=1e-3) and plan3.epochs[1] > plan.epochs[1]
    assert abs(plan3.shares()["ko"] - 0.8) < 0.005
    capped = make_plan([ko, en], ["ko", "en"], [1.0, 1.0], {"ko": 0.8, "en": 0.2}, 256, seed=0,
                       max_train_tokens=100_000)
    assert capped.total_tokens <= 100_000 and abs(capped.shares()["en"] - 0.2) < 0.005
    with pytest.raises(KolmError, match="no train documents left for language"):
        make_plan([ko, np.zeros(0, np.int64)], ["ko", "en"], [1.0, 1.0], {"ko": 0.5, "en": 0.5}, 256, seed=0)


def test_check_shares_fails_loudly_when_unreachable():
    # Korean comes in two documents of 500 tokens, the budget is 600: no choice of whole documents fits.
    plan = make_plan([np.array([500, 500]), np.full(60, 10)], ["ko", "en"], [1.0, 1.0], {"ko": 0.5, "en": 0.5},
                     64, seed=0)
    with pytest.raises(KolmError, match="cannot be met"):
        check_shares(plan, {"ko": 0.5, "en": 0.5})


def test_too_few_tokens_for_one_sequence_names_the_scarce_language():
    plan = make_plan([np.array([10, 10]), np.full(100, 50)], ["ko", "en"], [1.0, 1.0], {"ko": 0.5, "en": 0.5}, 256,
                     seed=0)
    with pytest.raises(KolmError, match=r"single sequence of 256 tokens after mixing: the mix holds ko 20, en 20 "
                                        r"tokens, limited by ko \(20 kept train tokens x max_epochs at share 0.5\); "
                                        r"add ko documents"):
        check_shares(plan, {"ko": 0.5, "en": 0.5})


def test_write_train_packs_the_stream_exactly(tmp_path):
    """Sequences are the shuffled document stream cut every seq_len tokens: no padding, documents in order."""
    import datasets

    from kolm.data.pack import TokenStore, write_train

    rng = np.random.default_rng(0)
    stores, docs = [], []
    for s in range(2):
        lens = rng.integers(1, 40, size=50).astype(np.int32)
        toks = [np.append(rng.integers(10, 1000, size=n - 1), 2).astype(np.int32) for n in lens]  # EOS = 2
        docs.append(toks)
        np.concatenate(toks).tofile(tmp_path / f"t{s}.bin")
        lens.tofile(tmp_path / f"l{s}.bin")
        stores.append(TokenStore(tmp_path / f"t{s}.bin", tmp_path / f"l{s}.bin"))
    plan = make_plan([st.lengths for st in stores], ["ko", "en"], [1.0, 1.0], {"ko": 0.5, "en": 0.5}, 16, seed=3)
    info = write_train(tmp_path / "train", plan, stores, shard_size=7, fingerprint="x", batch_bytes=3 * 16 * 4)
    assert info["shards"] == -(-plan.n_sequences // 7) and len(list((tmp_path / "train").glob("*.arrow"))) > 2
    ds = datasets.load_from_disk(str(tmp_path / "train"))
    assert str(ds.data.schema.field("input_ids").type) == "fixed_size_list<item: int32>[16]"
    got = ds.with_format("numpy")[:]["input_ids"]
    assert got.shape == (plan.n_sequences, 16)
    stream = np.concatenate([docs[s][d] for s, d in zip(plan.order_src, plan.order_doc)])
    assert np.array_equal(got.ravel(), stream[: plan.n_sequences * 16])
    assert info["tail_tokens_dropped"] == len(stream) - plan.n_sequences * 16 < 16


# -- configs and shipped recipes ------------------------------------------------------------------------------------
def _cfg(**kw):
    data = {"tokenizer": "tok", "mix": {"ko": 1.0}, "sources": [{"lang": "ko", "paths": ["a.txt"]}], **kw}
    return from_dict(DataBuildConfig, data)


@pytest.mark.parametrize("kw,msg", [
    ({"mix": {"ko": 0.7}}, "sum to"),
    ({"mix": {"ko": 0.8, "en": 0.2}}, "no source for language"),
    ({"sources": [{"lang": "ko", "paths": ["a"]}, {"lang": "en", "paths": ["b"]}]}, "no share in the mix"),
    ({"sources": [{"lang": "Korean!", "paths": ["a"]}]}, "language tag"),
    ({"sources": [{"lang": "ko"}]}, "give `paths` or `hub`"),
    ({"sources": [{"lang": "ko", "paths": ["a"], "name": "x"}, {"lang": "ko", "paths": ["b"], "name": "x"}]},
     "duplicate name"),
    ({"seq_len": 4}, "seq_len"),
    ({"cleaning": {"min_hangul_ratio": 2}}, "min_hangul_ratio"),
    ({"cleaning": {"pii": {"types": ["ssn"]}}}, "unknown"),
    ({"dedup": {"threshold": 1.5}}, "threshold"),
    ({"sources": [{"lang": "ko", "paths": ["a"], "colour": "red"}]}, "unknown field"),
])
def test_config_errors_name_the_field(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        _cfg(**kw)


def test_default_source_names():
    cfg = _cfg(sources=[{"lang": "ko", "paths": ["a"]}, {"lang": "ko", "paths": ["b"]}])
    assert [s.name for s in cfg.sources] == ["ko_0", "ko_1"]


RECIPES = sorted((REPO / "data_recipes").glob("*.yaml"))


def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"ko_en_replay.yaml", "ko_only.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_parses_and_validates(path):
    from kolm.data.build import load_tokenizer
    from kolm.data.sources import resolve_sources
    from tests.helpers import need_shared

    cfg = resolve(DataBuildConfig, yaml_path=str(path))
    assert abs(sum(cfg.mix.values()) - 1) < 1e-9
    need_shared()  # the files they name live in ../shared
    resolved = resolve_sources(cfg.sources, path.parent)
    assert all(s.files for s in resolved)
    if "/out/" in Path(cfg.tokenizer).as_posix() and not Path(cfg.tokenizer).exists():
        return  # an earlier step's output (`kolm vocab extend ... --output out/...`), as the recipe's comment says
    tok = load_tokenizer(cfg.tokenizer, path.parent)
    assert tok["eos_id"] is not None and tok["vocab_size"] > 0
