"""Where does an extended model lose against plain CPT? The gap in bits per byte, token by token.

    python bench/extension_gap.py --kolm KOLM_MODEL --plain PLAIN_MODEL --text ko_heldout.txt
                                  [--data KOLM_DATA --sequences N] [--docs 100]

Both models read the same held-out documents, each with its own tokenizer. kolm's extension only adds merges after
the base's, so every kolm token is a run of base tokens and every kolm token boundary is a plain token boundary: the
plain model's loss over the pieces of a kolm token is exactly comparable with the kolm model's loss of that token.
The gap (kolm's bits minus plain's, per byte of all text) is split by the kind of kolm token (a base token, a new
single syllable, a new longer token) and by how often kolm's arm trained on it (``--data`` and ``--sequences``: the
first N packed sequences of its data folder, the ones a run of N / micro-batch steps read), and each part into:

- **first piece**: which base token comes next. kolm's probability of it is the mass of every kolm token whose
  pieces start with it (:func:`kolm.train.teacher.grouped_kl`'s grouping), plain's is its own probability;
- **rest**: the remainder of the token (kolm: the token's share of its first piece's mass; plain: the later pieces).

A large first-piece part means kolm's body reads the context worse; a large rest part on new tokens means their
output rows are not yet where plain's chained pieces are. Prints a table and a ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

LN2 = math.log(2)
BUCKETS = [(0, 0), (1, 9), (10, 99), (100, 999), (1000, 10**12)]


def trained_counts(data: Path | None, sequences: int) -> Counter:
    """How often each token id occurs in the first ``sequences`` packed training sequences of a data folder."""
    if data is None:
        return Counter()
    from kolm.artifacts import DataFolder

    train = DataFolder(data).load_train()
    counts: Counter = Counter()
    for i in range(min(sequences, len(train))):
        counts.update(train[i]["input_ids"])
    return counts


def bucket(kind: str, seen: int | None) -> str:
    if kind == "base" or seen is None:
        return {"base": "base token", "syllable": "new syllable", "longer": "new longer token"}[kind]
    lo, hi = next((a, b) for a, b in BUCKETS if a <= seen <= b)
    span = f"{lo}" if lo == hi else f"{lo}+" if hi > 10**9 else f"{lo}-{hi}"
    return f"new {kind}, trained {span}x"


def analyse(kolm_dir: Path, plain_dir: Path, docs: list[str], counts: Counter | None) -> dict[str, Any]:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.artifacts import TokenizerExtension
    from kolm.eval.generation import token_bytes
    from kolm.model.resize import plan_extension
    from kolm.train.teacher import Expansion

    torch.set_grad_enabled(False)
    k_tok = Tokenizer.from_file(str(kolm_dir / "tokenizer.json"))
    p_tok = Tokenizer.from_file(str(plain_dir / "tokenizer.json"))
    k_hf = AutoTokenizer.from_pretrained(kolm_dir)

    ext = TokenizerExtension.read(kolm_dir)
    plan = plan_extension(k_tok, p_tok, ext.added if ext else None)
    kolm = AutoModelForCausalLM.from_pretrained(kolm_dir, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(plain_dir, dtype=torch.float32).eval()
    n_rows = kolm.get_input_embeddings().weight.shape[0]
    expansion = Expansion.build(plan.pieces, plan.n_base, n_rows)
    bos = kolm.config.bos_token_id if kolm.config.bos_token_id is not None else kolm.config.eos_token_id
    text_of = {i: k_tok.decode([i]) for i in plan.tokens}
    rows: dict[str, list[float]] = {}  # bucket -> [bytes, kolm first, kolm rest, plain first, plain rest, tokens]
    for doc in docs:
        ids = [bos, *k_tok.encode(doc, add_special_tokens=False).ids][:512]
        x = torch.tensor([ids])
        (base_ids,), ends = expansion.expand(x)
        lk = torch.log_softmax(kolm(input_ids=x).logits[0].float(), -1)
        lp = torch.log_softmax(plain(input_ids=base_ids[None]).logits[0].float(), -1)
        grouped = torch.zeros(lk.shape[0], plan.n_base + 1).scatter_add_(
            1, expansion.first[None].expand(lk.shape[0], -1), lk.exp())
        e = ends[0].tolist()
        sizes = [len(b) for b in token_bytes(k_hf, ids)]
        for j in range(1, len(ids)):
            t, b0, b1 = ids[j], e[j - 1] + 1, e[j] + 1  # the token's pieces are base_ids[b0:b1]
            first = int(base_ids[b0])
            k_first = -math.log(max(float(grouped[j - 1, first]), 1e-30))
            k_rest = -float(lk[j - 1, t]) - k_first
            p_pieces = [-float(lp[p - 1, base_ids[p]]) for p in range(b0, b1)]
            n_bytes = sizes[j]
            if t >= plan.n_base:
                kind = "syllable" if len(text_of[t].strip()) == 1 else "longer"
            else:
                kind = "base"
            key = bucket(kind, counts.get(t, 0) if counts is not None and kind != "base" else None)
            r = rows.setdefault(key, [0.0] * 6)
            for i, v in enumerate((n_bytes, k_first, k_rest, p_pieces[0], sum(p_pieces[1:]), 1)):
                r[i] += v
    return rows


def table(rows: dict[str, list[float]]) -> str:
    from kolm.tables import text_table

    total = sum(r[0] for r in rows.values())
    out, sums = [], [0.0] * 6
    order = sorted(rows, key=lambda k: (not k.startswith("base"), k.startswith("new longer"), k))
    for key in order:
        r = rows[key]
        sums = [a + b for a, b in zip(sums, r, strict=True)]
        out.append(_row(key, r, total))
    out.append(_row("all", sums, total))
    return text_table(["kolm tokens", "tokens", "share of bytes", "kolm bpb", "plain bpb", "gap (bits / byte of all)",
                       "first piece", "rest"], out, left=1)


def _row(name: str, r: list[float], total: float) -> list[str]:
    n_bytes, kf, kr, pf, pr, n = r
    k, p = (kf + kr) / LN2, (pf + pr) / LN2
    return [name, f"{n:.0f}", f"{n_bytes / total:.1%}", f"{k / n_bytes:.3f}", f"{p / n_bytes:.3f}",
            f"{(k - p) / total:+.4f}", f"{(kf - pf) / LN2 / total:+.4f}", f"{(kr - pr) / LN2 / total:+.4f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kolm", required=True, type=Path, help="the extended model (a snapshot or run's final/)")
    ap.add_argument("--plain", required=True, type=Path, help="the plain-CPT model at the same budget")
    ap.add_argument("--text", required=True, type=Path, help="held-out documents, one per line")
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--data", type=Path, help="kolm's data folder (for how often each new token was trained)")
    ap.add_argument("--sequences", type=int, default=0, help="packed sequences kolm's arm trained on")
    args = ap.parse_args()
    docs = [x for x in args.text.read_text(encoding="utf-8").splitlines() if x.strip()][: args.docs]
    counts = trained_counts(args.data, args.sequences) if args.data else None
    rows = analyse(args.kolm, args.plain, docs, counts)
    print(f"kolm {args.kolm} against plain {args.plain} on {len(docs)} documents of {args.text.name}")
    print(table(rows))
    print("BENCH_JSON " + json.dumps({"bench": "extension_gap", "kolm": str(args.kolm), "plain": str(args.plain),
                                     "text": str(args.text), "rows": rows}))


if __name__ == "__main__":
    main()
