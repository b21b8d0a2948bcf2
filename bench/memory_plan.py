"""Per-GPU memory plan for continual pretraining under ZeRO-2, ZeRO-3 and ZeRO-3 with CPU offload.

    python bench/memory_plan.py [--seq-len 4096] [--micro-batch 1] [--gpu-gb 80]

A model, not a measurement: the standard mixed-precision accounting of the ZeRO paper (bf16 parameters and
gradients, fp32 master weights and two fp32 Adam moments = 2 + 2 + 12 bytes per parameter) plus activations
with full activation checkpointing and fused (flash/SDPA) attention:

    activations = L * 2*b*s*h            (one bf16 checkpoint per layer)
                + 34*b*s*h               (the layer being recomputed; Korthikanti et al. 2022, no s^2 term)
                + b*s*V*(2 + 4)          (bf16 logits + the fp32 copy the loss takes)

ZeRO-3 also holds the gathered bf16 weights of about two layers (prefetch). "Fits" leaves 10% of the card free
for the allocator and the CUDA context. Offload moves fp32 states, gradients and parameter partitions to CPU RAM
(~18 bytes/parameter across the nodes) and keeps only gathered layers and activations on the GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_json, print_table  # noqa: E402

GB = 1024**3

# name: (parameters incl. the extended vocabulary, layers, hidden, intermediate, vocab)
MODELS = {
    "Llama-2-7B +16k ko": (6.87e9, 32, 4096, 11008, 48000),
    "SOLAR-10.7B +8k ko": (10.8e9, 48, 4096, 14336, 40000),
    "Llama-3-70B +6k ko": (70.7e9, 80, 8192, 28672, 134256),
}


def plan(params: float, layers: int, hidden: int, inter: int, vocab: int, strategy: str, n: int, s: int,
         b: int) -> dict[str, float]:
    act = layers * 2 * b * s * hidden + 34 * b * s * hidden + b * s * vocab * 6
    layer_params = 4 * hidden * hidden + 3 * hidden * inter
    if strategy == "ZeRO-2":
        p, g, o = 2 * params, 2 * params / n, 12 * params / n
    elif strategy == "ZeRO-3":
        p, g, o = 2 * params / n + 2 * 2 * layer_params, 2 * params / n, 12 * params / n
    else:  # ZeRO-3 + offload of optimizer and parameters
        p, g, o = 2 * 2 * layer_params, 0.0, 0.0
    return {"params": p / GB, "grads": g / GB, "optim": o / GB, "act": act / GB, "total": (p + g + o + act) / GB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--gpu-gb", type=float, default=80)
    args = ap.parse_args()
    usable = 0.9 * args.gpu_gb * 1e9 / GB
    rows = []
    for name, (params, layers, hidden, inter, vocab) in MODELS.items():
        for strategy in ("ZeRO-2", "ZeRO-3", "ZeRO-3 offload"):
            n_fit = next((n for n in (1, 2, 4, 8, 16, 32, 64, 128)
                          if plan(params, layers, hidden, inter, vocab, strategy, n, args.seq_len,
                                  args.micro_batch)["total"] <= usable), None)
            shown = n_fit or 8
            m = plan(params, layers, hidden, inter, vocab, strategy, shown, args.seq_len, args.micro_batch)
            rows.append({"model": name, "strategy": strategy, "GPUs shown": shown,
                         "params GB": round(m["params"], 1), "grads GB": round(m["grads"], 1),
                         "optim GB": round(m["optim"], 1), "activ. GB": round(m["act"], 1),
                         "total GB/GPU": round(m["total"], 1),
                         "min GPUs (80GB)": n_fit if n_fit else "never (params replicated)",
                         "CPU RAM GB": round(18 * params / GB) if strategy.endswith("offload") else "-"})
    print_table(rows, f"Per-GPU memory, seq_len {args.seq_len}, micro-batch {args.micro_batch}, bf16, activation "
                      f"checkpointing, {args.gpu_gb:.0f} GB cards (90% usable)")
    print_json("memory_plan", {"rows": rows, "seq_len": args.seq_len, "micro_batch": args.micro_batch})


if __name__ == "__main__":
    main()
