"""Alignment data (kolm/align/data.py): row forms, validation reasons and strict mode, assistant masks on kolm's
default template, the chat template choices, and the shipped SFT/DPO recipes. No model is trained here (the
templates of real chat models are tested in test_align_chat.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, make_sp_tokenizer

from kolm.align.chat import DEFAULT_CHAT_TEMPLATE, pick_chat_template
from kolm.align.data import check_sources, dpo_examples, sft_examples
from kolm.align.dpo import DpoConfig
from kolm.align.sft import SftConfig
from kolm.cli import main
from kolm.config import ConfigError, from_dict, resolve
from kolm.errors import KolmError

INSTRUCT = REPO / "kolm" / "align" / "data" / "ko_instruct.jsonl"
PREFS = REPO / "kolm" / "align" / "data" / "ko_prefs.jsonl"


def align_texts() -> list[str]:
    """Every string of the shipped instruction and preference sets (to train tiny tokenizers on)."""
    out: list[str] = []
    for path in (INSTRUCT, PREFS):
        for line in path.read_text(encoding="utf-8").splitlines():
            for v in json.loads(line).values():
                out += [v] if isinstance(v, str) else [m["content"] for m in v] if isinstance(v, list) else []
    return [t for t in out if t.strip()]


def sp_tokenizer(folder: Path) -> Path:
    """A tiny Llama-2-style tokenizer trained on the shipped Korean sets (no chat template: kolm's default applies)."""
    return make_sp_tokenizer(align_texts() * 3, folder, vocab_size=700)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def assistant_text(tok, ex: dict) -> str:
    return tok.decode([i for i, m in zip(ex["input_ids"], ex["assistant_masks"]) if m])


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return sp_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


U, A, S = "user", "assistant", "system"


def msgs(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


SFT_ROWS = [
    msgs((U, "안녕하세요?"), (A, "안녕하세요! 무엇을 도와드릴까요?")),                         # 1 ok
    {"instruction": "번역하세요.", "input": "사과", "output": "apple"},                          # 2 ok
    {"instruction": "인사하세요.", "output": "안녕하세요."},                                     # 3 ok (no input)
    {"instruction": "요약하세요.", "input": "긴 글"},                                             # 4 missing_field
    {"instruction": "요약하세요.", "output": "   "},                                            # 5 empty_response
    msgs((A, "먼저 말합니다."), (U, "네?")),                                                    # 6 roles_out_of_order
    msgs((U, "질문"), (A, "답"), (S, "늦은 시스템")),                                           # 7 roles_out_of_order
    msgs((U, "질문"), ("bot", "답")),                                                          # 8 bad_role
    '{"messages": [',                                                                          # 9 not_json
    msgs((U, "질문만 있습니다.")),                                                              # 10 roles_out_of_order
    msgs((U, "가나다라마바사 " * 40), (A, "짧은 답")),                                          # 11 prompt_too_long
    msgs((S, "시스템"), (U, ""), (A, "답")),                                                    # 12 empty_content
    msgs((S, "짧게 답하세요."), (U, "하나"), (A, "1"), (U, "둘"), (A, "2")),                     # 13 ok
]


def test_sft_rows_are_validated_and_counted(tmp_path, tok):
    path = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    out, rep = sft_examples([str(path)], tok, DEFAULT_CHAT_TEMPLATE, 96)
    assert rep.rows == 13 and rep.kept == 4 == len(out)
    assert dict(rep.skipped) == {"missing_field": 1, "empty_response": 1, "roles_out_of_order": 3, "bad_role": 1,
                                 "not_json": 1, "prompt_too_long": 1, "empty_content": 1}
    assert rep.examples["prompt_too_long"][0].startswith(f"{path}:11: the prompt has ")
    assert any(e.startswith(f"{path}:7:") for e in rep.examples["roles_out_of_order"])
    # instruction form -> user "instruction\n\ninput", assistant "output"; every assistant turn carries the loss
    assert assistant_text(tok, out[1]) == "apple</s>"
    assert "번역하세요.\n\n사과" in tok.decode(out[1]["input_ids"])
    assert assistant_text(tok, out[3]) == "1</s>2</s>"
    assert json.loads(json.dumps(rep.to_dict()))["kept"] == 4


def test_strict_mode_names_file_and_line(tmp_path, tok):
    path = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    with pytest.raises(KolmError, match=rf"{path.name}:4: no field 'output' \(missing_field"):
        sft_examples([str(path)], tok, DEFAULT_CHAT_TEMPLATE, 96, strict=True)


def test_bad_data_fails_before_any_model_loads(tmp_path, tok_dir, capsys):
    """tok_dir holds no weights: these errors come from the data checks, with the report written and printed."""
    bad = write_jsonl(tmp_path / "bad.jsonl", SFT_ROWS[3:10])
    cfg = from_dict(SftConfig, {"model": str(tok_dir), "output": str(tmp_path / "out"),
                                "data": {"train": [str(bad)]}})
    from kolm.align.sft import build_trainer

    with pytest.raises(KolmError, match="no usable rows"):
        build_trainer(cfg)
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["rows"] == 7 and report["kept"] == 0 and sum(report["skipped"].values()) == 7
    assert "0 kept" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tok_dir}\noutput: {tmp_path / 'out2'}\ndata:\n  train: [{bad}]\n")
    assert main(["train", "sft", str(recipe), "data.strict=true"]) == 2
    assert f"{bad}:1: no field 'output'" in capsys.readouterr().err


def test_long_rows_are_kept_and_counted_as_truncated(tmp_path, tok):
    path = write_jsonl(tmp_path / "sft.jsonl", [msgs((U, "질문"), (A, "아주 긴 답입니다. " * 30))])
    out, rep = sft_examples([str(path)], tok, DEFAULT_CHAT_TEMPLATE, 64)
    assert rep.kept == 1 and rep.truncated == 1 and len(out[0]["input_ids"]) > 64


def test_default_template_masks_exactly_the_assistant_turns(tok):
    out, rep = sft_examples([str(INSTRUCT)], tok, DEFAULT_CHAT_TEMPLATE, 1024)
    assert rep.kept == rep.rows == 36 and not rep.skipped
    rows = [json.loads(x) for x in INSTRUCT.read_text(encoding="utf-8").splitlines()]
    for row, ex in zip(rows, out):
        answers = [m["content"] for m in row["messages"] if m["role"] == A] if "messages" in row else [row["output"]]
        assert assistant_text(tok, ex) == "".join(a + "</s>" for a in answers)
        assert ex["assistant_masks"][0] == 0 and len(ex["assistant_masks"]) == len(ex["input_ids"])


def test_chat_template_choices(tmp_path, tok):
    assert pick_chat_template(tok, "auto").source.startswith("kolm default")  # the tokenizer has none
    assert pick_chat_template(tok, "default").text == DEFAULT_CHAT_TEMPLATE
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(KolmError, match="never learns to stop"):  # no end-of-turn token: unusable for the loss
        pick_chat_template(tok, str(plain), plain)
    assert pick_chat_template(tok, str(plain), plain, check=False).text == plain.read_text()
    with pytest.raises(KolmError, match="cannot read"):
        pick_chat_template(tok, str(tmp_path / "missing.jinja"), tmp_path / "missing.jinja")


DPO_ROWS = [
    {"prompt": "수도는?", "chosen": "서울입니다.", "rejected": "몰라요."},                              # 1 ok
    {"prompt": [{"role": U, "content": "하나 더하기 하나는?"}], "chosen": [{"role": A, "content": "2"}],
     "rejected": [{"role": A, "content": "3"}]},                                                    # 2 ok
    {"chosen": [{"role": U, "content": "색은?"}, {"role": A, "content": "파랑"}],
     "rejected": [{"role": U, "content": "색은?"}, {"role": A, "content": "몰라"}]},                 # 3 ok (implicit)
    {"prompt": "수도는?", "chosen": "서울입니다."},                                                  # 4 missing_field
    {"prompt": "수도는?", "chosen": "", "rejected": "몰라요."},                                      # 5 empty_response
    {"prompt": "수도는?", "chosen": "서울", "rejected": "서울 "},                                    # 6 identical
    {"prompt": [{"role": U, "content": "a"}, {"role": A, "content": "b"}], "chosen": "c",
     "rejected": "d"},                                                                              # 7 roles
    {"prompt": "가나다라 " * 60, "chosen": "예", "rejected": "아니오"},                                # 8 too long
    {"prompt": "안녕", "system": "짧게 답하세요.", "chosen": "안녕하세요.", "rejected": "뭐?"},          # 9 ok
]


def test_dpo_rows_are_validated_and_normalised(tmp_path, tok):
    path = write_jsonl(tmp_path / "prefs.jsonl", DPO_ROWS)
    out, rep = dpo_examples([str(path)], tok, DEFAULT_CHAT_TEMPLATE, 96)
    assert rep.kept == 4 and dict(rep.skipped) == {"missing_field": 1, "empty_response": 1,
                                                   "identical_responses": 1, "roles_out_of_order": 1,
                                                   "prompt_too_long": 1}
    assert out[0] == {"prompt": [{"role": U, "content": "수도는?"}], "chosen": [{"role": A, "content": "서울입니다."}],
                      "rejected": [{"role": A, "content": "몰라요."}]}
    assert out[2]["prompt"] == [{"role": U, "content": "색은?"}] and out[2]["rejected"][0]["content"] == "몰라"
    assert out[3]["prompt"][0] == {"role": S, "content": "짧게 답하세요."}
    with pytest.raises(KolmError, match=rf"{path.name}:4: no field 'rejected'"):
        dpo_examples([str(path)], tok, DEFAULT_CHAT_TEMPLATE, 96, strict=True)
    shipped, rep = dpo_examples([str(PREFS)], tok, DEFAULT_CHAT_TEMPLATE, 1024)
    assert rep.kept == rep.rows == 26


def test_parquet_and_sources(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": "인사", "input": "", "output": "안녕"},
                                         {"instruction": "인사", "input": "", "output": ""}]), tmp_path / "d.parquet")
    out, rep = sft_examples([str(tmp_path / "d.parquet")], tok, DEFAULT_CHAT_TEMPLATE, 64)
    assert rep.kept == 1 and rep.examples["empty_response"][0].startswith(f"{tmp_path / 'd.parquet'}:row 2:")
    assert check_sources(["org/some-set", str(tmp_path / "d.parquet")]) == [("hub", "org/some-set"),
                                                                          ("file", str(tmp_path / "d.parquet"))]
    with pytest.raises(KolmError, match="data file not found"):
        check_sources([str(tmp_path / "missing.jsonl")])
    (tmp_path / "d.csv").write_text("a\n")
    with pytest.raises(KolmError, match="unsupported data format"):
        check_sources([str(tmp_path / "d.csv")])


@pytest.mark.parametrize("recipe", sorted((REPO / "train").glob("sft_*.yaml")) + sorted((REPO / "train")
                                                                                      .glob("dpo_*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe, capsys):
    cls = SftConfig if recipe.name.startswith("sft_") else DpoConfig
    cfg = resolve(cls, yaml_path=str(recipe))
    assert Path(cfg.model).is_absolute() and Path(cfg.output).is_absolute()
    assert all(Path(p).is_file() for p in cfg.data.train)
    cmd = ["train", "sft" if cls is SftConfig else "dpo", str(recipe), "--dry-run", "lora.r=8", "--overwrite"]
    assert main(cmd) == 0
    out = capsys.readouterr().out
    assert "r: 8" in out and "overwrite: true" in out


def test_config_errors_name_the_field():
    base = {"model": "m", "output": "o", "data": {"train": ["x.jsonl"]}}
    with pytest.raises(ConfigError, match="data.train"):
        from_dict(SftConfig, {"model": "m", "output": "o"})
    with pytest.raises(ConfigError, match="lm_head"):
        from_dict(SftConfig, {**base, "lora": {"target_modules": ["q_proj", "lm_head"]}})
    with pytest.raises(ConfigError, match="loss_type"):
        from_dict(DpoConfig, {**base, "loss_type": ["sigmoid", "bogus"]})
    with pytest.raises(ConfigError, match="train_new_tokens"):
        from_dict(SftConfig, {**base, "lora": {"new_token_ids": [5]}})
    assert from_dict(DpoConfig, base).train.learning_rate == 5e-6
    assert from_dict(SftConfig, base).train.learning_rate == 2e-4
