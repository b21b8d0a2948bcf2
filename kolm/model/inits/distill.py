"""``distill``: subword-mean, then a short distillation of only the new rows against the base model itself.

The extended tokenization of a text is a coarsening of the base one (new merges come after every base merge), so
each new token covers a run of base tokens: its pieces. The base model (the resized model with the new rows
unused) reads a text in base tokens; the extended model reads the same text in extended tokens. At every
extended-token boundary the two are aligned, and the base model's predictions there become targets:

* ``kd``: the base model's next-piece distribution q (over the base vocabulary) must equal the extended model's
  distribution grouped by first piece: P(first piece = b) = sum of P(v) over every token v whose pieces start
  with b (a base token is its own first piece). KL(q || grouped P) trains the new rows as inputs (the context
  they produce must predict like the base model) and as outputs (how much mass they take from their first piece).
* ``ce``: the extended model's log-likelihood of the text (the extended token that actually follows). Within a
  first-piece group this is what divides the mass between a new token and its prefixes.

Only the new rows train (a gradient hook zeroes every other row, Adam without weight decay: old rows stay
bit-identical, and they are restored and checked at the end). With tied embeddings one row serves as input and
as output; with untied ones both matrices' new rows train. The corpus is the extension's own (``extension.json``
records it), read in a seeded order, cut into windows of ``window`` extended tokens; training stops at the time
budget or the step cap. Cost: per window, one forward pass of the base model on the base tokens plus a forward
and backward pass of the extended model (no weight gradients except the embeddings), so time grows linearly with
model size and with the number of windows, and not with the number of new tokens (see bench/init.py).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

from kolm.errors import KolmError
from kolm.model.inits.base import EmbeddingInit, InitInputs, register
from kolm.model.inits.subword_mean import SubwordMean

DEFAULTS = {"lr": 1e-2, "window": 128, "batch": 8, "kd_weight": 1.0, "ce_weight": 1.0, "warmup": 5}


@dataclass
class Window:
    """One training window: extended ids, base ids, and for each extended position its last base position."""

    new_ids: list[int]
    base_ids: list[int]
    ends: list[int]  # ends[j] = index in base_ids (with the prefix token at 0) of the last piece of new_ids[j]


def align(new_ids: list[int], base_ids: list[int], pieces: dict[int, list[int]]) -> list[int] | None:
    """Position in ``base_ids`` (0-based) of the last piece of every extended token, or None if they disagree."""
    ends, pos = [], 0
    for t in new_ids:
        run = pieces.get(t, [t])
        if base_ids[pos:pos + len(run)] != run:
            return None
        pos += len(run)
        ends.append(pos - 1)
    return ends if pos == len(base_ids) else None


def make_windows(texts: list[str], inputs: InitInputs, window: int, prefix_id: int) -> tuple[list[Window], int]:
    """Aligned windows of at most ``window`` extended tokens (each starts with ``prefix_id``); and the number of
    documents skipped because the two tokenizations did not align (counted, never silently mixed in)."""
    plan = inputs.plan
    new_enc = inputs.new_tokenizer.encode_batch(texts, add_special_tokens=False)
    base_enc = inputs.base_tokenizer.encode_batch(texts, add_special_tokens=False)
    out, skipped = [], 0
    for ne, be in zip(new_enc, base_enc):
        if not any(t >= plan.n_base for t in ne.ids):
            continue
        ends = align(ne.ids, be.ids, plan.pieces)
        if ends is None:
            skipped += 1
            continue
        for s in range(0, len(ne.ids), window - 1):
            chunk = ne.ids[s:s + window - 1]
            b0 = ends[s - 1] + 1 if s else 0
            b1 = ends[s + len(chunk) - 1] + 1
            out.append(Window([prefix_id, *chunk], [prefix_id, *be.ids[b0:b1]],
                              [0, *(e - b0 + 1 for e in ends[s:s + len(chunk)])]))
    return out, skipped


def first_piece_map(plan: Any, n_rows: int, device: Any) -> Any:
    """For every row of the extended vocabulary, the base id its pieces start with (a base id maps to itself;
    rows without pieces map to themselves modulo the base size, which only happens for padding rows)."""
    import torch

    m = torch.arange(n_rows, device=device)
    for i in range(plan.n_base, n_rows):
        ids = plan.pieces.get(i)
        m[i] = ids[0] if ids else i % plan.n_base
    return m


def _batch(windows: list[Window], pad: int, device: Any) -> tuple[Any, ...]:
    """Padded tensors: new ids/mask, base ids/mask, and (row, new position, base position) of scored positions."""
    import torch

    def pad_to(seqs: list[list[int]]) -> tuple[Any, Any]:
        width = max(len(s) for s in seqs)
        x = torch.full((len(seqs), width), pad, dtype=torch.long, device=device)
        m = torch.zeros_like(x)
        for r, s in enumerate(seqs):
            x[r, : len(s)] = torch.tensor(s, device=device)
            m[r, : len(s)] = 1
        return x, m

    nx, nm = pad_to([w.new_ids for w in windows])
    bx, bm = pad_to([w.base_ids for w in windows])
    rows, npos, bpos = [], [], []
    for r, w in enumerate(windows):
        for j in range(len(w.new_ids) - 1):  # position j predicts new_ids[j + 1]
            rows.append(r)
            npos.append(j)
            bpos.append(w.ends[j])
    idx = [torch.tensor(v, dtype=torch.long, device=device) for v in (rows, npos, bpos)]
    return nx, nm, bx, bm, *idx


def step_loss(model: Any, batch: tuple[Any, ...], first: Any, n_base: int, opts: dict[str, Any]) -> tuple[Any, dict]:
    """kd + ce loss of one batch (see the module docstring) and its parts."""
    import torch
    import torch.nn.functional as F

    nx, nm, bx, bm, rows, npos, bpos = batch
    body, head = model.base_model, model.get_output_embeddings()
    with torch.no_grad():  # the base model: the same weights, the base tokens only (new rows never read)
        h = body(input_ids=bx, attention_mask=bm).last_hidden_state[rows, bpos]
        q = F.log_softmax(head(h)[:, :n_base].float(), -1)
    logits = head(body(input_ids=nx, attention_mask=nm).last_hidden_state[rows, npos]).float()
    logp = F.log_softmax(logits, -1)
    target = nx[rows, npos + 1]
    ce = F.nll_loss(logp, target)
    idx = first[None].expand(logp.shape[0], -1)
    grouped = torch.zeros(logp.shape[0], n_base, device=logp.device).scatter_add_(1, idx, logp.exp())
    log_grouped = grouped.clamp_min(1e-30).log()  # probabilities, so no overflow; 1e-30 only guards log(0)
    kd = F.kl_div(log_grouped, q, log_target=True, reduction="batchmean")
    loss = opts["ce_weight"] * ce + opts["kd_weight"] * kd
    return loss, {"ce": ce.item(), "kd": kd.item()}


def _trainable_rows(model: Any, start: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Make only rows >= ``start`` of the embedding matrices trainable; returns (params, originals, hooks)."""
    from kolm.train.stages import setup_embeddings_stage

    hooks = setup_embeddings_stage(model, start)
    params = [p for p in model.parameters() if p.requires_grad]
    return params, [p.detach()[:start].clone() for p in params], hooks


def _restore(model: Any, params: list[Any], originals: list[Any], hooks: list[Any], start: int) -> None:
    import torch

    for h in hooks:
        h.remove()
    with torch.no_grad():
        for p, old in zip(params, originals):
            if not torch.equal(p[:start], old):  # cannot happen (masked gradient, no decay); never ship it if so
                raise KolmError("distill init: an original embedding row changed")
    for p in model.parameters():
        p.requires_grad_(False)


@register
class Distill(EmbeddingInit):
    name = "distill"
    uses_model = True

    def rows(self, model: Any, old_w: Any, old_b: Any, rows: list[int], inputs: InitInputs,
             kind: str) -> tuple[Any, Any, dict[str, float]]:
        return SubwordMean().rows(model, old_w, old_b, rows, inputs, kind)  # the starting point

    def refine(self, model: Any, inputs: InitInputs) -> dict[str, Any]:
        """Train the new rows for ``inputs.budget_s`` seconds (or ``inputs.max_steps`` steps)."""
        import torch

        from kolm.io import iter_corpus

        opts = {**DEFAULTS, **inputs.options}
        if not inputs.corpus:
            raise KolmError("init distill: no corpus (pass --corpus, or resize with the tokenizer folder whose "
                            "extension.json records the corpus it was learned on)")
        texts = list(iter_corpus(inputs.corpus))
        random.Random(inputs.seed).shuffle(texts)
        prefix = _prefix_id(model, inputs)
        windows, skipped = make_windows(texts, inputs, int(opts["window"]), prefix)
        if not windows:
            raise KolmError(f"init distill: the corpus ({', '.join(map(str, inputs.corpus))}) has no text that uses "
                            "the new tokens")
        start = inputs.plan.n_base
        params, originals, hooks = _trainable_rows(model, start)
        device = params[0].device
        first = first_piece_map(inputs.plan, model.get_input_embeddings().weight.shape[0], device)
        opt = torch.optim.Adam(params, lr=opts["lr"], weight_decay=0.0)
        was_training = model.training
        model.eval()  # no dropout: the targets are the deterministic base model
        try:
            stats = _train(model, windows, first, opt, opts, inputs)
        finally:
            _restore(model, params, originals, hooks, start)
            model.train(was_training)
        return {**stats, "windows_available": len(windows), "documents_skipped_unaligned": skipped,
                "options": opts}


def _prefix_id(model: Any, inputs: InitInputs) -> int:
    """The token every window starts from: BOS, else EOS (as kolm.eval.bpb scores documents)."""
    cfg = model.config.get_text_config()
    for v in (getattr(cfg, "bos_token_id", None), getattr(cfg, "eos_token_id", None)):
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    raise KolmError("init distill: the model config has neither bos_token_id nor eos_token_id")


def _train(model: Any, windows: list[Window], first: Any, opt: Any, opts: dict[str, Any],
           inputs: InitInputs) -> dict[str, Any]:
    """The loop: warm-up, cosine decay to 10% over the step cap; stops at the step cap or the time budget."""
    from tqdm.auto import tqdm

    bsz, n_base = int(opts["batch"]), inputs.plan.n_base
    steps = inputs.max_steps or max(1, len(windows) // bsz)
    device = first.device
    t0, done, first_loss, last, times, tokens = time.perf_counter(), 0, None, {}, [], 0
    peak = opt.param_groups[0]["lr"]
    bar = tqdm(total=steps, desc="distill init", unit="step", leave=False, mininterval=2.0)
    for step in range(steps):
        t_step = time.perf_counter()
        if t_step - t0 > inputs.budget_s:
            break
        lo = (step * bsz) % len(windows)
        batch = _batch((windows + windows)[lo:lo + bsz], 0, device)
        warm = min(1.0, (step + 1) / max(1, int(opts["warmup"])))
        for g in opt.param_groups:
            g["lr"] = peak * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        loss, parts = step_loss(model, batch, first, n_base, opts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done, last = step + 1, parts
        times.append(time.perf_counter() - t_step)
        tokens += int(batch[1].sum())
        first_loss = first_loss or parts
        bar.update(1)
        bar.set_postfix(ce=f"{parts['ce']:.3f}", kd=f"{parts['kd']:.3f}", refresh=False)
    bar.close()
    return {"steps": done, "max_steps": steps, "seconds": round(time.perf_counter() - t0, 2),
            "stopped_by": "steps" if done == steps else "time budget", "first": first_loss, "last": last,
            "windows_seen": done * bsz, "median_step_s": round(sorted(times)[len(times) // 2], 3) if times else 0.0,
            "tokens_per_step": round(tokens / max(done, 1), 1)}
