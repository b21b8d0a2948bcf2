"""The exact-expansion check of ``kolm vocab extend``: expanding the extended tokenization of a text into base ids
(:func:`kolm.artifacts.extension.expand`) must give exactly the base tokenization of the same text.

Why it holds by construction: every new merge comes after all base merges, so the extended BPE first reaches the
base's own segmentation of a pre-token, then joins whole base pieces; a new token therefore covers a run of the
base's pieces, and the base cuts that run the way it cuts the token's string alone (no base merge crossed the run's
edges), which is what ``AddedToken.base_ids`` records. Two things would break it, and the learner avoids both: a
new merge whose result is a *base* token (the extended tokenizer would emit that base id where the base emits
other pieces; such merges are dropped, :class:`kolm.vocab.learn._Filter`), and a new token that the base would
reach by a whole-pre-token lookup (``ignore_merges``; new tokens are not base tokens, so the lookup never finds
them in the base). Byte fallback is no exception: a new single character expands to the byte pieces the base
falls back to.

:class:`ExpansionCheck` measures it on the check sample: lines checked, lines whose expansion differs, and which
extended ids (added or base) cover a span the base cuts otherwise.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kolm.artifacts.extension import expand


class ExpansionCheck:
    """Accumulates the expansion check over (extended ids, base ids) pairs of the same lines.

    ``table``: added id -> base ids (:meth:`TokenizerExtension.expansion_table`); ``token_bytes``: id -> how many
    bytes its piece stands for in the tokenizer's own alphabet (any consistent measure; it only aligns the two
    tokenizations)."""

    def __init__(self, table: dict[int, list[int]], token_bytes: Any, base_size: int):
        self.table, self.token_bytes, self.base_size = table, token_bytes, base_size
        self.lines = self.differing = 0
        self.culprits: Counter = Counter()  # extended id -> lines where it covers a span the base cuts otherwise

    def add(self, ids_new: list[int], ids_base: list[int]) -> None:
        self.lines += 1
        expanded, _ = expand(ids_new, self.table)
        if expanded == ids_base:
            return
        self.differing += 1
        self.culprits.update(set(self.culprits_of(ids_new, ids_base)))

    def culprits_of(self, ids_new: list[int], ids_base: list[int]) -> list[int]:
        """Extended ids whose expansion is not the base's pieces over the same bytes."""
        at: dict[int, int] = {}  # byte offset of a base piece boundary -> index of the piece starting there
        pos = 0
        for k, i in enumerate(ids_base):
            at[pos] = k
            pos += self.token_bytes(i)
        at[pos] = len(ids_base)
        out, pos = [], 0
        for i in ids_new:
            pieces = self.table.get(i, [i])
            end = pos + sum(map(self.token_bytes, pieces))
            if pos not in at or end not in at or ids_base[at[pos]:at[end]] != pieces:
                out.append(i)
            pos = end
        return out

    def result(self, most: int = 20) -> dict[str, Any]:
        """The counts for ``extension.json``'s checks; the ``most`` commonest culprits (id -> lines), added ids and
        base ids apart, and how many distinct ids were culprits."""
        common = self.culprits.most_common(most)
        return {"expansion_lines_checked": self.lines, "expansion_lines_differing": self.differing,
                "expansion_differing_ids": len(self.culprits),
                "expansion_differing_added_ids": {str(i): c for i, c in common if i >= self.base_size},
                "expansion_differing_base_ids": {str(i): c for i, c in common if i < self.base_size}}
