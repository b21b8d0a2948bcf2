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
  positions (their hidden states are the base model's), which makes the term cheap. It guards English: that
  the new rows take no mass in English contexts.

Only the new rows train (a gradient hook zeroes every other row, Adam without weight decay: old rows stay
bit-identical, and they are restored and checked at the end). With tied embeddings one row serves as input and
as output; with untied ones both matrices' new rows train. The corpus is the extension's own (``extension.json``
records it), read in a seeded order, cut into windows of ``window`` extended tokens. The budget
(``inputs.budget_s``, wall clock) is spent in three phases:

1. teacher pass (``teacher_share`` of the budget, or ``teacher_windows`` windows): the base model reads the windows
   in base tokens once, without gradients; its last hidden states at the aligned positions are cached. This is
   the only pass of the base model (targets are recomputed from the cached states with one matmul).
2. head fit (``head_share``, at most ``head_epochs`` passes): the new rows as LM-head rows on the cached teacher
   states, ce + kd + replay, no pass through the network. Measured on SmolLM2-135M (bench/init.py), the output
   side is where subword-mean loses most: with the base model's own hidden states, its new rows alone cost
   1.28x the base bpb of 1.36x in all.
3. full distillation with what is left (at most ``full_epochs`` passes over the cached batches): the extended
   model reads the extended tokens, trains input and output side together against the cached targets.

Cost: one forward pass of the base model per window (phase 1), a head matmul per cached position and epoch
(phase 2), one forward and backward pass (activation gradients only) of the extended tokens per step (phase 3):
linear in model size and corpus tokens used; the number of new tokens only enters the head matmuls.
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

DEFAULTS = {"lr": 1e-3, "window": 128, "batch": 8, "kd_weight": 1.0, "ce_weight": 1.0, "warmup": 5,
            "replay_weight": 1.0, "replay_positions": 512, "replay_samples": 8, "teacher_share": 0.5,
            "head_share": 0.15, "head_lr": 1e-3, "head_epochs": 5, "max_full_steps": 10_000, "teacher_windows": 0,
            "spread_ridge": 0.1, "full_epochs": 2}


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
    """Aligned windows of at most ``window`` extended tokens (each starts with ``prefix_id``); the number of
    documents skipped because the two tokenizations did not align (counted, never silently mixed in); and the
    documents without any new token (replay text)."""
    plan = inputs.plan
    new_enc = inputs.new_tokenizer.encode_batch(texts, add_special_tokens=False)
    base_enc = inputs.base_tokenizer.encode_batch(texts, add_special_tokens=False)
    out, skipped, plain = [], 0, []
    for text, ne, be in zip(texts, new_enc, base_enc):
        if not any(t >= plan.n_base for t in ne.ids):
            plain.append(text)
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


def head_loss(head: Any, h: Any, targets: Any, q: Any, first: Any, n_base: int,
              opts: dict[str, Any]) -> tuple[Any, dict]:
    """ce + kd of the extended model's head on hidden states ``h`` (see the module docstring) and its parts. The
    base rows never train: only the new rows' part of the head carries a weight gradient (``h`` still gets its
    gradient from every row), so the backward pass does not build a gradient for the whole vocabulary."""
    import torch
    import torch.nn.functional as F

    w = head.weight
    logits = torch.cat([h @ w.detach()[:n_base].T, h @ w[n_base:].T], -1)
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias
    logp = F.log_softmax(logits.float(), -1)
    ce = F.nll_loss(logp, targets)
    kd = grouped_kl(logp, q, first, n_base)
    return opts["ce_weight"] * ce + opts["kd_weight"] * kd, {"ce": ce.item(), "kd": kd.item()}


def teacher_q(head: Any, h: Any, n_base: int) -> Any:
    """The base model's next-piece log-distribution from its hidden states (only base rows: they never change)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        return F.log_softmax((h @ head.weight[:n_base].T).float(), -1)


def replay_loss(head: Any, replay: tuple[Any, Any] | None, first: Any, n_base: int,
                opts: dict[str, Any]) -> tuple[Any, dict]:
    """The replay term (text without new tokens: hidden states are the base model's, only the head moves)."""
    import torch.nn.functional as F

    if replay is None:
        return 0.0, {}
    hr, qr = replay
    rkd = grouped_kl(F.log_softmax(head(hr).float(), -1), qr, first, n_base)
    return opts["replay_weight"] * rkd, {"replay": rkd.item()}


def step_loss(model: Any, batch: tuple[Any, ...], h_teacher: Any, first: Any, n_base: int, opts: dict[str, Any],
              replay: tuple[Any, Any] | None = None) -> tuple[Any, dict]:
    """Full-model kd + ce (+ replay) loss of one batch; ``h_teacher``: the base model's cached hidden states at the
    aligned positions (:func:`teacher_pass`)."""
    nx, nm, _, _, rows, npos, _ = batch
    head = model.get_output_embeddings()
    h = model.base_model(input_ids=nx, attention_mask=nm).last_hidden_state[rows, npos]
    loss, parts = head_loss(head, h, nx[rows, npos + 1], teacher_q(head, h_teacher, n_base), first, n_base, opts)
    r, rparts = replay_loss(head, replay, first, n_base, opts)
    return loss + r, {**parts, **rparts}


def replay_states(model: Any, texts: list[str], inputs: InitInputs, prefix: int,
                  opts: dict[str, Any]) -> tuple[Any, Any] | None:
    """(hidden states, base log-distributions) at up to ``replay_positions`` positions of text that has no new
    token: the corpus documents without one, then text the base model samples itself (new tokens suppressed,
    seeded; a sample the extended tokenizer would cut into new tokens is dropped). There the extended model must
    predict exactly like the base model: the new rows may not take probability mass (this is what keeps English
    unchanged). None when there is no such text."""
    import torch
    import torch.nn.functional as F

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
    body, head = model.base_model, model.get_output_embeddings()
    hs = []
    with torch.no_grad():
        for x in seqs:
            hs.append(body(input_ids=torch.tensor([x], device=head.weight.device)).last_hidden_state[0, :-1])
        h = torch.cat(hs)
        g = torch.Generator().manual_seed(inputs.seed)
        h = h[torch.randperm(h.shape[0], generator=g)[:want].to(h.device)]
        q = F.log_softmax(head(h)[:, :n_base].float(), -1)
    return h, q


def _sampled(model: Any, prefix: int, n_base: int, seed: int, opts: dict[str, Any]) -> list[list[int]]:
    import torch

    n_rows = model.get_input_embeddings().weight.shape[0]
    with torch.random.fork_rng(devices=[]):
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
                if p.grad is None:  # untied: the head fit trains only the head's rows
                    continue
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
        """Teacher pass, head fit, full distillation, within ``inputs.budget_s`` seconds (see the module docstring)."""
        from kolm.io import iter_corpus

        opts = {**DEFAULTS, **inputs.options}
        t0 = time.perf_counter()  # the whole init: reading, replay states, the three phases
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
        first = first_piece_map(inputs.plan, model.get_input_embeddings().weight.shape[0], params[0].device)
        was_training = model.training
        model.eval()  # no dropout: the targets are the deterministic base model
        try:
            replay = replay_states(model, plain, inputs, prefix, opts) if opts["replay_weight"] > 0 else None
            budget = max(inputs.budget_s - (time.perf_counter() - t0), 1e-3)
            stats = _phases(model, windows, first, params, opts, inputs, replay, budget)
        finally:
            _restore(model, params, originals, hooks, start)
            model.train(was_training)
        return {**stats, "seconds": round(time.perf_counter() - t0, 2), "windows_available": len(windows),
                "documents_skipped_unaligned": skipped, "replay_documents": len(plain),
                "replay_positions": 0 if replay is None else int(replay[0].shape[0]), "options": opts}


def _prefix_id(model: Any, inputs: InitInputs) -> int:
    """The token every window starts from: BOS, else EOS (as kolm.eval.bpb scores documents)."""
    cfg = model.config.get_text_config()
    for v in (getattr(cfg, "bos_token_id", None), getattr(cfg, "eos_token_id", None)):
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    raise KolmError("init distill: the model config has neither bos_token_id nor eos_token_id")


def _phases(model: Any, windows: list[Window], first: Any, params: list[Any], opts: dict[str, Any],
            inputs: InitInputs, replay: tuple[Any, Any] | None, budget: float) -> dict[str, Any]:
    """Split the budget: teacher pass, head fit (and spread), then full distillation with what is left."""
    import torch

    t0, bsz = time.perf_counter(), int(opts["batch"])
    want = len(windows) if inputs.max_steps is None else min(len(windows), inputs.max_steps * bsz)
    if int(opts["teacher_windows"]) > 0:
        want = min(len(windows), int(opts["teacher_windows"]))
    cached = teacher_pass(model, windows[:want], bsz, t0 + budget * float(opts["teacher_share"]))
    t1, n_base = time.perf_counter(), inputs.plan.n_base
    starts = [p.detach()[n_base:].clone() for p in params]
    head = fit_head(model, cached, first, params, opts, n_base, replay, t1 + budget * float(opts["head_share"]))
    if float(opts["spread_ridge"]) > 0:
        targets = torch.cat([b[0][b[4], b[5] + 1] for b, _ in cached])
        counts = torch.bincount(targets[targets >= n_base] - n_base, minlength=starts[0].shape[0])
        head["spread_rows"] = spread(params, starts, counts.nonzero()[:, 0], counts, n_base,
                                     float(opts["spread_ridge"]))
    full = _train(model, cached, first, params, opts, inputs, replay, t0 + budget)
    return {"teacher": {"windows": sum(int(b[0].shape[0]) for b, _ in cached), "batches": len(cached),
                        "seconds": round(t1 - t0, 2)}, "head": head, **full}


def teacher_pass(model: Any, windows: list[Window], bsz: int, deadline: float) -> list[tuple[tuple, Any]]:
    """The base model reads the windows in base tokens once (no gradients), batched by length (little padding),
    until ``deadline`` (at least one batch): the batches and the base model's last hidden states at the aligned
    positions. Every later phase reuses them (the teacher never runs again)."""
    import torch

    body, device = model.base_model, model.get_input_embeddings().weight.device
    out = []
    for lo in range(0, len(windows), bsz):
        if out and time.perf_counter() > deadline:
            break
        batch = _batch(sorted(windows[lo:lo + bsz], key=lambda w: len(w.base_ids)), 0, device)
        with torch.no_grad():
            h = body(input_ids=batch[2], attention_mask=batch[3]).last_hidden_state[batch[4], batch[6]]
        out.append((batch, h))
    return out


def fit_head(model: Any, cached: list[tuple[tuple, Any]], first: Any, params: list[Any], opts: dict[str, Any],
             n_base: int, replay: tuple[Any, Any] | None, deadline: float) -> dict[str, Any]:
    """The output side alone: the new rows as LM-head rows on the teacher's cached hidden states (the states the
    extended model should have), ce + kd + replay, epochs until ``deadline`` or ``head_epochs``. No pass through the
    network: one matmul per batch, so it sees every cached position many times in seconds."""
    import torch

    head = model.get_output_embeddings()
    opt = LazyAdam(params, n_base, float(opts["head_lr"]))
    t0, epochs, parts, first_parts = time.perf_counter(), 0, {}, None
    for _ in range(int(opts["head_epochs"])):
        if time.perf_counter() > deadline:
            break
        for batch, h in cached:
            nx, _, _, _, rows, npos, _ = batch
            targets = nx[rows, npos + 1]
            loss, parts = head_loss(head, h, targets, teacher_q(head, h, n_base), first, n_base, opts)
            r, rparts = replay_loss(head, replay, first, n_base, opts)
            (loss + r).backward()
            opt.step(torch.unique(targets[targets >= n_base]))
            parts = {**parts, **rparts}
            first_parts = first_parts or parts
        epochs += 1
    return {"epochs": epochs, "seconds": round(time.perf_counter() - t0, 2), "first": first_parts, "last": parts}


def spread(weights: list[Any], starts: list[Any], seen: Any, counts: Any, n_base: int, ridge: float) -> int:
    """Carry what the fit learned to the new rows it never saw: a linear map M (dim x dim) with start @ M ~ fitted
    row over the seen rows (weighted by occurrences, ridge-pulled towards the identity, closed form; ``ridge`` is
    relative to the mean eigenvalue of the seen starts' Gram matrix) is applied to the starts of the unseen rows.
    The corpus slice the budget allows covers only the frequent tokens; the rest would otherwise keep their
    subword-mean start. Returns the number of rows moved."""
    import torch

    unseen = torch.ones(starts[0].shape[0], dtype=torch.bool, device=seen.device)
    unseen[seen] = False
    if not seen.numel() or not unseen.any():
        return 0
    c = counts[seen].float().sqrt()[:, None]
    with torch.no_grad():
        for w, s0 in zip(weights, starts):
            x, y = s0[seen].float() * c, w[n_base:][seen].float() * c
            lam = ridge * float((x * x).sum()) / x.shape[1]  # relative to the mean eigenvalue of x.T @ x
            eye = torch.eye(x.shape[1], device=x.device)
            m = torch.linalg.solve(x.T @ x + lam * eye, x.T @ y + lam * eye)
            w[n_base:][unseen] = (s0[unseen].float() @ m).to(w.dtype)
    return int(unseen.sum())


def _train(model: Any, cached: list[tuple[tuple, Any]], first: Any, params: list[Any], opts: dict[str, Any],
           inputs: InitInputs, replay: tuple[Any, Any] | None, deadline: float) -> dict[str, Any]:
    """Full distillation over the cached batches: warm-up, cosine decay to 10% over the step cap (``max_steps``,
    else as many steps as the first step's time says fit before ``deadline``, at most ``full_epochs`` passes over
    the cached batches and ``max_full_steps``); at least one step unless a cap is 0."""
    import torch
    from tqdm.auto import tqdm

    n_base = inputs.plan.n_base
    cap = min(int(opts["max_full_steps"]), int(opts["full_epochs"] * len(cached)))
    opt = LazyAdam(params, n_base, float(opts["lr"]))
    steps, peak = min(inputs.max_steps or 1, cap), opt.lr
    t0, done, first_loss, last, times, tokens = time.perf_counter(), 0, None, {}, [], 0
    bar = tqdm(total=steps, desc="distill init", unit="step", leave=False, mininterval=2.0)
    for step in range(10**9 if cap else 0):
        t_step = time.perf_counter()
        if step >= steps or (step > 0 and t_step > deadline):
            break
        batch, h = cached[step % len(cached)]
        warm = min(1.0, (step + 1) / max(1, int(opts["warmup"])))
        opt.lr = peak * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        loss, parts = step_loss(model, batch, h, first, n_base, opts, replay)
        loss.backward()
        seen = batch[0]  # the extended ids of the windows: every input and every target
        opt.step(torch.unique(seen[seen >= n_base]))
        done, last = step + 1, parts
        times.append(time.perf_counter() - t_step)
        if step == 0 and inputs.max_steps is None:  # the step cap the remaining budget allows
            steps = max(1, min(cap, int((deadline - t0) / max(times[0], 1e-6))))
            bar.reset(total=steps)
        tokens += int(batch[1].sum())
        first_loss = first_loss or parts
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
    bar.close()
    return {"steps": done, "max_steps": steps, "train_seconds": round(time.perf_counter() - t0, 2),
            "stopped_by": "steps" if done == steps else "time budget", "first": first_loss, "last": last,
            "windows_seen": sum(int(cached[i % len(cached)][0][0].shape[0]) for i in range(done)),
            "median_step_s": round(sorted(times)[len(times) // 2], 3) if times else 0.0,
            "tokens_per_step": round(tokens / max(done, 1), 1)}
