"""Tests of ``kolm model resize`` (kolm/model/resize.py): exact copies of original rows, subword-mean init,
refusal of non-extension tokenizers, quality of the init (Korean bits per byte) and ZeRO-3 on two CPU ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, free_port, make_bytelevel_tokenizer, make_sp_tokenizer, read_lines, tiny_llama

from kolm.errors import KolmError
from kolm.model.resize import ResizeConfig, run

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Python is a programming language that lets you work quickly.",
    "Save the image before you close the window.",
    "The tokenizer splits text into tokens and maps them to ids.",
    "Open the file menu and choose export to save a copy.",
    "Large language models are trained on a lot of text.",
]
KO = [
    "한국어 자연어 처리는 재미있습니다.",
    "오늘 서울의 날씨는 맑고 따뜻합니다.",
    "이 문서는 이미지 편집 프로그램의 사용법을 설명합니다.",
    "대한민국의 수도는 서울입니다.",
    "우리는 한국어 모델을 학습하고 있습니다.",
    "토크나이저는 한국어 문장을 토큰으로 나눕니다.",
    "새로운 단어를 어휘에 추가하면 한국어 문장이 짧아집니다.",
    "사진을 저장하기 전에 이미지 크기를 확인하세요.",
]


# ----------------------------------------------------------------------------------------------- fixtures
def _byte_chars() -> dict[str, int]:
    """GPT-2 byte-level alphabet: character -> byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def extend_by_hand(base_dir: Path, ko_texts: list[str], out: Path, n_new: int) -> Path:
    """An extension of ``base_dir``'s tokenizer: Korean merges (learned by a Korean-only BPE of the same kind)
    appended after all base merges, new tokens at ids after every base id (new Hangul characters first for the
    SentencePiece-style kind, as `kolm vocab extend` does)."""
    j = json.loads((base_dir / "tokenizer.json").read_text(encoding="utf-8"))
    byte_level = j.get("pre_tokenizer") is not None
    make = make_bytelevel_tokenizer if byte_level else make_sp_tokenizer
    ko_dir = make(ko_texts, out.parent / (out.name + "-ko-only"), vocab_size=3000 if byte_level else 4000)
    ko_merges = json.loads((ko_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    vocab, merges = j["model"]["vocab"], j["model"]["merges"]
    next_id = max([*vocab.values(), *(t["id"] for t in j["added_tokens"])]) + 1
    for t in j["added_tokens"]:  # `tokenizers` numbers added tokens after the model vocab: keep its ids contiguous
        vocab.setdefault(t["content"], t["id"])
    first, bmap = next_id, _byte_chars()

    def korean(tok: str) -> bool:
        if byte_level:  # only non-ASCII bytes: such a merge can never fire on English text
            return all(bmap[c] >= 0x80 for c in tok)
        # SentencePiece-style: `▁` only as a word start, as in real SentencePiece vocabularies
        return any("\uac00" <= c <= "\ud7a3" for c in tok) and "▁" not in tok[1:]

    for a, b in (m if isinstance(m, list) else m.split(" ") for m in ko_merges):
        if next_id - first >= n_new:
            break
        if a + b in vocab or not korean(a + b):
            continue
        for part in (a, b):
            if part not in vocab and len(part) == 1 and korean(part) and not byte_level:
                vocab[part] = next_id
                next_id += 1
        if a in vocab and b in vocab and next_id - first < n_new:
            vocab[a + b] = next_id
            merges.append([a, b])
            next_id += 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    shutil.copyfile(base_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    return out


def make_model_dir(tok_dir: Path, out: Path, *, tie: bool, hidden: int = 32, model=None) -> Path:
    """A tiny Llama saved (safetensors) with its tokenizer files beside it."""
    from tokenizers import Tokenizer

    n = Tokenizer.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    model = model or tiny_llama(n, hidden=hidden, tie=tie)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tok_dir / name, out / name)
    return out


@pytest.fixture(scope="module", params=["sp", "bytelevel"])
def family(request, tmp_path_factory):
    """(base tokenizer folder, extended tokenizer folder) of one tokenizer kind, trained on the texts above."""
    root = tmp_path_factory.mktemp(request.param)
    make = make_sp_tokenizer if request.param == "sp" else make_bytelevel_tokenizer
    base = make(EN * 5, root / "base", vocab_size=400)
    return base, extend_by_hand(base, KO * 5, root / "ext", n_new=40)


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)


# ----------------------------------------------------------------------------------------------- 1. exact resize
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_resize_keeps_original_rows(family, tmp_path, tie):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    base_tok, ext_tok = family
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=tie)
    n_base = Tokenizer.from_file(str(base_tok / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    n_new = Tokenizer.from_file(str(ext_tok / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    assert n_new == n_base + 40
    stats = run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_tok), output=str(tmp_path / "out"),
                             pad_to_multiple_of=64))
    target = -(-n_new // 64) * 64
    assert (stats["old_vocab_size"], stats["new_vocab_size"], stats["tied"]) == (n_base, target, tie)
    assert stats["new_rows"] == target - n_base and stats["padding_rows"] == target - n_new

    before, after = _load(model_dir), _load(tmp_path / "out")
    assert after.config.vocab_size == target
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"] == target
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(before, get)().weight, getattr(after, get)().weight
        assert new.shape == (target, old.shape[1])
        assert torch.equal(new[:n_base], old), f"{get}: original rows changed"
        assert torch.isfinite(new).all()
    assert (after.get_output_embeddings().weight is after.get_input_embeddings().weight) == tie
    assert not list((tmp_path / "out").glob("*.bin")) and list((tmp_path / "out").glob("*.safetensors"))
    report = json.loads((tmp_path / "out" / "resize.json").read_text())
    assert report["init"] == "subword-mean" and report["config"]["pad_to_multiple_of"] == 64

    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(tok) == n_new
    ids = tok(KO[0], add_special_tokens=False)["input_ids"]
    assert max(ids) >= n_base, "the Korean text should use new tokens"
    assert tok.decode(ids) == KO[0]
    with torch.no_grad():
        logits = after(input_ids=torch.tensor([ids])).logits
    assert logits.shape[-1] == target and torch.isfinite(logits).all()


def test_cli_resize_without_padding(family, tmp_path):
    from kolm.cli import main

    base_tok, ext_tok = family
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False)
    out = tmp_path / "out"
    assert main(["model", "resize", "--model", str(model_dir), "--tokenizer", str(ext_tok), "--output", str(out),
                 "--init", "mean", "seed=3"]) == 0
    report = json.loads((out / "resize.json").read_text())
    assert report["init"] == "mean" and report["config"]["seed"] == 3 and report["padding_rows"] == 0
    assert report["new_vocab_size"] == report["tokenizer_size"] == report["old_vocab_size"] + 40
    # Existing output is refused unless --overwrite.
    assert main(["model", "resize", "--model", str(model_dir), "--tokenizer", str(ext_tok), "--output", str(out)]) == 2
    assert main(["model", "resize", "--model", str(model_dir), "--tokenizer", str(ext_tok), "--output", str(out),
                 "--overwrite"]) == 0


# ----------------------------------------------------------------------------------------------- 2. subword-mean
def _pieces_by_hand(token: str, base_vocab: dict[str, int], byte_level: bool) -> list[int]:
    """The base pieces of a new token, computed without the base BPE model.

    SentencePiece-style base trained without Korean: every Hangul character falls back to its UTF-8 bytes and
    ``▁`` is a base piece. Byte-level base: every byte-level character is a base token, and the base tokenizer's
    merges never join non-ASCII bytes here, so the pieces are its single byte characters -- checked below.
    """
    if byte_level:
        return [base_vocab[c] for c in token]
    out = []
    for ch in token:
        out += [base_vocab[ch]] if ch in base_vocab else [base_vocab[f"<0x{b:02X}>"] for b in ch.encode("utf-8")]
    return out


def test_subword_mean_rows_are_means_of_base_pieces(family, tmp_path):
    import torch
    from tokenizers import Tokenizer

    base_tok, ext_tok = family
    byte_level = json.loads((base_tok / "tokenizer.json").read_text())["pre_tokenizer"] is not None
    base = Tokenizer.from_file(str(base_tok / "tokenizer.json"))
    bv = base.get_vocab(with_added_tokens=True)
    new_tokens = {i: t for t, i in Tokenizer.from_file(str(ext_tok / "tokenizer.json")).get_vocab(True).items()
                  if t not in bv}
    if byte_level:  # premise of the hand computation: no base merge joins two non-ASCII bytes
        bmap = _byte_chars()
        assert not [t for t in bv if len(t) > 1 and all(bmap.get(c, 0) >= 0x80 for c in t)]
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False)
    run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_tok), output=str(tmp_path / "out"),
                     pad_to_multiple_of=64))
    before, after = _load(model_dir), _load(tmp_path / "out")
    n_base = len(bv)
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(before, get)().weight, getattr(after, get)().weight
        for i, tok in new_tokens.items():
            pieces = _pieces_by_hand(tok, bv, byte_level)
            assert torch.allclose(new[i], old[pieces].mean(0), atol=1e-6), (get, tok)
        n_tok = n_base + len(new_tokens)
        assert torch.allclose(new[n_tok:], old.mean(0).expand(new.shape[0] - n_tok, -1), atol=1e-6)

    # extension.json, when present, is what decides the pieces.
    ext2 = tmp_path / "ext-with-json"
    shutil.copytree(ext_tok, ext2)
    chosen = {i: [5 + k % 7, 40 + k % 11] for k, i in enumerate(sorted(new_tokens))}
    (ext2 / "extension.json").write_text(json.dumps(
        {"added": [{"id": i, "token": new_tokens[i], "base_ids": ids} for i, ids in chosen.items()]}))
    stats = run(ResizeConfig(model=str(model_dir), tokenizer=str(ext2), output=str(tmp_path / "out2")))
    assert stats["pieces_from"] == "extension.json" and (tmp_path / "out2" / "extension.json").is_file()
    new = _load(tmp_path / "out2").get_input_embeddings().weight
    old = before.get_input_embeddings().weight
    for i, ids in chosen.items():
        assert torch.allclose(new[i], old[ids].mean(0), atol=1e-6)


def test_mean_and_random_inits(family, tmp_path):
    import torch

    base_tok, ext_tok = family
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False)
    before = _load(model_dir).get_input_embeddings().weight
    n = before.shape[0]
    for init in ("mean", "random"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_tok), output=str(tmp_path / init), init=init))
        new = _load(tmp_path / init).get_input_embeddings().weight[n:]
        if init == "mean":  # N(mean, 1e-9 cov): the mean up to ~1e-5
            assert torch.allclose(new, before.mean(0).expand_as(new), atol=1e-3)
        else:  # the model's own init: N(0, initializer_range=0.02)
            assert abs(new.std().item() - 0.02) < 0.005 and abs(new.mean().item()) < 0.005


# ----------------------------------------------------------------------------------------------- 3. refusals
def test_refuses_non_extension_tokenizers(family, tmp_path):
    base_tok, ext_tok = family
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False)
    out = tmp_path / "out"

    swapped = tmp_path / "swapped"
    shutil.copytree(ext_tok, swapped)
    j = json.loads((swapped / "tokenizer.json").read_text())
    v = j["model"]["vocab"]
    a, b = sorted(v, key=v.get)[300:302]
    v[a], v[b] = v[b], v[a]
    (swapped / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False))
    with pytest.raises(KolmError, match=r"not an extension of .*base tokens are missing or have another id"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(swapped), output=str(out)))

    other = make_sp_tokenizer(KO * 3 + EN, tmp_path / "other", vocab_size=500)  # a different base altogether
    with pytest.raises(KolmError, match="not an extension"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(other), output=str(out)))
    with pytest.raises(KolmError, match="not an extension"):  # wrong --base-tokenizer
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_tok), output=str(out), base_tokenizer=str(other)))
    with pytest.raises(KolmError, match="not a folder"):
        run(ResizeConfig(model=str(tmp_path / "missing-model"), tokenizer=str(ext_tok), output=str(out)))
    with pytest.raises(KolmError, match="no tokenizer.json"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(tmp_path), output=str(out)))

    small = make_model_dir(base_tok, tmp_path / "small", tie=False, model=tiny_llama(100))
    with pytest.raises(KolmError, match="vocab_size 100 <"):
        run(ResizeConfig(model=str(small), tokenizer=str(ext_tok), output=str(out)))

    pickled = tmp_path / "pickled"
    shutil.copytree(model_dir, pickled)
    for f in pickled.glob("*.safetensors"):
        f.rename(pickled / "pytorch_model.bin")
    with pytest.raises(KolmError, match="only pickle weights"):
        run(ResizeConfig(model=str(pickled), tokenizer=str(ext_tok), output=str(out)))

    bad_ext = tmp_path / "bad-ext"
    shutil.copytree(ext_tok, bad_ext)
    (bad_ext / "extension.json").write_text(json.dumps({"added": [{"id": 3, "token": "x", "base_ids": [1]}]}))
    with pytest.raises(KolmError, match="extension.json"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(bad_ext), output=str(out)))
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*")), "no partial output may be left"


def test_failure_during_resize_leaves_no_output(family, tmp_path, monkeypatch):
    import kolm.model.resize as rz

    base_tok, ext_tok = family
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False)

    def boom(*a, **k):
        raise KolmError("boom")

    monkeypatch.setattr(rz, "resize_model", boom)
    with pytest.raises(KolmError, match="boom"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_tok), output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_config_validation():
    from kolm.config import ConfigError

    with pytest.raises(ConfigError, match="model: required"):
        ResizeConfig(tokenizer="t", output="o")
    with pytest.raises(ConfigError, match="pad_to_multiple_of"):
        ResizeConfig(model="m", tokenizer="t", output="o", pad_to_multiple_of=0)


# ----------------------------------------------------------------------------------------------- 4. quality
@pytest.mark.slow
def test_subword_mean_gives_lowest_korean_bpb(tmp_path):
    """A tiny Llama trained on English + Korean with an English-only SentencePiece-style tokenizer (Korean falls
    back to bytes, like Llama-2); right after resizing to a Korean extension, subword-mean has the lowest Korean
    bits per byte, and English (tokenized exactly as before) stays close to the base model."""
    import random

    import torch
    from tokenizers import Tokenizer

    from kolm.eval.bpb import bits_per_byte

    ko, en = read_lines("ko_dev.txt"), read_lines("en_dev.txt", 3000)
    ko_train, ko_eval, en_train, en_eval = ko[:-100], ko[-100:], en[:-100], en[-100:]
    base_dir = make_sp_tokenizer(en_train[:2000], tmp_path / "base", vocab_size=800)
    ext_dir = extend_by_hand(base_dir, ko_train, tmp_path / "ext", n_new=400)
    base, new = (Tokenizer.from_file(str(d / "tokenizer.json")) for d in (base_dir, ext_dir))

    docs = ko_train + en_train[: len(ko_train)]
    random.Random(0).shuffle(docs)
    ids = [i for d in docs for i in [1, *base.encode(d, add_special_tokens=False).ids]]
    seq, batch, steps = 64, 8, 250
    data = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    model = tiny_llama(base.get_vocab_size(), hidden=64, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for _ in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    train_s = time.time() - t0
    model_dir = make_model_dir(base_dir, tmp_path / "model", tie=False, model=model)

    bpb = {"base": (bits_per_byte(model, base, ko_eval, prefix_id=1).bpb,
                    bits_per_byte(model, base, en_eval, prefix_id=1).bpb)}
    for init in ("subword-mean", "mean", "random"):
        run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_dir), output=str(tmp_path / init), init=init))
        m = _load(tmp_path / init)
        bpb[init] = (bits_per_byte(m, new, ko_eval, prefix_id=1).bpb, bits_per_byte(m, new, en_eval, prefix_id=1).bpb)
    print(f"\ntrained {steps} steps in {train_s:.1f}s; bits per byte (Korean, English):")
    for k, (k_bpb, e_bpb) in bpb.items():
        print(f"  {k:13s} {k_bpb:.4f} {e_bpb:.4f}")
    assert bpb["subword-mean"][0] < bpb["mean"][0] and bpb["subword-mean"][0] < bpb["random"][0], bpb
    assert bpb["subword-mean"][1] < 1.05 * bpb["base"][1], bpb
    assert len(new.encode(ko_eval[0]).ids) < len(base.encode(ko_eval[0]).ids)


# ----------------------------------------------------------------------------------------------- 5. ZeRO-3

@pytest.mark.slow
@pytest.mark.distributed
def test_zero3_resize_matches_single_process(tmp_path):
    """Two CPU ranks: the model is loaded partitioned (ZeRO-3), resized by resize_model, run through a DeepSpeed
    engine and saved by rank 0; weights and logits equal the single-process resize, and every rank only ever
    holds its partition of the embeddings and LM head."""
    import torch
    from transformers import AutoTokenizer

    pytest.importorskip("deepspeed")
    base = make_sp_tokenizer(EN * 5, tmp_path / "base", vocab_size=400)
    ext = extend_by_hand(base, KO * 5, tmp_path / "ext", n_new=40)
    ids = [1, *AutoTokenizer.from_pretrained(ext)(KO[0], add_special_tokens=False)["input_ids"]]
    jobs = []
    for tie, init in ((False, "subword-mean"), (True, "mean"), (False, "random")):
        name = f"{'tied' if tie else 'untied'}-{init}"
        model_dir = make_model_dir(base, tmp_path / f"model-{name}", tie=tie)
        jobs.append({"model": str(model_dir), "tokenizer": str(ext), "out": str(tmp_path / f"zero3-{name}"),
                     "init": init, "pad": 64, "seed": 7, "ids": ids, "name": name})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    script = REPO / "tests" / "dist_resize_script.py"
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(free_port()), str(script), str(tmp_path / "jobs.json")]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"deepspeed launch timed out: {(e.stdout or '')[-3000:]}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    for job in jobs:
        single = tmp_path / f"single-{job['name']}"
        run(ResizeConfig(model=job["model"], tokenizer=str(ext), output=str(single), init=job["init"],
                         pad_to_multiple_of=64, seed=7))
        a, b = _load(single), _load(Path(job["out"]))
        assert a.config.vocab_size == b.config.vocab_size == 448
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{job['name']}: {k} differs from the single-process resize"
        with torch.no_grad():
            ref = a(input_ids=torch.tensor([ids])).logits
        assert torch.allclose(torch.load(Path(job["out"]) / "logits.pt"), ref, atol=1e-5)
        ranks = [json.loads((Path(job["out"]) / f"rank{r}.json").read_text()) for r in range(2)]
        assert ranks[0]["stats"] == ranks[1]["stats"] and ranks[0]["stats"]["new_vocab_size"] == 448
        names = ["model.embed_tokens.weight"]
        names += [] if job["name"].startswith("tied") else ["lm_head.weight"]
        for r in ranks:
            for phase, rows in (("before", 400), ("after", 448), ("in_engine", 448)):
                for n in names:
                    p = r[phase][n]
                    assert p["zero"] and p["shape"] == [rows, 32] and p["full"] == rows * 32, (phase, n, p)
                    assert p["placeholder"] == 0 and p["local"] == p["full"] // 2, (phase, n, p)


def test_added_tokens_and_reused_padding_rows(family, tmp_path):
    """A new *added* token (e.g. a chat marker) is cut by the full base pipeline; new ids that fall on rows the
    model already had past its tokenizer (padded vocab) are re-initialised, other original rows are kept."""
    import torch
    from tokenizers import AddedToken, Tokenizer

    from kolm.model.resize import plan_extension

    base_tok, ext_tok = family
    base = Tokenizer.from_file(str(base_tok / "tokenizer.json"))
    new = Tokenizer.from_file(str(ext_tok / "tokenizer.json"))
    new.add_special_tokens([AddedToken("<|im_start|>", special=True)])
    marker = new.token_to_id("<|im_start|>")
    ext2 = tmp_path / "ext2"
    shutil.copytree(ext_tok, ext2)
    new.save(str(ext2 / "tokenizer.json"))
    plan = plan_extension(new, base)
    assert marker == plan.n_tokens - 1 and plan.pieces[marker] == base.encode("<|im_start|>",
                                                                             add_special_tokens=False).ids

    n_base = base.get_vocab_size(with_added_tokens=True)
    padded = tiny_llama(n_base + 10)  # the model already has 10 spare rows past its tokenizer
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False, model=padded)
    stats = run(ResizeConfig(model=str(model_dir), tokenizer=str(ext2), output=str(tmp_path / "out")))
    assert stats["reused_rows"] == 10 and stats["new_vocab_size"] == plan.n_tokens
    old, new_w = _load(model_dir).get_input_embeddings().weight, _load(tmp_path / "out").get_input_embeddings().weight
    assert torch.equal(new_w[:n_base], old[:n_base])
    assert torch.allclose(new_w[marker], old[plan.pieces[marker]].mean(0), atol=1e-6)
    assert not torch.equal(new_w[n_base:n_base + 10], old[n_base:])


def test_bf16_model_keeps_dtype_and_rows(family, tmp_path):
    import torch
    from tokenizers import Tokenizer

    base_tok, ext_tok = family
    n = Tokenizer.from_file(str(base_tok / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    model = tiny_llama(n).to(torch.bfloat16)
    model_dir = make_model_dir(base_tok, tmp_path / "model", tie=False, model=model)
    run(ResizeConfig(model=str(model_dir), tokenizer=str(ext_tok), output=str(tmp_path / "out")))
    before, after = _load(model_dir), _load(tmp_path / "out")
    rows = before.get_input_embeddings().weight.shape[0]
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(before, get)().weight, getattr(after, get)().weight
        assert new.dtype == torch.bfloat16 and torch.equal(new[:rows], old)
