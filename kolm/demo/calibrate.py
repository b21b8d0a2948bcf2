"""Measures this machine for ``kolm demo``'s time plan (:mod:`kolm.demo.plan`): seconds per training step of each
kind the demo's recipe uses, at the recipe's shape and under the precision the run will use.

    unit_s = measure(model_dir, [Probe("embeddings", 2, 256, bf16=True, new_rows=2000), Probe("full", 2, 256, ...)])

Every probe runs real steps on the model, loaded once (on the GPU where there is one, as the Trainer would): a
forward and a backward pass under the run's precision (bf16 autocast or float32), gradient clipping and an AdamW
step; one warm-up step, then timed ones. What trains is what the stage trains:

- ``embeddings``: the last ``new_rows`` rows of the embedding matrix (:func:`kolm.train.stages.setup_embeddings_stage`);
- ``full``: every parameter (:func:`kolm.train.stages.setup_full_stage`);
- ``lora``: a CPT LoRA stage, adapters plus the new rows (:func:`kolm.train.stages.setup_lora_stage`);
- ``sft``: a LoRA step of ``kolm train sft`` on ``batch`` rows;
- ``dpo``: a LoRA step of ``kolm train dpo``: the policy on chosen and rejected rows (``2 x batch``) and the
  reference's forward (the adapter disabled);
- ``forward``: seconds per token of a float32 forward without gradients (``kolm eval``'s bits per byte), and
  ``generate``: seconds per generated token (greedy, batch 1).

``load`` (seconds to load the model) is always measured. A new kind of stage adds its probe to :data:`PROBES`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMED_STEPS = 1  # after one warm-up step; the plan is re-made after every stage from the time actually spent
GENERATED = 8  # tokens the generate probe writes


@dataclass(frozen=True)
class Probe:
    """One kind of step at the recipe's shape: ``batch`` sequences of ``seq`` tokens, bf16 autocast or float32,
    ``new_rows`` added rows (embeddings, lora), LoRA rank ``lora_r`` (lora, sft, dpo)."""

    kind: str
    batch: int
    seq: int
    bf16: bool = False
    new_rows: int = 0
    lora_r: int = 16

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "batch": self.batch, "seq": self.seq, "bf16": self.bf16, "new_rows": self.new_rows,
                "lora_r": self.lora_r}


class _Bench:
    """The loaded model and what every probe needs: the device, a fixed batch of token ids, a timer."""

    def __init__(self, model: Any):
        import torch

        self.torch, self.model = torch, model
        self.device = next(model.parameters()).device
        self.vocab = int(model.get_input_embeddings().weight.shape[0])
        self.gen = torch.Generator().manual_seed(0)

    def ids(self, batch: int, seq: int) -> Any:
        return self.torch.randint(0, self.vocab, (batch, seq), generator=self.gen).to(self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def timed(self, fn: Callable[[], Any], steps: int = TIMED_STEPS) -> float:
        """Seconds of one call of ``fn`` after a warm-up call: the median of ``steps`` timed calls."""
        fn()
        times = []
        for _ in range(steps):
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    def train_step(self, model: Any, p: Probe, batch: int, extra: Callable[[], Any] | None = None) -> Callable:
        torch = self.torch
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-12)  # the model is thrown away after; its weights barely move
        x = self.ids(batch, p.seq)

        def step() -> None:
            model.train()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=p.bf16):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            if extra is not None:
                extra()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step


def _embeddings(b: _Bench, p: Probe) -> float:
    from kolm.train.stages import setup_embeddings_stage

    handles = setup_embeddings_stage(b.model, b.vocab - max(1, p.new_rows))
    try:
        return b.timed(b.train_step(b.model, p, p.batch))
    finally:
        for h in handles:
            h.remove()


def _full(b: _Bench, p: Probe) -> float:
    from kolm.train.stages import setup_full_stage

    setup_full_stage(b.model)
    return b.timed(b.train_step(b.model, p, p.batch))


def _lora(b: _Bench, p: Probe) -> float:
    from kolm.train.config import LoraStageConfig
    from kolm.train.stages import setup_lora_stage

    peft = setup_lora_stage(b.model, LoraStageConfig(r=p.lora_r, alpha=2 * p.lora_r), b.vocab - max(1, p.new_rows), 0)
    try:
        return b.timed(b.train_step(peft, p, p.batch))
    finally:
        b.model = peft.unload()


def _adapter(b: _Bench, p: Probe) -> Any:
    from peft import get_peft_model

    from kolm.model.lora import LLAMA_TARGETS, peft_lora_config

    for q in b.model.parameters():
        q.requires_grad_(False)
    cfg = peft_lora_config(b.model, r=p.lora_r, alpha=2 * p.lora_r, dropout=0.0, target_modules=LLAMA_TARGETS,
                           token_ids=[])
    return get_peft_model(b.model, cfg)


def _sft(b: _Bench, p: Probe) -> float:
    peft = _adapter(b, p)
    try:
        return b.timed(b.train_step(peft, p, p.batch))
    finally:
        b.model = peft.unload()


def _dpo(b: _Bench, p: Probe) -> float:
    peft = _adapter(b, p)
    x = b.ids(2 * p.batch, p.seq)

    def reference() -> None:
        with b.torch.no_grad(), peft.disable_adapter(), b.torch.autocast(b.device.type, dtype=b.torch.bfloat16,
                                                                           enabled=p.bf16):
            peft(input_ids=x)

    try:
        return b.timed(b.train_step(peft, p, 2 * p.batch, extra=reference))
    finally:
        b.model = peft.unload()


def _forward(b: _Bench, p: Probe) -> float:
    x = b.ids(p.batch, p.seq)
    b.model.eval()

    def fwd() -> None:
        with b.torch.no_grad():
            b.model(input_ids=x)

    return b.timed(fwd) / (p.batch * p.seq)


def _generate(b: _Bench, p: Probe) -> float:
    x = b.ids(1, p.seq)
    b.model.eval()
    new = GENERATED

    def gen() -> None:
        with b.torch.no_grad():
            b.model.generate(input_ids=x, attention_mask=b.torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)

    return b.timed(gen) / new


PROBES: dict[str, Callable[[_Bench, Probe], float]] = {
    "embeddings": _embeddings, "full": _full, "forward": _forward, "generate": _generate,
    # these wrap the model in peft adapters and unwrap it after: they run last
    "lora": _lora, "sft": _sft, "dpo": _dpo,
}
WRAPS = ("lora", "sft", "dpo")


def machine() -> dict[str, Any]:
    """What a calibration's numbers depend on besides the probes: the CPU (or GPU), the threads torch uses, the
    instruction-set caps in the environment, torch's version. A saved calibration is reused while these match."""
    import torch

    cpu = platform.processor()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        cpu = next((x.split(":", 1)[1].strip() for x in info.read_text().splitlines() if x.startswith("model name")),
                   cpu)
    env = {k: os.environ.get(k) for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                          "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": gpu, **env}


def measure(model_dir: str | Path, probes: list[Probe]) -> dict[str, float]:
    """Seconds per step of every probe's kind (``forward`` and ``generate``: per token) and ``load``, the seconds
    to load the model, on this machine now."""
    import torch
    from transformers import AutoModelForCausalLM

    unknown = sorted({p.kind for p in probes} - set(PROBES))
    if unknown:
        raise ValueError(f"no calibration probe for step kind(s) {unknown}; add one to kolm.demo.calibrate.PROBES")
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True)
    out = {"load": time.perf_counter() - t}
    if torch.cuda.is_available():
        model = model.to("cuda")
    bench = _Bench(model)
    for p in sorted(probes, key=lambda p: p.kind in WRAPS):
        out[p.kind] = PROBES[p.kind](bench, p)
    del bench, model
    return out
