"""A ``kolm train cpt`` run folder: where each file of a run lives.

    RUN/recipe.yaml                         the resolved recipe
    RUN/data_manifest.json                  copy of the data folder's manifest.json
    RUN/metrics.jsonl                       training and evaluation rows (schema in kolm.train.callbacks)
    RUN/base_eval.json                      optional: `kolm eval` results of the base model (dashboard reference)
    RUN/stages/NN-name/checkpoint-N/        HF Trainer checkpoints (complete once kolm_complete.json lists them)
    RUN/stages/NN-name/adapter/             LoRA stages: the adapter beside the merged model
    RUN/stages/NN-name/final/KOLM_DONE      a stage's final model; the marker is written last
    RUN/final/                              the run's final model (a copy of the last stage's)
    RUN/runs/DATE_HOST/                     with report_to: [tensorboard], the events of one session (all stages)

Written by :mod:`kolm.train.cpt`; read by the dashboard, ``kolm push`` and resumption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kolm.errors import KolmError

DONE = "KOLM_DONE"


class StageFolder:
    """``RUN/stages/NN-name``."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def done(self) -> bool:
        return (self.final / DONE).is_file()

    @staticmethod
    def mark_done(final: Path) -> None:
        """Mark a stage's final model complete (call after every file of it is written)."""
        (final / DONE).write_text("complete\n")


class RunFolder:
    """Paths of one run folder (nothing is read until asked)."""

    RECIPE, DATA_MANIFEST, METRICS, BASE_EVAL = "recipe.yaml", "data_manifest.json", "metrics.jsonl", "base_eval.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def recipe(self) -> Path:
        return self.path / self.RECIPE

    @property
    def data_manifest(self) -> Path:
        return self.path / self.DATA_MANIFEST

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def base_eval(self) -> Path:
        return self.path / self.BASE_EVAL

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "runs"

    def tensorboard_session(self) -> Path:
        """A new folder name under ``runs/`` for this session's TensorBoard events (as the HF Trainer names them)."""
        from transformers.integrations.integration_utils import default_logdir

        return self.tensorboard_dir / Path(default_logdir()).name

    @property
    def stages_dir(self) -> Path:
        return self.path / "stages"

    def stage(self, index: int, name: str) -> StageFolder:
        return StageFolder(self.stages_dir / f"{index:02d}-{name}")

    def stage_finals(self) -> list[Path]:
        """Final model folders of the stages that have one, in stage order."""
        return sorted(p for p in self.stages_dir.glob("*/final") if p.is_dir())

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Does ``path`` look like a run folder (it has a recipe or metrics)?"""
        p = Path(path)
        return (p / RunFolder.METRICS).is_file() or (p / RunFolder.RECIPE).is_file()

    def kolm_recipe(self) -> dict[str, Any] | None:
        """The recipe of a kolm run folder (a readable recipe.yaml naming model, data and stages); None when the
        folder holds no such file (it is not a kolm run folder, or not yet one)."""
        try:
            recipe = self.read_recipe()
        except KolmError:
            return None
        return recipe if {"model", "data", "stages"} <= recipe.keys() else None

    def check_owner(self, model: str, data: str, *, resume: bool) -> None:
        """Refuse to write into a folder that is not this run's: an existing non-empty folder without a kolm
        recipe, or a kolm run of another model or data folder (``--overwrite`` replaces it instead). ``resume``
        continues only a kolm run."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise KolmError(f"output: {p} is a file, not a run folder")
        if not p.is_dir() or not any(p.iterdir()):
            if resume:
                raise KolmError(f"output: {p} holds no run to resume; drop --resume to start one")
            return
        recipe = self.kolm_recipe()
        if recipe is None:
            raise KolmError(f"output: {p} exists and is not a kolm run folder (no kolm {self.RECIPE}); choose a new "
                            "folder, or pass --overwrite to replace it and everything in it")
        for key, want in (("model", model), ("data", data)):
            had = Path(str(recipe[key]))  # relative paths are the working directory's of that run: when they
            if had.exists() and had.resolve() != Path(want).resolve():  # do not exist here, nothing to compare
                raise KolmError(f"output: {p} is a run of another {key} ({recipe[key]}, this recipe: {want}); "
                                "choose a new folder, or pass --overwrite to replace it")

    def has_started(self) -> bool:
        return self.stages_dir.is_dir() and any(self.stages_dir.iterdir())

    def read_recipe(self) -> dict[str, Any]:
        """The resolved recipe as a mapping ({} when there is none)."""
        import yaml

        if not self.recipe.is_file():
            return {}
        try:
            data = yaml.safe_load(self.recipe.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise KolmError(f"{self.recipe}: not valid YAML ({e})") from None
        return data if isinstance(data, dict) else {}
