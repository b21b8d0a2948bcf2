"""The quality-filter pipeline of ``kolm data build`` (kolm/data/filters.py), tested as the build runs it.

The drop reasons below come from :class:`kolm.data.filters.Pipeline` (what every worker batch goes through) or from
:meth:`kolm.data.process.Worker.clean` (the pool task itself); a toy filter registered here is counted in a real
build's manifest.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import numpy as np
import pytest

from kolm.config import to_dict
from kolm.data import clean, filters
from kolm.data.config import CleaningConfig, DedupConfig
from kolm.data.filters import Batch, Filter, Pipeline, Words
from kolm.errors import KolmError
from tests.helpers import SHARED, make_sp_tokenizer, need_shared

ORDER = ["empty", "too_short", "too_long", "low_hangul", "symbol_ratio", "dup_lines", "top_2gram", "dup_5gram"]


def reasons(texts: list[str], lang: str, cfg: CleaningConfig) -> list[str | None]:
    """Drop reason per text (None: kept) from one pipeline run over all of them as one batch."""
    pipe = Pipeline(cfg)
    codes = pipe.run(Batch(list(texts), lang))
    return [None if c == 0 else pipe.names[c - 1] for c in codes]


def test_registry_order_and_config_sections():
    assert [f.name for f in filters.FILTERS] == ORDER
    fields = {f.name for f in dataclasses.fields(CleaningConfig)}
    claimed = {s for f in filters.FILTERS for s in f.settings}
    assert claimed <= fields
    # Every threshold of `cleaning` belongs to a filter; the rest configure normalisation and PII.
    assert fields - claimed == {"nfc", "normalize_whitespace", "pii"}


def test_drop_reasons():
    cfg = CleaningConfig(min_chars=10, max_chars=200)
    words = ("buy now " * 15).strip()
    phrase = "ab cd ef gh ij"  # twice among 30 other words: 20% of the word characters, no 2-gram over 8%
    cases = [("", "en", "empty"), ("short", "en", "too_short"), ("x" * 201, "en", "too_long"),
             ("This is an English sentence.", "ko", "low_hangul"), ("이것은 한국어 문장입니다.", "ko", None),
             ("This is an English sentence.", "en", None), ("# # # # title ... more ...", "en", "symbol_ratio"),
             ("same line\nsame line\nsame line\nother", "en", "dup_lines"), (words, "en", "top_2gram"),
             (f"{phrase} {' '.join(f'w{i}' for i in range(30))} {phrase}", "en", "dup_5gram")]
    for text, lang, want in cases:
        assert reasons([text], lang, cfg) == [want], text
    for lang in ("ko", "en"):  # the same verdicts when the documents share one batch
        batch = [t for t, lg, _ in cases if lg == lang]
        assert reasons(batch, lang, cfg) == [w for _, lg, w in cases if lg == lang]


def test_low_hangul_is_off_at_zero_and_for_other_languages():
    text = "This is an English sentence."
    assert reasons([text], "ko", CleaningConfig(min_hangul_ratio=0)) == [None]
    assert reasons([text], "en", CleaningConfig(min_hangul_ratio=1.0)) == [None]


def test_first_failing_filter_wins():
    """A document failing several filters is counted once, under the first in registry order."""
    cfg = CleaningConfig(min_chars=10, max_symbol_word_ratio=0.1)
    assert reasons(["# ..."], "en", cfg) == ["too_short"]  # also symbol_ratio
    rep = "\n".join(["# buy now ..."] * 8)  # fails symbol_ratio, dup_lines and top_2gram
    assert reasons([rep], "en", cfg) == ["symbol_ratio"]
    assert reasons([rep], "en", CleaningConfig(max_symbol_word_ratio=1.0)) == ["dup_lines"]


# Counts measured with the filters as they ran inside Worker.clean before the pipeline was split into classes
# (commit 8f0d2a1); the pipeline must give the same verdicts on the same text. Rows: config, source, counts.
PINNED = {
    "default": ({"dup_5gram": 19, "dup_lines": 105, "empty": 3, "symbol_ratio": 1, "too_short": 621,
                 "top_2gram": 9, None: 2897},
                {"dup_5gram": 187, "dup_lines": 429, "symbol_ratio": 1, "top_2gram": 169, None: 14213}),
    "max_chars": ({"dup_5gram": 19, "dup_lines": 105, "empty": 3, "symbol_ratio": 1, "too_short": 621,
                   "top_2gram": 9, None: 2897},
                  {"dup_5gram": 187, "dup_lines": 427, "symbol_ratio": 1, "too_long": 2, "top_2gram": 169,
                   None: 14213}),
    "strict": ({"dup_5gram": 3, "dup_lines": 104, "empty": 3, "low_hangul": 51, "symbol_ratio": 10,
                "too_short": 1820, "top_2gram": 439, None: 1225},
               {"dup_5gram": 147, "dup_lines": 404, "symbol_ratio": 49, "too_long": 28, "top_2gram": 4076,
                None: 10295}),
}
CONFIGS = {"default": CleaningConfig(), "max_chars": CleaningConfig(max_chars=3000),
           "strict": CleaningConfig(min_chars=50, max_chars=2000, max_symbol_word_ratio=0.02, max_dup_line_frac=0.1,
                                    max_top_2gram_char_frac=0.05, max_dup_5gram_char_frac=0.05,
                                    repetition_min_words=10, min_hangul_ratio=0.6)}


def real_documents() -> tuple[list[str], list[str]]:
    """Every line of the shared corpora, plus multi-line documents of 4 lines (every 7th with a line repeated
    twice) and three records that normalise to nothing."""
    out = []
    for name in ("ko_dev.txt", "en_dev.txt"):
        lines = (need_shared() / "corpora" / name).read_text(encoding="utf-8").splitlines()
        paragraphs = []
        for i in range(0, len(lines) - 4, 4):
            g = lines[i:i + 4]
            paragraphs.append("\n".join(g + [g[0], g[0]] if (i // 4) % 7 == 0 else g))
        out.append(lines + paragraphs)
    out[0] += ["", "  ", "\u200b"]
    return out[0], out[1]


@pytest.mark.parametrize("name", list(PINNED))
def test_worker_verdicts_on_real_text_are_pinned(name):
    """The pool task itself (parse, normalise, PII, pipeline) on the shared corpora, as a build runs it."""
    from kolm.data.process import Worker, WorkerSpec

    docs = real_documents()
    cfg = CONFIGS[name]
    spec = WorkerSpec(str(SHARED / "tokenizers" / "llama2" / "tokenizer.json"), to_dict(cfg), to_dict(DedupConfig()),
                      [("text", "ko"), ("text", "en")], 2, None, 0.1, 0)
    worker = Worker(spec)
    for src, (lines, want) in enumerate(zip(docs, PINNED[name])):
        res = worker.clean(src, "txt", [x.encode() for x in lines])
        got = Counter(None if c == 0 else res["reasons"][c - 1] for c in res["status"])
        assert got == want
        assert len(res["texts"]) == len(res["doc_idx"]) == len(res["exact"]) == want[None]
        assert res["pii"] == ({"email": 10} if src == 0 else {"ip": 34, "email": 6})


def test_verdicts_do_not_depend_on_the_batch():
    """Each document alone gets the verdict it gets inside a batch of real text (features are cut per document)."""
    ko, en = real_documents()
    rng = random.Random(0)
    cfg = CONFIGS["strict"]
    for lang, docs in (("ko", ko), ("en", en)):
        sample = [clean.normalize(d) for d in rng.sample(docs, 400)]
        together = reasons(sample, lang, cfg)
        assert len(set(together)) >= 4  # several filters fire on the sample
        assert together == [reasons([d], lang, cfg)[0] for d in sample]


def test_words_take_and_flat_match_a_fresh_split():
    texts = ["Hello World again", "", "한국어  문장 입니다", "x y", "one two three four"]
    w = Words.of(texts)
    keep = np.array([0, 2, 4])
    hashes, lens, offsets = w.take(keep).flat()
    ref = Words.of([texts[i] for i in keep])
    ref_hashes, ref_lens, ref_offsets = ref.flat()
    assert np.array_equal(hashes, ref_hashes) and np.array_equal(lens, ref_lens)
    assert offsets.tolist() == ref_offsets.tolist() == [0, 3, 6, 10]
    assert [ref.words[a:b] for a, b in zip(ref.start, ref.end)] == [texts[i].lower().encode().split() for i in keep]


def test_batch_keep_cuts_texts_rows_and_features():
    b = Batch(["aa bb", "c", "dd ee ff", "g h"], "en")
    assert b.n_chars.tolist() == [5, 1, 8, 3] and b.words.counts.tolist() == [2, 1, 3, 2]
    b.keep(np.array([True, False, True, False]))
    assert b.texts == ["aa bb", "dd ee ff"] and b.rows.tolist() == [0, 2]
    assert b.n_chars.tolist() == [5, 8] and b.words.counts.tolist() == [2, 3]
    b.keep(np.array([False, True]))
    assert b.rows.tolist() == [2] and b.words.flat()[2].tolist() == [0, 3]


class _Named(Filter):
    def apply(self, batch: Batch) -> np.ndarray:
        return np.zeros(len(batch), dtype=bool)


@pytest.mark.parametrize("attrs,before,msg", [
    ({"name": "Bad Name"}, None, "lower_case"),
    ({"name": "too_short"}, None, "taken"),
    ({"name": "exact_duplicate"}, None, "taken"),
    ({"name": "new_one", "settings": ("min_charz",)}, None, "not fields of CleaningConfig"),
    ({"name": "new_one"}, "no_such_filter", "no filter 'no_such_filter'"),
])
def test_register_refuses_bad_filters(monkeypatch, attrs, before, msg):
    monkeypatch.setattr(filters, "FILTERS", list(filters.FILTERS))
    cls = type("Bad", (_Named,), attrs)
    with pytest.raises(ValueError, match=msg):
        filters.register(cls, before=before)
    assert [f.name for f in filters.FILTERS] == ORDER


def test_a_filter_returning_the_wrong_shape_is_named():
    class Broken(_Named):
        name = "broken"

        def apply(self, batch: Batch) -> np.ndarray:
            return np.zeros(len(batch) + 1, dtype=bool)

    with pytest.raises(KolmError, match="data filter broken: apply returned shape"):
        Pipeline(CleaningConfig(), [Broken]).run(Batch(["some text here"], "en"))


# -- a new filter, end to end -----------------------------------------------------------------------------------------
class Banana(Filter):
    """A toy filter as a newcomer would add one: drop documents that mention bananas."""

    name = "banana"

    def apply(self, batch: Batch) -> np.ndarray:
        return np.fromiter((b"banana" in w for w in map(str.encode, map(str.lower, batch.texts))), dtype=bool,
                           count=len(batch))


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory):
    from tests.test_data_build import en_doc, ko_doc

    if (SHARED / "tokenizers" / "llama2" / "tokenizer.json").is_file():
        return SHARED / "tokenizers" / "llama2"
    rng = random.Random(0)
    texts = [ko_doc(rng) for _ in range(300)] + [en_doc(rng) for _ in range(300)]
    return make_sp_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=800)


def test_registered_filter_is_counted_in_the_manifest(small_tok, tmp_path, monkeypatch):
    """Register a toy filter before top_2gram: a real build (one worker process, which imports it by module path)
    counts it under its name, in order, and none of its documents reaches the output."""
    from tests.test_data_build import build, en_doc, ko_doc, train_rows, write_lines

    rng = random.Random(4)
    en = [en_doc(rng) for _ in range(200)]
    bananas = [en_doc(rng).replace(" ", " banana ", 1) for _ in range(7)]
    repetitive = ["Buy banana now " * 20 + str(i) for i in range(3)]  # also fails top_2gram, which comes later
    short = ["banana x", "a banana"]  # also too_short, which comes earlier
    en_file = write_lines(tmp_path / "en.txt", en + bananas + repetitive + short)
    ko_file = write_lines(tmp_path / "ko.txt", [ko_doc(rng) for _ in range(200)])
    srcs = [{"name": "ko", "lang": "ko", "paths": [str(ko_file)]},
            {"name": "en", "lang": "en", "paths": [str(en_file)]}]

    control = build(small_tok, tmp_path / "control", srcs, {"ko": 0.5, "en": 0.5})
    assert control["filters"] == ORDER
    assert control["sources"]["en"]["dropped"] == {"too_short": 2, "top_2gram": 3}

    monkeypatch.setattr(filters, "FILTERS", list(filters.FILTERS))
    filters.register(Banana, before="top_2gram")
    m = build(small_tok, tmp_path / "out", srcs, {"ko": 0.5, "en": 0.5}, num_proc=1)
    assert m["filters"] == ORDER[:6] + ["banana"] + ORDER[6:]
    assert m["sources"]["en"]["dropped"] == {"banana": 10, "too_short": 2}
    assert m["sources"]["en"]["read"] == m["sources"]["en"]["kept"] + 12
    assert m["sources"]["en"]["drop_examples"]["banana"][0].endswith("en.txt:201")
    import datasets
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(small_tok / "tokenizer.json"))
    kept = [t.decode(r) for r in train_rows(tmp_path / "out")]
    kept += datasets.load_from_disk(str(tmp_path / "out" / "validation" / "en"))["text"]
    assert kept and not any("banana" in x.lower() for x in kept)
    assert m["build_key"] != control["build_key"]  # another filter set is another build


def test_filter_defined_in_a_function_is_refused_before_work(small_tok, tmp_path, monkeypatch):
    from tests.test_data_build import build, ko_doc, write_lines

    class Local(_Named):
        name = "local"

    monkeypatch.setattr(filters, "FILTERS", list(filters.FILTERS))
    filters.register(Local)
    ko = write_lines(tmp_path / "ko.txt", [ko_doc(random.Random(1)) for _ in range(20)])
    with pytest.raises(KolmError, match="data filter .*Local cannot be imported .* module level"):
        build(small_tok, tmp_path / "out", [{"name": "ko", "lang": "ko", "paths": [str(ko)]}], {"ko": 1.0})
    assert not (tmp_path / "out").exists()
