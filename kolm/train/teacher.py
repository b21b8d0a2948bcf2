"""The model from before the resize as a teacher during continual pretraining (``teacher:`` in a CPT recipe).

Why: an extended model starts with new embedding rows that only approximate the pieces they replace (a fixed
output row cannot carry ``log p(a) + log p(b|a) + log p(c|ab)`` in every context), and a few hundred thousand
tokens of plain cross-entropy see each new row a few dozen times. The model before the resize already knows those
probabilities. kolm's extension adds merges after all of the base's, so every extended token is a run of base
tokens (:meth:`kolm.artifacts.TokenizerExtension.expansion_table`) and the base model can read *exactly the
student's text*, position for position: every student token boundary is a base token boundary.

Per training batch, the teacher (frozen, no gradient) reads the student's sequences expanded into base tokens, once,
and the student is trained on the data's cross-entropy plus:

- ``kd``: at every position, the KL from the teacher's distribution over the next *base* token to the student's
  distribution grouped by first piece: ``P(first piece = b) = sum of P(v)`` over every row v whose pieces start
  with b (a base token is its own first piece; rows without pieces, e.g. padding rows, form a bucket the teacher
  gives no mass). The event is the same on both sides ("the text goes on with base token b"), so the term is exact,
  not an approximation. It trains the new rows as outputs (how much of their first piece's mass they take) and, at
  positions where the student reads base tokens only (English), keeps its predictions where the base's were.
- ``chunk``: Approximate Likelihood Matching (ALM; Minixhofer et al. 2025, arXiv 2503.20083, tokenkit): the
  student's log-probability of each next token against the teacher's summed log-probability of the token's base
  pieces, compared as Bernoulli events with ALM's binarised cross-entropy at temperature ``temperature`` (logged
  minus its entropy term, so that a perfect match logs 0; the gradient is the same), times the temperature: at
  ALM's 100 the binarised term's gradient is about ``(lt - ls) / (100 ls)``, a hundredth of the cross-entropy's,
  and the factor puts weight 1 on the cross-entropy's scale. Within a first-piece group this says how the mass
  divides between a new token and its prefixes.

Both terms are summed over the label positions and divided by the same count as the Trainer's cross-entropy
(``num_items_in_batch``), so gradient accumulation and several ranks scale them as they scale the CE. The code is
kolm's own; the grouped KL is the one kolm's ``distill`` resize init uses (:mod:`kolm.model.inits.distill`).

Placement. Without DeepSpeed the teacher is a second model on the student's device (bf16 weights on a GPU with bf16,
else float32; under bf16 autocast where the run uses it). Under DeepSpeed it is wrapped as trl wraps reference and
teacher models (:func:`trl.models.utils.prepare_deepspeed`): ZeRO-3 shards it across ranks like the student (each
rank holds 1/N of its weights; a forward gathers a layer at a time), any other stage keeps a full copy per rank. The
teacher runs exactly one forward pass per micro-batch on every rank (windows, when the expanded text is longer than
the teacher's window, are batched into that pass), so ZeRO-3's collective gathers stay in step. Its output head is
applied to the final hidden states a chunk of positions at a time, so that memory does not hold a full
``[positions x vocabulary]`` logits tensor of the (longer) expanded sequence.

Cost: one forward pass of the base model over the expanded text (2.5x to 3.5x the student's tokens for Korean)
per micro-batch: measured by bench/extension_pays.py on the arm's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.errors import KolmError
from kolm.train.stages import final_norm, unwrapped

LOSS_NAMES = ("kd", "chunk")  # logged as teacher_kd, teacher_chunk (nats per label position, before weighting)
EPS = 1e-6  # ALM's epsilon: keeps the binarised log-probabilities below 0


@dataclass
class Expansion:
    """A padded table of base pieces per student row: ``table[v, :n[v]]`` are the pieces of row ``v``."""

    table: Any  # LongTensor [rows, max_pieces], -1 padded
    n: Any  # LongTensor [rows]
    first: Any  # LongTensor [rows]: first piece, or n_base (the sink bucket) for rows without pieces
    n_base: int

    @classmethod
    def build(cls, pieces: dict[int, list[int]], n_base: int, n_rows: int) -> Expansion:
        import torch

        width = max([1, *(len(p) for p in pieces.values())])
        table = torch.full((n_rows, width), -1, dtype=torch.long)
        table[:n_base, 0] = torch.arange(n_base)
        n = torch.zeros(n_rows, dtype=torch.long)
        n[:n_base] = 1
        first = torch.full((n_rows,), n_base, dtype=torch.long)
        first[:n_base] = torch.arange(n_base)
        for i, ids in pieces.items():
            if ids and i < n_rows:
                table[i, : len(ids)] = torch.tensor(ids)
                n[i] = len(ids)
                first[i] = ids[0]
        return cls(table, n, first, n_base)

    def to(self, device: Any) -> Expansion:
        return Expansion(self.table.to(device), self.n.to(device), self.first.to(device), self.n_base)

    def expand(self, ids: Any) -> tuple[list[Any], Any]:
        """Base ids of each row of ``ids`` ([B, L] student ids) and ``ends`` [B, L]: the position, in the row's base
        ids, of the last piece of each student token. A row without pieces (never produced by the tokenizer) is an
        error: the teacher cannot read it."""
        import torch

        n = self.n[ids]
        if bool((n == 0).any()):
            bad = sorted({int(x) for x in ids[n == 0].tolist()})[:5]
            raise KolmError(f"teacher: student ids {bad} have no base pieces (rows past the tokenizer?); the data "
                            f"was not made with this model's tokenizer")
        ends = n.cumsum(-1) - 1
        keep = torch.arange(self.table.shape[1], device=ids.device) < n[..., None]
        pieces = self.table[ids]
        return [pieces[r][keep[r]] for r in range(ids.shape[0])], ends


def windows(length: int, window: int) -> list[tuple[int, int, int]]:
    """``(start, own_from, end)`` of each teacher window over a sequence of ``length`` base tokens: every position is
    read once in the window that owns it (``own_from`` .. ``end``), with at least ``window // 2`` tokens of context
    after the first window (the first owns everything it reads)."""
    if length <= window:
        return [(0, 0, length)]
    stride = window // 2
    out, start = [(0, 0, window)], stride
    while out[-1][2] < length:
        end = min(start + window, length)
        out.append((start, out[-1][2], end))
        start += stride
    return out


def binary_kl(log_t: Any, log_s: Any, temperature: float) -> Any:
    """ALM's binarised cross-entropy of ``exp(log_s / T)`` against ``exp(log_t / T)`` minus its minimum (the entropy
    of the teacher's Bernoulli), elementwise: 0 where the two log-probabilities agree."""
    import torch

    a = log_t.float() / temperature - EPS
    b = log_s.float() / temperature - EPS
    p = torch.exp(a)
    return p * (a - b) + (1 - p) * (_log1mexp(a) - _log1mexp(b))


def _log1mexp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable on both sides of log(1/2)."""
    import torch

    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def grouped_kl(logp: Any, q: Any, first: Any, n_buckets: int) -> Any:
    """KL(q || P grouped by first piece) per row: ``q`` [N, n_base] is the teacher's log-distribution, ``logp`` [N,
    rows] the student's; a row's probability counts for its first piece (``first`` [rows]); a bucket past the base
    vocabulary (``n_buckets`` > n_base) collects rows without pieces. Returns [N]."""
    import torch

    grouped = torch.zeros(logp.shape[0], n_buckets, device=logp.device, dtype=torch.float32)
    grouped.scatter_add_(1, first[None].expand(logp.shape[0], -1), logp.float().exp())
    log_grouped = grouped[:, : q.shape[1]].clamp_min(1e-30).log()  # probabilities: no overflow; 1e-30 guards log 0
    return (q.exp() * (q - log_grouped)).sum(-1)


class Teacher:
    """A frozen teacher and the loss it adds to a student batch (see the module docstring)."""

    def __init__(self, model: Any, expansion: Expansion, cfg: Any, window: int, source: str):
        self.model, self.expansion, self.cfg, self.window, self.source = model, expansion, cfg, window, source
        self._hidden: list[Any] = []
        self._stats: dict[str, float] = {}
        self._count = 0.0
        self._added = 0.0  # what the terms added to the loss the Trainer logs, summed since the last log
        self._logged_step = 0  # the Trainer's step of its last log
        self._hook = self._catch_hidden(model)

    def _catch_hidden(self, model: Any) -> Any:
        """A hook on ``model``'s final norm that keeps each forward pass's last hidden states."""
        return final_norm(model).register_forward_hook(lambda m, i, o: self._hidden.append(o))

    # -- building -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, cfg: Any, path: Path, pieces: dict[int, list[int]], n_base: int, n_rows: int, *, bf16_weights: bool,
             trust_remote_code: bool = False) -> Teacher:
        """The teacher model at ``path`` (frozen, eval mode) with the student's expansion table."""
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16 if bf16_weights else torch.float32,
                                                     use_safetensors=True, trust_remote_code=trust_remote_code)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        limit = int(getattr(model.config.get_text_config(), "max_position_embeddings", 0) or 0)
        window = min(x for x in (cfg.max_length, limit or None, 1 << 30) if x)
        return cls(model, Expansion.build(pieces, n_base, n_rows), cfg, window, str(path))

    def prepare(self, trainer: Any) -> None:
        """Place the teacher beside the trainer's student: DeepSpeed's engine (trl's ``prepare_deepspeed``: sharded
        under ZeRO-3, a full copy per rank otherwise) or the student's device."""
        if trainer.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            self._hook.remove()
            self.model = prepare_deepspeed(self.model, trainer.accelerator)
            self._hook = self._catch_hidden(self.model)
        else:
            self.model.to(trainer.args.device)
        self.expansion = self.expansion.to(trainer.args.device)

    # -- the loss -----------------------------------------------------------------------------------------------
    def loss(self, logits: Any, input_ids: Any, autocast: bool) -> tuple[dict[str, Any], int]:
        """The teacher's terms for one micro-batch: ``{name: sum over label positions}`` (tensors with gradient
        through ``logits`` [B, L, rows]) and the number of label positions (B x (L - 1))."""
        import torch

        device = logits.device
        kd_sum = torch.zeros((), device=device)
        chunk_sum = torch.zeros((), device=device)
        head = _output_head(self.model)
        with _gathered(head.weight):
            w = head.weight.detach()[: self.expansion.n_base]
            for r, (h, e, chunk_t) in enumerate(self.read(input_ids, autocast, w)):
                logp = torch.log_softmax(logits[r, :-1].float(), -1)
                log_s = logp.gather(-1, input_ids[r, 1:, None]).squeeze(-1)
                if self.cfg.chunk > 0:
                    chunk_sum = chunk_sum + self.cfg.temperature * binary_kl(chunk_t, log_s, self.cfg.temperature).sum()
                if self.cfg.kd > 0:
                    kd_sum = kd_sum + self._kd(logp, h, e[:-1], w, autocast)
        n = input_ids.shape[0] * (input_ids.shape[1] - 1)
        return {"kd": kd_sum, "chunk": chunk_sum}, n

    def read(self, input_ids: Any, autocast: bool, w: Any) -> list[tuple[Any, Any, Any]]:
        """Per row of ``input_ids`` [B, L] (student ids): the teacher's final hidden states over the row's base ids
        [T, d], ``ends`` [L] (the base position of the last piece of each student token) and the teacher's summed
        log-probability of the pieces of each next student token [L - 1] (``w``: the output head's base rows)."""
        import torch

        base_ids, ends = self.expansion.expand(input_ids)
        out = []
        for ids, h, e in zip(base_ids, self._hidden_states(base_ids, autocast), ends, strict=True):
            # the teacher's log-prob of every base token after the row's first student token, in order; a student
            # token's chunk is the sum over its pieces
            lp = _target_logprobs(h[e[0]: e[-1]], w, ids[e[0] + 1: e[-1] + 1], autocast)
            cum = torch.cat([lp.new_zeros(1), lp.cumsum(0)])
            out.append((h, e, cum[e[1:] - e[0]] - cum[e[:-1] - e[0]]))
        return out

    def _kd(self, logp: Any, h: Any, at: Any, w: Any, bf16: bool) -> Any:
        """Sum of the grouped KL over positions ``at`` of the teacher's hidden states ``h``, ``chunk_positions`` at a
        time (each chunk recomputed in the backward pass, so memory holds one chunk's probabilities)."""
        import torch
        from torch.utils.checkpoint import checkpoint

        n_base, first = self.expansion.n_base, self.expansion.first
        step = max(1, int(self.cfg.chunk_positions))
        total = torch.zeros((), device=logp.device)
        for s in range(0, logp.shape[0], step):
            q = torch.log_softmax(head_logits(h[at[s: s + step]], w, bf16), -1)
            part = logp[s: s + step]
            if part.requires_grad and logp.shape[0] > step:
                total = total + checkpoint(grouped_kl, part, q, first, n_base + 1, use_reentrant=False).sum()
            else:
                total = total + grouped_kl(part, q, first, n_base + 1).sum()
        return total

    def _hidden_states(self, base_ids: list[Any], autocast: bool) -> list[Any]:
        """The teacher's final hidden states over each row's base ids: one forward pass for the whole micro-batch,
        rows cut into windows of ``self.window`` (batched), each position taken from the window that owns it."""
        import torch

        device = base_ids[0].device
        plan = [windows(len(ids), self.window) for ids in base_ids]
        seqs = [ids[a:b] for ids, ws in zip(base_ids, plan, strict=True) for a, _, b in ws]
        width = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(x)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = s
            mask[i, : len(s)] = 1
        self._hidden.clear()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            self.model(input_ids=x, attention_mask=mask, logits_to_keep=1, use_cache=False)
        if len(self._hidden) != 1:
            raise KolmError(f"teacher: expected one final-norm output per forward pass, got {len(self._hidden)}")
        states = self._hidden.pop()
        out, k = [], 0
        for ws in plan:
            parts = []
            for a, own, b in ws:
                parts.append(states[k, own - a: b - a])
                k += 1
            out.append(torch.cat(parts))
        return out

    # -- logging ------------------------------------------------------------------------------------------------
    def record(self, parts: dict[str, Any], n: int, added: Any, last_logged: int) -> None:
        """Keep this micro-batch's terms (sums over ``n`` label positions) and what they ``added`` to the loss the
        Trainer backpropagates and logs, for the next training log; ``last_logged`` is the Trainer's step of its
        last log (its logged loss is a mean over the steps since)."""
        for name in LOSS_NAMES:
            self._stats[name] = self._stats.get(name, 0.0) + float(parts[name].detach())
        self._count += n
        self._added += float(added.detach())
        self._logged_step = last_logged

    def metrics(self, state: Any, logs: dict[str, Any]) -> dict[str, float]:
        """A metric source (:mod:`kolm.train.metrics`): ``teacher_kd`` and ``teacher_chunk``, nats per label position
        averaged since the last training log over every rank; and ``loss`` as the data's cross-entropy alone (the
        Trainer logs the objective, teacher terms included, which then goes to ``loss_with_teacher``), so that runs
        with and without a teacher compare on one number. Nothing in a log without the training loss; collective
        under several ranks (every rank logs at the same steps)."""
        if "loss" not in logs:
            return {}
        import torch
        import torch.distributed as dist

        t = torch.tensor([self._stats.get(k, 0.0) for k in LOSS_NAMES] + [self._count, self._added, 1.0],
                         dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "nccl":
                t = t.cuda()
            dist.all_reduce(t)
        steps = max(1, state.global_step - self._logged_step)
        self._stats, self._count, self._added = {}, 0.0, 0.0
        *sums, count, added, ranks = t.tolist()
        if not count:
            return {}
        out = {f"teacher_{k}": round(v / count, 6) for k, v in zip(LOSS_NAMES, sums, strict=True)}
        # the Trainer's logged loss is the mean over ranks of the steps' summed micro-batch losses, per step
        return {**out, "loss_with_teacher": logs["loss"], "loss": round(logs["loss"] - added / ranks / steps, 6)}

    def close(self) -> None:
        self._hook.remove()


def head_logits(h: Any, w: Any, bf16: bool) -> Any:
    """The teacher's output logits ``h @ w.T`` in float32, the matmul in bf16 where the run uses bf16 (no gradient:
    the teacher's head costs one vocabulary-wide matmul per base position, as much as its body's last layers)."""
    import torch

    with torch.no_grad():
        if bf16:
            return (h.to(torch.bfloat16) @ w.to(torch.bfloat16).T).float()
        return h.float() @ w.float().T


def _target_logprobs(h: Any, w: Any, targets: Any, bf16: bool, chunk: int = 2048) -> Any:
    """``log softmax(h @ w.T)[target]`` per position, ``chunk`` positions at a time (no gradient)."""
    import torch

    out = []
    for s in range(0, h.shape[0], chunk):
        logits = head_logits(h[s: s + chunk], w, bf16)
        out.append(logits.gather(-1, targets[s: s + chunk, None]).squeeze(-1) - logits.logsumexp(-1))
    return torch.cat(out) if out else h.new_zeros(0, dtype=torch.float32)


def _output_head(model: Any) -> Any:
    return unwrapped(model).get_output_embeddings()


def _gathered(weight: Any) -> Any:
    """The full weight on every rank for the duration (ZeRO-3 keeps 1/N of it per rank), else nothing to do."""
    import contextlib

    if hasattr(weight, "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters([weight])
    return contextlib.nullcontext()


@dataclass
class TeacherPlan:
    """What preflight found: the teacher's folder, the student rows' base pieces and the sizes."""

    path: Path
    pieces: dict[int, list[int]]
    n_base: int
    n_rows: int


def plan_teacher(cfg: Any, student: Path, n_rows: int) -> TeacherPlan:
    """Resolve and check the recipe's teacher before anything is written: ``auto`` is the model ``resize.json``
    says the resize started from; the folder must be a complete model whose tokenizer the student's extends (same
    id and string for every one of its tokens). The pieces of every added token come from the student's
    ``extension.json`` (else the teacher's BPE)."""
    from tokenizers import Tokenizer

    from kolm.artifacts import ResizeRecord, TokenizerExtension
    from kolm.io.models import check_model_folder
    from kolm.model.resize import plan_extension

    path = cfg.model
    if path == "auto":
        rec = ResizeRecord.read(student)
        path = rec.source_model if rec is not None else None
        if not path:
            raise KolmError(f"teacher: auto takes the model the resize started from, but {student} has no "
                            f"resize.json naming one; set teacher.model to the model before the resize")
    folder = Path(path)
    if not folder.is_dir():
        raise KolmError(f"teacher: {folder} is not a folder (teacher.model"
                        + (", from resize.json" if cfg.model == "auto" else "") + ")")
    check_model_folder(folder, "teacher")
    if not (folder / "tokenizer.json").is_file():
        raise KolmError(f"teacher: {folder} has no tokenizer.json beside the weights")
    ext = TokenizerExtension.read(student)
    plan = plan_extension(Tokenizer.from_file(str(student / "tokenizer.json")),
                          Tokenizer.from_file(str(folder / "tokenizer.json")), ext.added if ext else None,
                          new_name=f"the student's tokenizer ({student})", base_name=f"the teacher's ({folder})")
    return TeacherPlan(folder, plan.pieces, plan.n_base, n_rows)
