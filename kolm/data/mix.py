"""Token budgets and the sampling plan of ``kolm data build``: the exact language mix.

After cleaning and dedup every source has a pool of kept train documents with known token counts (EOS
included). :func:`make_plan` then

1. gives each language the budget ``N_L = share_L * N``, with ``N`` the largest total that no language's
   supply (tokens x ``max_epochs`` of its sources) limits, capped by ``max_train_tokens``;
2. splits a language's budget over its sources in proportion to their supply, so the epochs per source are
   ``N_s / T_s`` (<= ``max_epochs``; a fraction below 1 is a seeded random subset of documents, whole
   passes are repeated, and the last document is taken or not so that the total comes closest to ``N_s``);
3. shuffles all sampled documents with the seed. Packing (:mod:`kolm.data.pack`) cuts this stream into
   sequences of ``seq_len`` tokens; the share of each language among the packed tokens is computed here,
   exactly, before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kolm.errors import KolmError


@dataclass
class Plan:
    """The shuffled document stream and what it holds."""

    order_src: np.ndarray  # int32, source index of each sampled document, in stream order
    order_doc: np.ndarray  # int64, document index within its source
    doc_end: np.ndarray  # int64, cumulative tokens at the end of each sampled document
    n_sequences: int
    seq_len: int
    epochs: list[float]  # per source: sampled tokens / pool tokens
    tokens_sampled: list[int]  # per source
    lang_tokens_packed: dict[str, int]  # tokens of each language inside the packed sequences
    budgets: dict[str, float]  # target tokens per language
    supply: dict[str, float] = field(default_factory=dict)  # per language: kept train tokens x max_epochs

    @property
    def total_tokens(self) -> int:
        return self.n_sequences * self.seq_len

    def shares(self) -> dict[str, float]:
        tot = max(1, sum(self.lang_tokens_packed.values()))
        return {k: v / tot for k, v in self.lang_tokens_packed.items()}


def _sample_source(lengths: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Document indices (with repeats) whose token sum comes closest to ``target``."""
    total = int(lengths.sum())
    if total == 0 or target <= 0:
        return np.zeros(0, dtype=np.int64)
    full = int(target // total)
    rest = target - full * total
    parts = [np.arange(len(lengths), dtype=np.int64)] * full
    perm = rng.permutation(len(lengths))
    cum = np.cumsum(lengths[perm])
    k = int(np.searchsorted(cum, rest, side="left"))  # cum[k] >= rest (first), cum[k-1] < rest
    if k < len(cum) and (k == 0 and cum[0] - rest < rest or k > 0 and cum[k] - rest < rest - cum[k - 1]):
        k += 1
    parts.append(perm[:k].astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def make_plan(lengths: list[np.ndarray], langs: list[str], max_epochs: list[float], mix: dict[str, float],
              seq_len: int, seed: int, max_train_tokens: int | None = None) -> Plan:
    """Budgets, sampled documents and their shuffled order (see the module docstring).

    Args:
        lengths: per source, the token count (EOS included) of every kept train document.
        langs, max_epochs: per source.
        mix: target share per language (sums to 1).
    """
    supply: dict[str, float] = {lang: 0.0 for lang in mix}
    pool = [int(x.sum()) for x in lengths]
    for t, lang, me in zip(pool, langs, max_epochs):
        supply[lang] += t * me
    empty = sorted(lang for lang, s in supply.items() if s == 0)
    if empty:
        raise KolmError(f"no train documents left for language(s) {empty} after cleaning and dedup "
                        f"(see the drop reasons per source); the mix needs some")
    total = min(supply[lang] / share for lang, share in mix.items())
    if max_train_tokens is not None:
        total = min(total, float(max_train_tokens))
    budgets = {lang: share * total for lang, share in mix.items()}
    rng = np.random.default_rng(seed)
    src_parts, doc_parts, epochs, sampled = [], [], [], []
    for s, (ln, lang, me) in enumerate(zip(lengths, langs, max_epochs)):
        target = budgets[lang] * pool[s] * me / supply[lang] if supply[lang] else 0.0
        docs = _sample_source(ln, target, rng)
        n_tok = int(ln[docs].sum()) if len(docs) else 0
        epochs.append(n_tok / pool[s] if pool[s] else 0.0)
        sampled.append(n_tok)
        src_parts.append(np.full(len(docs), s, dtype=np.int32))
        doc_parts.append(docs)
    order_src = np.concatenate(src_parts) if src_parts else np.zeros(0, np.int32)
    order_doc = np.concatenate(doc_parts) if doc_parts else np.zeros(0, np.int64)
    perm = rng.permutation(len(order_src))
    order_src, order_doc = order_src[perm], order_doc[perm]
    doc_len = np.zeros(len(order_src), dtype=np.int64)
    for s, ln in enumerate(lengths):
        m = order_src == s
        doc_len[m] = ln[order_doc[m]]
    doc_end = np.cumsum(doc_len)
    total_tokens = int(doc_end[-1]) if len(doc_end) else 0
    n_seq = total_tokens // seq_len
    cutoff = n_seq * seq_len
    inside = np.minimum(doc_end, cutoff) - np.minimum(doc_end - doc_len, cutoff)
    lang_idx = {lang: i for i, lang in enumerate(mix)}
    src_lang = np.array([lang_idx[lang] for lang in langs], dtype=np.int64)
    per_lang = np.bincount(src_lang[order_src], weights=inside, minlength=len(mix)) if len(order_src) else \
        np.zeros(len(mix))
    lang_tokens = {lang: int(round(per_lang[i])) for lang, i in lang_idx.items()}
    return Plan(order_src, order_doc, doc_end, n_seq, seq_len, epochs, sampled, lang_tokens, budgets, supply)


def check_shares(plan: Plan, mix: dict[str, float], tolerance: float = 0.005) -> None:
    """Raise when the packed shares miss the recipe by more than ``tolerance`` (0.005 = 0.5 points)."""
    if plan.n_sequences == 0:
        have = ", ".join(f"{lang} {plan.budgets[lang]:,.0f}" for lang in mix)
        scarce = min(mix, key=lambda lang: plan.supply.get(lang, 0.0) / mix[lang])
        raise KolmError(f"not enough tokens for a single sequence of {plan.seq_len} tokens after mixing: the mix "
                        f"holds {have} tokens, limited by {scarce} ({plan.supply.get(scarce, 0.0):,.0f} kept train "
                        f"tokens x max_epochs at share {mix[scarce]}); add {scarce} documents, raise max_epochs of "
                        f"its sources, or lower seq_len")
    got = plan.shares()
    worst = max(mix, key=lambda lang: abs(got[lang] - mix[lang]))
    if abs(got[worst] - mix[worst]) > tolerance:
        raise KolmError(f"the mix cannot be met within {tolerance * 100:.1f} points: {worst} gets "
                        f"{got[worst]:.4f} of the packed tokens, the recipe asks {mix[worst]:.4f} (too few documents "
                        f"or documents too long for the sequence count; add data or allow more max_epochs)")
    if not all(math.isfinite(v) for v in got.values()):
        raise KolmError("internal error: non-finite language share")
