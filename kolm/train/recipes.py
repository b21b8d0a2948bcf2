"""kolm's CPT recipe for a model when a recipe names only ``model``, ``data``, ``output`` and ``max_steps``.

    kolm train cpt model=out/model-ko data=out/data output=out/run max_steps=2000

What kolm measured works best for that kind of model, sized to the step budget (bench/extension_pays.py,
docs/benchmarks.md#what-kolm-trains-by-default):

- **a model kolm extended** (``resize.json`` or ``extension.json`` beside it: rows were added): the stages and the
  teacher of :data:`EXTENDED`;
- **any other model**: one full fine-tuning stage of ``max_steps``.

The stages and teacher chosen are written to the run's ``recipe.yaml`` like any written recipe, so the run is
reproducible and ``--resume`` continues it. A recipe that lists ``stages`` (or a ``teacher`` section) gets what it
lists: only what it leaves out is chosen here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The recipe for an extended model, as measured on SmolLM2 (bench/extension_pays.py, docs/benchmarks.md): an
# embeddings stage that trains only the new rows for emb_share of the steps (at least emb_min, at most emb_max) at
# emb_lr, then full fine-tuning; a teacher section (TeacherConfig fields) or None. Measured at 20 to 250 steps of
# 2 x 256 tokens: the old default's embeddings stage (20 steps at 1e-2) left Korean at 1.49x the base after 19 steps
# where full fine-tuning from the first step was at 0.96x after 20, and it was still behind after 58; the teacher
# (kd 1, chunk 1) cost 1.6-2.6x the step time and, per step, moved in-domain Korean 1% and English 1.5-3% the wrong
# way for 3-4% on out-of-domain Korean. So: full fine-tuning from the first step, no teacher.
EXTENDED: dict[str, Any] = {"emb_share": 0.0, "emb_min": 0, "emb_max": 0, "emb_lr": 1e-3, "teacher": None}


@dataclass
class Chosen:
    """What :func:`choose` picked, and one line saying so."""

    stages: list[Any]  # kolm.train.config.StageConfig
    teacher: Any  # kolm.train.config.TeacherConfig
    line: str


def extended_rows(model: Path) -> int:
    """How many rows kolm's extension added to a model folder (0: not extended by kolm)."""
    import json

    from kolm.artifacts import find_new_token_start

    start = find_new_token_start(model)
    if start is None or not (model / "config.json").is_file():
        return 0
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    vocab = int(cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size", 0))
    return max(0, vocab - start)


def choose(model: Path, max_steps: int, stages: list[Any] | None, teacher: Any) -> Chosen:
    """The stages and the teacher of a run: as given, or chosen for ``model`` and ``max_steps`` where not given."""
    from kolm.train.config import StageConfig, TeacherConfig

    new = extended_rows(model)
    if stages is not None:
        return Chosen(stages, teacher if teacher is not None else TeacherConfig(), "")
    if not new:
        return Chosen([StageConfig(name="full", kind="full", max_steps=max_steps)],
                      teacher if teacher is not None else TeacherConfig(),
                      f"kolm's recipe for a model without added rows: full fine-tuning, {max_steps} steps")
    emb = min(EXTENDED["emb_max"], max(EXTENDED["emb_min"], round(EXTENDED["emb_share"] * max_steps)))
    out = []
    if emb and max_steps - emb >= 1:
        out.append(StageConfig(name="embeddings", kind="embeddings", max_steps=emb, lr=EXTENDED["emb_lr"]))
    out.append(StageConfig(name="full", kind="full", max_steps=max_steps - sum(s.max_steps for s in out)))
    if teacher is None:
        teacher = TeacherConfig(**EXTENDED["teacher"]) if EXTENDED["teacher"] else TeacherConfig()
    plan = " + ".join(f"{s.kind} {s.max_steps}" + (f" at lr {s.lr:g}" if s.lr else "") for s in out)
    taught = f", teacher {teacher.model}" if teacher.enabled else ""
    return Chosen(out, teacher, f"kolm's recipe for an extended model (+{new:,} rows): {plan} steps{taught}")


def with_recipe(cfg: Any, announce: bool = True) -> Any:
    """``cfg`` (a CptConfig) with its stages and teacher chosen where the recipe left them out; ``announce`` prints
    one line saying what was chosen (rank 0)."""
    if cfg.stages is not None and cfg.teacher is not None:
        return cfg
    chosen = choose(Path(cfg.model), cfg.max_steps or 0, cfg.stages, cfg.teacher)
    out = dataclasses.replace(cfg, stages=chosen.stages, teacher=chosen.teacher, max_steps=None)
    if chosen.line and announce:
        from kolm.train.run_state import is_main

        if is_main():
            print(f"kolm train cpt: {chosen.line}", flush=True)
    return out
