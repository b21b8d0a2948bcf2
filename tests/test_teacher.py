"""The model before the resize as a teacher in `kolm train cpt` (kolm/train/teacher.py): the teacher reads exactly
the student's text, its targets are its own likelihoods of the pieces, a model taught by itself has nothing to
learn, the loss and the logs are what they say, and the errors are one line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import free_port, kill_and_resume, ko_en_data, make_bytelevel_tokenizer, read_lines, tiny_llama

from kolm.cli import main

NEW = 150


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """base/ (tiny byte-level Llama, its tokenizer), tok/ (+150 Korean tokens), model/ (resized), data/ (ko + en),
    held-out Korean in ko_held.txt."""
    root = tmp_path_factory.mktemp("teacher")
    ko, en = read_lines("ko_dev.txt", 900), read_lines("en_dev.txt", 600)
    (root / "ko.txt").write_text("\n".join(ko[:800]) + "\n", encoding="utf-8")
    (root / "ko_held.txt").write_text("\n".join(ko[800:]) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    make_bytelevel_tokenizer(en[:400] + ko[:100], root / "base", vocab_size=500)
    from tokenizers import Tokenizer

    n_base = Tokenizer.from_file(str(root / "base" / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    model = tiny_llama(n_base, hidden=32, tie=True)
    model.config.bos_token_id, model.config.eos_token_id = n_base - 2, n_base - 1
    model.save_pretrained(str(root / "base"))
    assert main(["vocab", "extend", "--base", str(root / "base"), "--corpus", str(root / "ko.txt"),
                 "--num-new-tokens", str(NEW), "--output", str(root / "tok")]) == 0
    assert main(["model", "resize", "--model", str(root / "base"), "--tokenizer", str(root / "tok"),
                 "--output", str(root / "model"), "--init", "subword-mean"]) == 0
    ko_en_data(root, "tok", 48)
    return root


def _teacher(world: Path, student: Path, **cfg):
    import torch

    from kolm.train.config import TeacherConfig
    from kolm.train.teacher import Teacher, plan_teacher

    n_rows = json.loads((student / "config.json").read_text())["vocab_size"]
    tc = TeacherConfig(model=str(world / "base"), **cfg)
    plan = plan_teacher(tc, student, n_rows)
    t = Teacher.load(tc, plan.path, plan.pieces, plan.n_base, plan.n_rows, bf16_weights=False)
    t.model.to(torch.device("cpu"))
    return t


def _batch(world: Path, n: int = 3):
    import torch

    from kolm.artifacts import DataFolder

    train = DataFolder(world / "data").load_train()
    return torch.tensor([train[i]["input_ids"] for i in range(n)])


def _student(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def test_the_teacher_reads_exactly_the_base_tokenization(world):
    """Expanding the student's ids of held-out Korean and English gives the base tokenizer's ids of the same text,
    and each student token's end lands on the base position of its last piece."""
    from tokenizers import Tokenizer

    t = _teacher(world, world / "model")
    base = Tokenizer.from_file(str(world / "base" / "tokenizer.json"))
    ext = Tokenizer.from_file(str(world / "tok" / "tokenizer.json"))
    import torch

    lines = (world / "ko_held.txt").read_text(encoding="utf-8").splitlines()[:60] + read_lines("en_dev.txt", 640)[-40:]
    new_seen = 0
    for line in lines:
        ids = ext.encode(line, add_special_tokens=False).ids
        new_seen += sum(i >= t.expansion.n_base for i in ids)
        (got,), ends = t.expansion.expand(torch.tensor([ids]))
        assert got.tolist() == base.encode(line, add_special_tokens=False).ids, line
        for j in range(len(ids)):  # the base pieces up to a student token's end spell the text up to it
            assert base.decode(got[: int(ends[0, j]) + 1].tolist()) == ext.decode(ids[: j + 1])
    assert new_seen > 100  # the check saw the extension at work


def test_chunk_targets_are_the_teachers_likelihood_of_each_tokens_pieces(world):
    """The target of each student token is the teacher's summed log-probability of its base pieces, as a plain
    forward pass over the base ids gives it; read in small overlapping windows, every position is still scored."""
    import torch

    batch = _batch(world)
    for max_length in (None, 40):
        t = _teacher(world, world / "model", max_length=max_length)
        w = t.model.get_output_embeddings().weight.detach()[: t.expansion.n_base]
        base_ids, ends = t.expansion.expand(batch)
        for (h, e, chunk), ids in zip(t.read(batch, False, w), base_ids, strict=True):
            assert h.shape[0] == len(ids)
            if max_length is None:  # one window: the plain forward pass is the reference
                with torch.no_grad():
                    logp = torch.log_softmax(t.model(input_ids=ids[None]).logits[0].float(), -1)
                ref = [sum(float(logp[p, ids[p + 1]]) for p in range(int(e[j]), int(e[j + 1])))
                       for j in range(len(e) - 1)]
                assert chunk.tolist() == pytest.approx(ref, abs=1e-4)
            assert bool((chunk < 0).all()) and len(chunk) == batch.shape[1] - 1


def test_windows_score_every_position_once_with_half_a_window_of_context():
    from kolm.train.teacher import windows

    for length in (1, 7, 40, 41, 100, 333):
        for window in (8, 40, 64):
            ws = windows(length, window)
            owned = [p for _, own, end in ws for p in range(own, end)]
            assert owned == list(range(length))
            assert all(end - start <= window and (own - start >= window // 2 or start == 0) for start, own, end in ws)


def test_a_model_taught_by_itself_has_nothing_to_learn(world, tmp_path):
    """The base model as its own student (identity expansion): both terms are 0 at every position, so the loss
    lines up position for position; a copy with one perturbed output row is not."""
    import torch

    student = tmp_path / "student"
    shutil.copytree(world / "base", student)
    t = _teacher(world, student)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(student / "tokenizer.json"))
    text = (world / "en.txt").read_text(encoding="utf-8").splitlines()[:3]
    batch = torch.tensor([tok.encode(x).ids[:40] for x in text if len(tok.encode(x).ids) >= 40][:2])
    model = _student(student)
    parts, n = t.loss(model(input_ids=batch).logits, batch, autocast=False)
    assert n == batch.numel() - batch.shape[0]
    assert float(parts["kd"].detach()) / n < 1e-6 and float(parts["chunk"].detach()) / n < 1e-6
    with torch.no_grad():
        model.get_output_embeddings().weight[int(batch[0, 5])] += 0.5
    parts, _ = t.loss(model(input_ids=batch).logits, batch, autocast=False)
    assert float(parts["kd"].detach()) / n > 1e-4 and float(parts["chunk"].detach()) / n > 1e-7


def test_grouped_kl_is_the_kl_to_first_piece_groups():
    """Against a brute-force sum: every row's probability counts for its first piece; a row without pieces goes to
    the sink bucket, which the teacher gives no mass (so leaking mass there costs)."""
    import torch

    from kolm.train.teacher import grouped_kl

    torch.manual_seed(0)
    n_base, first = 5, torch.tensor([0, 1, 2, 3, 4, 1, 1, 3, 5])  # rows 5-7 start with pieces 1, 1, 3; row 8: none
    logp = torch.log_softmax(torch.randn(4, 9), -1)
    q = torch.log_softmax(torch.randn(4, n_base), -1)
    got = grouped_kl(logp, q, first, n_base + 1)
    for r in range(4):
        grouped = [sum(math.exp(float(logp[r, v])) for v in range(9) if int(first[v]) == b) for b in range(n_base)]
        ref = sum(math.exp(float(q[r, b])) * (float(q[r, b]) - math.log(grouped[b])) for b in range(n_base))
        assert float(got[r]) == pytest.approx(ref, rel=1e-5)


def test_binary_kl_is_zero_where_the_likelihoods_agree():
    import torch

    from kolm.train.teacher import binary_kl

    a = torch.tensor([-0.01, -1.0, -5.0, -40.0])
    assert binary_kl(a, a, 100.0).abs().max() < 1e-6
    worse, better = binary_kl(a, a - 1.0, 100.0), binary_kl(a, a + 0.005, 100.0)
    assert bool((worse > 0).all()) and bool((better > 0).all())


def _recipe(world: Path, name: str, teacher: dict | None, steps: int = 3, **extra) -> Path:
    r = {"model": "model", "data": "data", "output": f"runs/{name}", "micro_batch_size": 2, "grad_accum": 2,
         "optim": {"lr": 3e-3, "warmup_steps": 1}, "eval": {"every": 0}, "checkpoint": {"every": 1000, "keep": 2},
         "stages": [{"name": "emb", "kind": "embeddings", "max_steps": 2, "lr": 1e-2},
                    {"name": "full", "kind": "full", "max_steps": steps}], **extra}
    if teacher is not None:
        r["teacher"] = teacher
    path = world / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _metrics(world: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (world / "runs" / name / "metrics.jsonl").read_text().splitlines()]


def test_cpt_with_the_teacher_logs_its_terms_beside_the_data_loss(world):
    """`teacher: {model: auto}` takes the model resize.json names; every training row carries teacher_kd and
    teacher_chunk, `loss` stays the data's cross-entropy (at the first step, before any update, exactly the loss of a
    run without the teacher) and `loss_with_teacher` is what was optimised; until_step drops the teacher."""
    assert main(["train", "cpt", str(_recipe(world, "plain", None))]) == 0
    assert main(["train", "cpt", str(_recipe(world, "taught", {"model": "auto", "kd": 1.0, "chunk": 2.0,
                                                               "until_step": 4}))]) == 0
    plain, taught = _metrics(world, "plain"), _metrics(world, "taught")
    assert taught[0]["loss"] == pytest.approx(plain[0]["loss"], abs=1e-5)
    rows = [r for r in taught if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows[:4]:
        assert r["teacher_kd"] > 0 and r["teacher_chunk"] > 0
        assert r["loss_with_teacher"] == pytest.approx(r["loss"] + r["teacher_kd"] + 2 * r["teacher_chunk"], abs=1e-4)
    assert "teacher_kd" not in rows[4]  # past until_step


def test_teacher_errors_are_one_line(world, capsys, tmp_path):
    # auto without resize.json
    student = tmp_path / "student"
    shutil.copytree(world / "model", student)
    (student / "resize.json").unlink()
    r = _recipe(world, "noauto", {"model": "auto"}, model=str(student))
    assert main(["train", "cpt", str(r)]) == 2
    assert "resize.json" in capsys.readouterr().err
    # a teacher whose tokenizer the student's does not extend
    other = tmp_path / "other"
    shutil.copytree(world / "base", other)
    make_bytelevel_tokenizer(read_lines("en_dev.txt", 300), other, vocab_size=450)
    r = _recipe(world, "wrongtok", {"model": str(other)})
    assert main(["train", "cpt", str(r)]) == 2
    err = capsys.readouterr().err
    assert "not an extension" in err and "Traceback" not in err
    assert not (world / "runs" / "wrongtok").exists()  # refused before anything was written


def test_layers_stage_with_a_t2_head_trains_what_it_names_and_saves_a_plain_model(world):
    """Yamaguchi et al.'s recipe: embeddings, LM head and decoder layers 0 and -1 train (the others stay
    bit-identical), an extra head learns the token after next and its cross-entropy joins the logged loss; the saved
    model has no trace of that head and loads as a plain model."""
    from safetensors.torch import load_file

    r = _recipe(world, "yamaguchi", None)
    spec = yaml.safe_load(r.read_text())
    spec["stages"] = [{"name": "layers", "kind": "layers", "max_steps": 3, "layers": [0, -1], "t2_head": True}]
    r.write_text(yaml.safe_dump(spec))
    assert main(["train", "cpt", str(r)]) == 0
    before = load_file(str(world / "model" / "model.safetensors"))
    after = load_file(str(world / "runs" / "yamaguchi" / "final" / "model.safetensors"))
    assert set(after) == set(before)  # no kolm_t2_head
    moved = {k for k in before if not (before[k] == after[k]).all()}
    assert "model.embed_tokens.weight" in moved and any(k.startswith("model.layers.0.") for k in moved)
    assert any(k.startswith("model.layers.1.") for k in moved)  # the last of two layers (-1)
    assert not any(k.startswith("model.norm") for k in moved)
    assert _student(world / "runs" / "yamaguchi" / "final") is not None
    # the t+2 cross-entropy is in the logged objective: far above the data loss of the same step without it
    spec["stages"][0]["t2_head"] = False
    spec["output"] = "runs/yamaguchi-no-t2"
    r.write_text(yaml.safe_dump(spec))
    assert main(["train", "cpt", str(r)]) == 0
    with_t2, without = _metrics(world, "yamaguchi")[0]["loss"], _metrics(world, "yamaguchi-no-t2")[0]["loss"]
    assert with_t2 > without + 3.0  # a second, untrained-for-t+2 cross-entropy of ~6 nats


@pytest.mark.slow
@pytest.mark.distributed
def test_zero3_two_ranks_with_the_teacher_kill_and_resume_match(world):
    """Two CPU ranks under ZeRO-3 with the teacher sharded like the student: a run killed with SIGKILL after a
    checkpoint and resumed logs the same losses, teacher terms and bits per byte (within 1e-5) as an uninterrupted
    run, and both ranks' teacher terms are averaged into one number."""
    import os
    import subprocess


    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}

    def launch(name: str, *extra: str) -> subprocess.Popen:
        r = _recipe(world, name, {"model": "auto"}, steps=4, deepspeed="zero3",
                    checkpoint={"every": 2, "keep": 2}, eval={"every": 2, "max_docs": 4})
        cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "kolm.cli",
               "train", "cpt", str(r), *extra]
        return subprocess.Popen(cmd, cwd=world, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    kill_and_resume(launch, "z3t_ref", "z3t_crash",
                    world / "runs" / "z3t_crash" / "stages" / "01-full" / "checkpoint-2")
    a, b = _metrics(world, "z3t_ref"), _metrics(world, "z3t_crash")
    assert [(x["kind"], x["step"]) for x in a] == [(x["kind"], x["step"]) for x in b]
    train = [x for x in a if x["kind"] == "train"]
    assert len(train) == 6 and all(x["teacher_kd"] > 0 and x["teacher_chunk"] > 0 for x in train)
    for x, y in zip(a, b, strict=True):
        if x["kind"] == "train":
            for key in ("loss", "teacher_kd", "teacher_chunk", "loss_with_teacher"):
                assert y[key] == pytest.approx(x[key], abs=1e-5), (key, x, y)
        else:
            for lang in x["eval"]:
                assert y["eval"][lang]["bpb"] == pytest.approx(x["eval"][lang]["bpb"], abs=1e-5), (x, y)


def test_a_recipe_with_only_max_steps_gets_kolms_recipe_for_the_model(world, tmp_path):
    """model, data, output and max_steps: an extended model gets kolm's stages (and teacher, when kolm's recipe has
    one), sized to the budget, written to the run's recipe.yaml; a model without added rows one full stage; a recipe
    that lists its stages keeps them."""
    from kolm.train.recipes import EXTENDED, choose

    r = world / "auto.yaml"
    r.write_text(yaml.safe_dump({"model": "model", "data": "data", "output": "runs/auto", "max_steps": 4,
                                 "micro_batch_size": 2, "eval": {"every": 0},
                                 "checkpoint": {"every": 1000, "keep": 2}}))
    assert main(["train", "cpt", str(r)]) == 0
    saved = yaml.safe_load((world / "runs" / "auto" / "recipe.yaml").read_text())
    chosen = choose(world / "model", 4, None, None)
    assert [(s["kind"], s["max_steps"]) for s in saved["stages"]] == [(s.kind, s.max_steps) for s in chosen.stages]
    assert sum(s["max_steps"] for s in saved["stages"]) == 4 and saved["max_steps"] is None
    assert (saved["teacher"]["model"] is not None) == bool(EXTENDED["teacher"])
    rows = [x for x in _metrics(world, "auto") if x["kind"] == "train"]
    assert [x["step"] for x in rows] == [1, 2, 3, 4]
    plain = choose(world / "base", 50, None, None)
    assert [(s.kind, s.max_steps) for s in plain.stages] == [("full", 50)] and not plain.teacher.enabled
    from kolm.train.config import StageConfig

    mine = [StageConfig(name="x", kind="full", max_steps=3)]
    kept = choose(world / "model", 0, mine, None)
    assert kept.stages is mine and not kept.teacher.enabled and kept.line == ""
