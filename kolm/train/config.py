"""Config of ``kolm train cpt``: the run, its stages, the optimiser, online evaluation and checkpoints.

A recipe (``train/*.yaml``) looks like::

    model: ../out/model-ko          # a model folder, e.g. from `kolm model resize`
    data: ../out/data-ko-en         # a folder from `kolm data build`
    output: ../out/run-cpt
    deepspeed: zero3                # zero2 | zero3 | zero3_offload | a DeepSpeed JSON file | null
    micro_batch_size: 4
    grad_accum: 8
    optim: {lr: 1.0e-4, weight_decay: 0.1, beta2: 0.95, warmup_steps: 100, min_lr_ratio: 0.1}
    stages:
      - {name: embeddings, kind: embeddings, max_steps: 500, lr: 1.0e-3}
      - {name: full, kind: full, max_steps: 5000}
    eval: {every: 100, max_docs: 256, sets: {ko: ../text/ko_heldout.txt, en: ../text/en_heldout.txt}}
    checkpoint: {every: 200, keep: 2}
    teacher: {model: auto, kd: 1.0, chunk: 1.0}   # the model before the resize as a teacher (kolm/train/teacher.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kolm.config import ConfigError, field
from kolm.model.lora import LLAMA_TARGETS

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3_offload")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (LLaMA recipe defaults); a stage may override lr and warmup."""

    lr: float = field(1e-4, help="peak learning rate")
    beta1: float = field(0.9, help="AdamW beta1")
    beta2: float = field(0.95, help="AdamW beta2 (LLaMA: 0.95)")
    eps: float = field(1e-8, help="AdamW epsilon")
    weight_decay: float = field(0.1, help="decoupled weight decay (not applied in the embeddings stage)")
    max_grad_norm: float = field(1.0, help="gradient clipping")
    warmup_steps: int = field(100, help="linear warm-up steps; every stage warms up again (re-warming)")
    min_lr_ratio: float = field(0.1, help="cosine decay ends at this fraction of the peak")
    scheduler: Literal["cosine_with_min_lr", "linear", "constant_with_warmup"] = field(
        "cosine_with_min_lr", help="schedule after warm-up")

    def __post_init__(self) -> None:
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ConfigError("optim: lr must be > 0, min_lr_ratio in [0, 1], warmup_steps >= 0")


@dataclass
class LoraStageConfig:
    """peft LoRA for the ``lora`` stage."""

    r: int = field(64, help="rank")
    alpha: int = field(128, help="scaling alpha")
    dropout: float = field(0.0, help="dropout on the LoRA input (0 keeps runs reproducible)")
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS), help="modules that get adapters")
    train_new_embeddings: bool = field(True, help="also train the embedding/LM-head rows of the added tokens")

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError("lora.r must be > 0")


@dataclass
class StageConfig:
    """One training stage. Stages run in order, each starting from the previous stage's final model."""

    name: str = field("stage", help="folder name of the stage")
    kind: Literal["embeddings", "full", "lora", "layers"] = field(
        "full", help="what trains: embeddings (the added rows only), full, lora, layers (the input embeddings, the LM "
                     "head and the decoder layers in `layers`)")
    max_steps: int = field(100, help="optimizer steps of this stage")
    lr: float | None = field(None, help="peak lr of this stage (default: optim.lr)")
    warmup_steps: int | None = field(None, help="warm-up of this stage (default: optim.warmup_steps)")
    embedding_lr: float | None = field(
        None, help="peak lr of the input embeddings and LM head in a full stage (default: the stage's lr); the "
                   "added rows start untrained and learn faster at a higher rate than the pretrained body")
    new_rows_lr: float | None = field(
        None, help="peak lr of only the added tokens' rows (input embeddings and LM head) in a full stage; every "
                   "other row keeps the stage's lr (or embedding_lr), so the new rows catch up without moving the "
                   "pretrained ones faster (not under DeepSpeed)")
    lora: LoraStageConfig = field(default_factory=LoraStageConfig, help="LoRA settings (kind: lora)")
    teacher: bool = field(True, help="use the recipe's teacher in this stage (when the recipe has one)")
    layers: list[int] = field(default_factory=lambda: [0, 1, -2, -1],
                              help="kind layers: the decoder layers that train (negative counts from the last)")
    t2_head: bool = field(False, help="also train an extra head, a copy of the LM head, that predicts the token "
                                      "after next from the same hidden state; its cross-entropy joins the loss and it "
                                      "is dropped when the stage ends (Yamaguchi et al. 2024; not under DeepSpeed)")

    def __post_init__(self) -> None:
        if self.max_steps <= 0:
            raise ConfigError(f"stages[{self.name}].max_steps must be > 0")
        for key in ("embedding_lr", "new_rows_lr"):
            value = getattr(self, key)
            if value is not None and (value <= 0 or self.kind != "full"):
                raise ConfigError(f"stages[{self.name}].{key}: must be > 0 and only in a full stage (an embeddings "
                                  f"stage trains only embeddings: set its lr)")
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"stages: name {self.name!r} must be alphanumeric (it names a folder)")


@dataclass
class OnlineEvalConfig:
    """Online evaluation during training: bits per byte over whole documents, per language, sent with the training
    numbers to metrics.jsonl (CPT), train_log.json (SFT/DPO) and the ``report_to`` loggers. ``sets`` are text files
    independent of the training mix (``{ko: ko_heldout.txt, en: en_heldout.txt}``), read like ``kolm eval --text``.
    Shared by ``kolm train cpt`` (section ``eval``, see :class:`CptEvalConfig`) and ``kolm train sft|dpo``."""

    every: int = field(50, help="evaluate every N optimizer steps (and at the start and end of training); 0: off")
    sets: dict[str, list[str]] = field(default_factory=dict, path=True,
                                       help="LANG: FILE (or [FILES]) to evaluate on, e.g. {ko: ko.txt, en: en.txt}: "
                                            ".txt (a document per line), .jsonl, .parquet (text_field)")
    max_docs: int = field(200, help="documents per language (the first N)")
    text_field: str = field("text", help="field of .jsonl rows / column of .parquet files in sets holding the text")
    nfc: bool = field(True, help="NFC-normalise the documents of sets (as `kolm data build` and `kolm eval` do)")
    batch_size: int = field(8, help="windows per forward pass")
    stride: int | None = field(None, help="window stride for documents longer than the window (default: half)")

    def __post_init__(self) -> None:
        from kolm.eval.run import LANG_RE

        if self.every < 0 or self.max_docs <= 0 or self.batch_size <= 0:
            raise ConfigError("eval: every must be >= 0, max_docs and batch_size > 0")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"eval.stride: must be >= 1, got {self.stride}")
        for lang, files in self.sets.items():
            if not LANG_RE.match(str(lang)):
                raise ConfigError(f"eval.sets: {lang!r} is not a language tag (e.g. ko, en)")
            if not files:
                raise ConfigError(f"eval.sets.{lang}: give a file")


@dataclass
class CptEvalConfig(OnlineEvalConfig):
    """Online evaluation of ``kolm train cpt``: the data folder's validation splits and/or ``sets``. A language in
    both is scored on its set (the split is not used; a note says so), so that every run can track the same
    Korean and English text whatever its training mix."""

    splits: bool = field(True, help="also evaluate on the data folder's validation splits; false: only eval.sets")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every > 0 and not self.splits and not self.sets:
            raise ConfigError("eval: nothing to evaluate (splits: false and no sets); give eval.sets or set every: 0")


@dataclass
class CheckpointConfig:
    every: int = field(100, help="save a checkpoint every N optimizer steps")
    keep: int = field(2, help="keep the last K complete checkpoints per stage (>= 2)")

    def __post_init__(self) -> None:
        if self.every <= 0 or self.keep < 2:
            raise ConfigError("checkpoint: every must be > 0 and keep >= 2 (the newest may be incomplete)")


@dataclass
class TeacherConfig:
    """The model from before the resize as a teacher (:mod:`kolm.train.teacher`): it reads each batch expanded into
    its own tokens, and the student learns from its predictions beside the data's cross-entropy."""

    model: str | None = field(None, path=True, keywords=("auto",),
                              help="teacher model folder; auto: the model the student's resize started from "
                                   "(resize.json); null: no teacher")
    kd: float = field(1.0, help="weight of the KL from the teacher's next-base-token distribution to the student's "
                                "grouped by first piece (exact at every position)")
    chunk: float = field(1.0, help="weight of chunk likelihood matching (ALM): the student's log-probability of each "
                                   "token against the teacher's summed log-probability of its pieces")
    temperature: float = field(100.0, help="ALM's binarisation temperature of the chunk term")
    until_step: int | None = field(None, help="run step after which the teacher is dropped (null: every step of the "
                                              "stages that use it)")
    max_length: int | None = field(None, help="teacher window in its own tokens (default: its max_position_embeddings);"
                                              " longer expanded sequences are read in overlapping windows")
    chunk_positions: int = field(2048, help="positions per chunk of the KL's softmax (bounds memory on large batches)")

    def __post_init__(self) -> None:
        if self.kd < 0 or self.chunk < 0 or self.temperature <= 0:
            raise ConfigError("teacher: kd and chunk must be >= 0 and temperature > 0")
        if self.model is not None and self.kd == 0 and self.chunk == 0:
            raise ConfigError("teacher: kd and chunk are both 0; set model: null for no teacher")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"teacher.max_length: must be >= 8, got {self.max_length}")
        if self.until_step is not None and self.until_step < 0:
            raise ConfigError(f"teacher.until_step: must be >= 0, got {self.until_step}")

    @property
    def enabled(self) -> bool:
        return self.model is not None


@dataclass
class CptConfig:
    """``kolm train cpt RECIPE.yaml``."""

    model: str = field(None, help="model folder (safetensors + tokenizer), e.g. from `kolm model resize`", path=True)
    data: str = field(None, help="data folder from `kolm data build`", path=True)
    output: str = field(None, help="run folder (stages, checkpoints, metrics.jsonl, final model)", path=True)
    stages: list[StageConfig] | None = field(
        None, help="stages in order; null: kolm's recipe for the model, sized to max_steps (kolm/train/recipes.py)")
    max_steps: int | None = field(None, help="the run's step budget when the recipe lists no stages (kolm chooses "
                                             "them for the model)")
    optim: OptimConfig = field(default_factory=OptimConfig, help="optimiser and schedule")
    eval: CptEvalConfig = field(default_factory=CptEvalConfig, help="online evaluation (bits per byte)")
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, help="checkpointing")
    teacher: TeacherConfig | None = field(None, help="the model before the resize as a teacher; null: none, or "
                                                          "kolm's choice when the recipe lists no stages")
    micro_batch_size: int = field(1, help="sequences per device per forward")
    grad_accum: int = field(1, help="gradient accumulation steps")
    deepspeed: str | None = field(None, path=True, keywords=DEEPSPEED_PRESETS,
                                  help="zero2 | zero3 | zero3_offload | path to a DeepSpeed JSON (or null)")
    precision: Literal["auto", "bf16", "fp32"] = field(
        "auto", help="auto: bf16 autocast where the GPU or CPU (AVX-512 BF16/AMX; not with DeepSpeed) has fast bf16, "
                     "else fp32")
    gradient_checkpointing: bool = field(False, help="recompute activations to save memory")
    new_token_start: int | None = field(
        None, help="first id of the added tokens (default: from the model folder's resize.json/extension.json)")
    seed: int = field(42, help="seed (model init of LoRA, data order is the data folder's)")
    report_to: list[str] = field(default_factory=list, help="loggers the Trainer reports every number to, e.g. "
                                                            "[tensorboard] (events in OUTPUT/runs/) or [wandb]")
    logging_steps: int = field(1, help="log the training loss every N steps")
    resume: bool = field(False, help="continue from the newest complete checkpoint in the run folder")
    overwrite: bool = field(False, help="replace an existing output folder that is not this run's (deletes it)")
    trust_remote_code: bool = field(False, help="allow custom model code from the hub (off by default)")

    def __post_init__(self) -> None:
        for name in ("model", "data", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite: choose one (--resume continues the run, --overwrite replaces it)")
        if self.micro_batch_size <= 0 or self.grad_accum <= 0:
            raise ConfigError("micro_batch_size and grad_accum must be > 0")
        if self.stages is None:
            if not self.max_steps or self.max_steps <= 0:
                raise ConfigError("stages or max_steps: list the stages, or give max_steps (> 0) and kolm chooses "
                                  "them for the model (kolm/train/recipes.py)")
            return
        if self.max_steps is not None:
            raise ConfigError("max_steps: the stages set their own steps; give max_steps without stages (kolm then "
                              "chooses them) or stages without max_steps")
        if not self.stages:
            raise ConfigError("stages: at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stages: names must be unique, got {names}")
        if self.deepspeed and any(s.t2_head for s in self.stages):
            raise ConfigError("stages: t2_head adds a module that DeepSpeed would have to partition after the model "
                              "was built; run it without deepspeed")
        if self.deepspeed and any(s.new_rows_lr is not None for s in self.stages):
            raise ConfigError("stages: new_rows_lr scales each optimizer step's update of the added rows, which "
                              "DeepSpeed keeps partitioned in its own optimizer; use embedding_lr under DeepSpeed")
