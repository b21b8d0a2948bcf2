"""Tests of the model-using embedding init ``distill`` (kolm/model/inits/distill.py) and the init registry, on a
tiny byte-level Llama that knows some Korean through its bytes (as SmolLM2 does): held-out Korean bits per byte
fall below subword-mean's, old rows stay bit-identical, English does not move, no row is zero, budgets hold."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from helpers import make_bytelevel_tokenizer, read_lines, tiny_llama
from test_resize import extend_by_hand, make_model_dir

from kolm.errors import KolmError
from kolm.model.resize import ResizeConfig, plan_extension, resize_model, run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(base model folder, extended tokenizer folder, Korean corpus file, Korean held-out, English held-out)."""
    import torch
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("distill")
    ko, en = read_lines("ko_dev.txt"), read_lines("en_dev.txt", 1500)
    ko_held, ko_train = ko[::10][:40], [x for i, x in enumerate(ko) if i % 10][:1200]
    en_held, en_train = en[-40:], en[:-40]
    base_dir = make_bytelevel_tokenizer(en_train[:800], root / "base", vocab_size=600)
    ext_dir = extend_by_hand(base_dir, ko_train, root / "ext", n_new=300)
    corpus = root / "ko_train.txt"
    corpus.write_text("\n".join(ko_train) + "\n", encoding="utf-8")
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    docs = ko_train + en_train[: len(ko_train)]
    random.Random(0).shuffle(docs)
    bos = base.token_to_id("<|begin_of_text|>")
    ids = [i for d in docs for i in [bos, *base.encode(d).ids]]
    seq, batch = 64, 16
    data = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    model = tiny_llama(base.get_vocab_size(), hidden=64, tie=True, seed=0)
    model.config.bos_token_id = bos
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    model_dir = make_model_dir(base_dir, root / "model", tie=True, model=model)
    return model_dir, ext_dir, corpus, ko_held, en_held


def _resize(world, init, **kw):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model_dir, ext_dir, corpus, *_ = world
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    new = Tokenizer.from_file(str(ext_dir / "tokenizer.json"))
    base = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    stats = resize_model(model, new, base, init, corpus=[str(corpus)], **kw)
    return model, new, stats


def _bpb(model, tok, texts, bos):
    from kolm.eval.bpb import bits_per_byte

    return bits_per_byte(model, tok, texts, prefix_id=bos).bpb


@pytest.mark.slow
def test_distill_beats_subword_mean_and_keeps_old_rows(world):
    import torch
    from transformers import AutoModelForCausalLM

    model_dir, _, _, ko_held, en_held = world
    base = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    bos = base.config.bos_token_id
    sm, new, _ = _resize(world, "subword-mean")
    t0 = time.perf_counter()
    di, _, stats = _resize(world, "distill", max_steps=40, budget_s=1e6)  # the step cap decides here
    took = time.perf_counter() - t0
    n_base = base.get_input_embeddings().weight.shape[0]
    w_old, w_new = base.get_input_embeddings().weight, di.get_input_embeddings().weight
    assert torch.equal(w_new[:n_base], w_old), "original rows must stay bit-identical"
    assert di.lm_head.weight is di.get_input_embeddings().weight, "tied embeddings stay tied"
    assert (w_new.abs().sum(1) > 0).all(), "no zero row"
    assert not torch.equal(w_new[n_base:], sm.get_input_embeddings().weight[n_base:]), "the new rows trained"
    d = stats["distill"]
    assert d["steps"] == 40 and d["stopped_by"] == "steps" and d["seconds"] <= took
    assert d["last"]["kd"] < d["first"]["kd"] and d["documents_skipped_unaligned"] == 0
    ko = {k: _bpb(m, new, ko_held, bos) for k, m in (("subword-mean", sm), ("distill", di))}
    from tokenizers import Tokenizer

    base_tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ko["base"] = _bpb(base, base_tok, ko_held, bos)
    en = {k: _bpb(m, new, en_held, bos) for k, m in (("base", base), ("subword-mean", sm), ("distill", di))}
    print(f"\nKorean held-out bpb {ko}; English {en}")
    assert ko["distill"] < 0.9 * ko["subword-mean"], ko
    assert ko["distill"] < 1.15 * ko["base"], ko
    # English is tokenized as before: only the new rows' share of the softmax can move it. On this tiny model
    # (half its training text was Korean bytes) subword-mean already costs English ~0.9%; distill adds nothing.
    assert en["distill"] <= en["subword-mean"] * 1.001, en


def test_time_budget_and_untied_heads(world, tmp_path):
    """A budget smaller than one step stops after the first step; an untied model trains both matrices' new rows."""
    import torch
    from tokenizers import Tokenizer

    model_dir, ext_dir, corpus, *_ = world
    _, _, stats = _resize(world, "distill", max_steps=50, budget_s=1e-3)
    assert stats["distill"]["steps"] == 1 and stats["distill"]["stopped_by"] == "time budget"
    base = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    new = Tokenizer.from_file(str(ext_dir / "tokenizer.json"))
    untied = tiny_llama(base.get_vocab_size(), hidden=32, tie=False, seed=1)
    before = {k: v.clone() for k, v in untied.state_dict().items()}
    resize_model(untied, new, base, "subword-mean")
    sm_rows = {k: untied.state_dict()[k][base.get_vocab_size():].clone() for k in ("model.embed_tokens.weight",
                                                                                  "lm_head.weight")}
    untied = tiny_llama(base.get_vocab_size(), hidden=32, tie=False, seed=1)
    resize_model(untied, new, base, "distill", corpus=[str(corpus)], max_steps=3)
    n = base.get_vocab_size()
    for k, v in untied.state_dict().items():
        if k in sm_rows:
            assert torch.equal(v[:n], before[k]) and not torch.equal(v[n:], sm_rows[k]), k
        else:
            assert torch.equal(v, before[k]), f"{k} must not change"


def test_cli_reads_the_corpus_from_extension_json(world, tmp_path, monkeypatch, capsys):
    """--init distill reads the corpus extension.json records; without --init, distill is the default when that
    corpus is found, and subword-mean (said) when it is not; an explicit distill without its corpus is an error."""
    from kolm.cli import main

    model_dir, ext_dir, corpus, *_ = world
    from tokenizers import Tokenizer

    ext2 = tmp_path / "ext"
    ext2.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (ext2 / f).write_bytes((ext_dir / f).read_bytes())
    plan = plan_extension(Tokenizer.from_file(str(ext_dir / "tokenizer.json")),
                          Tokenizer.from_file(str(model_dir / "tokenizer.json")))
    added = [{"id": i, "token": t, "base_ids": plan.pieces[i]} for i, t in sorted(plan.tokens.items())]
    (ext2 / "extension.json").write_text(json.dumps({"added": added, "corpus": [corpus.name]}))
    monkeypatch.chdir(corpus.parent)  # the recorded path is relative to where `kolm vocab extend` ran
    out = tmp_path / "out"
    assert main(["model", "resize", "--model", str(model_dir), "--tokenizer", str(ext2), "--output", str(out),
                 "--init", "distill", "--init-steps", "2"]) == 0
    rec = json.loads((out / "resize.json").read_text())
    assert rec["init"] == "distill" and rec["distill"]["steps"] == 2 and rec["config"]["init_steps"] == 2
    assert main(["model", "resize", "--model", str(model_dir), "--tokenizer", str(ext2), "--output",
                 str(tmp_path / "default"), "--init-steps", "1"]) == 0
    assert json.loads((tmp_path / "default" / "resize.json").read_text())["init"] == "distill"
    monkeypatch.chdir(tmp_path)  # now the recorded corpus cannot be found: a clear error before loading
    capsys.readouterr()
    assert main(["model", "resize", "--model", str(model_dir), "--tokenizer", str(ext2), "--output",
                 str(tmp_path / "fallback")]) == 0
    assert json.loads((tmp_path / "fallback" / "resize.json").read_text())["init"] == "subword-mean"
    assert "init subword-mean: no corpus for the default distill init" in capsys.readouterr().out
    with pytest.raises(KolmError, match="corpus file 'ko_train.txt' not found"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext2), output=str(tmp_path / "o2"), init="distill"))
    with pytest.raises(KolmError, match="needs text: pass --corpus"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_dir), output=str(tmp_path / "o3"), init="distill"))
    english = tmp_path / "en.txt"
    english.write_text("only English here\n")
    with pytest.raises(KolmError, match="no text that uses the new tokens"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_dir), output=str(tmp_path / "o4"), init="distill",
                         corpus=[str(english)]))
    assert not any((tmp_path / o).exists() for o in ("o2", "o3", "o4"))


def test_refuses_zero3_and_unknown_inits(world):
    from tokenizers import Tokenizer

    from kolm.config import ConfigError
    from kolm.model.inits import get_init, names

    model_dir, ext_dir, corpus, *_ = world
    base = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    new = Tokenizer.from_file(str(ext_dir / "tokenizer.json"))
    model = tiny_llama(base.get_vocab_size())
    model.get_input_embeddings().weight.ds_id = 0  # what a ZeRO-3 partitioned parameter carries
    with pytest.raises(KolmError, match="single process, not under ZeRO-3"):
        resize_model(model, new, base, "distill", corpus=[str(corpus)])
    assert names()[0] == "subword-mean" and {"mean", "random", "distill"} <= set(names())
    with pytest.raises(KolmError, match="is not one of"):
        get_init("nope")
    with pytest.raises(ConfigError, match="init"):
        ResizeConfig(model="m", tokenizer="t", output="o", init="nope")


def test_alignment_of_the_two_tokenizations():
    from kolm.model.inits.distill import align

    pieces = {10: [1, 2], 11: [3, 4, 5]}
    assert align([10, 6, 11], [1, 2, 6, 3, 4, 5], pieces) == [1, 2, 5]
    assert align([10, 6], [1, 2, 7], pieces) is None  # a piece disagrees
    assert align([10], [1, 2, 6], pieces) is None  # base ids left over



def test_packed_windows_cover_the_corpus_and_align(world):
    """Documents are packed behind a prefix token, cut into windows of the same size: every window's two
    tokenizations hold the same text, each extended token's last base piece is where its alignment says, and every
    aligned document appears once, in order; documents without new tokens go to replay."""
    from tokenizers import Tokenizer

    from kolm.model.inits.base import InitInputs
    from kolm.model.inits.distill import make_windows

    model_dir, ext_dir, corpus, *_ = world
    new = Tokenizer.from_file(str(ext_dir / "tokenizer.json"))
    base = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    plan = plan_extension(new, base)
    texts = corpus.read_text(encoding="utf-8").splitlines()[:300] + ["plain English, no new token"]
    windows, skipped, plain = make_windows(texts, InitInputs(plan, 0, new, base), 64, prefix_id=0)
    assert skipped == 0 and plain == ["plain English, no new token"]
    assert all(len(w.new_ids) == 64 for w in windows[:-1]) and len(windows) > 1
    stream = []
    for w in windows:
        assert w.new_ids[0] == w.base_ids[0] == 0 and len(w.ends) == len(w.new_ids)
        assert new.decode(w.new_ids[1:]) == base.decode(w.base_ids[1:])
        for t, e in zip(w.new_ids, w.ends):
            assert w.base_ids[e] == plan.pieces.get(t, [t])[-1]
        assert w.ends[-1] == len(w.base_ids) - 1
        stream += w.new_ids[1:]
    assert stream == [i for t in texts[:300] for i in [0, *new.encode(t, add_special_tokens=False).ids]]

def test_new_init_is_a_new_file(tmp_path):
    """The registry finds every init module in the package (the contract for adding a method)."""
    import kolm.model.inits as inits

    modules = {p.stem for p in Path(inits.__file__).parent.glob("*.py")} - {"__init__", "base"}
    classes = {c.__module__.rsplit(".", 1)[1] for c in inits.REGISTRY.values()}
    assert modules == classes


def test_lazy_adam_moves_only_the_rows_it_is_given():
    import torch

    from kolm.model.inits.distill import LazyAdam

    w = torch.nn.Parameter(torch.randn(10, 4))
    before = w.detach().clone()
    opt = LazyAdam([w], start=6, lr=0.1)
    (w ** 2).sum().backward()
    opt.step(torch.tensor([7, 9]))
    assert torch.equal(w[:7], before[:7]) and torch.equal(w[8], before[8]) and w.grad is None
    assert torch.allclose(w[[7, 9]], before[[7, 9]] - 0.1 * before[[7, 9]].sign(), atol=1e-5)  # Adam's first step
