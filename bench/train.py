"""Throughput of `kolm train cpt` against a bare PyTorch loop (CPU), same model, batch and sequence length.

    python bench/train.py [--steps 30] [--rounds 3] [--hidden 256] [--layers 4] [--seq-len 256] [--batch 8]

Both train the same Llama from the same packed data for the same number of steps with AdamW; the bare loop is
`loss.backward(); clip; opt.step(); sched.step()` with nothing else. kolm's step times come from the
`metrics.jsonl` timestamps (median of the steps after the first few, so start-up does not count); online
evaluation and checkpoints are switched off for this comparison (their cost is reported separately by a run with
eval every 10 steps). Bar: kolm >= 0.9x the bare loop's tokens/s.

Load from other processes on a small machine moves step times by tens of percent within a minute, so the two
are measured in alternating rounds (kolm, bare, kolm, bare, ...) and the bar is judged on the median of the
per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import need_shared, print_json, print_table, step_times, train_rows  # noqa: E402


def bare_loop(model_dir: Path, data_dir: Path, steps: int, batch: int, lr: float) -> list[float]:
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    train = load_from_disk(str(data_dir / "train")).with_format("torch")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, 2, steps, min_lr_rate=0.1)
    times = []
    for s in range(steps):
        t = time.perf_counter()
        x = train[s * batch:(s + 1) * batch]["input_ids"].long()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times


def kolm_run(root: Path, steps: int, batch: int, lr: float, eval_every: int, name: str) -> list[float]:
    import yaml

    from kolm.cli import main

    recipe = {"model": "model", "data": "data", "output": name, "micro_batch_size": batch, "grad_accum": 1,
              "optim": {"lr": lr, "warmup_steps": 2}, "stages": [{"name": "full", "kind": "full",
                                                                   "max_steps": steps}],
              "eval": {"every": eval_every, "max_docs": 16}, "checkpoint": {"every": 10 * steps, "keep": 2}}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "cpt", str(root / f"{name}.yaml")]) == 0
    return step_times(train_rows(root / name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="alternating kolm / bare rounds")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    shared = need_shared()

    from kolm.cli import main as kolm

    root = Path(tempfile.mkdtemp(prefix="kolm-bench-train-"))
    tok = shared / "tokenizers" / "llama2"
    assert kolm(["model", "init", "--tokenizer", str(tok), "--output", str(root / "model"), "--hidden-size",
                 str(args.hidden), "--layers", str(args.layers), "--max-position-embeddings",
                 str(args.seq_len)]) == 0
    recipe = Path(__file__).resolve().parents[1] / "data_recipes" / "ko_en_replay.yaml"
    assert kolm(["data", "build", str(recipe), "--output", str(root / "data"), f"tokenizer={tok}",
                 f"seq_len={args.seq_len}", "progress=false"]) == 0
    skip = 3
    lr = 1e-3
    kolm_t, bare_t, ratios = [], [], []
    for r in range(args.rounds):
        k = kolm_run(root, args.steps, args.batch, lr, 0, f"run{r}")[skip:]
        b = bare_loop(root / "model", root / "data", args.steps, args.batch, lr)[skip:]
        ratios.append(statistics.median(b) / statistics.median(k))
        kolm_t += k
        bare_t += b
        print(f"round {r + 1}: kolm / bare tokens/s = {ratios[-1]:.3f}x", flush=True)
    eval_t = kolm_run(root, args.steps, args.batch, lr, 10, "run_eval")[skip:]
    tokens = args.batch * args.seq_len
    rows = []
    base = tokens / statistics.median(bare_t)
    for name, t in (("bare PyTorch loop", bare_t), ("kolm train cpt", kolm_t), ("kolm train cpt + eval/10", eval_t)):
        tps = tokens / statistics.median(t)
        rows.append({"run": name, "median step s": round(statistics.median(t), 4), "tokens/s": round(tps, 1),
                     "vs bare": f"{tps / base:.3f}x", "mean step s": round(statistics.mean(t), 4)})
    print_table(rows, f"CPU, Llama {args.layers}x{args.hidden}, vocab 32000, batch {args.batch} x {args.seq_len} "
                      f"tokens, {args.steps} steps x {args.rounds} rounds (first {skip} of each not counted)")
    ratio = statistics.median(ratios)
    print(f"\nper-round ratios: {', '.join(f'{x:.3f}x' for x in ratios)}")
    print(f"bar: kolm >= 0.9x bare (median of rounds) -> {ratio:.3f}x {'PASS' if ratio >= 0.9 else 'FAIL'}")
    print_json("train", {"rows": rows, "ratio": ratio, "round_ratios": ratios})


if __name__ == "__main__":
    main()
