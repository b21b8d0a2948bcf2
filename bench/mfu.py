"""GPU throughput, MFU and memory of `kolm train cpt` under DeepSpeed ZeRO-3, bf16, for a 1B-parameter Llama.

    python bench/mfu.py [--steps 30] [--micro-batch 8] [--seq-len 2048] [--zero zero3] [--peak-tflops X]
    python bench/mfu.py --smoke        # the same script on CPU: tiny model, plain process, fp32 (checks the script)

- Model: Llama-3.2-1B's shape from config, random init (`kolm model init`): hidden 2048, 16 layers, 32 heads,
  8 KV heads, MLP 8192, tied embeddings, the Llama-3 tokenizer from ../shared (128,256 tokens). 1.24B parameters.
- Data: `kolm data build` from ../shared ko_dev + en_dev at --seq-len (Korean repeated to fill the batches).
- Run: `deepspeed --num_gpus 1 --module kolm.cli train cpt` with train/deepspeed/<--zero>.json, one full stage,
  no online eval, no checkpoints. Step times come from metrics.jsonl (median after the first --skip steps).
- MFU = model FLOPs per token x tokens/s / peak bf16 FLOP/s of the GPU. Model FLOPs per token (PaLM, appendix
  B): 6 N + 12 L d T, where N counts every parameter that takes part in a matmul (the tied LM head once; the
  input embedding lookup is not a matmul), L layers, d hidden size, T sequence length; activation
  recomputation is not counted. Peak: 989 TFLOP/s for H100/H200 SXM (dense bf16), 756 for H100 PCIe, 312 for
  A100, or --peak-tflops. Target: MFU >= 40% on one H100.
- Memory: rank 0's peak allocated / reserved GPU memory from the training rows of metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, need_shared, print_json, print_table, step_times, train_rows  # noqa: E402

LLAMA_1B = {"hidden_size": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "intermediate_size": 8192}
TINY = {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate_size": 192}
PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0))


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


def flops_per_token(config: dict, seq_len: int) -> tuple[float, int, int]:
    """(FLOPs per trained token, parameters, matmul parameters) of a Llama config.json."""
    h, L, v = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * config["intermediate_size"] + 2 * h  # q,o + k,v + MLP + norms
    params = L * per_layer + h + v * h * (1 if config.get("tie_word_embeddings") else 2)
    matmul = L * (per_layer - 2 * h) + v * h  # the LM head multiplies; the embedding lookup does not
    return 6 * matmul + 12 * L * h * seq_len, params, matmul


def kolm(*args: str, launcher: list[str] | None = None) -> None:
    cmd = [*(launcher or [sys.executable, "-m"]), "kolm.cli", *map(str, args)]
    subprocess.run(cmd, check=True, cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="first steps not counted (warm-up, allocator)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--zero", default="zero3", help="DeepSpeed config in train/deepspeed/ (zero2, zero3, ...)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: from the GPU name)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model, plain process: checks this script")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    shared = need_shared()

    import torch
    import yaml

    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench/mfu.py needs a CUDA GPU (use --smoke to check the script on CPU)")
    root = Path(args.output or tempfile.mkdtemp(prefix="kolm-bench-mfu-"))
    root.mkdir(parents=True, exist_ok=True)
    seq_len, mb = (128, 2) if args.smoke else (args.seq_len, args.micro_batch)
    shape = TINY if args.smoke else LLAMA_1B
    tok = shared / "tokenizers" / "llama3"
    kolm("model", "init", "--tokenizer", tok, "--output", root / "model", "--hidden-size", shape["hidden_size"],
         "--layers", shape["layers"], "--heads", shape["heads"], "--kv-heads", shape["kv_heads"],
         "--intermediate-size", shape["intermediate_size"], "--max-position-embeddings", max(seq_len, 2048),
         "--tie-word-embeddings", "--overwrite")
    corpora = shared / "corpora"
    data_recipe = {"tokenizer": str(tok), "seq_len": seq_len, "seed": 0, "mix": {"ko": 0.5, "en": 0.5},
                   "sources": [{"name": "ko", "lang": "ko", "paths": [str(corpora / "ko_dev.txt")], "max_epochs": 20.0},
                               {"name": "en", "lang": "en", "paths": [str(corpora / "en_dev.txt")], "max_epochs": 1.0}],
                   "validation": {"fraction": 0.01, "min_docs": 4, "max_docs": 16}, "progress": False}
    (root / "data.yaml").write_text(yaml.safe_dump(data_recipe))
    kolm("data", "build", root / "data.yaml", "--output", root / "data", "--overwrite")
    run_dir = root / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    recipe = {"model": str(root / "model"), "data": str(root / "data"), "output": str(run_dir),
              "micro_batch_size": mb, "grad_accum": 1, "precision": "fp32" if args.smoke else "bf16",
              "deepspeed": None if args.smoke else args.zero, "gradient_checkpointing": args.gradient_checkpointing,
              "optim": {"lr": 3e-4, "warmup_steps": 5},
              "stages": [{"name": "full", "kind": "full", "max_steps": args.steps}],
              "eval": {"every": 0}, "checkpoint": {"every": 10 * args.steps, "keep": 2}}
    (root / "cpt.yaml").write_text(yaml.safe_dump(recipe))
    env_launch = None if args.smoke else ["deepspeed", "--num_gpus", "1", "--module"]
    kolm("train", "cpt", root / "cpt.yaml", launcher=env_launch)

    train = train_rows(run_dir)
    times = step_times(train)[args.skip:]
    if not times:
        sys.exit(f"too few steps to time: {len(train)} training rows, --skip {args.skip}")
    step_s = statistics.median(times)
    config = json.loads((root / "model" / "config.json").read_text())
    fpt, params, matmul = flops_per_token(config, seq_len)
    tokens_per_step = mb * seq_len
    tps = tokens_per_step / step_s
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or (None if args.smoke else peak_tflops(device))
    mfu = fpt * tps / (peak * 1e12) if peak else None
    mem = train[-1]
    table = [{"device": device, "params": f"{params / 1e9:.3f}B", "zero": "none" if args.smoke else args.zero,
              "batch": f"{mb} x {seq_len}", "median step s": round(step_s, 4), "tokens/s": round(tps, 1),
              "TFLOP/s": round(fpt * tps / 1e12, 2), "MFU": f"{mfu:.1%}" if mfu is not None else "-",
              "peak alloc GiB": mem.get("gpu_max_allocated_gib", "-"),
              "peak reserved GiB": mem.get("gpu_max_reserved_gib", "-")}]
    print_table(table, f"kolm train cpt, Llama {shape['layers']}x{shape['hidden_size']} random init, "
                       f"{args.steps} steps (first {args.skip} not counted); FLOPs/token {fpt / 1e9:.2f} G")
    if mfu is not None:
        print(f"\ntarget: MFU >= 40% -> {mfu:.1%} {'PASS' if mfu >= 0.4 else 'FAIL'}")
    print_json("mfu", {"rows": table, "mfu": mfu, "params": params, "matmul_params": matmul,
                       "flops_per_token": fpt, "step_times": times, "env": {"cuda": os.environ.get(
                           "CUDA_VISIBLE_DEVICES")}})


if __name__ == "__main__":
    main()
