"""Where bf16 is fast: the one place kolm decides what ``precision: auto`` means.

bf16 *autocast* (matmuls in bf16, weights, optimizer state and losses in float32) pays where the hardware has bf16
matrix units: a CUDA GPU that supports bf16, or a CPU with AVX-512 BF16 or AMX (Intel Cooper Lake, Sapphire Rapids
and later; AMD Zen 4 and later). There a CPT step of SmolLM2-135M runs 1.84x as fast as in float32, with held-out
bits per byte within 0.4% after the same steps (bench/precision.py, Sapphire Rapids with AMX). Elsewhere (AVX2 or
plain AVX-512 CPUs, where oneDNN emulates bf16; ARM CPUs, not measured) ``auto`` stays in float32; ``precision:
bf16`` forces it.
"""

from __future__ import annotations


def fast_bf16(device_type: str) -> bool:
    """True where bf16 matmuls are faster than float32 on ``device_type`` ("cuda" or "cpu") of this machine."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def use_bf16(precision: str, deepspeed: bool = False) -> bool:
    """A training recipe's ``precision`` ("auto" | "bf16" | "fp32") resolved for this machine (its GPU if it has
    one, else its CPU). ``auto`` takes bf16 where it is fast, except on a CPU under DeepSpeed, whose bf16 mode keeps
    bf16 weights (a GPU setting)."""
    import torch

    if precision in ("bf16", "fp32"):
        return precision == "bf16"
    if precision != "auto":
        raise ValueError(f"precision: {precision!r} is not auto, bf16 or fp32")
    if torch.cuda.is_available():
        return fast_bf16("cuda")
    return fast_bf16("cpu") and not deepspeed
