"""Chat templates for ``kolm train sft|dpo``: which template renders the rows, and which tokens the assistant wrote.

The assistant-only loss trains on the tokens a model produces at inference: each assistant turn's content and the
end-of-turn token(s) that stop it (``<|im_end|>``, ``<|eot_id|>``, ``</s>``, ``<end_of_turn>``...), never the
system or user text and never the header the generation prompt already holds. Two ways find them:

* **Generation markers.** A template that wraps assistant output in ``{% generation %} ... {% endgeneration %}``
  (kolm's default, trl's ``*_training.jinja``) gives the mask through transformers' ``return_assistant_tokens_mask``,
  as trl computes it.
* **Prefix by prefix**, for every other template, i.e. the ones models ship (ChatML of SmolLM2/Qwen/Yi, Llama-2,
  Llama-3, Mistral, Gemma...). For assistant message ``i``, ``render(messages[:i], add_generation_prompt=True)`` is
  exactly what the model is given at inference, so it must be a prefix of ``render(messages[:i + 1])``; what follows
  it is the assistant turn. The turn ends with the first special token after the assistant's content (its
  end-of-turn token; whitespace a template puts between them, as Llama-2's `` </s>``, belongs to the turn), and the
  whole conversation must render the same up to there (no later turn may rewrite it). Character spans become token
  masks through the tokenizer's offsets. A template that breaks this (e.g. Mistral's v3 template, which moves the
  system prompt into the last user message) is refused with a message naming the turn and the difference, unless
  trl ships a training version of it.

:func:`pick_chat_template` chooses the template and checks it once on a probe conversation, before any data is
read; :func:`encode_chat` renders and tokenizes one conversation with its assistant mask.

``chat_template: auto`` uses the tokenizer's own template. A tokenizer without one (base models) gets
:data:`DEFAULT_CHAT_TEMPLATE`, a Zephyr-style format that needs no new tokens::

    <s><|system|>
    {system}</s>
    <|user|>
    {user}</s>
    <|assistant|>
    {assistant}</s>

(``<s>``/``</s>`` stand for the tokenizer's bos/eos tokens.) The assistant's content and its eos, the token that
ends a turn at inference, are inside ``{% generation %}``, so exactly they carry the loss.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.errors import KolmError

DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# A conversation every template must render with the prefix property (the system turn is dropped for templates that
# refuse system messages, such as Gemma's and Mistral's v0.1/v0.2).
PROBE = [{"role": "system", "content": "kolm probe: the system prompt."},
         {"role": "user", "content": "kolm probe: the first question?"},
         {"role": "assistant", "content": "kolm probe: the first answer."},
         {"role": "user", "content": "kolm probe: the second question?"},
         {"role": "assistant", "content": "kolm probe: the second answer."}]


class TemplateRejectsRow(ValueError):
    """The chat template raised on this conversation (``raise_exception`` in the template, e.g. a system message
    where the template supports none). The row is skipped and counted, the run goes on."""


@dataclass
class ChatTemplate:
    """The template rows are rendered with, the one saved with the adapter (what inference uses; they differ only
    when trl's training version of the tokenizer's own template is used), where it came from, and how the assistant
    tokens are found (``generation markers`` or ``prefix``)."""

    text: str
    saved: str
    source: str
    masks: str


@dataclass
class EncodedChat:
    """A rendered, tokenized conversation: ``mask`` is 1 on assistant tokens, ``turns`` the token range
    ``[start, end)`` of each assistant turn."""

    ids: list[int]
    mask: list[int]
    turns: list[tuple[int, int]]


def render(tokenizer: Any, messages: list[dict[str, str]], template: str, generation_prompt: bool = False) -> str:
    """The template's text for ``messages``; a template that refuses them raises :class:`TemplateRejectsRow`."""
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except TemplateError as e:
        raise TemplateRejectsRow(f"the chat template refuses this conversation: {e}") from None


def special_token_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A regex for the texts of the tokenizer's special tokens (longest first); None if it has none."""
    texts = {str(t) for t in tokenizer.all_special_tokens}
    texts |= {str(t) for t in tokenizer.added_tokens_decoder.values() if t.special}
    texts = frozenset(t for t in texts if t)
    return _alternation(texts) if texts else None


@functools.lru_cache(maxsize=16)
def _alternation(texts: frozenset[str]) -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, sorted(texts, key=len, reverse=True))))


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], template: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span ``[start, end)`` of each assistant turn, found prefix by
    prefix (see the module docstring). Raises KolmError when the template breaks the prefix property."""
    full = render(tokenizer, messages, template)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], template, generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1], template)
        if not upto.startswith(prompt):
            raise _prefix_error(i, "the prompt with add_generation_prompt=True", prompt,
                                "the conversation up to and with the assistant's turn", upto)
        end = _turn_end(tokenizer, upto, len(prompt), m["content"], i)
        if full[:end] != upto[:end]:
            raise _prefix_error(i, "the conversation up to this turn", upto[:end], "the whole conversation", full)
        spans.append((len(prompt), end))
    return full, spans


def _turn_end(tokenizer: Any, text: str, start: int, content: str, i: int) -> int:
    """End of the assistant turn that starts at ``start``: after the first special token that follows its content."""
    core = content.strip()
    pos = text.find(core, start)
    if pos < 0:
        raise KolmError(f"chat template: messages[{i}] (assistant) does not appear verbatim in the rendered turn "
                        f"{text[start:start + 200]!r}, so its tokens cannot be found; use a template with "
                        "{% generation %} markers, or set assistant_only_loss: false")
    pattern = special_token_pattern(tokenizer)
    end = pattern.search(text, pos + len(core)) if pattern else None
    if end is None:
        raise KolmError(f"chat template: the assistant turn {text[start:start + 200]!r} ends without a special "
                        "(end-of-turn) token, so a model trained on it never learns to stop; use a template that "
                        "ends assistant turns with the eos or an end-of-turn token")
    return end.end()


def _prefix_error(i: int, what_a: str, a: str, what_b: str, b: str) -> KolmError:
    at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return KolmError(
        f"chat template: {what_a} is not a prefix of {what_b} at messages[{i}] (assistant): they differ at "
        f"character {at}: {a[max(0, at - 40):at + 40]!r} vs {b[max(0, at - 40):at + 40]!r}. The template renders "
        "earlier turns differently once later turns follow (e.g. it moves the system prompt), so the tokens a "
        "model sees at inference cannot be located in training rows. Give a .jinja template whose assistant content "
        "is wrapped in {% generation %}...{% endgeneration %}, use `chat_template: default`, or set "
        "assistant_only_loss: false.")


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], template: ChatTemplate | str) -> EncodedChat:
    """Render and tokenize ``messages``; the ids equal ``apply_chat_template(..., tokenize=True)``."""
    from trl.chat_template_utils import has_generation_markers

    text = template.text if isinstance(template, ChatTemplate) else template
    if has_generation_markers(text):
        from jinja2.exceptions import TemplateError

        try:
            enc = tokenizer.apply_chat_template(messages, chat_template=text, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
        except TemplateError as e:
            raise TemplateRejectsRow(f"the chat template refuses this conversation: {e}") from None
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        return EncodedChat(ids, mask, _runs(mask))
    full, spans = assistant_spans(tokenizer, messages, text)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask, turns = [0] * len(enc["input_ids"]), []
    for s, e in spans:
        hit = [k for k, (a, b) in enumerate(enc["offset_mapping"]) if (a < e and b > s) or (a == b and s <= a < e)]
        for k in hit:
            mask[k] = 1
        if hit:
            turns.append((hit[0], hit[-1] + 1))
    return EncodedChat(list(enc["input_ids"]), mask, turns)


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for k, m in enumerate([*mask, 0]):
        if m and start is None:
            start = k
        elif not m and start is not None:
            runs.append((start, k))
            start = None
    return runs


def pick_chat_template(tokenizer: Any, choice: str, path: Path | None = None, *, check: bool = True) -> ChatTemplate:
    """The template for ``choice``: ``auto`` (the tokenizer's own, else kolm's default), ``default`` or a file
    (``path``, already resolved). With ``check`` (assistant-only loss, DPO) it is checked on a probe conversation
    now, before any data is read; a tokenizer's own template that fails is replaced by trl's training version of it
    where trl has one."""
    if choice == "default":
        tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, DEFAULT_CHAT_TEMPLATE, "kolm default", "")
    elif choice != "auto":
        try:
            text = Path(path or choice).read_text(encoding="utf-8")
        except OSError as e:
            raise KolmError(f"chat_template: cannot read {path or choice} ({e})") from None
        tpl = ChatTemplate(text, text, str(path or choice), "")
    else:
        own = tokenizer.chat_template
        own = own.get("default") if isinstance(own, dict) else own
        if not own:
            tpl = ChatTemplate(DEFAULT_CHAT_TEMPLATE, DEFAULT_CHAT_TEMPLATE, "kolm default (the tokenizer has none)",
                               "")
        else:
            tpl = ChatTemplate(own, own, "tokenizer", "")
    if not check:
        tpl.masks = "none (loss on every token)"
        return tpl
    try:
        return _checked(tokenizer, tpl)
    except KolmError as own_error:
        training = _trl_training_template(tokenizer) if tpl.source == "tokenizer" else None
        if training is None:
            raise
        try:
            return _checked(tokenizer, ChatTemplate(training, tpl.saved, "tokenizer (trl training variant)", ""))
        except KolmError:
            raise own_error from None


def _trl_training_template(tokenizer: Any) -> str | None:
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except ValueError:  # trl knows no training version of this template
        return None


def _checked(tokenizer: Any, tpl: ChatTemplate) -> ChatTemplate:
    """Render the probe conversation (without its system turn if the template refuses one); every assistant turn
    must be found, hold its content and end in its end-of-turn token."""
    from trl.chat_template_utils import has_generation_markers

    tpl.masks = "generation markers" if has_generation_markers(tpl.text) else "prefix"
    for probe in (PROBE, PROBE[1:]):
        try:
            enc = encode_chat(tokenizer, probe, tpl)
            break
        except TemplateRejectsRow as e:
            err = e
    else:
        raise KolmError(f"chat template ({tpl.source}) cannot render a plain user/assistant conversation: {err}")
    answers = [m["content"] for m in probe if m["role"] == "assistant"]
    got = [tokenizer.decode(enc.ids[s:e]) for s, e in enc.turns]
    if len(got) != len(answers) or any(a not in g for a, g in zip(answers, got)):
        raise KolmError(f"chat template ({tpl.source}): the assistant tokens it marks are {got}, expected the "
                        f"assistant turns {answers} (each with its end-of-turn token)")
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for (s, e), text in zip(enc.turns, got):
        last = next((i for i in reversed(enc.ids[s:e]) if tokenizer.decode([i]).strip() or i in special), None)
        if last not in special:
            raise KolmError(f"chat template ({tpl.source}): the assistant turn it marks, {text!r}, does not end with "
                            "a special (end-of-turn) token, so a model trained on it never learns to stop; put the "
                            "eos or end-of-turn token inside {% generation %}...{% endgeneration %}")
    return tpl
