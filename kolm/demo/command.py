"""``kolm demo``: runs the tiny model's pipeline (:mod:`kolm.demo.run`) or, with ``--model smollm2``, the real
model's (:mod:`kolm.demo.real`, which builds on the steps of :mod:`kolm.demo.run`; choosing here keeps the two from
importing each other)."""

from __future__ import annotations

from typing import Any

from kolm.demo.run import DemoConfig, run_tiny

__all__ = ["DemoConfig", "run"]


def run(cfg: DemoConfig) -> dict[str, Any]:
    if cfg.model == "smollm2":
        from kolm.demo.real import run_demo  # lazy: the real model's pipeline loads torch and downloads a model

        return run_demo(cfg)
    return run_tiny(cfg)
