"""``kolm demo``: runs the real model's pipeline (:mod:`kolm.demo.real`, SmolLM2-135M-Instruct, the default) or,
with ``--model tiny``, the tiny model's (:mod:`kolm.demo.run`, offline; the real one builds on its steps: choosing
here keeps the two from importing each other)."""

from __future__ import annotations

from typing import Any

from kolm.demo.run import DemoConfig, run_tiny

__all__ = ["DemoConfig", "run"]


def run(cfg: DemoConfig) -> dict[str, Any]:
    if cfg.model == "smollm2":
        from kolm.demo.real_plan import run_demo  # lazy: the real model's pipeline loads torch and downloads a model
        from kolm.errors import KolmError
        from kolm.model.zoo import ModelUnavailable

        try:
            return run_demo(cfg)
        except ModelUnavailable as e:
            raise KolmError(f"{e}; `kolm demo --model tiny` runs offline on a Llama it builds") from None
    return run_tiny(cfg)
