"""What greedy Korean continuations look like: broken characters, tokens a re-encoding would not give, repetition,
and Korean characters per second. ``bench/extension_pays.py`` compares models with different tokenizers on these.

- **broken**: a continuation whose bytes hold an invalid UTF-8 sequence (shown as U+FFFD). An incomplete character
  at the very end (the token cap fell inside it) is not counted: a streaming client holds those bytes back.
- **off-tokenization**: generated tokens whose byte span is not a token of the re-encoded continuation (the model
  spelled text in pieces its tokenizer would never produce: a sign of new rows it has not learned).
- **repetition**: the share of repeated character 4-grams in a continuation (0: none repeated).
- **Korean chars/s**: Hangul characters generated per second of ``generate`` (same batch size for every model);
  **Korean chars/token**: Hangul characters per generated token (a model that stops early or drifts out of Korean
  scores low on both; ``min_new_tokens`` takes stopping early out of the comparison).
"""

from __future__ import annotations

import codecs
import time
from dataclasses import asdict, dataclass
from typing import Any

from kolm.vocab.chars import bl_to_bytes, has_hangul


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes]:
    """The raw bytes each token stands for (byte-level BPE, or SentencePiece pieces with ``<0xNN>`` fallback);
    special tokens stand for nothing."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    byte_level = "ByteLevel" in type(tokenizer.backend_tokenizer.decoder).__name__ or \
        "ByteLevel" in str(tokenizer.backend_tokenizer.decoder)
    out = []
    for i, piece in zip(ids, pieces, strict=True):
        if i in special:
            out.append(b"")
        elif byte_level:
            out.append(bl_to_bytes(piece))
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out


def valid_text(data: bytes) -> tuple[str, int]:
    """(text, invalid sequences) of ``data``; an incomplete character at the end is dropped, not counted."""
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)
    return text, text.count("\ufffd")


def off_tokenization(tokenizer: Any, pieces: list[bytes], text: str) -> int:
    """How many generated tokens (byte spans ``pieces``) are not tokens of ``text`` re-encoded."""
    enc = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans, pos = set(), 0
    for b in token_bytes(tokenizer, enc):
        spans.add((pos, pos + len(b)))
        pos += len(b)
    off, pos = 0, 0
    for b in pieces:
        if b and (pos, pos + len(b)) not in spans:
            off += 1
        pos += len(b)
    return off


def repetition(text: str, n: int = 4) -> float:
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class GenerationStats:
    prompts: int
    broken_share: float  # continuations with an invalid UTF-8 sequence
    off_token_share: float  # generated tokens a re-encoding would not give (of continuations not broken)
    repetition: float  # mean share of repeated character 4-grams
    korean_chars_per_s: float
    tokens_per_s: float
    korean_chars_per_token: float  # Hangul characters per generated token: what a Korean vocabulary buys
    tokens: int  # generated tokens that stand for text (EOS and padding not counted)
    sample: str  # the first continuation

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def generation_stats(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 32,
                     batch_size: int = 10, whole_characters: bool = False,
                     min_new_tokens: int = 0) -> GenerationStats:
    """Greedy continuations of ``prompts`` (batches of ``batch_size``, left-padded) and their statistics; with
    ``whole_characters``, decoded through :class:`WholeCharacters` (as kolm generates). ``min_new_tokens`` holds
    EOS back that long: at ``max_new_tokens`` every model writes the same number of tokens, so that characters per
    second compare tokenizers, not how soon a model chooses to stop."""
    import torch

    processors = [WholeCharacters(tokenizer)] if whole_characters else []

    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad_token is None:  # batches are padded: pad with EOS (masked out) where the tokenizer has no pad token
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id
    broken = off = n_tok = n_ok = hangul = 0
    reps: list[float] = []
    sample = ""
    seconds = 0.0
    try:
        with torch.no_grad():  # the first call pays one-time setup; time the rest only
            model.generate(**tokenizer(prompts[:1], return_tensors="pt").to(model.device), max_new_tokens=2,
                           do_sample=False, pad_token_id=pad, logits_processor=processors)
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True).to(model.device)
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                     do_sample=False, pad_token_id=pad, logits_processor=processors)
            seconds += time.perf_counter() - t
            for row in out[:, batch["input_ids"].shape[1]:].tolist():
                pieces = token_bytes(tokenizer, row)
                text, bad = valid_text(b"".join(pieces))
                broken += bad > 0
                n = sum(1 for b in pieces if b)
                n_tok += n
                if not bad:  # a broken continuation has no re-encoding of the same bytes; `broken` counts it
                    off += off_tokenization(tokenizer, pieces, text)
                    n_ok += n
                reps.append(repetition(text))
                hangul += sum(1 for ch in text if has_hangul(ch))
                sample = sample or text
    finally:
        tokenizer.padding_side, tokenizer.pad_token = side, pad_token
    return GenerationStats(prompts=len(prompts), broken_share=broken / max(1, len(prompts)),
                           off_token_share=off / max(1, n_ok), repetition=sum(reps) / max(1, len(reps)),
                           korean_chars_per_s=hangul / max(seconds, 1e-9), tokens_per_s=n_tok / max(seconds, 1e-9),
                           korean_chars_per_token=hangul / max(n_tok, 1), tokens=n_tok, sample=sample)



def incomplete_tail(data: bytes) -> bytes | None:
    """The bytes of an incomplete last character of ``data`` (b"" if it ends complete), or None if ``data`` holds
    an invalid sequence (a continuation byte where none belongs, a surrogate, an overlong form...)."""
    try:
        data.decode("utf-8")
        return b""
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.end == len(data):
            return data[e.start:]
        return None


def whole_text(tokenizer: Any, ids: list[int]) -> str:
    """``ids`` decoded (special tokens skipped) without an incomplete last character: where the token cap fell inside
    a character, its bytes are held back as a streaming client holds them, instead of ending the text in U+FFFD. An
    invalid sequence anywhere else stays visible."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    pieces = token_bytes(tokenizer, ids)
    tail = incomplete_tail(b"".join(pieces))
    if not tail:
        return text
    n, j = 0, len(ids)
    while j > 0 and n < len(tail):  # the last tokens that hold the tail
        j -= 1
        n += len(pieces[j])
    if n == len(tail):  # exactly the tail (byte tokens: a decoder may write one U+FFFD per byte)
        return tokenizer.decode(ids[:j], skip_special_tokens=True)
    return text[:-1] if text.endswith("\ufffd") else text  # a token that ends a character and starts the next


class WholeCharacters:
    """A ``transformers`` logits processor that lets a model emit only tokens that keep its output valid UTF-8:
    after a token that ends inside a character, only tokens whose first bytes finish it validly; elsewhere, no
    token that starts inside a character. A byte-level vocabulary (and so every extension of one) has tokens that
    stand for part of a character; a model whose new rows are not trained yet can emit them out of place, which
    decodes to U+FFFD. With this processor, greedy or sampled text never holds a broken character (an incomplete
    one at the very end, where the token cap fell, is completed by the next tokens).

        model.generate(**enc, logits_processor=[WholeCharacters(tokenizer)])
    """

    def __init__(self, tokenizer: Any):
        import torch

        self.pieces = token_bytes(tokenizer, list(range(len(tokenizer))))
        # tokens that start inside a character: the only candidates after an incomplete one
        self.inside = [i for i, b in enumerate(self.pieces) if b and 0x80 <= b[0] < 0xC0]
        self.masks: dict[bytes, Any] = {b"": torch.tensor([incomplete_tail(b) is not None and not (b and b[0] in
                                                           range(0x80, 0xC0)) for b in self.pieces])}
        self.tails: list[bytes] = []
        self.seen = 0

    def _mask(self, tail: bytes) -> Any:
        got = self.masks.get(tail)
        if got is None:
            import torch

            got = torch.zeros(len(self.pieces), dtype=torch.bool)
            got[[i for i in self.inside if incomplete_tail(tail + self.pieces[i]) is not None]] = True
            self.masks[tail] = got
        return got

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows, length = input_ids.shape
        if len(self.tails) != rows or length < self.seen:  # a new generate call
            self.tails, self.seen = [b""] * rows, 0
        for r in range(rows):
            for t in input_ids[r, self.seen:].tolist():
                if t < len(self.pieces) and self.pieces[t]:
                    self.tails[r] = incomplete_tail(self.tails[r] + self.pieces[t]) or b""
        self.seen = length
        n = min(scores.shape[-1], len(self.pieces))
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        mask[:, :n] = torch.stack([self._mask(tail)[:n] for tail in self.tails]).to(scores.device)
        return scores.masked_fill(~mask, float("-inf"))
