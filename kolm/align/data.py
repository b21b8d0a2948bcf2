"""Alignment data: read, validate, normalise and tokenize instruction and preference rows.

Rows come from ``.jsonl`` files (one JSON object a line), ``.parquet`` files or hub datasets (online only).

* SFT rows are either chat form, ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
  (an optional system message first, then user and assistant turns alternating, ending with the assistant), or
  instruction form, ``{"instruction": str, "input": str (optional), "output": str, "system": str (optional)}``,
  converted to ``[system], user: instruction + "\\n\\n" + input, assistant: output``.
* DPO rows are ``{"prompt": str | messages, "chosen": str | [assistant message], "rejected": ...}`` (an optional
  ``system`` string too), or chat form without ``prompt``: ``chosen`` and ``rejected`` are whole conversations that
  share everything but the last assistant message. All are converted to trl's conversational preference form.

Bad rows (missing fields, empty responses, roles out of order, prompts that fill ``max_length``...) are skipped
and counted by reason in a :class:`DataReport` (written as ``data_report.json``); in strict mode the first one
raises a KolmError naming the file and line.

Rows are rendered and their assistant tokens found by :mod:`kolm.align.chat`; rows the chat template refuses
(e.g. a system message for Gemma's template) are skipped as ``template_error``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from kolm.align.chat import ChatTemplate, TemplateRejectsRow, encode_chat, render
from kolm.errors import KolmError
from kolm.paths import is_hub_id

ROLES = ("system", "user", "assistant")
SUFFIXES = (".jsonl", ".parquet")


class BadRow(Exception):
    """A row that cannot be used; ``reason`` is the short name it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class DataReport:
    """What validation did: rows read, kept, truncated, and skipped by reason (with the first few places)."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    skipped: Counter = dc_field(default_factory=Counter)
    examples: dict[str, list[str]] = dc_field(default_factory=dict)
    strict: bool = False

    def skip(self, where: str, err: BadRow) -> None:
        if self.strict:
            raise KolmError(f"{where}: {err} ({err.reason}; set data.strict: false to skip such rows)")
        self.skipped[err.reason] += 1
        shown = self.examples.setdefault(err.reason, [])
        if len(shown) < 5:
            shown.append(f"{where}: {err}")

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "kept": self.kept, "skipped": dict(sorted(self.skipped.items())),
                "truncated": self.truncated, "examples": self.examples}

    def summary(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"{self.rows} rows read, {self.kept} kept, {self.truncated} truncated at max_length; "
                f"skipped: {skipped}")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------- reading
def check_sources(sources: list[str]) -> list[tuple[str, str]]:
    """(kind, name) per source, kind "file" or "hub"; missing local files fail here, before any model loads."""
    out = []
    for s in sources:
        p = Path(s).expanduser()
        if p.is_file():
            if not p.name.endswith(SUFFIXES):
                raise KolmError(f"{p}: unsupported data format (use .jsonl or .parquet, or a hub dataset id)")
            out.append(("file", str(p)))
        elif is_hub_id(s):
            out.append(("hub", s))
        else:
            raise KolmError(f"data file not found: {s}")
    return out


def iter_rows(sources: list[str], split: str = "train") -> Iterator[tuple[str, Any]]:
    """Yield (where, row); ``where`` is ``file:line`` (jsonl), ``file:row N`` (parquet) or ``id[N]`` (hub).

    A line that is not JSON is yielded as a BadRow so the caller counts (or raises) it like any bad row.
    """
    for kind, name in check_sources(sources):
        if kind == "hub":
            import datasets

            try:
                ds = datasets.load_dataset(name, split=split)
            except Exception as e:  # noqa: BLE001 - network, auth and format errors all mean the same here
                raise KolmError(f"cannot load hub dataset {name!r} (split {split!r}): {e}") from None
            for i, row in enumerate(ds):
                yield f"{name}[{i}]", row
        elif name.endswith(".jsonl"):
            with open(name, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    if not raw.strip():
                        continue
                    try:
                        yield f"{name}:{lineno}", json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError) as e:
                        yield f"{name}:{lineno}", BadRow("not_json", f"not valid JSON ({e})")
        else:
            import pyarrow.parquet as pq

            i = 0
            for batch in pq.ParquetFile(name).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    i += 1
                    yield f"{name}:row {i}", row


# ----------------------------------------------------------------------------------------------- validation
def _text(row: dict, key: str, reason: str = "missing_field", required: bool = True) -> str:
    v = row.get(key)
    if v is None:
        if required:
            raise BadRow("missing_field", f"no field {key!r}")
        return ""
    if not isinstance(v, str):
        raise BadRow("bad_type", f"field {key!r} must be a string, got {type(v).__name__}")
    if required and not v.strip():
        raise BadRow(reason, f"field {key!r} is empty")
    return v


def _messages(value: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRow("bad_type", f"field {key!r} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise BadRow("missing_field", f"{key}[{i}] needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise BadRow("bad_role", f"{key}[{i}] has role {m['role']!r} (known: {', '.join(ROLES)})")
        if not isinstance(m["content"], str):
            raise BadRow("bad_type", f"{key}[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def check_turns(messages: list[dict[str, str]], last: str, key: str = "messages") -> None:
    """[system], then user/assistant alternating from user, ending with role ``last``; no empty contents."""
    offset = 1 if messages[0]["role"] == "system" else 0
    for i, m in enumerate(messages):
        expected = "system" if i < offset else "user" if (i - offset) % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise BadRow("roles_out_of_order", f"{key}[{i}] is {m['role']!r} where {expected!r} is expected "
                                               "([system], user, assistant, user, ...)")
        if not m["content"].strip():
            raise BadRow("empty_response" if m["role"] == "assistant" else "empty_content",
                         f"{key}[{i}] ({m['role']}) is empty")
    if messages[-1]["role"] != last:
        raise BadRow("roles_out_of_order", f"{key} ends with {messages[-1]['role']!r}; it must end with {last!r}")


def sft_messages(row: Any) -> list[dict[str, str]]:
    """Chat-form or instruction-form SFT row -> validated messages (raises BadRow)."""
    if isinstance(row, BadRow):
        raise row
    if not isinstance(row, dict):
        raise BadRow("bad_type", f"a row must be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = _messages(row["messages"], "messages")
    elif "instruction" in row or "output" in row:
        instruction = _text(row, "instruction", "empty_content")
        extra = _text(row, "input", required=False).strip()
        output = _text(row, "output", "empty_response")
        system = _text(row, "system", required=False).strip()
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": instruction + ("\n\n" + extra if extra else "")},
            {"role": "assistant", "content": output}]
    else:
        raise BadRow("missing_field", "no 'messages' and no 'instruction'/'output' fields")
    check_turns(msgs, "assistant")
    return msgs


def _response(value: Any, key: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise BadRow("empty_response", f"field {key!r} is empty")
        return [{"role": "assistant", "content": value}]
    msgs = _messages(value, key)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise BadRow("roles_out_of_order", f"{key!r} must be one assistant message")
    if not msgs[0]["content"].strip():
        raise BadRow("empty_response", f"field {key!r} is empty")
    return msgs


def preference(row: Any) -> dict[str, list[dict[str, str]]]:
    """A DPO row -> {"prompt", "chosen", "rejected"} in conversational form (raises BadRow)."""
    if isinstance(row, BadRow):
        raise row
    if not isinstance(row, dict):
        raise BadRow("bad_type", f"a row must be a JSON object, got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise BadRow("missing_field", f"no field {key!r}")
    if row.get("prompt") is None and isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
        chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
        if len(chosen) < 2 or chosen[:-1] != rejected[:-1] or len(chosen) != len(rejected):
            raise BadRow("missing_field", "no 'prompt', and 'chosen'/'rejected' are not two conversations that "
                                          "differ only in the last message")
        prompt, chosen, rejected = chosen[:-1], _response(chosen[-1:], "chosen"), _response(rejected[-1:], "rejected")
    elif isinstance(row.get("prompt"), str):
        system = _text(row, "system", required=False).strip()
        prompt = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": _text(row, "prompt", "empty_content")}]
        chosen, rejected = _response(row["chosen"], "chosen"), _response(row["rejected"], "rejected")
    elif row.get("prompt") is None:
        raise BadRow("missing_field", "no field 'prompt'")
    else:
        prompt = _messages(row["prompt"], "prompt")
        chosen, rejected = _response(row["chosen"], "chosen"), _response(row["rejected"], "rejected")
    check_turns(prompt, "user", "prompt")
    if chosen[0]["content"].strip() == rejected[0]["content"].strip():
        raise BadRow("identical_responses", "'chosen' and 'rejected' are the same")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# ----------------------------------------------------------------------------------------------- tokenizing
def sft_examples(sources: list[str], tokenizer: Any, template: ChatTemplate | str, max_length: int, *,
                 split: str = "train", strict: bool = False, max_rows: int | None = None,
                 assistant_only: bool = True) -> tuple[list[dict[str, list[int]]], DataReport]:
    """Validate and tokenize SFT rows with ``template``: [{"input_ids", "assistant_masks"}], and the report.

    ``assistant_masks`` mark each assistant turn's content and end-of-turn token (:func:`kolm.align.chat.encode_chat`);
    trl turns them into labels (-100 elsewhere). A row whose first assistant token lies at or past ``max_length``
    would lose every trained token to truncation: it is skipped as ``prompt_too_long``. Longer rows are kept (trl
    truncates them) and counted as truncated. Rows the template refuses are skipped as ``template_error``.
    """
    text = template.text if isinstance(template, ChatTemplate) else template

    def example(row: Any) -> tuple[dict[str, list[int]], bool]:
        msgs = sft_messages(row)
        if assistant_only:
            enc = encode_chat(tokenizer, msgs, template)
            ids, prompt_len = enc.ids, enc.turns[0][0] if enc.turns else len(enc.ids)
            ex = {"input_ids": ids, "assistant_masks": enc.mask}
        else:
            first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            ids = _tokens(tokenizer, render(tokenizer, msgs, text))
            prompt_len = len(_tokens(tokenizer, render(tokenizer, msgs[:first], text, generation_prompt=True)))
            ex = {"input_ids": ids}
        if prompt_len >= max_length:
            raise BadRow("prompt_too_long", f"the prompt has {prompt_len} tokens, max_length is {max_length}")
        return ex, len(ids) > max_length

    return _collect(sources, split, strict, max_rows, example)


def dpo_examples(sources: list[str], tokenizer: Any, template: ChatTemplate | str, max_length: int, *,
                 split: str = "train", strict: bool = False,
                 max_rows: int | None = None) -> tuple[list[dict[str, Any]], DataReport]:
    """Validate preference rows. Each is rendered as trl will render it (prompt with the generation prompt, then
    prompt + chosen and prompt + rejected), which also checks that the prompt is a prefix of both (see
    :mod:`kolm.align.chat`); lengths are counted in tokens."""

    def example(row: Any) -> tuple[dict[str, Any], bool]:
        ex = preference(row)
        encs = [encode_chat(tokenizer, ex["prompt"] + ex[k], template) for k in ("chosen", "rejected")]
        n_prompt = min(e.turns[-1][0] for e in encs)
        if n_prompt >= max_length:
            raise BadRow("prompt_too_long", f"the prompt has {n_prompt} tokens, max_length is {max_length}")
        return ex, max(len(e.ids) for e in encs) > max_length

    return _collect(sources, split, strict, max_rows, example)


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _collect(sources: list[str], split: str, strict: bool, max_rows: int | None,
             example: Any) -> tuple[list[Any], DataReport]:
    """Run ``example(row) -> (example, truncated)`` over every row, counting what it keeps and skips."""
    report, out = DataReport(strict=strict), []
    for where, row in iter_rows(sources, split):
        report.rows += 1
        try:
            ex, truncated = example(row)
        except TemplateRejectsRow as e:
            report.skip(where, BadRow("template_error", str(e)))
            continue
        except BadRow as e:
            report.skip(where, e)
            continue
        except KolmError as e:  # the template cannot be used for assistant-only training: name the row that showed it
            raise KolmError(f"{where}: {e}") from None
        report.truncated += truncated
        out.append(ex)
        report.kept += 1
        if max_rows and report.kept >= max_rows:
            break
    return out, report
