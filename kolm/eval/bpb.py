"""Bits per byte (bpb): a causal LM's loss in a unit that does not depend on the tokenizer.

    bpb = (sum of token negative log-likelihoods, in nats) / (ln 2 * UTF-8 bytes of the text)

Two models with different vocabularies (a base and its Korean-extended version) compare fairly on the same text,
which token-level perplexity cannot do.

Scoring is over **whole documents**, never over packed training windows: every document starts from BOS (EOS
when the tokenizer has no BOS) and every token of the document is scored exactly once. A document longer than the
model's window is scored with overlapping windows: each window after the first re-reads ``max_length - stride``
tokens as context and scores only the tokens that are new, so no token is scored with less than that much
context (except, naturally, near the document start). Packed windows would cut documents at arbitrary points and
score tokens right after a cut with almost no context, inflating bpb by an amount that depends on the packing.

Works on a plain model and on a DeepSpeed ZeRO-3 / torch.distributed one: windows are dealt out round-robin,
every rank runs the same number of forward passes (ZeRO-3 gathers parameters collectively), sums are all-reduced.

    from kolm.eval.bpb import bits_per_byte
    bits_per_byte(model, tokenizer, texts).bpb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BpbResult:
    bpb: float
    nats: float
    bytes: int
    tokens: int
    docs: int

    @property
    def loss(self) -> float:
        """Mean NLL per token (nats): comparable only between models with the same tokenizer."""
        return self.nats / max(self.tokens, 1)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "loss": self.loss}


def token_windows(ids: list[int], prefix_id: int, max_length: int, stride: int) -> list[tuple[list[int], int]]:
    """Cut ``[prefix_id] + ids`` into windows of at most ``max_length``; each comes with how many of its last
    targets are scored. Every target is scored once; consecutive windows overlap by ``max_length - stride``."""
    if max_length < 2:
        raise ValueError("max_length must be >= 2")
    stride = max(1, min(stride, max_length - 1))
    seq = [prefix_id, *ids]
    n = len(seq)
    out: list[tuple[list[int], int]] = []
    begin, scored_to = 0, 1  # targets seq[1:] ; scored_to = first target index not scored yet
    while scored_to < n:
        end = min(begin + max_length, n)
        out.append((seq[begin:end], end - scored_to))
        scored_to = end
        begin = max(begin + 1, end - (max_length - stride))
    return out


def score_documents(model: Any, docs: list[list[int]], n_bytes: int, prefix_id: int, *, max_length: int = 2048,
                    stride: int | None = None, batch_size: int = 8,
                    on_batch: Callable[[int, int], None] | None = None) -> BpbResult:
    """bpb of ``model`` on tokenized documents (``n_bytes``: total UTF-8 bytes of their text); ``on_batch(done,
    total)`` is called after each batch (a progress display)."""
    import torch
    import torch.nn.functional as F

    dist = torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    stride = stride or max_length // 2
    # longest first: a batch pads to its longest window, so windows of like length go together (the sum does not
    # depend on the order); each rank takes every world-th of the same order
    all_windows = sorted((w for d in docs for w in token_windows(d, prefix_id, max_length, stride)),
                         key=lambda w: -len(w[0]))
    mine = all_windows[rank::world]
    n_batches = math.ceil(len(all_windows) / world / batch_size) if all_windows else 0
    param = next(model.parameters())
    device = param.device
    nats = torch.zeros((), dtype=torch.float64, device=device)
    scored = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in range(n_batches):
            batch = mine[b * batch_size:(b + 1) * batch_size]
            if not batch:  # keep collective forwards in step across ranks
                batch = [([prefix_id, prefix_id], 0)]
            width = max(len(w) for w, _ in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long, device=device)
            att = torch.zeros_like(x)
            labels = torch.full_like(x, -100)
            for r, (w, k) in enumerate(batch):
                x[r, : len(w)] = torch.tensor(w, device=device)
                att[r, : len(w)] = 1
                if k:
                    labels[r, len(w) - k: len(w)] = x[r, len(w) - k: len(w)]
                scored += k
            logits = model(input_ids=x, attention_mask=att).logits
            # only the scored positions, as contiguous rows: log-softmax over a strided class dimension (the
            # (batch, vocab, length) layout cross_entropy wants for 3-d input) ran 3x slower on a CPU
            target = labels[:, 1:]
            keep = target != -100
            nats += F.cross_entropy(logits[:, :-1][keep].float(), target[keep], reduction="sum").double()
            if on_batch is not None:
                on_batch(b + 1, n_batches)
    model.train(was_training)
    total = torch.tensor([nats.item(), float(scored)], dtype=torch.float64, device=device)
    if dist:
        dist.all_reduce(total)
    n_tok = int(total[1].item())
    expected = sum(len(d) for d in docs)
    if n_tok != expected:  # a bookkeeping bug would silently bias bpb: refuse it
        raise RuntimeError(f"bpb: scored {n_tok} tokens, expected {expected}")
    return BpbResult(bpb=total[0].item() / (math.log(2) * max(n_bytes, 1)), nats=total[0].item(), bytes=n_bytes,
                     tokens=n_tok, docs=len(docs))


def prefix_token(tokenizer: Any) -> int:
    """BOS if the tokenizer has one, else EOS: the token a document is scored after."""
    for name in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token; pass prefix_id")


def bits_per_byte(model: Any, tokenizer: Any, texts: list[str], *, prefix_id: int | None = None,
                  max_length: int | None = None, stride: int | None = None, batch_size: int = 8,
                  on_batch: Callable[[int, int], None] | None = None) -> BpbResult:
    """bpb of ``model`` on raw ``texts`` (each a whole document); ``tokenizer`` is a Hugging Face tokenizer or a
    ``tokenizers.Tokenizer`` (then pass ``prefix_id``); ``on_batch`` as for :func:`score_documents`."""
    prefix_id = prefix_token(tokenizer) if prefix_id is None else prefix_id
    if max_length is None:
        max_length = int(getattr(getattr(model, "config", None), "max_position_embeddings", 2048) or 2048)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return score_documents(model, tokenize_documents(tokenizer, texts), n_bytes, prefix_id, max_length=max_length,
                           stride=stride, batch_size=batch_size, on_batch=on_batch)


def tokenize_documents(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each document without BOS/EOS (:func:`score_documents` adds the prefix token itself);
    ``tokenizer`` is a Hugging Face tokenizer or a ``tokenizers.Tokenizer``."""
    if not texts:
        return []
    if hasattr(tokenizer, "encode_batch"):  # a `tokenizers.Tokenizer`
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
