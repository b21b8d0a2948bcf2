"""Where bf16 is fast: the one place kolm decides what ``precision: auto`` means.

bf16 *autocast* (matmuls in bf16, weights, optimizer state and losses in float32) pays where the hardware has bf16
matrix units: a CUDA GPU that supports bf16, or a CPU with AVX-512 BF16 or AMX (Intel Cooper Lake, Sapphire Rapids
and later; AMD Zen 4 and later). There a CPT step of SmolLM2-135M runs 1.84x as fast as in float32, with held-out
bits per byte within 0.4% after the same steps (bench/precision.py, Sapphire Rapids with AMX). Elsewhere (AVX2 or
plain AVX-512 CPUs, where oneDNN emulates bf16; ARM CPUs, not measured) ``auto`` stays in float32; ``precision:
bf16`` forces it.

``ONEDNN_MAX_CPU_ISA`` (or its older name ``DNNL_MAX_CPU_ISA``) set below ``AVX512_CORE_BF16`` (``AVX2``,
``AVX512_CORE``, ...) keeps oneDNN, which runs torch's bf16 matmuls on a CPU, off the bf16 units: a CPU that has
them then counts as one that has not. That is also how a machine without them is emulated on one with them::

    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 kolm demo   # float32, AVX2 kernels
"""

from __future__ import annotations

import os

# oneDNN's ISA caps (its CPU dispatcher control) that leave out the bf16 dot-product instructions (AVX512_BF16, AMX):
# AVX2_VNNI_2 converts to and from bf16 but has no bf16 matmul. Any other value (AVX512_CORE_BF16, the AMX and
# AVX10 levels, ALL, DEFAULT, or one this list does not know) does not cap bf16.
ONEDNN_BELOW_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS",
                               "AVX512_CORE", "AVX512_CORE_VNNI"})


def onednn_caps_bf16() -> bool:
    """True when ``ONEDNN_MAX_CPU_ISA`` (else ``DNNL_MAX_CPU_ISA``) keeps oneDNN below AVX512_CORE_BF16."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return isa.strip().upper() in ONEDNN_BELOW_BF16


def fast_bf16(device_type: str) -> bool:
    """True where bf16 matmuls are faster than float32 on ``device_type`` ("cuda" or "cpu") of this machine: on a
    CPU, where it has AVX-512 BF16 or AMX and oneDNN may use them (:func:`onednn_caps_bf16`)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        has_units = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(has_units) and not onednn_caps_bf16()
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
