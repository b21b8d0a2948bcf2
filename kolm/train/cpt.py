"""``kolm train cpt``: staged continual pretraining on the HF Trainer, plain or under DeepSpeed ZeRO-2/3.

    kolm train cpt train/cpt_tiny_cpu.yaml                                  # one process (debugging)
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 -m kolm.cli train cpt RECIPE   # 2 CPU ranks
    deepspeed --num_gpus 8 -m kolm.cli train cpt train/cpt_llama2_ko.yaml    # one node; --hostfile for many

The run folder holds ``recipe.yaml`` (resolved), ``data_manifest.json``, ``metrics.jsonl`` (training loss and
online Korean/English bits-per-byte on the validation splits and ``eval.sets``; the same numbers go to the
``report_to`` loggers, see :mod:`kolm.train.metrics`), ``stages/NN-name/`` (checkpoints, ``final/`` model) and
``final/``. Everything that can be checked is checked before training starts (see :func:`preflight`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.artifacts import DataFolder, RunFolder, StageFolder, find_new_token_start
from kolm.artifacts.tokenizer_match import check_manifest_tokenizer
from kolm.errors import KolmError
from kolm.io.files import folder_bytes, move_into_place
from kolm.io.models import check_model_folder
from kolm.io.tokenizers import copy_tokenizer_files
from kolm.train.config import DEEPSPEED_PRESETS, CptConfig
from kolm.train.run_state import (
    barrier,
    checkpoint_need,
    ends_on_full_disk,
    is_main,
    release_shared_memory,
    resume_point,
    rewind_metrics,
)
from kolm.train.signals import StopSignals

# the DeepSpeed presets are package data (a regular `pip install .` carries them); train/deepspeed/ links to them
PRESETS_DIR = Path(__file__).resolve().with_name("deepspeed")


@dataclass
class Preflight:
    data: DataFolder
    seq_len: int
    new_token_start: int | None
    prefix_id: int
    eval_sets: list[Any]  # kolm.train.online_eval.EvalSet: validation splits and eval.sets
    ds_config: dict[str, Any] | None
    lang_tokens: tuple[list[str], Any] | None  # languages, cumulative tokens per language per packed sequence
    teacher: Any = None  # kolm.train.teacher.TeacherPlan when the recipe has a teacher


def deepspeed_config(spec: str | None) -> dict[str, Any] | None:
    if not spec:
        return None
    path = PRESETS_DIR / f"{spec}.json" if spec in DEEPSPEED_PRESETS else Path(spec)
    if not path.is_file():
        raise KolmError(f"deepspeed: {spec!r} is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor a JSON file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KolmError(f"deepspeed: {path} is not valid JSON: {e}") from None


def preflight(cfg: CptConfig) -> Preflight:
    """Refuse a bad run before anything is written: a folder that is not this run's, cut or corrupt weights and data
    shards, vocab/tokenizer/data mismatches (tokenizers compared by content), missing splits, seq_len limits."""
    from kolm.train.recipes import with_recipe

    cfg = with_recipe(cfg, announce=False)  # a recipe without stages: the ones kolm chooses (run() said which)
    model, data = Path(cfg.model), DataFolder(cfg.data)
    if not cfg.overwrite:
        RunFolder(cfg.output).check_owner(cfg.model, cfg.data, resume=cfg.resume)
    check_model_folder(model)  # also reads every safetensors header: a cut file is named here
    if not (model / "tokenizer.json").is_file():
        raise KolmError(f"model: {model} has no tokenizer.json beside the weights")
    manifest = data.manifest
    mcfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    check_manifest_tokenizer(manifest, model / "tokenizer.json", data.path)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    n_tok = tokenizer.get_vocab_size(with_added_tokens=True)
    vocab = int(mcfg.get("vocab_size") or mcfg.get("text_config", {}).get("vocab_size", 0))
    if vocab < n_tok:
        raise KolmError(f"model/tokenizer vocab mismatch: the model has {vocab} embedding rows, the tokenizer "
                        f"{n_tok} tokens; run `kolm model resize` first")
    max_pos = int(mcfg.get("max_position_embeddings") or 0)
    if max_pos and manifest.seq_len > max_pos:
        raise KolmError(f"seq_len {manifest.seq_len} of the data is above the model's limit (max_position_embeddings "
                        f"{max_pos}); rebuild the data with a smaller seq_len")
    data.check_splits(validation=False)  # the validation splits that are used are read and checked below
    new_start = cfg.new_token_start if cfg.new_token_start is not None else find_new_token_start(model)
    for what, needs in (("embeddings stage", "embeddings" in {s.kind for s in cfg.stages}),
                        ("new_rows_lr", any(s.new_rows_lr is not None for s in cfg.stages))):
        if needs and new_start is None:
            raise KolmError(f"{what}: cannot tell which rows are new (no resize.json/extension.json in the model "
                            f"folder); set new_token_start")
    if manifest.prefix_id is None:
        raise KolmError("data: the tokenizer has neither BOS nor EOS; bits-per-byte needs one to start documents")
    from kolm.train.metrics import check_report_to
    from kolm.train.online_eval import cpt_eval_sets

    check_report_to(cfg.report_to)
    teacher = None
    if cfg.teacher.enabled and any(s.teacher for s in cfg.stages):
        from kolm.train.teacher import plan_teacher

        teacher = plan_teacher(cfg.teacher, model, vocab)
    eval_sets = cpt_eval_sets(cfg.eval, data, tokenizer)
    return Preflight(data, manifest.seq_len, new_start, int(manifest.prefix_id), eval_sets,
                     deepspeed_config(cfg.deepspeed), data.lang_tokens(), teacher)


def _training_args(cfg: CptConfig, stage: Any, sdir: Path, ds: dict | None) -> Any:
    import torch
    from transformers import TrainingArguments

    from kolm.train.metrics import report_to_arg

    bf16 = _bf16(cfg)
    sched_kwargs = {"min_lr_rate": cfg.optim.min_lr_ratio} if cfg.optim.scheduler == "cosine_with_min_lr" else {}
    return TrainingArguments(
        output_dir=str(sdir), max_steps=stage.max_steps, per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=stage.lr or cfg.optim.lr,
        warmup_steps=cfg.optim.warmup_steps if stage.warmup_steps is None else stage.warmup_steps,
        lr_scheduler_type=cfg.optim.scheduler, lr_scheduler_kwargs=sched_kwargs,
        weight_decay=0.0 if stage.kind == "embeddings" else cfg.optim.weight_decay,
        adam_beta1=cfg.optim.beta1, adam_beta2=cfg.optim.beta2, adam_epsilon=cfg.optim.eps,
        max_grad_norm=cfg.optim.max_grad_norm, logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.checkpoint.every, save_total_limit=cfg.checkpoint.keep,
        report_to=report_to_arg(cfg.report_to),
        seed=cfg.seed, data_seed=cfg.seed, bf16=bf16, deepspeed=ds, remove_unused_columns=False,
        dataloader_drop_last=True, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False, **({"activation_checkpointing": True} if cfg.gradient_checkpointing else {}),
    )


def _bf16(cfg: CptConfig) -> bool:
    """bf16 for this run (:func:`kolm.precision.use_bf16`), as autocast over float32 weights without DeepSpeed."""
    from kolm.precision import use_bf16

    return use_bf16(cfg.precision, bool(cfg.deepspeed))


def _load_model(path: Path, cfg: CptConfig) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if cfg.precision == "bf16" and cfg.deepspeed else torch.float32
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True,
                                                trust_remote_code=cfg.trust_remote_code)


def _stage_dataset(train: Any, offset: int, n: int) -> Any:
    """Sequences [offset, offset + n) of the train split in its (seeded) order, wrapping into further epochs."""
    return train.select([(offset + i) % len(train) for i in range(n)])


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    x = torch.tensor([r["input_ids"] for r in rows], dtype=torch.long)
    return {"input_ids": x, "labels": x.clone()}


def _save_final(trainer: Any, stage: Any, src: Path, sf: StageFolder, cfg: CptConfig) -> None:
    """Write the stage's final plain model (LoRA merged) with the tokenizer files beside it."""
    import torch.distributed as dist

    final = sf.final
    tmp = final.with_name(final.name + ".tmp")
    if is_main() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.save_model(str(sf.adapter if stage.kind == "lora" else tmp))  # gathers ZeRO-3 partitions
    if is_main():
        if stage.kind == "lora":  # adapters (+ trained token rows) merged into a plain model on rank 0
            from peft import PeftModel

            merged = PeftModel.from_pretrained(_load_model(src, cfg), str(sf.adapter)).merge_and_unload()
            merged.save_pretrained(str(tmp))
        copy_tokenizer_files(src, tmp, keep_existing=True)
        move_into_place(tmp, final)  # a fixed temporary name: every ZeRO-3 rank saves into the same folder
        StageFolder.mark_done(final)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _start_run(cfg: CptConfig, pre: Preflight) -> RunFolder:
    """Initialise distributed training if the recipe asks for DeepSpeed, refuse a used run folder, write the recipe
    and the data manifest beside the run."""
    if pre.ds_config is not None:
        import os

        import deepspeed

        if "WORLD_SIZE" not in os.environ:
            raise KolmError("deepspeed is set in the recipe: launch with the `deepspeed` launcher (see train/cpt.sh), "
                            "or set deepspeed: null for a plain single-process run")
        from kolm import console

        with console.prints_to_log("DeepSpeed"):  # its "... built successfully" on every rank: into kolm.log
            deepspeed.init_distributed()  # before TrainingArguments: ZeRO-3 sizes batches and partitions by world size
        release_shared_memory()
    run = RunFolder(cfg.output)
    if not cfg.resume and not cfg.overwrite and run.has_started():
        raise KolmError(f"output: {run.path} already has a run; pass --resume to continue it or choose a new folder")
    if is_main():
        from kolm.config import save

        if cfg.overwrite and run.path.exists():
            shutil.rmtree(run.path) if run.path.is_dir() else run.path.unlink()
        run.path.mkdir(parents=True, exist_ok=True)
        save(cfg, run.recipe)
        shutil.copy2(pre.data.manifest_path, run.data_manifest)
    return run


def _train_stage(cfg: CptConfig, pre: Preflight, run: RunFolder, i: int, src: Path, train: Any, offset: int,
                 step_offset: int, args: Any, n_seq: int, signals: StopSignals, tb_dir: str,
                 callbacks: tuple[Any, ...] = ()) -> None:
    """Run stage ``i`` from model ``src`` (resuming from its newest complete checkpoint with ``--resume``) and write
    its final model; exits with 128+signal after a checkpoint when a stop was requested."""
    from kolm.train.callbacks import StopOnSignal
    from kolm.train.stages import (
        T2Head,
        setup_embeddings_stage,
        setup_full_stage,
        setup_layers_stage,
        setup_lora_stage,
    )

    stage, sf = cfg.stages[i], run.stage(i, cfg.stages[i].name)
    ckpt = resume_point(sf.path) if cfg.resume else None  # rank 0 also removes incomplete checkpoints
    if is_main():
        rewind_metrics(run.metrics, i, step_offset + ckpt[1] if ckpt else None)
    barrier()
    model = _load_model(src, cfg)
    handles: list[Any] = []
    if stage.kind == "embeddings":
        handles = setup_embeddings_stage(model, pre.new_token_start)
    elif stage.kind == "full":
        setup_full_stage(model)
    elif stage.kind == "layers":
        setup_layers_stage(model, stage.layers)
    else:
        model = setup_lora_stage(model, stage.lora, pre.new_token_start, cfg.seed)
    t2 = T2Head(model) if stage.t2_head else None
    stop = StopOnSignal(signals)
    teacher = _stage_teacher(cfg, pre, stage, step_offset)
    trainer = _make_trainer(cfg, pre, run, i, model, args, _stage_dataset(train, offset, n_seq), step_offset, offset,
                            at_start=i == 0 and ckpt is None, stop=stop, tb_dir=tb_dir, teacher=teacher, t2=t2)
    for callback in callbacks:
        trainer.add_callback(callback)
    _check_distributed(trainer, pre.ds_config is not None)
    with ends_on_full_disk(run.path, f"a checkpoint of stage {stage.name}",
                           lambda: checkpoint_need(sf.path, trainer.model, pre.ds_config is not None)):
        trainer.train(resume_from_checkpoint=str(ckpt[0]) if ckpt else None)
    for h in handles:
        h.remove()
    if teacher is not None:
        teacher.close()
    if t2 is not None:
        t2.drop()
    if stop.stopped_by_signal:
        _stop(signals, f"at step {step_offset + trainer.state.global_step}; the checkpoint is saved")
    with ends_on_full_disk(run.path, f"the final model of stage {stage.name}", lambda: folder_bytes(src)):
        _save_final(trainer, stage, src, sf, cfg)


def run(cfg: CptConfig, callbacks: tuple[Any, ...] = ()) -> Path:
    """Train the recipe's stages; ``callbacks`` (``transformers.TrainerCallback``) join every stage's Trainer after
    kolm's own (the library hook bench/extension_pays.py uses for its timed snapshots)."""
    from kolm.train.recipes import with_recipe

    cfg = with_recipe(cfg)  # the stages and teacher kolm chooses where the recipe leaves them out
    pre = preflight(cfg)
    train = pre.data.load_train()
    fresh = cfg.overwrite or not Path(cfg.output).exists()
    run_dir = _start_run(cfg, pre)
    try:
        return _run_stages(cfg, pre, run_dir, train, callbacks)
    except Exception:
        # a failure before anything was trained (e.g. the model does not load) leaves no recipe.yaml behind that
        # would make the folder look like a run
        if fresh and is_main() and not run_dir.has_started():
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def _stage_teacher(cfg: CptConfig, pre: Preflight, stage: Any, step_offset: int) -> Any:
    """The teacher of this stage (loaded here, placed beside the student by the Trainer), or None: no teacher in the
    recipe, the stage does not use it, or the run is past ``teacher.until_step``."""
    until = cfg.teacher.until_step
    if pre.teacher is None or not stage.teacher or (until is not None and step_offset >= until):
        return None
    import torch

    from kolm.train.teacher import Teacher

    plan = pre.teacher
    bf16_weights = (cfg.precision == "bf16" and bool(cfg.deepspeed)) or (torch.cuda.is_available() and _bf16(cfg))
    return Teacher.load(cfg.teacher, plan.path, plan.pieces, plan.n_base, plan.n_rows, bf16_weights=bf16_weights,
                        trust_remote_code=cfg.trust_remote_code)


def _run_stages(cfg: CptConfig, pre: Preflight, run_dir: RunFolder, train: Any, callbacks: tuple[Any, ...]) -> Path:
    src, offset, step_offset = Path(cfg.model), 0, 0
    tb_dir = str(run_dir.tensorboard_session())  # one folder for all stages of this session
    with StopSignals() as signals:
        for i, stage in enumerate(cfg.stages):
            sf = run_dir.stage(i, stage.name)
            args = _training_args(cfg, stage, sf.path, pre.ds_config)  # before loading: ZeRO-3 partitioned init
            n_seq = stage.max_steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            if not sf.done:
                if signals.stop_requested():  # between stages: the finished stages are the checkpoint
                    _stop(signals, f"before stage {stage.name}")
                _train_stage(cfg, pre, run_dir, i, src, train, offset, step_offset, args, n_seq, signals, tb_dir,
                             callbacks)
            src, offset, step_offset = sf.final, offset + n_seq, step_offset + stage.max_steps
    if is_main():
        with ends_on_full_disk(run_dir.path, "the run's final model", lambda: folder_bytes(src)):
            _copy_final(src, run_dir.final)
        print(f"kolm train cpt: {len(cfg.stages)} stage(s), {step_offset} steps, "
              f"{'bf16 autocast' if _bf16(cfg) else 'fp32'} -> {run_dir.final}", flush=True)
    return run_dir.final


def _stop(signals: StopSignals, where: str) -> None:
    """Exit with 128 + signal after a stop request (the checkpoint is written; every rank calls this)."""
    status = signals.stopped()
    if is_main():
        print(f"kolm: stopped {where}. Continue with: kolm train cpt ... --resume", flush=True)
    raise SystemExit(status)


def _copy_final(src: Path, last: Path) -> None:
    """Copy the last stage's model to RUN/final through a temporary folder (a kill never leaves half a model)."""
    tmp = last.with_name(last.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    move_into_place(tmp, last)


def embedding_lr_groups(optimizer: Any, model: Any, lr: float) -> None:
    """Move the input embeddings and LM head (:func:`kolm.train.stages.embedding_params`) into parameter groups of
    their own with peak lr ``lr``, each keeping its group's other settings (weight decay). Done before the
    scheduler is built, which scales every group from its own peak."""
    from kolm.train.stages import embedding_params

    emb = {id(p) for p in embedding_params(model)}
    added = []
    for group in optimizer.param_groups:
        mine = [p for p in group["params"] if id(p) in emb]
        if mine:
            group["params"] = [p for p in group["params"] if id(p) not in emb]
            added.append({**{k: v for k, v in group.items() if k != "params"}, "params": mine, "lr": lr})
    if not added:
        raise KolmError("embedding_lr: the optimizer holds no embedding or LM-head weights (are they frozen?)")
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in added:
        optimizer.add_param_group(group)


def new_rows_lr_hooks(optimizer: Any, model: Any, start: int, lr: float) -> list[Any]:
    """Make each optimizer step move the rows from ``start`` on (the added tokens) of the input embeddings and LM
    head as if their peak lr were ``lr``: their update is scaled by ``lr`` / the peak lr of the group that holds
    them (so the schedule still applies), every other row is left as the step made it. Adam's update is invariant
    to a gradient's scale, so the update itself is scaled, around ``optimizer.step`` (torch's step hooks). Returns
    the hook handles."""
    from kolm.train.stages import embedding_params

    weights = embedding_params(model)
    ratio = []
    for w in weights:
        group = next((g for g in optimizer.param_groups if any(p is w for p in g["params"])), None)
        if group is None:
            raise KolmError("new_rows_lr: the optimizer holds no embedding or LM-head weights (are they frozen?)")
        ratio.append(lr / group["lr"])  # the group's peak: no scheduler has scaled it yet
    before: list[Any] = []

    def pre(*_: Any) -> None:
        before[:] = [w.detach()[start:].clone() for w in weights]

    def post(*_: Any) -> None:
        import torch

        with torch.no_grad():
            for w, old, k in zip(weights, before, ratio, strict=True):
                new = w[start:]
                new.copy_(old + k * (new - old))
        before.clear()

    return [optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post)]


def _check_distributed(trainer: Any, want_deepspeed: bool) -> None:
    """Fail loudly rather than train every rank on the same data or without ZeRO."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if trainer.args.world_size != world:
        raise KolmError(f"the Trainer sees {trainer.args.world_size} process(es) but WORLD_SIZE is {world}")
    if want_deepspeed and not trainer.is_deepspeed_enabled:
        raise KolmError("deepspeed is set in the recipe but the Trainer did not enable it")


def _make_trainer(cfg: CptConfig, pre: Preflight, run: RunFolder, i: int, model: Any, args: Any, dataset: Any,
                  step_offset: int, seq_offset: int, *, at_start: bool, stop: Any, tb_dir: str,
                  teacher: Any = None, t2: Any = None) -> Any:
    """The stage's Trainer with kolm's metric channel: the loggers of ``report_to`` at the run's step, then the
    online evaluation, the stop on a signal, ``metrics.jsonl`` and the checkpoint markers, in that order. With a
    ``teacher`` (:class:`kolm.train.teacher.Teacher`), its terms join the loss and its numbers the log; so does the
    t+2 head's cross-entropy (``t2``, :class:`kolm.train.stages.T2Head`)."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    from kolm.train.callbacks import CheckpointCallback, MetricsJsonl
    from kolm.train.metrics import MetricChannel, TokenCounter, gpu_memory, report_at_run_step
    from kolm.train.online_eval import add_online_eval

    class _Trainer(MetricChannel, Trainer):
        """The data folder fixes the (seeded) order; read it sequentially so runs and resumes agree."""

        def _get_train_sampler(self, *a: Any, **k: Any) -> Any:
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            until = cfg.teacher.until_step
            taught = teacher is not None and model.training and (
                until is None or step_offset + self.state.global_step < until)
            if not taught and (t2 is None or not model.training):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            # extra terms are sums over positions, normalised as the Trainer normalises the cross-entropy
            # (compute_loss): by the label tokens of the whole accumulated batch, times the ranks when that count is
            # over all of them (else by this micro-batch's, and the Trainer divides the sum by the accumulation steps)
            scaled = num_items_in_batch is not None and self.model_accepts_loss_kwargs
            scale = self.accelerator.num_processes if scaled and self.args.average_tokens_across_devices else 1
            if t2 is not None:
                t2_sum, n2 = t2.loss(inputs["input_ids"])
                loss = loss + t2_sum / (num_items_in_batch if scaled else n2) * scale
            if taught:
                parts, n = teacher.loss(outputs.logits, inputs["input_ids"], autocast=_bf16(cfg) and not cfg.deepspeed)
                added = (cfg.teacher.kd * parts["kd"] + cfg.teacher.chunk * parts["chunk"]) / (
                    num_items_in_batch if scaled else n) * scale
                teacher.record(parts, n, added if scaled else added / self.current_gradient_accumulation_steps,
                               self._globalstep_last_logged)
                loss = loss + added
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, *a: Any, **k: Any) -> Any:
            optimizer = super().create_optimizer(*a, **k)
            if stage.embedding_lr is not None:
                embedding_lr_groups(optimizer, self.model, stage.embedding_lr)
            if stage.new_rows_lr is not None:
                new_rows_lr_hooks(optimizer, self.model, pre.new_token_start, stage.new_rows_lr)
            return optimizer

    stage = cfg.stages[i]
    tokens = TokenCounter(step_offset=step_offset, tokens_per_step=len(dataset) // stage.max_steps * pre.seq_len,
                          seq_len=pre.seq_len, seq_offset=seq_offset, lang_tokens=pre.lang_tokens)
    trainer = _Trainer(model=model, args=args, train_dataset=dataset, data_collator=_collate,
                       metric_sources=[tokens, gpu_memory, *([teacher.metrics] if teacher is not None else [])])
    if teacher is not None:
        teacher.prepare(trainer)
    report_at_run_step(trainer, step_offset, tb_dir)
    add_online_eval(trainer, pre.eval_sets, cfg.eval, pre.prefix_id, pre.seq_len, at_start=at_start)
    for callback in (stop, MetricsJsonl(run.metrics, stage=stage.name, stage_index=i, step_offset=step_offset),
                     CheckpointCallback()):
        trainer.add_callback(callback)
    from kolm import console

    console.attach()  # the run folder is this run's now (checked, and made on rank 0 before the barrier)
    console.trainer_output(trainer, f"kolm train cpt: stage {stage.name}")
    return trainer
