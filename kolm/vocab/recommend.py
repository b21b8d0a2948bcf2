"""How many new tokens a CPT budget can teach: the size ``kolm vocab extend --budget-tokens N`` recommends.

    kolm vocab extend --base B --corpus ko.txt --num-new-tokens 8000 --output tok-ko --budget-tokens 50M

A new token starts untrained (its rows are an average of its pieces') and a run learns it only from the places it
reads it. The rule: the new tokens worth adding are those the CPT run will read at least :data:`MIN_READS` times.
How often: each added token's share of the check sample's Korean tokens under the extended tokenizer, times the
Korean tokens of the budget (:data:`KOREAN_SHARE` of it, kolm's data mix); the recommendation is how many added tokens
reach the threshold (an extension of that size, learned on the same corpus, keeps about the most frequent of them:
merges and syllables are learned most frequent first). The threshold comes from
``bench/extension_gap.py`` (docs/benchmarks.md#where-the-gap-is): on SmolLM2, a new token is behind the base
tokens it replaces until it was trained on about that many times.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from kolm.config import parse_amount

MIN_READS = 1000  # see the module docstring
KOREAN_SHARE = 0.8  # kolm's default data mix: 80% Korean, 20% English replay


def parse_tokens(text: str | int, where: str = "budget_tokens") -> int:
    """``"50M"``, ``"2B"``, ``"1.5k"``, ``"1e9"``, ``"250000"`` -> tokens (K, M, B are powers of 1000); empty -> 0."""
    return parse_amount(str(text).replace(",", ""), where, base=1000, units={"K": 1, "M": 2, "G": 3, "B": 3, "T": 4},
                        what="a number of tokens such as 50M, 2B or 250000")


@dataclass(frozen=True)
class Recommendation:
    budget_tokens: int
    recommended: int  # how many of the added tokens the run reads at least MIN_READS times
    added: int
    reads_of_last: float  # expected reads of the last recommended token (of the first added when none is)
    sample_tokens: int  # Korean-bearing sample tokens the shares were counted on

    def text(self) -> str:
        if self.recommended >= self.added:
            verdict = f"all +{self.added:,} (the last is read about {self.reads_of_last:,.0f} times)"
        elif self.recommended == 0:
            verdict = (f"none: even the most frequent new token is read about {self.reads_of_last:,.0f} times, under "
                       f"the {MIN_READS:,} it takes to catch up with its pieces; plain CPT on the base tokenizer "
                       "should do better at this budget")
        else:
            verdict = (f"+{self.recommended:,} of the +{self.added:,} (--num-new-tokens {self.recommended}: the "
                       f"tokens read at least {MIN_READS:,} times)")
        return f"for a CPT budget of {_tokens(self.budget_tokens)} tokens kolm recommends {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {"budget_tokens": self.budget_tokens, "recommended": self.recommended, "min_reads": MIN_READS,
                "korean_share": KOREAN_SHARE, "reads_of_last": round(self.reads_of_last, 1),
                "sample_tokens": self.sample_tokens}


def recommend(korean_ids: Counter, added_ids: list[int], budget_tokens: int) -> Recommendation:
    """How many of the new tokens (``added_ids``) a CPT run of ``budget_tokens`` tokens reads at least
    :data:`MIN_READS` times, from ``korean_ids``: how often each id occurs in the check sample's Hangul-bearing
    documents under the extended tokenizer (counted by :func:`kolm.vocab.extend.check_invariants`)."""
    total = sum(korean_ids.values())
    scale = KOREAN_SHARE * budget_tokens / max(total, 1)
    reads = sorted((korean_ids[i] * scale for i in added_ids), reverse=True)
    n = sum(r >= MIN_READS for r in reads)
    last = reads[n - 1] if n else (reads[0] if reads else 0.0)
    return Recommendation(budget_tokens, n, len(added_ids), last, total)


def _tokens(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return str(n)
