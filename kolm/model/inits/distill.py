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
* ``replay``: the same KL at positions of text without new tokens (the corpus documents that have none, then
  text the base model samples itself with the new tokens suppressed, seeded): there the extended model must
  predict exactly like the base one, so the new rows may not take probability mass. Only the head sees these
  positions (their hidden states are the base model's, computed once into a pool of ``replay_positions``;
  ``replay_batch`` of them per step), which makes the term cheap. It guards English: that the new rows take no
  mass in English contexts. Its weight (100) is what holds English within +0.05% on SmolLM2 (bench/init.py on
  100 + 50 held-out documents: at weight 30 English moved +0.10%; at 10, before packing, +0.27%).

Only the new rows train (a gradient hook zeroes every other row; lazy Adam without weight decay moves a row only in
the steps its token occurs in: old rows stay bit-identical, and they are restored and checked at the end). With
tied embeddings one row serves as input and as output; with untied ones both matrices' new rows train. The corpus
is the extension's own (``extension.json`` records it), read in a seeded order; its documents are packed one after
another (each behind the BOS/EOS token) and cut into windows of ``window`` extended tokens, so a batch carries no
padding (Korean corpus lines are short: padded per document, 57% of a batch was padding on SmolLM2's). The two
passes through the body run in bf16 autocast where the hardware has fast bf16 (AVX-512 BF16 CPUs, CUDA); the head
and the losses in float32. Training stops at the step cap or at the time budget; the learning rate warms up, then
follows a cosine to 10% that ends at the last step the budget has room for (at the median step time so far).

Cost: per window, one forward pass of the base model on the base tokens plus a forward and backward pass of the
extended model (no weight gradients except the embeddings), and per scored position a softmax over the whole
vocabulary: time grows linearly with model size and with the windows used; the number of new tokens only enters
through the vocabulary (see bench/init.py, --scaling). On SmolLM2-135M, 2 CPU cores: about 10 s per step of
8 x 128 tokens, 25 steps in the default 280 s budget.
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

DEFAULTS = {"lr": 1e-2, "window": 128, "batch": 8, "kd_weight": 1.0, "ce_weight": 1.0, "warmup": 5,
            "replay_weight": 100.0, "replay_positions": 4096, "replay_batch": 512, "replay_samples": 16, "bf16": -1}


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


def make_windows(texts: list[str], inputs: InitInputs, window: int,
                 prefix_id: int) -> tuple[list[Window], int, list[str]]:
    """Aligned windows of ``window`` extended tokens (each starts with ``prefix_id``) cut from the documents packed
    one after another, each behind ``prefix_id`` (so a batch has no padding: documents are short); the number of
    documents skipped because the two tokenizations did not align (counted, never silently mixed in); and the
    documents without any new token (replay text)."""
    plan = inputs.plan
    new_enc = inputs.new_tokenizer.encode_batch(texts, add_special_tokens=False)
    base_enc = inputs.base_tokenizer.encode_batch(texts, add_special_tokens=False)
    new_ids, base_ids, ends, skipped, plain = [], [], [], 0, []
    for text, ne, be in zip(texts, new_enc, base_enc):
        if not any(t >= plan.n_base for t in ne.ids):
            plain.append(text)
            continue
        doc_ends = align(ne.ids, be.ids, plan.pieces)
        if doc_ends is None:
            skipped += 1
            continue
        ends += [len(base_ids), *(len(base_ids) + 1 + e for e in doc_ends)]
        new_ids += [prefix_id, *ne.ids]
        base_ids += [prefix_id, *be.ids]
    out = []
    for s in range(0, len(new_ids), window - 1):
        chunk = new_ids[s:s + window - 1]
        b0 = ends[s - 1] + 1 if s else 0
        b1 = ends[s + len(chunk) - 1] + 1
        out.append(Window([prefix_id, *chunk], [prefix_id, *base_ids[b0:b1]],
                          [0, *(e - b0 + 1 for e in ends[s:s + len(chunk)])]))
    return out, skipped, plain


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


def grouped_kl(logp: Any, q: Any, first: Any, n_base: int) -> Any:
    """KL(q || P grouped by first piece): q is the base model's log-distribution over the base vocabulary, logp the
    extended model's log-distribution over every row; a row's probability counts for its first piece."""
    import torch
    import torch.nn.functional as F

    idx = first[None].expand(logp.shape[0], -1)
    grouped = torch.zeros(logp.shape[0], n_base, device=logp.device).scatter_add_(1, idx, logp.exp())
    log_grouped = grouped.clamp_min(1e-30).log()  # probabilities, so no overflow; 1e-30 only guards log(0)
    return F.kl_div(log_grouped, q, log_target=True, reduction="batchmean")


def step_loss(model: Any, batch: tuple[Any, ...], first: Any, n_base: int, opts: dict[str, Any],
              replay: Any | None = None) -> tuple[Any, dict]:
    """kd + ce (+ replay) loss of one batch (see the module docstring) and its parts. The two passes through the
    body run under ``autocast(opts)`` (bf16 where the hardware has it); the head and the losses stay in float32."""
    import torch
    import torch.nn.functional as F

    nx, nm, bx, bm, rows, npos, bpos = batch
    body, head = model.base_model, model.get_output_embeddings()
    with torch.no_grad():  # the base model: the same weights, the base tokens only (new rows never read)
        with autocast(head.weight.device, opts):
            h = body(input_ids=bx, attention_mask=bm).last_hidden_state[rows, bpos]
        q = F.log_softmax(head(h.float())[:, :n_base].float(), -1)
    with autocast(head.weight.device, opts):
        h = body(input_ids=nx, attention_mask=nm).last_hidden_state[rows, npos]
    logp = F.log_softmax(head(h.float()).float(), -1)
    ce = F.nll_loss(logp, nx[rows, npos + 1])
    kd = grouped_kl(logp, q, first, n_base)
    loss = opts["ce_weight"] * ce + opts["kd_weight"] * kd
    parts = {"ce": ce.item(), "kd": kd.item()}
    if replay is not None:  # text without new tokens: hidden states are the base model's, only the head moves
        logits = head(replay).float()  # one pass: the base rows' part, detached, is the target
        qr = F.log_softmax(logits.detach()[:, :n_base], -1)
        rkd = grouped_kl(F.log_softmax(logits, -1), qr, first, n_base)
        loss = loss + opts["replay_weight"] * rkd
        parts["replay"] = rkd.item()
    return loss, parts


def autocast(device: Any, opts: dict[str, Any]) -> Any:
    """bf16 autocast for the passes through the body when ``opts["bf16"]`` is 1, or -1 (auto) and the device has
    fast bf16 (a CUDA GPU that supports it; a CPU with AVX-512 BF16/AMX, where it halves a step's time)."""
    import torch

    from kolm.precision import fast_bf16

    on = int(opts["bf16"])
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast_bf16(device.type) if on < 0 else bool(on))


def replay_states(model: Any, texts: list[str], inputs: InitInputs, prefix: int,
                  opts: dict[str, Any]) -> Any | None:
    """The base model's last hidden states at up to ``replay_positions`` positions of text that has no new token:
    the corpus documents without one, then text the base model samples itself (new tokens suppressed, seeded; a
    sample the extended tokenizer would cut into new tokens is dropped). There the extended model must predict
    exactly like the base model: the new rows may not take probability mass (this is what keeps English
    unchanged). Each step uses ``replay_batch`` of them. None when there is no such text."""
    import torch

    n_base, want = inputs.plan.n_base, int(opts["replay_positions"])
    seqs = [[prefix, *e.ids][: int(opts["window"])] for e in inputs.base_tokenizer.encode_batch(
        texts[:64], add_special_tokens=False)]
    if sum(len(x) - 1 for x in seqs) < want:  # sampled text counts only if the extension leaves it as it is
        for x in _sampled(model, prefix, n_base, inputs.seed, opts):
            text = inputs.base_tokenizer.decode(x[1:], skip_special_tokens=True)
            if text.strip() and max(inputs.new_tokenizer.encode(text, add_special_tokens=False).ids,
                                    default=0) < n_base:
                seqs.append(x)
    seqs = [x for x in seqs if len(x) > 1]
    if not seqs:
        return None
    body, device = model.base_model, model.get_output_embeddings().weight.device
    hs = []
    with torch.no_grad():
        for x in seqs:
            hs.append(body(input_ids=torch.tensor([x], device=device)).last_hidden_state[0, :-1])
        h = torch.cat(hs)
        g = torch.Generator().manual_seed(inputs.seed)
        return h[torch.randperm(h.shape[0], generator=g)[:want].to(h.device)]


def _sampled(model: Any, prefix: int, n_base: int, seed: int, opts: dict[str, Any]) -> list[list[int]]:
    import torch

    n_rows = model.get_input_embeddings().weight.shape[0]
    with torch.random.fork_rng(devices=[]), autocast(model.get_output_embeddings().weight.device, opts):
        torch.manual_seed(seed)
        out = model.generate(input_ids=torch.full((int(opts["replay_samples"]), 1), prefix),
                             attention_mask=torch.ones(int(opts["replay_samples"]), 1, dtype=torch.long),
                             do_sample=True, top_p=0.95, max_new_tokens=int(opts["window"]),
                             suppress_tokens=list(range(n_base, n_rows)), pad_token_id=prefix)
    return [[int(t) for t in row] for row in out]


class LazyAdam:
    """Adam over the rows >= ``start`` of the embedding matrices that occur in the batch (as input or target).

    Plain Adam moves every new row by about ``lr`` per coordinate each step, because the softmax gives every row
    a (tiny) gradient and Adam normalises it away: thousands of rare tokens would drift from their subword-mean
    start on noise (the real 135M model got worse that way). Here a row moves only in the steps where its token
    occurs, with bias-corrected moments kept per row (TensorFlow's LazyAdam), and old rows never move.
    """

    def __init__(self, params: list[Any], start: int, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        self.params, self.start, self.lr, self.betas, self.eps = params, start, lr, betas, eps
        self.m = [torch.zeros_like(p[start:], dtype=torch.float32) for p in params]
        self.v = [torch.zeros_like(m) for m in self.m]
        self.t = [torch.zeros(m.shape[0], device=m.device) for m in self.m]

    def step(self, rows: Any) -> None:
        """Update ``rows`` (ids >= start) from the current gradients, then clear the gradients."""
        import torch

        b1, b2 = self.betas
        r = rows - self.start
        with torch.no_grad():
            for p, m, v, t in zip(self.params, self.m, self.v, self.t):
                g = p.grad[rows].float()
                t[r] += 1
                m[r] = b1 * m[r] + (1 - b1) * g
                v[r] = b2 * v[r] + (1 - b2) * g * g
                mh, vh = m[r] / (1 - b1 ** t[r])[:, None], v[r] / (1 - b2 ** t[r])[:, None]
                p[rows] -= (self.lr * mh / (vh.sqrt() + self.eps)).to(p.dtype)
                p.grad = None


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
        from kolm.io.corpus import iter_corpus

        opts = {**DEFAULTS, **inputs.options}
        deadline = time.perf_counter() + inputs.budget_s  # the whole init: reading, replay states, training
        if not inputs.corpus:
            raise KolmError("init distill: no corpus (pass --corpus, or resize with the tokenizer folder whose "
                            "extension.json records the corpus it was learned on)")
        texts = list(iter_corpus(inputs.corpus))
        random.Random(inputs.seed).shuffle(texts)
        prefix = _prefix_id(model, inputs)
        windows, skipped, plain = make_windows(texts, inputs, int(opts["window"]), prefix)
        if not windows:
            raise KolmError(f"init distill: the corpus ({', '.join(map(str, inputs.corpus))}) has no text that uses "
                            "the new tokens")
        start = inputs.plan.n_base
        params, originals, hooks = _trainable_rows(model, start)
        device = params[0].device
        first = first_piece_map(inputs.plan, model.get_input_embeddings().weight.shape[0], device)
        opt = LazyAdam(params, start, float(opts["lr"]))
        was_training = model.training
        model.eval()  # no dropout: the targets are the deterministic base model
        try:
            replay = replay_states(model, plain, inputs, prefix, opts) if opts["replay_weight"] > 0 else None
            stats = _train(model, windows, first, opt, opts, inputs, replay, deadline)
        finally:
            _restore(model, params, originals, hooks, start)
            model.train(was_training)
        return {**stats, "windows_available": len(windows), "documents_skipped_unaligned": skipped,
                "replay_documents": len(plain), "replay_positions": 0 if replay is None else int(replay.shape[0]),
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


def _median(xs: list[float]) -> float:
    """The upper median (0 for none): the step time the budget plans with."""
    return sorted(xs)[len(xs) // 2] if xs else 0.0


def _train(model: Any, windows: list[Window], first: Any, opt: Any, opts: dict[str, Any],
           inputs: InitInputs, replay: Any | None, deadline: float) -> dict[str, Any]:
    """The loop: warm-up, then cosine decay to 10% at the end: at the step cap, or (without ``inputs.max_steps``) at
    the last step the time budget has room for at the median step time so far, whichever comes first; it stops there.
    Replay positions go round, ``replay_batch`` per step."""
    import torch

    from kolm.console import Progress

    bsz, n_base = min(int(opts["batch"]), len(windows)), inputs.plan.n_base
    steps = inputs.max_steps or len(windows) // bsz
    device = first.device
    t0, done, first_loss, last, times, tokens = time.perf_counter(), 0, None, {}, [], 0
    peak = opt.lr
    bar = Progress("kolm model resize: distill init", steps)
    for step in range(steps):
        t_step = time.perf_counter()
        median = _median(times)
        if step > 0 and t_step + median > deadline:  # a tiny budget still gets one step
            break
        horizon = steps if inputs.max_steps or not times else min(steps, step + (deadline - t_step) / median)
        lo = step * bsz  # the windows in turn, wrapping around; a batch never holds one window twice
        batch = _batch([windows[(lo + i) % len(windows)] for i in range(bsz)], 0, device)
        warm = min(1.0, (step + 1) / max(1, int(opts["warmup"])))
        opt.lr = peak * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, step / horizon))))
        rb = int(opts["replay_batch"])
        r = None if replay is None else replay[(torch.arange(rb) + step * rb) % replay.shape[0]]
        loss, parts = step_loss(model, batch, first, n_base, opts, r)
        loss.backward()
        seen = batch[0]  # the extended ids of the windows: every input and every target
        opt.step(torch.unique(seen[seen >= n_base]))
        done, last = step + 1, parts
        times.append(time.perf_counter() - t_step)
        tokens += int(batch[1].sum())
        first_loss = first_loss or parts
        bar.update(1, **{k: f"{k} {v:.3f}" for k, v in parts.items()})
    bar.close()
    return {"steps": done, "max_steps": steps, "seconds": round(time.perf_counter() - t0, 2),
            "stopped_by": "steps" if done == steps else "time budget", "first": first_loss, "last": last,
            "windows_seen": done * bsz, "median_step_s": round(_median(times), 3),
            "tokens_per_step": round(tokens / max(done, 1), 1)}
