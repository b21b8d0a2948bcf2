"""What ``kolm train sft`` and ``kolm train dpo`` share around trl: loading the model and tokenizer safely, checking
that they agree on the vocabulary, the peft LoRA config (:mod:`kolm.model.lora`, shared with the CPT ``lora``
stage; with the rows of added tokens when asked), trl's SFTConfig/DPOConfig built from kolm's recipe sections
(:func:`trl_config`: an explicit mapping plus the recipe's validated ``trl:`` arguments), and writing the adapter
with a record of the vocabulary it was trained on (``kolm_adapter.json``, which ``kolm merge-lora`` checks).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from kolm import console
from kolm.align.config import AlignConfig, LoraSection, TrainSection, is_main_process
from kolm.artifacts import EXTENSION_FILE, TokenizerExtension
from kolm.config import ConfigError, save, to_dict
from kolm.errors import KolmError
from kolm.io.files import apply_umask
from kolm.io.models import check_safetensors, resolve_pretrained
from kolm.io.tokenizers import tokenizer_fingerprint
from kolm.model.lora import peft_lora_config
from kolm.precision import use_bf16
from kolm.train.metrics import check_report_to, report_to_arg
from kolm.train.run_state import release_shared_memory

MODEL_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*"]
ADAPTER_META = "kolm_adapter.json"


def log(msg: str) -> None:
    if is_main_process():
        print(msg, file=sys.stderr, flush=True)


def check_output(cfg: AlignConfig) -> Path:
    """Refuse a non-empty output folder unless ``overwrite`` (only rank 0 looks: the others may already write)."""
    out = Path(cfg.output)
    if is_main_process() and out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise KolmError(f"output exists and is not empty: {out} (pass --overwrite to write into it)")
    if out.exists() and not out.is_dir():
        raise KolmError(f"output is a file, not a folder: {out}")
    return out


def model_folder(name: str, trust_remote_code: bool) -> Path:
    return resolve_pretrained(name, allow_patterns=MODEL_PATTERNS + (["*.py"] if trust_remote_code else []))


def load_fast_tokenizer(path: Path, trust_remote_code: bool) -> Any:
    """The fast tokenizer in ``path`` (its offsets locate assistant tokens), with an eos token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise KolmError(f"{path}: cannot load a tokenizer ({e})") from None
    if not getattr(tok, "is_fast", False):
        raise KolmError(f"{path}: a fast tokenizer (tokenizer.json) is needed for the assistant-token masks")
    if tok.eos_token is None:
        raise KolmError(f"{path}: the tokenizer has no eos_token; set it in tokenizer_config.json")
    return tok


def bf16_weights(bf16: bool, deepspeed: bool) -> bool:
    """Whether the weights themselves load in bf16: on a GPU and under DeepSpeed; on a CPU without DeepSpeed bf16
    is autocast over float32 weights (bf16 weights there would train in bf16 throughout)."""
    import torch

    return bf16 and (torch.cuda.is_available() or deepspeed)


def load_model(path: Path, bf16: bool, trust_remote_code: bool) -> Any:
    """Load safetensors weights only (``bf16``: in bf16, see :func:`bf16_weights`). Call it after the trainer
    arguments exist: with ZeRO-3 they make ``from_pretrained`` load the model partitioned (``zero.Init``)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_safetensors(path)  # a cut file fails here with its name, not deep inside from_pretrained
    try:
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code,
                                                    dtype=torch.bfloat16 if bf16 else torch.float32)
    except OSError as e:
        raise KolmError(f"{path}: cannot load the model from safetensors weights ({e})") from None


def embedding_rows(module: Any) -> int:
    """Rows of an embedding / LM head weight, also when ZeRO-3 has partitioned it."""
    w = module.weight
    return int(tuple(getattr(w, "ds_shape", w.shape))[0])


def check_vocab(model: Any, tokenizer: Any, model_dir: Path, tok_dir: Path) -> int:
    """The model's vocabulary size (embedding rows); raises when the tokenizer has ids the model has no rows for."""
    n_in = embedding_rows(model.get_input_embeddings())
    out = model.get_output_embeddings()
    n_out = embedding_rows(out) if out is not None else n_in
    n_cfg = getattr(model.config.get_text_config(), "vocab_size", n_in)
    if len({n_in, n_out, n_cfg}) > 1:
        raise KolmError(f"{model_dir}: input embeddings have {n_in} rows, the LM head {n_out}, config.json says "
                        f"vocab_size {n_cfg}; the model is inconsistent (resize it with `kolm model resize`)")
    if len(tokenizer) > n_in:
        raise KolmError(f"tokenizer {tok_dir} has {len(tokenizer)} tokens but model {model_dir} has only {n_in} "
                        "embedding rows: the tokenizer was extended and the model was not resized. Run `kolm model "
                        "resize --model MODEL --tokenizer TOKENIZER --output NEW` and train NEW.")
    return n_in


def new_token_ids(lora: LoraSection, vocab: int, folders: list[Path]) -> list[int]:
    """Ids whose embedding rows ``lora.train_new_tokens`` trains: explicit, else extension.json's ``added`` ids."""
    if lora.new_token_ids:
        ids = sorted(set(lora.new_token_ids))
        source = "lora.new_token_ids"
    else:
        found = next(((f, ext) for f in folders if (ext := TokenizerExtension.read(f)) is not None), None)
        if found is None:
            raise KolmError(f"lora.train_new_tokens: no {EXTENSION_FILE} (from `kolm vocab extend`) next to the model "
                            f"or tokenizer ({', '.join(map(str, folders))}); list the ids in lora.new_token_ids")
        ids, source = found[1].added_ids(), str(found[0] / EXTENSION_FILE)
    if not ids:
        raise KolmError(f"lora.train_new_tokens: {source} lists no token ids")
    if ids[-1] >= vocab:
        raise KolmError(f"lora.train_new_tokens: id {ids[-1]} from {source} is outside the model's {vocab} rows")
    return ids


# kolm's `train:` fields and the trl (TrainingArguments) fields they set one to one.
TRAIN_TO_TRL = {"learning_rate": "learning_rate", "epochs": "num_train_epochs", "max_steps": "max_steps",
                "batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
                "scheduler": "lr_scheduler_type", "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm",
                "logging_steps": "logging_steps", "seed": "seed"}
# trl fields that kolm sets from its own recipe fields (named here), or that would undo how kolm prepares the data
# and the model: `trl:` may not set them.
KOLM_SETS = {**{v: f"train.{k}" for k, v in TRAIN_TO_TRL.items()},
             "output_dir": "output", "deepspeed": "deepspeed", "report_to": "report_to", "bf16": "train.precision",
             "fp16": "train.precision", "warmup_steps": "train.warmup", "warmup_ratio": "train.warmup",
             "save_strategy": "train.save_steps", "save_steps": "train.save_steps",
             "activation_checkpointing": "train.gradient_checkpointing",
             "gradient_checkpointing": "train.gradient_checkpointing", "data_seed": "train.seed",
             "trust_remote_code": "trust_remote_code", "max_length": "data.max_length", "packing": "packing",
             "assistant_only_loss": "assistant_only_loss", "completion_only_loss": "assistant_only_loss",
             "chat_template_path": "chat_template", "beta": "beta", "loss_type": "loss_type",
             "truncation_mode": "data.max_length (kolm keeps the start of each row)",
             "dataset_kwargs": "data (kolm tokenizes the rows itself)",
             "dataset_text_field": "data (kolm tokenizes the rows itself)",
             "model_init_kwargs": "model (kolm loads the model itself)"}


def trl_config(cls: type, cfg: AlignConfig, train: TrainSection, bf16: bool, **method: Any) -> Any:
    """trl's ``cls`` (SFTConfig or DPOConfig) from kolm's sections, ``method``'s fields (max_length, beta...) and the
    recipe's ``trl:`` mapping, validated before any data is read.

    transformers 5 renamed gradient_checkpointing to activation_checkpointing and reads only the new name; trl still
    sets the old one (reentrant checkpointing for peft under ZeRO-3), so kolm sets the new names itself.
    """
    check_report_to(cfg.report_to)
    check_trl_fields(cls, cfg.trl)
    ds = cfg.deepspeed_config()
    kolm = {trl_name: getattr(train, name) for name, trl_name in TRAIN_TO_TRL.items()}
    with console.prints_to_log("DeepSpeed"):  # DeepSpeed's communication starts here (its prints: into the log)
        kolm.update(output_dir=str(cfg.output), data_seed=train.seed,
                    warmup_steps=int(train.warmup) if train.warmup >= 1 else train.warmup,
                    save_strategy="steps" if train.save_steps else "no", save_steps=train.save_steps or 500,
                    activation_checkpointing=train.gradient_checkpointing,
                    activation_checkpointing_kwargs={"use_reentrant": ds is not None}, bf16=bf16, fp16=False,
                    report_to=report_to_arg(cfg.report_to), deepspeed=ds, trust_remote_code=cfg.trust_remote_code,
                    **_cpu_deepspeed_state(ds), **_cpu_bf16(bf16, ds), **method)
        try:
            return cls(**kolm, **cfg.trl)
        except (TypeError, ValueError) as e:  # e.g. an unknown train.scheduler or trl.optim
            sections = "train: and trl: values" if cfg.trl else "train: values"
            raise ConfigError(f"trl's {cls.__name__} refuses the recipe's {sections}: {e}") from None


def check_trl_fields(cls: type, extra: dict[str, Any]) -> None:
    """The ``trl:`` keys must be fields of ``cls`` that kolm does not set itself."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    for key in extra:
        if key in KOLM_SETS:
            raise ConfigError(f"trl.{key}: set by kolm from `{KOLM_SETS[key]}`; set that instead")
        if key not in known:
            raise ConfigError(f"trl.{key}: not an argument of trl's {cls.__name__} (see its documentation)")


def _cpu_bf16(bf16: bool, ds: dict[str, Any] | None) -> dict[str, Any]:
    """bf16 on a CPU without DeepSpeed: transformers refuses bf16 without a GPU unless told to train on the CPU."""
    import torch

    return {"use_cpu": True} if bf16 and ds is None and not torch.cuda.is_available() else {}


def _cpu_deepspeed_state(ds: dict[str, Any] | None) -> dict[str, Any]:
    """DeepSpeed ranks on CPU (``DS_ACCELERATOR=cpu``, as in the tests): accelerate finds no device backend and
    counts one process, so the batch arithmetic disagrees with DeepSpeed's. Set up its state with gloo first and
    tell the trainer to use it."""
    import torch

    if ds is None or torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return {}
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)  # as TrainingArguments does: one state per trainer
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # what TrainingArguments sets around the same call
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    release_shared_memory()  # kolm.train.run_state: DeepSpeed's CPU all-reduce buffer is not left behind
    return {"accelerator_config": {"use_configured_state": True}}


def prepare(cfg: AlignConfig, train: TrainSection) -> tuple[Path, Path, Any, bool]:
    """Checks that need no model: output folder, model and tokenizer folders, the tokenizer, the precision."""
    check_output(cfg)
    model_dir = model_folder(cfg.model, cfg.trust_remote_code)
    tok_dir = model_folder(cfg.tokenizer, cfg.trust_remote_code) if cfg.tokenizer else model_dir
    bf16 = use_bf16(train.precision, bool(cfg.deepspeed))
    cfg.deepspeed_config()  # a bad DeepSpeed file fails now, not after the data is tokenized
    return model_dir, tok_dir, load_fast_tokenizer(tok_dir, cfg.trust_remote_code), bf16


def wrap_model(cfg: AlignConfig, lora: LoraSection, model_dir: Path, tok_dir: Path, tokenizer: Any,
               bf16: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Load the model, check its vocabulary against the tokenizer, build the LoRA config; (model, peft config, info)."""
    import torch

    weights = bf16_weights(bf16, bool(cfg.deepspeed))
    model = load_model(model_dir, weights, cfg.trust_remote_code)
    vocab = check_vocab(model, tokenizer, model_dir, tok_dir)
    ids = new_token_ids(lora, vocab, [model_dir, tok_dir]) if lora.train_new_tokens else []
    if ids and cfg.deepspeed and not torch.cuda.is_available():
        raise KolmError("lora.train_new_tokens with DeepSpeed ZeRO needs CUDA: peft gathers the trained rows on GPU")
    info = {"base_model": str(model_dir), "tokenizer": str(tok_dir), "vocab_size": vocab,
            "tokenizer_len": len(tokenizer), "tie_word_embeddings": bool(model.config.get_text_config()
                                                                          .tie_word_embeddings),
            "trainable_token_ids": ids,
            "dtype": "bf16" if weights else "fp32 weights, bf16 autocast" if bf16 else "fp32",
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
    return model, peft_lora_config(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                                   target_modules=lora.target_modules, token_ids=ids), info


def train_and_save(trainer: Any, cfg: AlignConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Train, then save the adapter and tokenizer (all ranks take part under ZeRO-3) and, on rank 0, the training
    log, the resolved config and ``kolm_adapter.json`` last: its presence marks a finished adapter."""
    trainer.train()
    out = Path(cfg.output)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n", encoding="utf-8")
        save(cfg, out / "kolm_config.yaml")
        meta = {**info, "steps": trainer.state.global_step, "config": to_dict(cfg)}
        (out / ADAPTER_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        apply_umask(out)  # safetensors writes 0600 files
    log(f"saved the {info['kind'].upper()} adapter ({trainer.state.global_step} steps) to {out}; make a standalone "
        f"model with `kolm merge-lora --base {info['base_model']} --adapter {out} --output MERGED`")
    return info


def record_data(cfg: AlignConfig, report: Any) -> None:
    """Write ``data_report.json`` into the output folder and print the summary (rank 0); fail when nothing is left."""
    out = Path(cfg.output)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        report.write(out / "data_report.json")
        log(f"data: {report.summary()} (details: {out / 'data_report.json'})")
    console.attach()  # the output folder is this run's: kolm.log from here on
    if not report.kept:
        raise KolmError(f"no usable rows in {', '.join(cfg.data.train)}: {report.summary()}")


def template_path(cfg: AlignConfig) -> Path | None:
    return None if cfg.chat_template in ("auto", "default") else Path(cfg.chat_template).expanduser()


def expose_head_bias(model: Any) -> None:
    """trl's fused LM head reads ``lm_head.weight`` and ``lm_head.bias``; peft's TrainableTokensWrapper (put on the
    LM head by ``train_new_tokens``, also when it is tied to the embeddings) passes only ``weight`` through (with the
    trained rows in). Give the wrapper the head's bias, which is absent in the models this supports."""
    from peft.utils.other import TrainableTokensWrapper

    head = model.get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper) and "bias" not in head._parameters:
        if getattr(head.token_adapter.get_base_layer(), "bias", None) is not None:
            raise KolmError("lora.train_new_tokens: LM heads with a bias are not supported")
        head.register_parameter("bias", None)

