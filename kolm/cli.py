"""The ``kolm`` command line: one subcommand per stage, each mapped to a typed config and one function.

Every subcommand takes ``--help``, ``--config FILE.yaml``, dotted overrides (``key.sub=value`` or
``--key.sub value``) and ``--dry-run`` (print the resolved config as YAML and exit).

Run ``kolm --help`` for the list of commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm import __version__
from kolm.config import ConfigError, _resolve_type, _strip_optional, dump_yaml, parse_overrides, resolve
from kolm.errors import KolmError


@dataclass(frozen=True)
class Command:
    """One subcommand: ``group name`` (or just ``name``), its config dataclass and the function to run."""

    path: tuple[str, ...]
    module: str
    config: str
    func: str
    help: str
    positional: str | None = None  # name of a field filled from the first positional argument(s)
    positional_is_config: bool = False  # the positional argument is the recipe YAML itself
    dry_run_func: str | None = None  # called with the config after --dry-run prints it (e.g. to show a plan)


# The registry. Command modules import only light dependencies at top level (torch & co inside functions),
# so that `kolm --help` stays fast.
COMMANDS: list[Command] = [
    Command(("demo",), "kolm.demo.run", "DemoConfig", "run",
            "the whole pipeline on a laptop CPU with embedded text, in minutes; ends with a dashboard"),
    Command(("vocab", "extend"), "kolm.vocab.extend", "ExtendConfig", "run",
            "learn Korean BPE merges and extend a base tokenizer (ids of the base stay fixed)"),
    Command(("vocab", "report"), "kolm.vocab.report", "ReportConfig", "run",
            "compare tokenizers on text: chars/token, tokens/word, morpheme-boundary alignment"),
    Command(("train", "cpt"), "kolm.train.cpt", "CptConfig", "run",
            "continual pretraining (staged: embeddings / full / lora) on the HF Trainer, plain or DeepSpeed",
            positional_is_config=True),
    Command(("model", "init"), "kolm.model.init", "InitConfig", "run",
            "a small Llama built from config for a tokenizer (smoke runs, demos)"),
    Command(("model", "import"), "kolm.model.gguf", "ImportConfig", "run", "GGUF file -> safetensors model+tokenizer"),
    Command(("model", "resize"), "kolm.model.resize", "ResizeConfig", "run",
            "resize a model's embeddings and LM head to an extended tokenizer"),
    Command(("data", "build"), "kolm.data.build", "DataBuildConfig", "run",
            "clean, deduplicate, mix (exact token shares), tokenize and pack corpora into training shards",
            positional_is_config=True),
    Command(("data", "inspect"), "kolm.data.inspect", "InspectConfig", "run",
            "print a built data set's manifest as tables, with decoded samples per language", positional="dir"),
    Command(("train", "sft"), "kolm.align.sft", "SftConfig", "run",
            "LoRA instruction tuning with trl's SFTTrainer (loss on assistant turns only)", positional_is_config=True),
    Command(("train", "dpo"), "kolm.align.dpo", "DpoConfig", "run",
            "DPO preference tuning with a LoRA adapter (reference = the model with the adapter disabled)",
            positional_is_config=True),
    Command(("merge-lora",), "kolm.align.merge", "MergeConfig", "run",
            "merge a LoRA adapter into its base model (refuses an adapter of another vocabulary size)"),
    Command(("upscale",), "kolm.model.upscale", "UpscaleConfig", "run",
            "depth up-scaling (SOLAR DUS): stack two trimmed copies of a model's layers into a deeper model",
            dry_run_func="dry_run"),
    Command(("eval",), "kolm.eval.run", "EvalConfig", "run",
            "bits per byte per language (ko=FILE en=FILE) for causal LMs with their own tokenizers; lm-eval tasks"),
    Command(("dashboard",), "kolm.dashboard", "DashboardConfig", "run",
            "one self-contained HTML report: Korean gain vs English forgetting of CPT runs (+ JSON/CSV, --watch)",
            positional="runs"),
    Command(("push",), "kolm.hub", "PushConfig", "run",
            "upload a model folder to the Hugging Face Hub with a generated model card (--dry-run: card + file list)",
            positional="dir", dry_run_func="dry_run"),
]


def _flag_type(tp: Any) -> dict[str, Any]:
    tp, _ = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin in (list, tuple):
        return {"nargs": "+", "action": "extend"}
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(tp))}
    return {}  # plain scalars; nested sections never get flags (see _add_config_flags)


def _add_config_flags(p: argparse.ArgumentParser, cls: type, positional: str | None) -> None:
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp = _resolve_type(cls, f.name)
        base_tp, _ = _strip_optional(tp)
        if dataclasses.is_dataclass(base_tp) or typing.get_origin(base_tp) is dict:
            continue
        kwargs = _flag_type(tp)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        helptext = f.metadata.get("help", "")
        if default not in (None, [], ""):
            helptext += f" (default: {default})"
        if f.name == positional:
            p.add_argument(f.name, nargs="*", default=argparse.SUPPRESS, help=helptext)
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=helptext, **kwargs)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; only the command named by ``argv`` gets its flags (its module is imported)."""
    parser = argparse.ArgumentParser(prog="kolm", description="Korean continual pretraining toolkit.")
    parser.add_argument("--version", action="version", version=f"kolm {__version__}")
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="_cmd0", metavar="COMMAND")
    group_parsers: dict[str, argparse.ArgumentParser] = {}
    for cmd in COMMANDS:
        if len(cmd.path) == 1:
            sub = top.add_parser(cmd.path[0], help=cmd.help, description=cmd.help)
        else:
            g = cmd.path[0]
            if g not in groups:
                group_parsers[g] = top.add_parser(g, help=f"{g} commands")
                groups[g] = group_parsers[g].add_subparsers(dest="_cmd1", metavar="COMMAND")
            sub = groups[g].add_parser(cmd.path[1], help=cmd.help, description=cmd.help)
        sub.set_defaults(_command=cmd)
        if argv is not None and tuple(argv[: len(cmd.path)]) != cmd.path:
            continue
        mod = importlib.import_module(cmd.module)
        cls = getattr(mod, cmd.config)
        if cmd.positional_is_config:
            sub.add_argument("config", nargs="?", default=None, help="recipe YAML")
        else:
            sub.add_argument("--config", default=None, help="recipe YAML; flags and overrides win over it")
        sub.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        _add_config_flags(sub, cls, cmd.positional)
        sub.epilog = "Any field can also be set with a dotted override: key.sub=value or --key.sub value."
    return parser


def resolve_command(argv: list[str]) -> tuple[Command, Any, bool]:
    parser = build_parser(argv)
    args, rest = parser.parse_known_args(argv)
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        raise SystemExit(2)
    unknown_flags = [r for r in rest if r.startswith("-") and "." not in r.split("=")[0]]
    if unknown_flags:
        parser.error(f"unrecognized arguments: {' '.join(unknown_flags)}")
    mod = importlib.import_module(cmd.module)
    cls = getattr(mod, cmd.config)
    flags = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("config", "dry_run")}
    if cmd.positional and cmd.positional in flags:
        f = next(f for f in dataclasses.fields(cls) if f.name == cmd.positional)
        tp, _ = _strip_optional(_resolve_type(cls, f.name))
        val = flags[cmd.positional]
        if typing.get_origin(tp) not in (list, tuple):
            val = val[0] if val else None
        if val in (None, []):
            del flags[cmd.positional]
        else:
            flags[cmd.positional] = val
    if args.config and "recipe_dir" in {f.name for f in dataclasses.fields(cls)}:
        # Paths inside a recipe are relative to the recipe file, not to the working directory.
        flags.setdefault("recipe_dir", str(Path(args.config).resolve().parent))
    cfg = resolve(cls, yaml_path=args.config, flags=flags, overrides=parse_overrides(rest))
    return cmd, cfg, args.dry_run


def _strip_launcher_args(argv: list[str]) -> list[str]:
    """The deepspeed/torch launchers insert ``--local_rank=N`` (or ``--local-rank N``); kolm reads LOCAL_RANK."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith(("--local_rank", "--local-rank")):
            value = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "0")
            i += 1 if "=" in a else 2
            os.environ.setdefault("LOCAL_RANK", value)
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _strip_launcher_args(list(sys.argv[1:] if argv is None else argv))
    try:
        cmd, cfg, dry_run = resolve_command(argv)
        if dry_run:
            print(dump_yaml(cfg), end="")
            if cmd.dry_run_func:
                getattr(importlib.import_module(cmd.module), cmd.dry_run_func)(cfg)
            return 0
        func: Callable[[Any], Any] = getattr(importlib.import_module(cmd.module), cmd.func)
        func(cfg)
        return 0
    except (ConfigError, KolmError) as e:
        print(f"kolm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kolm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
