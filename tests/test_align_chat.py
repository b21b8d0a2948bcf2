"""Assistant-only loss with the chat templates that chat models ship (kolm/align/chat.py), tested on each: ChatML
(SmolLM2, Qwen2.5), Llama-2-chat, Llama-3 (instruct and the base template in ../shared), Mistral v0.1/v0.2, Gemma,
and kolm's default. The real templates are in tests/data/chat_templates (SOURCES.md names where each comes from);
they run on the real Llama-2, Mistral and Llama-3 tokenizers and on tiny ChatML and Gemma tokenizers trained here.

For every template: the mask covers exactly each assistant turn's content and its end-of-turn token, the tokens of
the prompt a model is given at inference (system, user, the generation header) are never in it, a short real SFT run
builds labels that are -100 everywhere else, and trl's DPO tokenization of the same template puts the prompt and the
answers where kolm's check says they are. Templates that break the prefix property are refused before any data."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import pytest
from helpers import REPO, make_bytelevel_tokenizer, make_sp_tokenizer, real_tokenizer
from test_align import FAST, make_model
from test_align_data import INSTRUCT, PREFS, align_texts, write_jsonl

from kolm.align import dpo, sft
from kolm.align.chat import TemplateRejectsRow, encode_chat, pick_chat_template, render
from kolm.align.data import dpo_examples, sft_examples, sft_messages
from kolm.config import from_dict
from kolm.errors import KolmError

TEMPLATES = REPO / "tests" / "data" / "chat_templates"
TRL_TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"


@dataclass
class Case:
    """A chat template on a tokenizer, and what each assistant turn must decode to when masked."""

    name: str
    tokenizer: str  # llama2 / mistral / llama3 (../shared), chatml / gemma / sp (tiny, trained here)
    template: str | None  # a file in TEMPLATES; None: the tokenizer's own (or kolm's default if it has none)
    turn: Callable[[str], str]
    skipped: dict[str, int] = field(default_factory=dict)  # on the shipped ko_instruct.jsonl (3 rows have a system)


CASES = [
    Case("smollm2-chatml", "chatml", "chatml_smollm2.jinja", lambda c: c + "<|im_end|>"),
    Case("qwen2.5", "chatml", "qwen2_5_instruct.jinja", lambda c: c + "<|im_end|>"),
    Case("llama2-chat", "llama2", "llama2_chat.jinja", lambda c: c.strip() + " </s>"),
    Case("mistral-v0.1", "mistral", "mistral_instruct_v0_1.jinja", lambda c: c + "</s>", {"template_error": 3}),
    Case("mistral-v0.2", "mistral", "mistral_instruct_v0_2.jinja", lambda c: c + "</s>", {"template_error": 3}),
    Case("llama3-instruct", "llama3", "llama3_instruct.jinja", lambda c: c.strip() + "<|eot_id|>"),
    Case("llama3-base", "llama3", None, lambda c: c.strip() + "<|eot_id|>"),
    Case("gemma", "gemma", "gemma_it.jinja", lambda c: c.strip() + "<end_of_turn>", {"template_error": 3}),
    Case("kolm-default", "sp", None, lambda c: c + "</s>"),
]
BY_NAME = {c.name: c for c in CASES}


def _add_specials(folder: Path, specials: list[str], **config) -> None:
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.save(str(folder / "tokenizer.json"))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, **config}))


def chatml_tokenizer(folder: Path) -> Path:
    """A tiny byte-level BPE with SmolLM2's/Qwen's ChatML special tokens (eos is <|im_end|>, as in both)."""
    make_bytelevel_tokenizer(align_texts() * 3, folder, vocab_size=700)
    _add_specials(folder, ["<|im_start|>", "<|im_end|>"], bos_token="<|im_start|>", eos_token="<|im_end|>",
                  pad_token="<|im_end|>")
    return folder


def gemma_tokenizer(folder: Path) -> Path:
    """A tiny Gemma-style tokenizer: SentencePiece BPE with byte fallback and no dummy prefix, Gemma's specials."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)],
                                  show_progress=False)
    tok.train_from_iterator((t.replace(" ", "▁") for t in align_texts() * 3), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", "model_max_length": 4096}))
    return folder


def tokenizer_folder(case: Case, folder: Path) -> Path:
    """A tokenizer folder for ``case`` with its chat template set, as a chat model's folder would have it."""
    from transformers import AutoTokenizer

    builders = {"chatml": chatml_tokenizer, "gemma": gemma_tokenizer,
                "sp": lambda f: make_sp_tokenizer(align_texts() * 3, f, vocab_size=700)}
    src = builders[case.tokenizer](folder / "src") if case.tokenizer in builders else real_tokenizer(case.tokenizer)
    tok = AutoTokenizer.from_pretrained(src)
    if case.template:
        tok.chat_template = (TEMPLATES / case.template).read_text(encoding="utf-8")
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = tokenizer_folder(BY_NAME[name], tmp_path_factory.mktemp(name))
        return made[name]

    return get


def load(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def conversations(tok, template: str) -> list[list[dict[str, str]]]:
    """The shipped instruction rows the template accepts, as messages, in order."""
    out = []
    for line in INSTRUCT.read_text(encoding="utf-8").splitlines():
        msgs = sft_messages(json.loads(line))
        try:
            render(tok, msgs, template)
        except TemplateRejectsRow:
            continue
        out.append(msgs)
    return out


def token_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_mask_is_exactly_the_assistant_turns(case, tok_dirs):
    """Per row: the ids are the template's own tokenization; each marked turn decodes to the assistant's content and
    the end-of-turn token; it starts right where the inference prompt (with the generation header) ends, and
    everything before it that is not an earlier assistant turn is unmasked."""
    tok = load(tok_dirs(case.name))
    tpl = pick_chat_template(tok, "auto")
    assert tpl.masks == ("generation markers" if case.name == "kolm-default" else "prefix"), tpl
    out, rep = sft_examples([str(INSTRUCT)], tok, tpl, 4096)
    assert dict(rep.skipped) == case.skipped and rep.kept == 36 - sum(case.skipped.values())
    if case.skipped:
        assert "refuses this conversation" in rep.examples["template_error"][0]
    convs = conversations(tok, tpl.text)
    assert len(convs) == len(out)
    for msgs, ex in zip(convs, out):
        ids, mask = ex["input_ids"], ex["assistant_masks"]
        assert ids == list(tok.apply_chat_template(msgs, chat_template=tpl.text, tokenize=True, return_dict=True)
                           ["input_ids"])
        turns = encode_chat(tok, msgs, tpl).turns
        answers = [m["content"] for m in msgs if m["role"] == "assistant"]
        assert [tok.decode(ids[s:e]) for s, e in turns] == [case.turn(a) for a in answers]
        assert sum(mask) == sum(e - s for s, e in turns)
        done = 0
        for (s, e), i in zip(turns, [i for i, m in enumerate(msgs) if m["role"] == "assistant"]):
            prompt = token_ids(tok, render(tok, msgs[:i], tpl.text, generation_prompt=True))
            assert ids[:len(prompt)] == prompt and s == len(prompt)  # the turn starts where inference starts
            assert sum(mask[:s]) == done  # nothing of the prompt (system, user, header) carries the loss
            done += e - s


@pytest.mark.parametrize("name,reference", [("llama3-instruct", "llama3_training.jinja"),
                                            ("qwen2.5", "qwen2_5_training.jinja"),
                                            ("gemma", "gemma_training.jinja")])
def test_masks_agree_with_trl_training_templates(name, reference, tok_dirs):
    """trl's hand-written {% generation %} versions of these templates are the reference: kolm marks the same
    tokens, except whitespace that trl also marks around the turn (the newline after the generation header, which
    the inference prompt already holds, and the newline after the end-of-turn token)."""
    tok = load(tok_dirs(name))
    tpl = pick_chat_template(tok, "auto")
    ref_text = (TRL_TEMPLATES / reference).read_text(encoding="utf-8")
    for msgs in conversations(tok, tpl.text):
        ours, ref = encode_chat(tok, msgs, tpl), encode_chat(tok, msgs, ref_text)
        assert ours.ids == ref.ids
        extra = [i for i, (a, b) in enumerate(zip(ours.mask, ref.mask)) if a != b]
        assert all(ref.mask[i] and not ours.mask[i] and not tok.decode([ours.ids[i]]).strip() for i in extra)
        if name == "llama3-instruct":
            assert ours.mask == ref.mask


# ----------------------------------------------------------------------------------------------- real runs
RUN_CASES = [pytest.param(c, marks=pytest.mark.slow) if c.tokenizer == "llama3" else c for c in CASES]


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.name)
def test_sft_and_dpo_runs(case, tok_dirs, tmp_path):
    """Per template, on a tiny model: a short real SFT run, whose labels are -100 everywhere but the assistant turns
    (the labelled tokens decode to exactly each answer and its end-of-turn token), and trl's DPO path on the same
    template (see :func:`check_dpo`)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tok_dirs(case.name), model)
    make_model(model, model, hidden=16)
    common = {"model": str(model), "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    cfg = from_dict(sft.SftConfig, {**common, "output": str(tmp_path / "sft"),
                                    "data": {"train": [str(INSTRUCT)], "max_length": 512, "max_rows": 8},
                                    "train": {**FAST, "max_steps": 1, "batch_size": 4}})
    trainer, info = sft.build_trainer(cfg)
    tok = trainer.processing_class
    template = (TEMPLATES / case.template).read_text(encoding="utf-8") if case.template else tok.chat_template
    assert tok.chat_template == template  # what is saved with the adapter
    assert info["chat_template"] == ("kolm default (the tokenizer has none)" if case.tokenizer == "sp"
                                     else "tokenizer")
    convs = conversations(tok, template)[:8]
    assert len(trainer.train_dataset) == len(convs) == 8
    for msgs, ex in zip(convs, trainer.train_dataset):
        ids, labels = ex["input_ids"], ex["labels"]
        assert all(lab in (-100, t) for t, lab in zip(ids, labels))
        runs = [[t for t, _ in grp] for trained, grp in groupby(zip(ids, labels), lambda x: x[1] != -100) if trained]
        assert [tok.decode(r) for r in runs] == [case.turn(m["content"]) for m in msgs if m["role"] == "assistant"]
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prompt = token_ids(tok, render(tok, msgs[:first], template, generation_prompt=True))
        assert all(lab == -100 for lab in labels[:len(prompt)]) and labels[len(prompt)] != -100
    trainer.train()
    assert all(math.isfinite(x["loss"]) for x in trainer.state.log_history if "loss" in x)
    check_dpo(case, from_dict(dpo.DpoConfig, {**common, "output": str(tmp_path / "dpo"),
                                              "data": {"train": [str(PREFS)], "max_length": 256, "max_rows": 6},
                                              "train": {**FAST, "max_steps": 1, "batch_size": 2}}), template)


def check_dpo(case: Case, cfg, template: str) -> None:
    """trl's DPO path: the prompt it tokenizes is exactly the inference prompt (no divergence), each completion is
    the rest of the rendered row and starts with kolm's assistant turn (answer + end-of-turn token); a step trains."""
    trainer, _ = dpo.build_trainer(cfg)
    tok = trainer.processing_class
    assert tok.chat_template == template
    rows, _ = dpo_examples([str(PREFS)], tok, template, 256, max_rows=6)
    assert len(trainer.train_dataset) == len(rows) == 6
    for row, ex in zip(rows, trainer.train_dataset):
        prompt = token_ids(tok, render(tok, row["prompt"], template, generation_prompt=True))
        assert ex["prompt_ids"] == prompt
        for k in ("chosen", "rejected"):
            full = token_ids(tok, render(tok, row["prompt"] + row[k], template))
            assert prompt + ex[f"{k}_ids"] == full
            s, e = encode_chat(tok, row["prompt"] + row[k], template).turns[-1]
            assert s == len(prompt) and tok.decode(full[s:e]) == case.turn(row[k][0]["content"])
    trainer.train()
    assert all(math.isfinite(x["loss"]) for x in trainer.state.log_history if "loss" in x)


# ----------------------------------------------------------------------------------------------- refusals
def test_template_that_rewrites_earlier_turns_is_refused(tok_dirs, tmp_path, capsys):
    """Mistral's v3 template moves the system prompt into the last user message: the inference prompt of an earlier
    turn is not a prefix of the training row. Refused before any data or model, for SFT and DPO; fine without the
    assistant-only loss."""
    from kolm.cli import main

    tok = load(tok_dirs("mistral-v0.2"))
    tok.chat_template = (TEMPLATES / "mistral_v3.jinja").read_text(encoding="utf-8")
    with pytest.raises(KolmError, match="is not a prefix of .* at messages\\[2\\] \\(assistant\\)"):
        pick_chat_template(tok, "auto")
    assert pick_chat_template(tok, "auto", check=False).masks.startswith("none")
    tok.save_pretrained(tmp_path / "tok")  # no weights: the refusal must come before the model is loaded
    for cmd, data in (("sft", INSTRUCT), ("dpo", PREFS)):
        recipe = tmp_path / f"{cmd}.yaml"
        recipe.write_text(json.dumps({"model": str(tmp_path / "tok"), "output": str(tmp_path / cmd),
                                      "data": {"train": [str(data)]}}))
        capsys.readouterr()
        assert main(["train", cmd, str(recipe)]) == 2
        err = capsys.readouterr().err
        assert "is not a prefix" in err and "Traceback" not in err and not (tmp_path / cmd).exists()


def test_content_dependent_rewrite_names_the_row(tok_dirs, tmp_path):
    """A template that rewrites an earlier assistant turn only for some contents (as reasoning templates drop the
    thinking of earlier turns) passes the probe; the first row that shows it stops the run, naming file and line."""
    tok = load(tok_dirs("smollm2-chatml"))
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\\n' + m['content'].split('::')[-1] + '<|im_end|>\\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    tpl = pick_chat_template(tok, "auto")
    rows = [{"messages": [{"role": "user", "content": "질문"}, {"role": "assistant", "content": "답"}]},
            {"messages": [{"role": "user", "content": "하나"}, {"role": "assistant", "content": "생각::첫 답"},
                          {"role": "user", "content": "둘"}, {"role": "assistant", "content": "둘째 답"}]}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(KolmError, match=rf"^{path}:2: chat template: the conversation up to this turn is not a prefix"):
        sft_examples([str(path)], tok, tpl, 256)


@pytest.mark.parametrize("template,message", [
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}", "never learns to stop"),
    ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | upper + '<|im_end|>\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "does not appear"),
    ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{% if m['role'] == 'assistant' %}"
     "{% generation %}{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}"
     "{{ '<|im_end|>\\n' }}{% endfor %}", "never learns to stop"),
], ids=["no-end-of-turn-token", "content-rewritten", "markers-without-end-token"])
def test_unusable_templates_are_refused(template, message, tok_dirs, tmp_path):
    tok = load(tok_dirs("smollm2-chatml"))
    path = tmp_path / "t.jinja"
    path.write_text(template)
    with pytest.raises(KolmError, match=message):
        pick_chat_template(tok, str(path), path)


def test_trl_training_variant_replaces_a_template_that_fails(tok_dirs):
    """Qwen3's own template drops the <think> block of earlier turns (it fails the prefix check); trl ships a
    training version of it with {% generation %} markers, which kolm then trains with (and saves the original)."""
    tok = load(tok_dirs("smollm2-chatml"))
    own = (TRL_TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8")
    tok.chat_template = own
    with pytest.raises(KolmError, match="not a prefix"):
        pick_chat_template(tok, str(TRL_TEMPLATES / "qwen3.jinja"), TRL_TEMPLATES / "qwen3.jinja")  # as a file
    tpl = pick_chat_template(tok, "auto")
    assert tpl.source == "tokenizer (trl training variant)" and tpl.masks == "generation markers"
    assert tpl.saved == own != tpl.text
    out, rep = sft_examples([str(INSTRUCT)], tok, tpl, 4096, max_rows=8)
    assert rep.kept == 8
    for ex in out:
        text = tok.decode([i for i, m in zip(ex["input_ids"], ex["assistant_masks"]) if m])
        assert text.rstrip().endswith("<|im_end|>") and "<|im_start|>" not in text and "user" not in text


def test_template_that_refuses_plain_conversations(tok_dirs, tmp_path):
    tok = load(tok_dirs("smollm2-chatml"))
    path = tmp_path / "t.jinja"
    path.write_text("{{ raise_exception('no chats here') }}")
    with pytest.raises(KolmError, match="cannot render a plain user/assistant conversation: .*no chats here"):
        pick_chat_template(tok, str(path), path)
