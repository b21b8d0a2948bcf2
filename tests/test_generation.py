"""kolm.eval.generation: the UTF-8 guard for byte-level vocabularies and the statistics of greedy continuations."""

from __future__ import annotations

import pytest
from helpers import real_tokenizer, tiny_llama

from kolm.eval.generation import (
    WholeCharacters,
    generation_stats,
    incomplete_tail,
    off_tokenization,
    repetition,
    token_bytes,
    valid_text,
    whole_text,
)


def test_incomplete_tail_and_valid_text():
    han = "한".encode()
    assert incomplete_tail(b"abc") == b"" and incomplete_tail(han[:2]) == han[:2]
    assert incomplete_tail(b"a" + han[1:]) is None  # a continuation byte where none belongs
    assert incomplete_tail(b"\xed\xb3") is None  # a surrogate's first bytes: invalid however it goes on
    assert valid_text(han + han[:1]) == ("한", 0)  # the token cap fell inside a character: not broken
    assert valid_text(han[:2] + b"a") == ("\ufffda", 1)


@pytest.mark.parametrize("name", ["llama3", "llama2"])
def test_whole_text_holds_back_a_cut_character_and_nothing_else(name):
    """The token cap fell inside a character: its bytes are held back instead of ending in U+FFFD; a complete text
    decodes as ``decode`` does; an invalid sequence inside the text stays visible."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer(name))
    byte_ids = {b[0]: i for i, b in enumerate(token_bytes(tok, list(range(len(tok))))) if len(b) == 1}
    ids = tok("서울은 한국의", add_special_tokens=False)["input_ids"]
    whole = tok.decode(ids, skip_special_tokens=True)
    assert whole_text(tok, ids) == whole
    cut = ids + [byte_ids[b] for b in "수".encode()[:2]]  # the first two of the three bytes of the next character
    assert tok.decode(cut, skip_special_tokens=True).endswith("\ufffd")
    assert whole_text(tok, cut) == whole
    broken = [byte_ids["수".encode()[0]]] + ids  # a lone lead byte, then text: broken, and shown as broken
    assert whole_text(tok, broken) == tok.decode(broken, skip_special_tokens=True)
    assert "\ufffd" in whole_text(tok, broken)


def test_repetition():
    assert repetition("가나다라마바사") == 0.0
    assert repetition("abcabcabcabc") == pytest.approx(1 - 3 / 9)


def _stress(tok, guard: bool, trials: int = 12, steps: int = 30) -> int:
    """Greedy decoding from random scores biased towards part-of-a-character tokens; returns broken outputs."""
    import torch

    g = WholeCharacters(tok)
    partial = torch.tensor([bool(b) and (0x80 <= b[0] < 0xC0 or bool(incomplete_tail(b))) for b in g.pieces])
    gen = torch.Generator().manual_seed(0)
    broken = 0
    for _ in range(trials):
        ids = torch.tensor([[tok.bos_token_id if tok.bos_token_id is not None else 0]])
        for _ in range(steps):
            scores = torch.randn(1, len(tok), generator=gen) + 4.0 * partial
            if guard:
                scores = g(ids, scores)
            ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
        broken += valid_text(b"".join(token_bytes(tok, ids[0, 1:].tolist())))[1] > 0
    return broken


@pytest.mark.parametrize("name", ["llama3", "llama2"])
def test_whole_characters_never_lets_a_broken_character_through(name):
    """Byte-level (Llama-3) and SentencePiece byte fallback (Llama-2): unguarded, the biased decoding breaks
    characters in nearly every output; guarded, in none (surrogates and overlong forms included)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer(name))
    assert _stress(tok, guard=False) >= 10
    assert _stress(tok, guard=True) == 0


def test_whole_characters_in_generate_and_the_statistics(tmp_path):
    """Through ``model.generate`` on a tiny random model with a byte-level tokenizer: the guard keeps every
    continuation whole; the statistics count what they say."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer("llama3"))
    model = tiny_llama(len(tok), hidden=16).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # make part-of-a-character tokens likely everywhere
        g = WholeCharacters(tok)
        partial = [i for i, b in enumerate(g.pieces) if b and (0x80 <= b[0] < 0xC0 or incomplete_tail(b))]
        model.lm_head.weight[partial] += 0.5 * model.model.layers[0].input_layernorm.weight.sign().mean()
        model.lm_head.weight[partial] *= 20
    prompts = ["대한민국의 수도는", "김프에서 레이어를", "헌법 제1조", "데비안은"]
    enc = tok(prompts[:1], return_tensors="pt")
    outs = []
    for guard in (False, True):
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id,
                                 logits_processor=[WholeCharacters(tok)] if guard else None)
        outs.append(valid_text(b"".join(token_bytes(tok, out[0, enc["input_ids"].shape[1]:].tolist())))[1])
    assert outs[0] > 0 and outs[1] == 0
    stats = generation_stats(model, tok, prompts, max_new_tokens=8, batch_size=3)
    assert stats.prompts == 4 and 0 <= stats.broken_share <= 1 and stats.tokens_per_s > 0
    assert 0 <= stats.off_token_share <= 1 and 0 <= stats.repetition <= 1
    assert stats.korean_chars_per_token == pytest.approx(stats.korean_chars_per_s / stats.tokens_per_s)
    assert stats.broken_share > 0  # the biased model breaks characters unguarded ...
    guarded = generation_stats(model, tok, prompts, max_new_tokens=8, batch_size=3, whole_characters=True)
    assert guarded.broken_share == 0 and guarded.tokens_per_s > 0  # ... and never through kolm's decoding


def test_min_new_tokens_makes_every_model_write_the_same_number_of_tokens():
    """A model that would stop at once writes nothing; with min_new_tokens it writes exactly the cap per prompt, so
    its characters per second measure its tokenizer, not its wish to stop."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer("llama3"))
    model = tiny_llama(len(tok), hidden=16).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.lm_head = torch.nn.Linear(16, len(tok), bias=True)  # EOS first, whatever the text
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[tok.eos_token_id] = 10.0
    prompts = ["대한민국의 수도는", "김프에서 레이어를", "헌법 제1조"]
    stopped = generation_stats(model, tok, prompts, max_new_tokens=6, batch_size=2, whole_characters=True)
    full = generation_stats(model, tok, prompts, max_new_tokens=6, batch_size=2, whole_characters=True,
                            min_new_tokens=6)
    assert stopped.tokens == 0 and stopped.korean_chars_per_s == 0
    assert full.tokens == 6 * len(prompts) and full.tokens_per_s > 0


def test_off_tokenization_counts_tokens_a_re_encoding_would_not_give():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer("llama3"))
    text = "hello world"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert off_tokenization(tok, token_bytes(tok, ids), text) == 0
    spelled = [tok.convert_tokens_to_ids(c) for c in "hello"] + ids[1:]  # "hello" letter by letter
    assert off_tokenization(tok, token_bytes(tok, spelled), text) == 5
