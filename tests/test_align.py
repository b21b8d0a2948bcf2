"""LoRA SFT, DPO and merge-lora (kolm/align) on tiny Llama models: what trains and what stays frozen, the labels trl
builds, merged logits, the preference margin, a vocabulary extended by `kolm vocab extend` + `kolm model resize`,
and ZeRO-3 on two CPU ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, free_port, tiny_llama
from test_align_data import INSTRUCT, PREFS, align_texts, sp_tokenizer
from transformers import TrainerCallback

from kolm.align import dpo, sft
from kolm.align.chat import DEFAULT_CHAT_TEMPLATE
from kolm.cli import main
from kolm.config import from_dict
from kolm.errors import KolmError
from kolm.io.tokenizers import tokenizer_fingerprint

FAST = {"gradient_checkpointing": False, "logging_steps": 1, "warmup": 0, "scheduler": "constant"}


def make_model(folder: Path, tok_dir: Path, hidden: int = 32, tie: bool = False) -> Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    if tok_dir != folder:
        tok.save_pretrained(folder)
    tiny_llama(len(tok), hidden=hidden, tie=tie).save_pretrained(folder)
    return folder


def sft_cfg(model: Path, out: Path, steps: int, **extra):
    lora = {"r": 8, "alpha": 16, "dropout": 0.0, **extra.pop("lora", {})}
    return from_dict(sft.SftConfig, {"model": str(model), "output": str(out), "lora": lora,
                                     "data": {"train": [str(INSTRUCT)], "max_length": 128},
                                     "train": {**FAST, "max_steps": steps, "batch_size": 4, "learning_rate": 5e-3},
                                     **extra})


class Snapshot(TrainerCallback):
    """Copies every parameter when training starts and when it ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


def base_name(peft_name: str) -> str:
    """peft's parameter name -> the name in the base model's safetensors."""
    return peft_name.removeprefix("base_model.model.").replace(".token_adapter.base_layer.", ".").replace(
        ".base_layer.", ".")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    return make_model(folder, sp_tokenizer(folder))


@pytest.fixture(scope="module")
def sft_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "adapter"
    snap = Snapshot()
    info = sft.run(sft_cfg(base, out, steps=8), callbacks=[snap])
    return out, snap, info


def extend_and_resize(base: Path, work: Path) -> Path:
    """``base`` with Korean tokens added by `kolm vocab extend` and its rows grown by `kolm model resize`."""
    (work / "ko.txt").write_text("\n".join(align_texts()) + "\n", encoding="utf-8")
    assert main(["vocab", "extend", "--base", str(base), "--corpus", str(work / "ko.txt"), "--num-new-tokens", "40",
                 "--min-frequency", "1", "--allow-fewer", "--output", str(work / "tok")]) == 0
    assert main(["model", "resize", "--model", str(base), "--tokenizer", str(work / "tok"),
                 "--output", str(work / "model")]) == 0
    return work / "model"


@pytest.fixture(scope="module")
def extended(base, tmp_path_factory) -> Path:
    return extend_and_resize(base, tmp_path_factory.mktemp("ext"))


# ----------------------------------------------------------------------------------------------- SFT
def test_sft_trains_lora_only(sft_run, base):
    import torch
    from safetensors.torch import load_file

    out, snap, info = sft_run
    original = load_file(str(base / "model.safetensors"))
    lora = [n for n in snap.before if "lora_" in n]
    frozen = [n for n in snap.before if "lora_" not in n]
    assert lora and len(frozen) == len(original)
    assert all(not torch.equal(snap.before[n], snap.after[n]) for n in lora)  # every LoRA matrix moved
    for n in frozen:  # the base stays bit-identical, in memory and to the file it came from
        assert torch.equal(snap.before[n], snap.after[n]) and torch.equal(snap.after[n], original[base_name(n)]), n
    meta = json.loads((out / "kolm_adapter.json").read_text())
    assert meta["vocab_size"] == meta["tokenizer_len"] == 700 and meta["steps"] == 8
    assert meta["chat_template"].startswith("kolm default") and meta["assistant_tokens"] == "generation markers"
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(base) == tokenizer_fingerprint(out)
    assert (out / "adapter_model.safetensors").is_file() and (out / "kolm_config.yaml").is_file()
    assert json.loads((out / "data_report.json").read_text())["kept"] == 36
    assert (out / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE
    losses = [x["loss"] for x in json.loads((out / "train_log.json").read_text()) if "loss" in x]
    assert len(losses) == 8 and losses[-1] < losses[0]


def test_packing_trains(base, tmp_path):
    cfg = sft_cfg(base, tmp_path / "out", steps=2, packing=True)
    trainer, _ = sft.build_trainer(cfg)
    assert "seq_lengths" in trainer.train_dataset.column_names and len(trainer.train_dataset) < 36
    trainer.train()
    assert all(x["loss"] == x["loss"] for x in trainer.state.log_history if "loss" in x)  # finite, not NaN


def test_merge_matches_adapter_and_generates(sft_run, base, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, _, _ = sft_run
    assert main(["merge-lora", "--base", str(base), "--adapter", str(adapter), "--output", str(tmp_path / "m")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m", use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.bin")) and (tmp_path / "m" / "merge.json").is_file()
    assert merged.config.vocab_size == merged.get_input_embeddings().weight.shape[0] == len(tok) == 700
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    enc = tok.apply_chat_template([{"role": "user", "content": "한국의 수도는 어디인가요?"}],
                                  add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        want, got = with_adapter(**enc).logits, merged(**enc).logits
        with with_adapter.disable_adapter():
            plain = with_adapter(**enc).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (want - plain).abs().max() > 1e-3  # the adapter does change the model
    gen = merged.generate(**enc, max_new_tokens=6, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    assert main(["merge-lora", "--base", str(base), "--adapter", str(adapter), "--output", str(tmp_path / "m")]) == 2


def test_recipe_fields_reach_trl_configs(tmp_path):
    """Every kolm `train:` field lands in the trl field TRAIN_TO_TRL names; the derived ones (warmup, checkpoints,
    precision, loggers) and the method's fields too; `trl:` passes anything else of SFTConfig/DPOConfig through."""
    from trl import DPOConfig, SFTConfig

    from kolm.align.model import TRAIN_TO_TRL, trl_config

    train = {"learning_rate": 3e-4, "epochs": 2.5, "max_steps": 7, "batch_size": 3, "grad_accum": 5, "warmup": 4,
             "scheduler": "linear", "weight_decay": 0.01, "max_grad_norm": 0.5, "logging_steps": 2, "seed": 11,
             "save_steps": 3, "gradient_checkpointing": False}
    cfg = from_dict(sft.SftConfig, {"model": "m", "output": str(tmp_path / "o"), "data": {"train": ["x.jsonl"]},
                                    "train": train, "trl": {"neftune_noise_alpha": 5.0, "optim": "adafactor"}})
    args = trl_config(SFTConfig, cfg, cfg.train, False, max_length=99, packing=True)
    assert isinstance(args, SFTConfig) and set(TRAIN_TO_TRL) <= set(train)
    for name, trl_name in TRAIN_TO_TRL.items():
        assert getattr(args, trl_name) == train[name], name
    assert (args.output_dir, args.warmup_steps, args.save_strategy, args.save_steps) == (str(tmp_path / "o"), 4,
                                                                                          "steps", 3)
    assert (args.data_seed, args.activation_checkpointing, args.bf16, args.report_to) == (11, False, False, [])
    assert (args.max_length, args.packing, args.neftune_noise_alpha, args.optim) == (99, True, 5.0, "adafactor")
    dcfg = from_dict(dpo.DpoConfig, {"model": "m", "output": "o", "data": {"train": ["x.jsonl"]},
                                     "train": {"warmup": 0.1}, "trl": {"label_smoothing": 0.2}})
    dargs = trl_config(DPOConfig, dcfg, dcfg.train, False, beta=0.3, loss_type=["ipo"])
    assert (dargs.learning_rate, dargs.warmup_steps, dargs.label_smoothing, dargs.beta) == (5e-6, 0.1, 0.2, 0.3)
    dcfg.report_to = ["none"]
    assert trl_config(DPOConfig, dcfg, dcfg.train, False).report_to == []


@pytest.mark.parametrize("extra,message", [
    ({"trl": {"learning_rate": 1.0}}, "trl.learning_rate: set by kolm from `train.learning_rate`"),
    ({"trl": {"assistant_only_loss": True}}, "trl.assistant_only_loss: set by kolm from `assistant_only_loss`"),
    ({"trl": {"label_smoothing": 0.1}}, "trl.label_smoothing: not an argument of trl's SFTConfig"),
    ({"trl": {"optim": "no_such_optimizer"}}, "trl's SFTConfig refuses the recipe's train: and trl: values"),
    ({"train": {"scheduler": "no_such_schedule"}}, "trl's SFTConfig refuses the recipe's train: values"),
    ({"report_to": ["no_such_logger"]}, "report_to: unknown logger 'no_such_logger'"),
    ({"eval": {"sets": {"ko": "nope.txt"}}}, "eval.sets.ko: corpus file not found"),
])
def test_trl_arguments_are_checked_before_the_data(extra, message, tmp_path, capsys):
    """Bad `trl:` arguments and loggers fail before any row is read (the data file does not even exist)."""
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(json.dumps({"model": str(tmp_path), "output": str(tmp_path / "out"),
                                  "data": {"train": [str(tmp_path / "missing.jsonl")]}, **extra}))
    sp_tokenizer(tmp_path)  # a tokenizer and no model: nothing gets that far
    assert main(["train", "sft", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert message in err and "missing.jsonl" not in err and not (tmp_path / "out").exists()


def test_report_to_tensorboard(base, tmp_path):
    """report_to: [tensorboard] writes event files under OUTPUT/runs/ whose train/loss equals train_log.json."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    sft.run(sft_cfg(base, out, steps=3, report_to=["tensorboard"]))
    events = sorted((out / "runs").rglob("events.out.tfevents.*"))
    assert events, sorted(out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent)).Reload()
    logged = [e.value for e in acc.Scalars("train/loss")]
    losses = [x["loss"] for x in json.loads((out / "train_log.json").read_text()) if "loss" in x]
    assert len(logged) == len(losses) == 3
    assert logged == pytest.approx(losses, rel=1e-5)
    assert json.loads((out / "kolm_adapter.json").read_text())["config"]["report_to"] == ["tensorboard"]


def _eval_files(folder: Path) -> dict[str, list[str]]:
    """Korean (kolm's example answers) and English held-out documents for eval.sets."""
    ko = [t for t in align_texts() if len(t) > 20][:6]
    en = ["The quick brown fox jumps over the lazy dog.", "Evaluation sets are independent of the training data.",
          "English text the model has never seen in this test."]
    (folder / "ko.txt").write_text("\n".join(ko) + "\n", encoding="utf-8")
    (folder / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    return {"ko": ko, "en": en}


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_eval_sets_reach_tensorboard(method, base, tmp_path, monkeypatch):
    """eval.sets: Korean and English bpb at the start, every eval.every steps and at the end, in train_log.json and
    in TensorBoard's event files (read back) at the same steps. Evaluating at a step that is not a logging step
    logs that step, with trl's own numbers intact; the last bpb is what kolm.eval scores on base + adapter, in
    float32, also when training runs under bf16 autocast (forced here: kolm.precision says bf16 is fast)."""
    from peft import PeftModel
    from test_metrics import tensorboard_scalars
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.eval.bpb import bits_per_byte

    monkeypatch.setattr("kolm.precision.fast_bf16", lambda device_type: True)
    texts = _eval_files(tmp_path)
    out = tmp_path / "out"
    common = {"model": str(base), "output": str(out), "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
              "train": {**FAST, "max_steps": 4, "logging_steps": 2, "batch_size": 4, "learning_rate": 5e-3},
              "report_to": ["tensorboard"],
              "eval": {"every": 3, "sets": {lang: [str(tmp_path / f"{lang}.txt")] for lang in texts}}}
    if method == "sft":
        sft.run(from_dict(sft.SftConfig, {**common, "data": {"train": [str(INSTRUCT)], "max_length": 128}}))
    else:
        dpo.run(from_dict(dpo.DpoConfig, {**common, "data": {"train": [str(PREFS)], "max_length": 128}}))
    log = json.loads((out / "train_log.json").read_text())
    (events,) = {p.parent for p in (out / "runs").rglob("events.out.tfevents.*")}
    tb = tensorboard_scalars(events)
    for lang, docs in texts.items():
        want = {x["step"]: x[f"eval_{lang}_bpb"] for x in log if f"eval_{lang}_bpb" in x}
        assert sorted(want) == [0, 3, 4]
        assert tb[f"eval/{lang}_bpb"] == pytest.approx(want, rel=1e-6)
        assert {x[f"eval_{lang}_docs"] for x in log if f"eval_{lang}_docs" in x} == {len(docs)}
    losses = {x["step"]: x["loss"] for x in log if "loss" in x}
    assert sorted(losses) == [2, 3, 4] and tb["train/loss"] == pytest.approx(losses, rel=1e-6)
    if method == "dpo":  # trl's numbers stay with every training log, the forced one at step 3 included
        assert sorted(x["step"] for x in log if "rewards/margins" in x) == [2, 3, 4]
    tok = AutoTokenizer.from_pretrained(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out).eval()
    for lang, docs in texts.items():
        last = next(x[f"eval_{lang}_bpb"] for x in log if x["step"] == 4 and f"eval_{lang}_bpb" in x)
        assert last == pytest.approx(bits_per_byte(model, tok, docs, max_length=128).bpb, rel=1e-5)


# ----------------------------------------------------------------------------------------------- extended vocab
def test_extended_vocabulary_sft_and_merge(extended, base, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    added = [e["id"] for e in json.loads((extended / "extension.json").read_text())["added"]]
    n = len(AutoTokenizer.from_pretrained(extended))
    assert n > 700 and added == list(range(700, n))
    # a tokenizer with more ids than the model has rows is refused before training
    with pytest.raises(KolmError, match="was not resized"):
        sft.build_trainer(sft_cfg(base, tmp_path / "bad", steps=1, tokenizer=str(extended)))

    snap, out = Snapshot(), tmp_path / "adapter"
    sft.run(sft_cfg(extended, out, steps=4, lora={"train_new_tokens": True}), callbacks=[snap])
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["trainable_token_indices"] == {"embed_tokens": added, "lm_head": added}
    deltas = [k for k in snap.after if "trainable_tokens_delta" in k]
    assert len(deltas) == 2 and all(not torch.equal(snap.before[k], snap.after[k]) for k in deltas)
    original = load_file(str(extended / "model.safetensors"))
    for k in ("model.embed_tokens.weight", "lm_head.weight"):  # the full matrices are untouched; only deltas train
        frozen = next(v for name, v in snap.after.items() if base_name(name) == k)
        assert torch.equal(frozen, original[k])

    merged_dir = tmp_path / "merged"
    assert main(["merge-lora", "--base", str(extended), "--adapter", str(out), "--output", str(merged_dir)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert merged.config.vocab_size == len(tok) == n == merged.lm_head.weight.shape[0]
    assert (merged_dir / "extension.json").is_file()
    emb = merged.get_input_embeddings().weight
    delta = next(v for k, v in snap.after.items() if "embed_tokens.token_adapter.trainable_tokens_delta" in k)
    assert torch.equal(emb[added], delta) and not torch.equal(emb[added], original["model.embed_tokens.weight"][added])
    assert any(i >= 700 for i in tok("다음 문장을 존댓말로 바꾸세요.")["input_ids"])
    merged.generate(**tok("안녕하세요", return_tensors="pt"), max_new_tokens=4, do_sample=False)

    # the adapter belongs to the 740-row vocabulary: merging it into the 700-row base is refused, naming both
    capsys.readouterr()
    assert main(["merge-lora", "--base", str(base), "--adapter", str(out), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"vocabulary of {n} rows" in err and "has 700" in err and not (tmp_path / "x").exists()
    foreign = tmp_path / "foreign"  # without kolm's record, the tokenizer and the trained ids still tell
    shutil.copytree(out, foreign)
    (foreign / "kolm_adapter.json").unlink()
    with pytest.raises(KolmError, match=f"{n}"):
        from kolm.align.merge import MergeConfig, run

        run(MergeConfig(base=str(base), adapter=str(foreign), output=str(tmp_path / "y")))


def test_extended_vocabulary_tied_embeddings(tmp_path):
    """With tied embeddings only the input rows are listed; peft ties the LM head to them, trl sees the trained
    rows through it, and the merged model keeps the tie."""
    import torch
    from transformers import AutoModelForCausalLM

    base = make_model(tmp_path / "base", sp_tokenizer(tmp_path / "base"), tie=True)
    model = extend_and_resize(base, tmp_path)
    snap = Snapshot()
    sft.run(sft_cfg(model, tmp_path / "out", steps=2, lora={"train_new_tokens": True}), callbacks=[snap])
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert list(cfg["trainable_token_indices"]) == ["embed_tokens"]
    (name, delta), = [(k, v) for k, v in snap.after.items() if "trainable_tokens_delta" in k]
    assert not torch.equal(snap.before[name], delta)
    assert main(["merge-lora", "--base", str(model), "--adapter", str(tmp_path / "out"),
                 "--output", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = cfg["trainable_token_indices"]["embed_tokens"]
    assert merged.config.tie_word_embeddings and merged.lm_head.weight is merged.model.embed_tokens.weight
    assert torch.equal(merged.model.embed_tokens.weight[ids], delta)


# ----------------------------------------------------------------------------------------------- DPO
def sequence_logps(model, tok, rows) -> list[float]:
    """log p(chosen) - log p(rejected) per preference row, rendered with the tokenizer's chat template."""
    import torch

    margins = []
    for r in rows:
        prompt = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
        logps = []
        for k in ("chosen", "rejected"):
            ids = tok.apply_chat_template(r["prompt"] + r[k], return_dict=True)["input_ids"]
            assert ids[:len(prompt)] == prompt
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            logps.append(lp[len(prompt) - 1:].sum().item())
        margins.append(logps[0] - logps[1])
    return margins


def test_dpo_margin_rises_on_extended_model(extended, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.align.data import dpo_examples

    out = tmp_path / "dpo"
    cfg = from_dict(dpo.DpoConfig, {"model": str(extended), "output": str(out), "beta": 0.1,
                                    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                                    "data": {"train": [str(PREFS)], "max_length": 128},
                                    "train": {**FAST, "max_steps": 30, "batch_size": 4, "learning_rate": 3e-3}})
    dpo.run(cfg)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE  # the base has none: kolm's default, saved with the adapter
    rows, _ = dpo_examples([str(PREFS)], tok, tok.chat_template, 128)
    base_model = AutoModelForCausalLM.from_pretrained(extended).eval()
    before = sequence_logps(base_model, tok, rows)
    after = sequence_logps(PeftModel.from_pretrained(base_model, out).eval(), tok, rows)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(after) > mean(before) + 1.0, (mean(before), mean(after))
    assert sum(a > b for a, b in zip(after, before)) >= 0.8 * len(rows)
    log = json.loads((out / "train_log.json").read_text())
    margins = [x["rewards/margins"] for x in log if "rewards/margins" in x]
    assert len(margins) == 30 and mean(margins[-5:]) > mean(margins[:5])
    assert json.loads((out / "kolm_adapter.json").read_text())["vocab_size"] > 700


# ----------------------------------------------------------------------------------------------- ZeRO-3

@pytest.mark.slow
@pytest.mark.distributed
def test_zero3_sft_and_dpo(base, tmp_path):
    """SFT and DPO steps under ZeRO-3 on 2 CPU ranks: base weights partitioned, adapters saved and loadable, the
    online evaluation collective."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.eval.bpb import bits_per_byte

    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not installed")
    ds = json.loads((REPO / "train" / "deepspeed" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition every parameter
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    texts = _eval_files(tmp_path)
    (tmp_path / "job.json").write_text(json.dumps({"model": str(base), "sft_data": str(INSTRUCT),
                                                   "dpo_data": str(PREFS), "out": str(tmp_path),
                                                   "deepspeed": str(tmp_path / "ds.json"),
                                                   "eval_sets": {lang: str(tmp_path / f"{lang}.txt")
                                                                 for lang in texts}}))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()),
           str(REPO / "tests" / "dist_align_script.py"), str(tmp_path / "job.json")]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for name in ("sft", "dpo"):
        ranks = [json.loads((tmp_path / f"{name}_rank{r}.json").read_text()) for r in (0, 1)]
        for held in ranks:  # every frozen weight partitioned: each rank holds about half
            assert held["world"] == 2 and held["zero"] == held["frozen"] > 0 and held["local"] < 0.6 * held["full"]
        out = tmp_path / name
        meta = json.loads((out / "kolm_adapter.json").read_text())
        assert meta["vocab_size"] == 700 and meta["steps"] == 3
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # trained (B starts at zero)
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 5, 9]]))
        # the online evaluation ran across both ranks and scored what one process scores on base + adapter
        log = json.loads((out / "train_log.json").read_text())
        assert sorted(x["step"] for x in log if "eval_ko_bpb" in x) == [0, 2, 3]
        last = next(x for x in log if x["step"] == 3 and "eval_en_bpb" in x)
        for lang, docs in texts.items():
            ref = bits_per_byte(model.eval(), AutoTokenizer.from_pretrained(out), docs, max_length=96).bpb
            assert last[f"eval_{lang}_bpb"] == pytest.approx(ref, rel=1e-4), lang


@pytest.mark.parametrize("fast", [True, False])
def test_precision_auto_takes_bf16_autocast_on_a_cpu_with_bf16_units(base, tmp_path, monkeypatch, fast):
    """``train.precision: auto`` on a CPU: bf16 autocast over float32 weights where kolm.precision says bf16 is fast
    (patched, so that every CPU runs both branches), float32 elsewhere; the adapter is saved in float32."""
    import torch
    from safetensors.torch import load_file

    monkeypatch.setattr("kolm.precision.fast_bf16", lambda device_type: fast)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    seen: set = set()

    class Dtypes(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            assert {p.dtype for p in model.parameters()} == {torch.float32}
            layer = next(m for n, m in model.named_modules() if n.endswith("mlp.up_proj.base_layer"))
            layer.register_forward_hook(lambda m, i, out: seen.add(out.dtype))

    out = tmp_path / "adapter"
    info = sft.run(sft_cfg(base, out, steps=2), callbacks=[Dtypes()])
    assert seen == {torch.bfloat16 if fast else torch.float32}
    assert info["dtype"] == ("fp32 weights, bf16 autocast" if fast else "fp32")
    assert {v.dtype for v in load_file(str(out / "adapter_model.safetensors")).values()} == {torch.float32}
