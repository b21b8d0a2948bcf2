"""kolm.vocab.morph: kiwi morpheme boundaries as offsets into the original string."""

from __future__ import annotations

import unicodedata

import pytest

from kolm.vocab import morph
from kolm.vocab.morph import MAX_CHUNK, _chunks, get_kiwi, morpheme_boundaries, split_at
from tests.helpers import read_lines

pytest.importorskip("kiwipiepy")


def _check(text: str, bounds: list[int]) -> None:
    assert bounds == sorted(set(bounds))
    assert all(0 < p < len(text) for p in bounds)
    assert "".join(split_at(text, bounds)) == text


def test_known_example_particle():
    (b,) = morpheme_boundaries(["한국어를"])
    assert b == [3]
    assert split_at("한국어를", b) == ["한국어", "를"]


@pytest.mark.parametrize("word", ["했다", "배웠다", "먹었다", "가셨어요", "됐어", "봤습니다", "먹었어욥", "그랬지"])
def test_no_boundary_inside_shared_surface(word):
    # Kiwi gives e.g. 배우/VV(0,2) 었/EP(1,1) 다/EF(2,1): 배우 and 었 share 웠, so 1 must not be a boundary.
    (b,) = morpheme_boundaries([word])
    _check(word, b)
    spans = [(t.start, t.start + t.len) for t in get_kiwi().tokenize(word) if t.len > 0]
    for p in b:
        assert any(e == p for _, e in spans) and any(s == p for s, _ in spans)
        assert not any(s < p < e for s, e in spans), (word, p, spans)


def test_contraction_examples():
    assert morpheme_boundaries(["배웠다"]) == [[2]]  # 배웠|다, never 배|웠
    assert morpheme_boundaries(["먹었다"]) == [[1, 2]]  # 먹|었|다: each morpheme has its own syllable


def test_every_line_of_ko_dev():
    lines = read_lines("ko_dev.txt")
    out = morpheme_boundaries(lines)
    assert len(out) == len(lines)
    for text, b in zip(lines, out, strict=True):
        _check(text, b)
    assert sum(map(len, out)) > len(lines)  # real Korean text has many boundaries


def test_boundaries_follow_kiwi_surfaces_on_real_text():
    lines = read_lines("ko_dev.txt", limit=200)
    kiwi = get_kiwi()
    for text, b in zip(lines, morpheme_boundaries(lines), strict=True):
        spans = [(t.start, t.start + t.len) for t in kiwi.tokenize(text) if t.len > 0]
        starts, ends = {s for s, _ in spans}, {e for _, e in spans}
        for p in b:
            assert p in starts and p in ends and not any(s < p < e for s, e in spans)


def test_batch_equals_single_and_keeps_order():
    texts = ["한국어를 배웠다", "", "hello", "나는 학교에 갔다.", "😀한국어를"]
    batch = morpheme_boundaries(texts)
    assert batch == [morpheme_boundaries([t])[0] for t in texts]


@pytest.mark.parametrize("prefix", ["😀", "👨\u200d👩\u200d👧", "𠀀𠀁", "q\u0301", "\ufeff", "ＡＢＣ", "漢字"])
def test_offsets_are_python_characters(prefix):
    base = "한국어를 배웠다"
    (b0,) = morpheme_boundaries([base])
    text = prefix + " " + base
    (b,) = morpheme_boundaries([text])
    _check(text, b)
    shift = len(prefix) + 1
    assert [p for p in b if p > shift] == [p + shift for p in b0]
    assert text[shift:b[0]] == "한국어"


def test_emoji_directly_before_korean():
    text = "😀😀한국어를"
    (b,) = morpheme_boundaries([text])
    _check(text, b)
    assert split_at(text, b)[-2:] == ["한국어", "를"]


def test_nfd_offsets_refer_to_the_original():
    nfc = "한국어를 배웠다"
    nfd = unicodedata.normalize("NFD", nfc)
    assert len(nfd) > len(nfc)
    (b_nfc,), (b_nfd,) = morpheme_boundaries([nfc]), morpheme_boundaries([nfd])
    _check(nfd, b_nfd)
    pieces = split_at(nfd, b_nfd)
    assert [unicodedata.normalize("NFC", x) for x in pieces] == split_at(nfc, b_nfc)
    for p in b_nfd:  # never between the jamo of one syllable
        assert not ("\u1160" <= nfd[p] <= "\u11ff")


def test_mixed_nfd_and_nfc():
    text = "한국어를 " + unicodedata.normalize("NFD", "배웠다") + " 먹었다"
    (b,) = morpheme_boundaries([text])
    _check(text, b)
    assert unicodedata.normalize("NFC", "".join(split_at(text, b)[-3:])) == "다 먹었다"
    assert b[0] == 3


@pytest.mark.parametrize("text", ["", "hello world", "1234 5678", "😀😀", "漢字", "é\u0301", "   ", "\n"])
def test_no_hangul_is_not_analysed(text, monkeypatch):
    def boom():
        raise AssertionError("kiwi must not run on text without Hangul")

    monkeypatch.setattr(morph, "get_kiwi", boom)
    assert morpheme_boundaries([text]) == [[]]


ODD = ["ㅋㅋㅋ 한글", "漢字와 한글을", "ㅎㅏㄴ국어", "한국어를\x00먹었다", "한국어를\t\r\n먹었다",
       "https://naver.com/한국 에서", "가\ud800나다", "한", "ᄒ", "\u200b한국어를"]


@pytest.mark.parametrize("text", ODD)
def test_odd_inputs_keep_invariants(text):
    (b,) = morpheme_boundaries([text])
    _check(text, b)


def test_no_cut_before_combining_marks():
    text = "한국어를\u0301 배웠다"
    (b,) = morpheme_boundaries([text])
    _check(text, b)
    assert all(not unicodedata.combining(text[p]) for p in b)


def test_long_text_is_chunked_consistently():
    sent = "나는 학교에 갔다. "
    text = sent * 1000  # 11k characters, well over MAX_CHUNK
    (b,) = morpheme_boundaries([text])
    _check(text, b)
    (b1,) = morpheme_boundaries([sent])
    # every copy of the sentence is analysed the same way (chunks are cut at sentence ends)
    assert len(b) == len(b1) * 1000


def test_long_text_without_spaces():
    text = "가나다라마바사" * 1000
    (b,) = morpheme_boundaries([text])
    _check(text, b)


def test_chunks_cover_text():
    for text in ["a" * 5000, ("가나다 " * 3000), ("줄\n" * 3000), "짧다"]:
        spans = list(_chunks(text))
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert all(0 < e - s <= MAX_CHUNK for s, e in spans)


def test_single_string_is_refused():
    with pytest.raises(TypeError):
        morpheme_boundaries("한국어를")  # type: ignore[arg-type]


def test_split_at():
    assert split_at("", []) == [""]
    assert split_at("abc", [1, 2]) == ["a", "b", "c"]
    for bad in ([0], [3], [2, 1], [1, 1]):
        with pytest.raises(ValueError):
            split_at("abc", bad)


def test_get_kiwi_is_cached():
    assert get_kiwi() is get_kiwi()
