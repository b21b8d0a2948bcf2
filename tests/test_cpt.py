"""`kolm train cpt` for real on CPU: stages, frozen rows, LoRA merge, preflight errors, signals, ZeRO-3 resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import free_port, kill_and_resume, read_lines, real_tokenizer, tiny_llama, wait_for
from test_metrics import FakeWandb, tensorboard_scalars

from kolm.cli import main

NEW = 300  # added tokens


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """tok/ (Llama-2 + Korean), base/ (tiny Llama, old vocab), model/ (resized), data/ (ko 0.8 / en 0.2)."""
    root = tmp_path_factory.mktemp("cpt")
    ko, en = read_lines("ko_dev.txt"), read_lines("en_dev.txt", 1500)
    (root / "ko.txt").write_text("\n".join(ko) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    assert main(["vocab", "extend", "--base", str(real_tokenizer("llama2")), "--corpus", str(root / "ko.txt"),
                 "--num-new-tokens", str(NEW), "--output", str(root / "tok")]) == 0
    model = tiny_llama(32000, hidden=32)
    model.config.max_position_embeddings = 128
    model.save_pretrained(str(root / "base"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(real_tokenizer("llama2") / f, root / "base" / f)
    assert main(["model", "resize", "--model", str(root / "base"), "--tokenizer", str(root / "tok"),
                 "--output", str(root / "model"), "--init", "subword-mean"]) == 0  # CPT's tests: the fast init
    recipe = {"tokenizer": "tok", "seq_len": 64, "seed": 0, "mix": {"ko": 0.8, "en": 0.2},
              "sources": [{"name": "ko", "lang": "ko", "paths": ["ko.txt"]},
                          {"name": "en", "lang": "en", "paths": ["en.txt"]}],
              "validation": {"fraction": 0.02, "max_docs": 50}, "num_proc": 1, "progress": False}
    (root / "data.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["data", "build", str(root / "data.yaml"), "--output", str(root / "data")]) == 0
    return root


def recipe(root: Path, name: str, stages: list[dict], **extra) -> Path:
    r = {"model": "model", "data": "data", "output": f"runs/{name}", "micro_batch_size": 2, "grad_accum": 2,
         "optim": {"lr": 3e-3, "warmup_steps": 1}, "stages": stages, "eval": {"every": 2, "max_docs": 8},
         "checkpoint": {"every": 2, "keep": 2}, **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def safetensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_embeddings_then_full(pipeline):
    r = recipe(pipeline, "emb_full", [{"name": "emb", "kind": "embeddings", "max_steps": 4, "lr": 1e-2},
                                       {"name": "full", "kind": "full", "max_steps": 4}])
    assert main(["train", "cpt", str(r)]) == 0
    run = pipeline / "runs" / "emb_full"
    before, emb = safetensors(pipeline / "model"), safetensors(run / "stages" / "00-emb" / "final")
    start = json.loads((pipeline / "model" / "resize.json").read_text())["base_tokenizer_size"]
    for k, v in before.items():
        if k in ("model.embed_tokens.weight", "lm_head.weight"):
            assert emb[k][:start].equal(v[:start]), k  # old rows bit-identical (no weight decay either)
            assert not emb[k][start:].equal(v[start:]), k  # new rows trained
        else:
            assert emb[k].equal(v), k  # everything else frozen
    full = safetensors(run / "final")
    assert not full["model.layers.0.mlp.up_proj.weight"].equal(before["model.layers.0.mlp.up_proj.weight"])
    rows = metrics(run)
    evals = [x for x in rows if x["kind"] == "eval"]
    assert [x["step"] for x in evals] == [0, 2, 4, 6, 8]
    assert set(evals[0]["eval"]) == {"ko", "en"} and evals[0]["eval"]["ko"]["docs"] == 8
    assert evals[-1]["eval"]["ko"]["bpb"] < evals[0]["eval"]["ko"]["bpb"]
    train = [x for x in rows if x["kind"] == "train"]
    assert [x["step"] for x in train] == list(range(1, 9)) and train[-1]["tokens_seen"] == 8 * 4 * 64
    by_lang = train[-1]["tokens_seen_by_lang"]
    assert set(by_lang) == {"ko", "en"} and sum(by_lang.values()) == train[-1]["tokens_seen"]
    assert 0.6 < by_lang["ko"] / train[-1]["tokens_seen"] < 0.95  # ~80% Korean
    assert (run / "recipe.yaml").is_file() and (run / "data_manifest.json").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(str(run / "final"))
    assert m.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(str(run / "final")))
    # the extension's tokenizer.model (kolm vocab extend) travels with every stage's final model
    for final in (run / "stages" / "00-emb" / "final", run / "final"):
        assert (final / "tokenizer.model").read_bytes() == (pipeline / "tok" / "tokenizer.model").read_bytes()


def test_lora_stage_merges_into_plain_model(pipeline):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = recipe(pipeline, "lora", [{"name": "lora", "kind": "lora", "max_steps": 4, "lr": 1e-2,
                                   "lora": {"r": 4, "alpha": 8}}], eval={"every": 0})
    assert main(["train", "cpt", str(r)]) == 0
    run = pipeline / "runs" / "lora"
    merged = AutoModelForCausalLM.from_pretrained(str(run / "final")).eval()
    tok = AutoTokenizer.from_pretrained(str(run / "final"))
    assert merged.config.vocab_size == len(tok) == merged.get_input_embeddings().weight.shape[0]
    base = AutoModelForCausalLM.from_pretrained(str(pipeline / "model"))
    with_adapter = PeftModel.from_pretrained(base, str(run / "stages" / "00-lora" / "adapter")).eval()
    x = torch.tensor([tok("한국어 문장과 English text", add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, with_adapter(x).logits, atol=1e-4, rtol=1e-4)
    plain = AutoModelForCausalLM.from_pretrained(str(pipeline / "model")).eval()
    with torch.no_grad():
        assert not torch.allclose(merged(x).logits, plain(x).logits)  # the adapter did something
    # the added tokens' rows were trained (trainable_token_indices), the old rows were not
    start = json.loads((pipeline / "model" / "resize.json").read_text())["base_tokenizer_size"]
    w0, w1 = plain.get_input_embeddings().weight, merged.get_input_embeddings().weight
    assert w1[:start].equal(w0[:start]) and not w1[start:].equal(w0[start:])
    assert (run / "final" / "tokenizer.model").read_bytes() == (pipeline / "tok" / "tokenizer.model").read_bytes()


def _fails(capsys, r: Path, *extra: str) -> str:
    assert main(["train", "cpt", str(r), *extra]) == 2
    return capsys.readouterr().err


def test_preflight_errors(pipeline, tmp_path, capsys):
    stages = [{"name": "full", "kind": "full", "max_steps": 1}]
    # the base model (old vocabulary) with data built for the extended tokenizer
    r = recipe(pipeline, "bad1", stages, model="base")
    assert "another tokenizer" in _fails(capsys, r)
    # vocab mismatch: extended tokenizer beside an un-resized model
    shutil.copytree(pipeline / "base", tmp_path / "m")
    shutil.copy(pipeline / "tok" / "tokenizer.json", tmp_path / "m" / "tokenizer.json")
    r = recipe(pipeline, "bad2", stages, model=str(tmp_path / "m"))
    assert "vocab mismatch" in _fails(capsys, r)
    # seq_len above the model's limit
    shutil.copytree(pipeline / "model", tmp_path / "short")
    c = json.loads((tmp_path / "short" / "config.json").read_text())
    c["max_position_embeddings"] = 32
    (tmp_path / "short" / "config.json").write_text(json.dumps(c))
    r = recipe(pipeline, "bad3", stages, model=str(tmp_path / "short"))
    assert "max_position_embeddings" in _fails(capsys, r)
    # missing validation split
    shutil.copytree(pipeline / "data", tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "validation" / "en")
    r = recipe(pipeline, "bad4", stages, data=str(tmp_path / "data"))
    assert "missing validation split" in _fails(capsys, r)
    for name in ("bad1", "bad2", "bad3", "bad4"):
        assert not (pipeline / "runs" / name / "stages").exists()



def test_sigterm_saves_and_resume_finishes(pipeline):
    r = recipe(pipeline, "sig", [{"name": "full", "kind": "full", "max_steps": 40}], eval={"every": 0},
               checkpoint={"every": 1000, "keep": 2})
    run = pipeline / "runs" / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "kolm.cli", "train", "cpt", str(r)], cwd=pipeline,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(run / "metrics.jsonl", proc)  # training has started
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    ckpts = list((run / "stages" / "00-full").glob("checkpoint-*/kolm_complete.json"))
    assert len(ckpts) == 1, out[-2000:]
    step = int(ckpts[0].parent.name.split("-")[1])
    assert 0 < step < 40
    assert main(["train", "cpt", str(r), "--resume"]) == 0
    assert [x["step"] for x in metrics(run)] == list(range(1, 41))


@pytest.mark.slow
@pytest.mark.distributed
def test_zero3_two_ranks_kill_and_resume_matches(pipeline):
    """2 CPU ranks, ZeRO-3: a run killed (SIGKILL) after a checkpoint and resumed matches an uninterrupted one."""
    stages = [{"name": "emb", "kind": "embeddings", "max_steps": 2, "lr": 1e-2},
              {"name": "full", "kind": "full", "max_steps": 6}]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}

    def launch(name: str, *extra: str) -> subprocess.Popen:
        r = recipe(pipeline, name, stages, deepspeed="zero3", checkpoint={"every": 3, "keep": 2})
        cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "kolm.cli",
               "train", "cpt", str(r), *extra]
        return subprocess.Popen(cmd, cwd=pipeline, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    kill_and_resume(launch, "z3_ref", "z3_crash",
                    pipeline / "runs" / "z3_crash" / "stages" / "01-full" / "checkpoint-3")
    a, b = metrics(pipeline / "runs" / "z3_ref"), metrics(pipeline / "runs" / "z3_crash")
    assert [(x["kind"], x["step"]) for x in a] == [(x["kind"], x["step"]) for x in b]
    for x, y in zip(a, b, strict=True):
        if x["kind"] == "train":
            assert y["loss"] == pytest.approx(x["loss"], abs=1e-5), (x, y)
        else:
            for lang in x["eval"]:
                assert y["eval"][lang]["bpb"] == pytest.approx(x["eval"][lang]["bpb"], abs=1e-5), (x, y)
    losses = [x["loss"] for x in a if x["kind"] == "train"]
    assert losses[-1] < losses[0]
    ref_final, got_final = safetensors(pipeline / "runs" / "z3_ref" / "final"), safetensors(
        pipeline / "runs" / "z3_crash" / "final")
    for k in ref_final:
        assert (ref_final[k] - got_final[k]).abs().max() < 1e-5, k


def test_data_folder_counts_tokens_per_language_per_sequence(pipeline):
    import numpy as np

    m = json.loads((pipeline / "data" / "manifest.json").read_text())
    cum = np.load(pipeline / "data" / m["train"]["lang_tokens"]["path"])
    langs = m["train"]["lang_tokens"]["languages"]
    assert cum.shape == (m["train"]["sequences"] + 1, len(langs)) and (cum[0] == 0).all()
    assert (np.diff(cum, axis=0).sum(axis=1) == m["seq_len"]).all()  # every sequence fully accounted for
    assert {lang: int(cum[-1][j]) for j, lang in enumerate(langs)} == {
        lang: info["train_tokens"] for lang, info in m["languages"].items()}


# ----------------------------------------------------------------------------------------------- metrics channel
@pytest.fixture
def fake_wandb(monkeypatch) -> FakeWandb:
    fake = FakeWandb()
    fake.install(monkeypatch)
    return fake


def test_every_number_reaches_tensorboard_and_wandb_at_the_run_step(pipeline, fake_wandb):
    """Two stages, an English eval set beside the data's Korean split, evaluation every 3 steps (not logging steps):
    TensorBoard's event files (read back with TensorBoard's reader) and W&B hold the numbers of metrics.jsonl at
    the same steps, across stages; the last English bpb is what kolm.eval scores on the final model."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from kolm.eval.bpb import bits_per_byte

    en = read_lines("en_dev.txt")[-5:]  # not in the training data (its first 1500 lines)
    (pipeline / "en_eval.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    r = recipe(pipeline, "tb", [{"name": "emb", "kind": "embeddings", "max_steps": 4, "lr": 1e-2},
                                {"name": "full", "kind": "full", "max_steps": 4}],
               eval={"every": 3, "max_docs": 8, "sets": {"en": "en_eval.txt"}}, logging_steps=2,
               report_to=["tensorboard", "wandb"])
    assert main(["train", "cpt", str(r)]) == 0
    run = pipeline / "runs" / "tb"
    rows = metrics(run)
    evals, train = [x for x in rows if x["kind"] == "eval"], [x for x in rows if x["kind"] == "train"]
    assert [x["step"] for x in evals] == [0, 3, 4, 7, 8]  # start, every 3 (per stage), end of each stage
    assert [x["step"] for x in train] == [2, 3, 4, 6, 7, 8]  # logging steps, and the evaluation steps
    assert {x["eval"]["en"]["docs"] for x in evals} == {5} and {x["eval"]["ko"]["docs"] for x in evals} == {8}
    assert evals[0]["eval"]["en"]["bytes"] == sum(len(t.encode()) for t in en)
    (logdir,) = (run / "runs").iterdir()  # one TensorBoard run for both stages
    tb = tensorboard_scalars(logdir)
    for lang in ("ko", "en"):
        for field in ("bpb", "loss", "nats"):
            want = {x["step"]: x["eval"][lang][field] for x in evals}
            assert tb[f"eval/{lang}_{field}"] == pytest.approx(want, rel=1e-6)
            assert fake_wandb.series(f"eval/{lang}_{field}") == pytest.approx(want, rel=1e-9)
    for tag, key in (("loss", "loss"), ("learning_rate", "lr"), ("grad_norm", "grad_norm"),
                     ("tokens_seen", "tokens_seen")):
        want = {x["step"]: x[key] for x in train}
        assert {s: v for s, v in tb[f"train/{tag}"].items() if s in want} == pytest.approx(want, rel=1e-6)
        assert {s: v for s, v in fake_wandb.series(f"train/{tag}").items() if s in want} == pytest.approx(want)
    assert tb["train/tokens_seen_ko"][8] == train[-1]["tokens_seen_by_lang"]["ko"]
    assert len(fake_wandb.inits) == 1  # one W&B run for the whole CPT run
    model = AutoModelForCausalLM.from_pretrained(str(run / "final"))
    tok = Tokenizer.from_file(str(run / "final" / "tokenizer.json"))
    ref = bits_per_byte(model, tok, en, prefix_id=1, max_length=64)
    assert evals[-1]["eval"]["en"]["bpb"] == pytest.approx(ref.bpb, rel=1e-5)


def test_korean_only_run_tracks_english_on_the_dashboard(pipeline, tmp_path, capsys):
    """Korean-only data and eval.sets for English: the dashboard ranks the run on both languages."""
    from kolm.dashboard.collect import load_run, rank

    ko_only = {"tokenizer": "tok", "seq_len": 64, "seed": 0, "mix": {"ko": 1.0},
               "sources": [{"name": "ko", "lang": "ko", "paths": ["ko.txt"]}],
               "validation": {"fraction": 0.02, "max_docs": 50}, "num_proc": 1, "progress": False}
    (pipeline / "data_ko.yaml").write_text(yaml.safe_dump(ko_only))
    assert main(["data", "build", str(pipeline / "data_ko.yaml"), "--output", str(pipeline / "data_ko")]) == 0
    en = read_lines("en_dev.txt")[-8:]
    (pipeline / "en_heldout.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    stages = [{"name": "full", "kind": "full", "max_steps": 4}]
    bad = recipe(pipeline, "ko_only_bad", stages, data="data_ko", eval={"every": 2, "sets": {"en": "nope.txt"}})
    assert "eval.sets.en: corpus file not found" in _fails(capsys, bad)
    assert not (pipeline / "runs" / "ko_only_bad" / "stages").exists()
    r = recipe(pipeline, "ko_only", stages, data="data_ko", eval={"every": 2, "max_docs": 8,
                                                                 "sets": {"en": "en_heldout.txt"}})
    assert main(["train", "cpt", str(r)]) == 0
    evals = [x for x in metrics(pipeline / "runs" / "ko_only") if x["kind"] == "eval"]
    assert [sorted(x["eval"]) for x in evals] == [["en", "ko"]] * 3
    out = tmp_path / "report.html"
    assert main(["dashboard", str(pipeline / "runs" / "ko_only"), str(pipeline / "runs" / "emb_full"),
                 "--output", str(out)]) == 0
    run = load_run(pipeline / "runs" / "ko_only", name="ko_only")
    s = run["summary"]
    assert s["forgetting"] == pytest.approx(evals[-1]["eval"]["en"]["bpb"] - evals[0]["eval"]["en"]["bpb"])
    assert s["gain"] == pytest.approx(evals[0]["eval"]["ko"]["bpb"] - evals[-1]["eval"]["ko"]["bpb"])
    ranking = json.loads(out.with_suffix(".json").read_text())["ranking"]
    assert all(row["forgetting"] is not None and row["rank_forgetting"] for row in ranking)
    assert [row["run"] for row in ranking] == [x["name"] for x in sorted(
        [run, load_run(pipeline / "runs" / "emb_full", name="emb_full")], key=lambda x: -x["summary"]["gain"])]
    assert rank([run])[0]["forgetting_latest_bpb"] == evals[-1]["eval"]["en"]["bpb"]


def test_embedding_lr_gives_embeddings_and_head_their_own_rate(pipeline):
    """A full stage's ``embedding_lr``: the embedding and LM-head weights train in their own optimizer groups at that
    peak rate (scaled by the same schedule), everything else at the stage's; extra callbacks join the Trainer."""
    from transformers import TrainerCallback

    from kolm.config import resolve
    from kolm.train import cpt
    from kolm.train.config import CptConfig

    seen: list[list[tuple[float, int]]] = []

    class Groups(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, model=None, **kw):
            emb = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
            seen.append([(g["lr"], sum(id(p) in emb for p in g["params"]), len(g["params"]))
                         for g in optimizer.param_groups])

    r = recipe(pipeline, "emb_lr", [{"name": "full", "kind": "full", "max_steps": 3, "embedding_lr": 3e-2}],
               optim={"lr": 3e-3, "warmup_steps": 0, "scheduler": "constant_with_warmup"},
               eval={"every": 0}, checkpoint={"every": 100, "keep": 2})
    cpt.run(resolve(CptConfig, yaml_path=str(r)), callbacks=(Groups(),))
    assert len(seen) == 3
    for groups in seen:
        emb_groups = [g for g in groups if g[1]]
        body = [g for g in groups if not g[1]]
        assert emb_groups and all(lr == pytest.approx(3e-2) and n == k for lr, n, k in emb_groups)
        assert sum(n for _, n, _ in emb_groups) == 2  # untied tiny model: embeddings and head
        assert body and all(lr == pytest.approx(3e-3) for lr, _, _ in body)


def test_embedding_lr_only_in_a_full_stage():
    from kolm.config import ConfigError, from_dict
    from kolm.train.config import StageConfig

    with pytest.raises(ConfigError, match="embedding_lr"):
        from_dict(StageConfig, {"name": "e", "kind": "embeddings", "embedding_lr": 1e-3})
    with pytest.raises(ConfigError, match="embedding_lr"):
        from_dict(StageConfig, {"name": "f", "kind": "full", "embedding_lr": 0.0})
    assert from_dict(StageConfig, {"name": "f", "kind": "full", "embedding_lr": 1e-3}).embedding_lr == 1e-3


def test_new_rows_lr_moves_only_the_added_rows_faster(pipeline):
    """One step with ``new_rows_lr`` 10x the stage's lr against the same step without: the added rows of the
    embeddings and the head move exactly 10x as far, every other weight (old rows included) lands where it did."""
    import torch

    from kolm.config import resolve
    from kolm.train import cpt
    from kolm.train.config import CptConfig

    start = json.loads((pipeline / "model" / "resize.json").read_text())["old_vocab_size"]
    finals = []
    for name, extra in (("rows_ref", {}), ("rows_10x", {"new_rows_lr": 1e-2})):
        r = recipe(pipeline, name, [{"name": "full", "kind": "full", "max_steps": 1, **extra}],
                   optim={"lr": 1e-3, "warmup_steps": 0, "scheduler": "constant_with_warmup"},
                   eval={"every": 0}, checkpoint={"every": 100, "keep": 2})
        cpt.run(resolve(CptConfig, yaml_path=str(r)))
        finals.append(safetensors(pipeline / "runs" / name / "final"))
    before, (ref, fast) = safetensors(pipeline / "model"), finals
    for key in before:
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(ref[key][:start], fast[key][:start]), key
            moved = ref[key][start:] - before[key][start:]
            assert moved.abs().max() > 0
            torch.testing.assert_close(fast[key][start:] - before[key][start:], 10 * moved, rtol=1e-4, atol=1e-7)
        else:
            assert torch.equal(ref[key], fast[key]), key


def test_new_rows_lr_needs_a_full_stage_and_no_deepspeed():
    from kolm.config import ConfigError, from_dict
    from kolm.train.config import CptConfig, StageConfig

    with pytest.raises(ConfigError, match="new_rows_lr"):
        from_dict(StageConfig, {"name": "e", "kind": "embeddings", "new_rows_lr": 1e-3})
    with pytest.raises(ConfigError, match="DeepSpeed"):
        from_dict(CptConfig, {"model": "m", "data": "d", "output": "o", "deepspeed": "zero3",
                              "stages": [{"name": "f", "kind": "full", "new_rows_lr": 1e-3}]})


@pytest.mark.parametrize("precision,fast,autocast", [("auto", True, True), ("auto", False, False),
                                                      ("fp32", True, False), ("bf16", False, True)])
def test_precision_auto_takes_bf16_autocast_where_it_is_fast(pipeline, monkeypatch, capsys, precision, fast, autocast):
    """``precision: auto`` trains under bf16 autocast where kolm.precision says bf16 is fast (an AVX-512 BF16/AMX
    CPU; patched here so that every CPU runs both branches): the body's matmuls return bf16, the saved weights stay
    float32, and the run's summary line says which it was."""
    import torch
    from transformers import TrainerCallback

    from kolm.config import resolve
    from kolm.train import cpt
    from kolm.train.config import CptConfig

    monkeypatch.setattr("kolm.precision.fast_bf16", lambda device_type: fast)
    seen: set = set()

    class Dtypes(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            model.model.layers[0].mlp.up_proj.register_forward_hook(lambda m, i, out: seen.add(out.dtype))

    name = f"precision_{precision}_{fast}"
    r = recipe(pipeline, name, [{"name": "full", "kind": "full", "max_steps": 2}], precision=precision,
               eval={"every": 0}, checkpoint={"every": 100, "keep": 2})
    cpt.run(resolve(CptConfig, yaml_path=str(r)), callbacks=(Dtypes(),))
    assert seen == {torch.bfloat16 if autocast else torch.float32}
    final = safetensors(pipeline / "runs" / name / "final")
    assert {v.dtype for v in final.values()} == {torch.float32}
    assert ("bf16 autocast ->" if autocast else "fp32 ->") in capsys.readouterr().out


def test_precision_auto_keeps_fp32_under_deepspeed_on_cpu(monkeypatch):
    """DeepSpeed's bf16 mode keeps bf16 weights (a GPU setting): on a CPU ``auto`` stays fp32 under it."""
    from kolm.config import from_dict
    from kolm.train.config import CptConfig
    from kolm.train.cpt import _bf16

    monkeypatch.setattr("kolm.precision.fast_bf16", lambda device_type: device_type == "cpu")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = {"model": "m", "data": "d", "output": "o", "stages": [{"name": "f", "kind": "full"}]}
    assert _bf16(from_dict(CptConfig, cfg)) is True
    assert _bf16(from_dict(CptConfig, {**cfg, "deepspeed": "zero3"})) is False
    assert _bf16(from_dict(CptConfig, {**cfg, "deepspeed": "zero3", "precision": "bf16"})) is True
