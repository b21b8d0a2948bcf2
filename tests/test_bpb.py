"""bits-per-byte: matches an independent computation; windows score every token exactly once."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_sp_tokenizer, tiny_llama

from kolm.eval.bpb import bits_per_byte, score_documents, token_windows

TEXTS = ["한국어 문장입니다. 모델이 읽습니다.", "An English sentence for the model.", "짧다", "mixed 한영 text 123",
         "긴 문서 " * 40]


@pytest.mark.parametrize("length", [0, 1, 5, 31, 32, 33, 100])
@pytest.mark.parametrize("max_length,stride", [(8, 4), (32, 16), (32, 31), (16, 1)])
def test_windows_score_every_target_once(length, max_length, stride):
    ids = list(range(10, 10 + length))
    seq = [1, *ids]
    scored = []
    for w, k in token_windows(ids, 1, max_length, stride):
        assert len(w) <= max_length and 0 < k < len(w) + 1
        start = seq.index(w[0]) if w[0] != 1 else 0
        assert seq[start:start + len(w)] == w
        scored += list(range(start + len(w) - k, start + len(w)))
    assert scored == list(range(1, len(seq)))


@pytest.fixture(scope="module")
def model_and_tok(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = make_sp_tokenizer(TEXTS * 3, tmp_path_factory.mktemp("tok"), vocab_size=300)
    tok = AutoTokenizer.from_pretrained(str(folder))
    return tiny_llama(len(tok), seed=1).eval(), tok


def independent_bpb(model, tok, texts):
    nats, nbytes = 0.0, 0
    for t in texts:
        ids = torch.tensor([[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        nats -= logp.gather(1, ids[0, 1:, None]).sum().item()
        nbytes += len(t.encode())
    return nats / (math.log(2) * nbytes)


def test_matches_independent_computation(model_and_tok):
    model, tok = model_and_tok
    got = bits_per_byte(model, tok, TEXTS, max_length=256, batch_size=3)
    assert got.bpb == pytest.approx(independent_bpb(model, tok, TEXTS), rel=1e-5)
    assert got.docs == len(TEXTS) and got.bytes == sum(len(t.encode()) for t in TEXTS)
    assert got.tokens == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)


def test_long_documents_use_overlapping_context(model_and_tok):
    model, tok = model_and_tok
    full = bits_per_byte(model, tok, TEXTS, max_length=256)
    short = bits_per_byte(model, tok, TEXTS, max_length=16, stride=8)
    assert short.tokens == full.tokens
    # a random tiny model barely uses context; the two agree closely but are computed differently
    assert short.bpb == pytest.approx(full.bpb, rel=0.05)
    docs = tok(TEXTS, add_special_tokens=False)["input_ids"]
    n_bytes = sum(len(t.encode()) for t in TEXTS)
    assert score_documents(model, docs, n_bytes, tok.bos_token_id, max_length=256).bpb == pytest.approx(full.bpb)


def test_empty():
    model = tiny_llama(50)
    assert score_documents(model, [], 0, 1).tokens == 0
