"""The ``kolm`` command line: one subcommand per stage, each mapped to a typed config and one function.

Every subcommand takes ``--help``, ``--config FILE.yaml``, dotted overrides (``key.sub=value`` or
``--key.sub value``) and ``--dry-run`` (print the resolved config as YAML and exit). ``-v``/``--verbose``, before or
after the command, lets the frameworks print to the terminal (:mod:`kolm.console`: by default their output goes to
the command's ``kolm.log``).

Run ``kolm --help`` for the list of commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import re
import sys
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from kolm import __version__
from kolm.config import (
    ConfigError,
    coerce,
    dump_yaml,
    key_type,
    parse_value,
    resolve,
    resolve_type,
    strip_optional,
)
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
    log_in_output: bool = False  # its output (a run or report folder) keeps kolm.log; else the cache (kolm.console)


# The registry. Command modules import only light dependencies at top level (torch & co inside functions),
# so that `kolm --help` stays fast.
COMMANDS: list[Command] = [
    Command(("demo",), "kolm.demo.command", "DemoConfig", "run",
            "the whole pipeline on a laptop CPU (SmolLM2-135M; --model tiny offline) in minutes, with a dashboard",
            log_in_output=True),
    Command(("vocab", "extend"), "kolm.vocab.extend", "ExtendConfig", "run",
            "learn Korean BPE merges and extend a base tokenizer (ids of the base stay fixed)"),
    Command(("vocab", "report"), "kolm.vocab.report", "ReportConfig", "run",
            "compare tokenizers on text: chars/token, tokens/word, morpheme-boundary alignment"),
    Command(("train", "cpt"), "kolm.train.cpt", "CptConfig", "run",
            "continual pretraining (staged: embeddings / full / lora) on the HF Trainer, plain or DeepSpeed",
            positional_is_config=True, log_in_output=True),
    Command(("model", "init"), "kolm.model.tiny", "InitConfig", "run",
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
            "LoRA instruction tuning with trl's SFTTrainer (loss on assistant turns only)", positional_is_config=True,
            log_in_output=True),
    Command(("train", "dpo"), "kolm.align.dpo", "DpoConfig", "run",
            "DPO preference tuning with a LoRA adapter (reference = the model with the adapter disabled)",
            positional_is_config=True, log_in_output=True),
    Command(("merge-lora",), "kolm.align.merge", "MergeConfig", "run",
            "merge a LoRA adapter into its base model (refuses an adapter of another vocabulary size)"),
    Command(("upscale",), "kolm.model.upscale", "UpscaleConfig", "run",
            "depth up-scaling (SOLAR DUS): stack two trimmed copies of a model's layers into a deeper model",
            dry_run_func="dry_run"),
    Command(("eval",), "kolm.eval.run", "EvalConfig", "run",
            "bits per byte per language (ko=FILE en=FILE) for causal LMs with their own tokenizers; lm-eval tasks",
            log_in_output=True),
    Command(("dashboard",), "kolm.dashboard", "DashboardConfig", "run",
            "one self-contained HTML report: Korean gain vs English forgetting of CPT runs (+ JSON/CSV, --watch)",
            positional="runs"),
    Command(("push",), "kolm.push", "PushConfig", "run",
            "upload a model folder to the Hugging Face Hub with a generated model card (--dry-run: card + file list)",
            positional="dir", dry_run_func="dry_run"),
]


OVERRIDE_RE = re.compile(r"([A-Za-z_][\w-]*(?:\.[\w-]+)*)=(.*)", re.S)
BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")
VERBOSE_FLAGS = ("-v", "--verbose")
VERBOSE_HELP = ("let transformers, trl, datasets, DeepSpeed... print to the terminal as they do (the Trainer's own bar "
                "and log dicts included); by default their output goes to kolm.log (also: KOLM_VERBOSE=1)")
EPILOG = ("Any field can also be set with an override, key=value or --key value (nested: optim.lr=1e-4, "
          "--optim.lr 1e-4; list items by index: stages.0.max_steps=50). Order: defaults < recipe < flags < "
          "overrides. A list flag takes every value up to the next option or override; end it with -- when a "
          "positional argument follows. Relative paths: from the recipe's folder in a recipe, from the working "
          "directory on the command line.")


@dataclass(frozen=True)
class Flag:
    """A long option of a command: the field it sets and how many values it takes (0, 1 or "+")."""

    dest: str | None
    arity: int | str
    value: bool | None = None  # what a value-less boolean option sets: --x True, --no-x False


def _flag_type(tp: Any) -> tuple[dict[str, Any], int | str]:
    tp, _ = strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}, 0
    if origin in (list, tuple):
        return {"nargs": "+", "action": "extend"}, "+"
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(tp))}, 1
    return {}, 1


def _has_flag(tp: Any) -> bool:
    """Sections, mappings and lists of sections get no flag of their own (they are set in the recipe or by
    overrides such as ``optim.lr=...``, ``mix.ko=0.8``, ``stages.0.max_steps=...``)."""
    tp, _ = strip_optional(tp)
    item = (typing.get_args(tp) or (None,))[0] if typing.get_origin(tp) in (list, tuple) else None
    return not (dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict or dataclasses.is_dataclass(item))


def _help(f: dataclasses.Field) -> str:
    default = f.default if f.default is not dataclasses.MISSING else None
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    text = f.metadata.get("help", "")
    return text + (f" (default: {default})" if default not in (None, [], "", {}) else "")


def _add_config_flags(p: argparse.ArgumentParser, cls: type, positional: str | None) -> dict[str, Flag]:
    """One flag per plain field of ``cls`` (positional for ``positional``); returns the option table."""
    table: dict[str, Flag] = {}
    for f in dataclasses.fields(cls):
        tp = resolve_type(cls, f.name)
        if not f.metadata.get("cli", True) or not _has_flag(tp):
            continue
        if f.name == positional:
            many = typing.get_origin(strip_optional(tp)[0]) in (list, tuple)
            p.add_argument(f.name, nargs="*" if many else "?", default=argparse.SUPPRESS, help=_help(f))
            continue
        kwargs, arity = _flag_type(tp)
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=_help(f), **kwargs)
        table[flag] = Flag(f.name, arity, True if arity == 0 else None)
        if arity == 0:
            table["--no-" + flag[2:]] = Flag(f.name, 0, False)
    return table


def _add_section_help(p: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """List the fields of nested sections (``--optim.lr``) in ``--help``; they are parsed as overrides."""
    for f in dataclasses.fields(cls):
        tp, _ = strip_optional(resolve_type(cls, f.name))
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            group = p.add_argument_group(f"{key}: {f.metadata.get('help', '')}".rstrip(": "))
            for sub in dataclasses.fields(tp):
                sub_tp, _ = strip_optional(resolve_type(tp, sub.name))
                if not dataclasses.is_dataclass(sub_tp):
                    group.add_argument(f"--{key}.{sub.name}", metavar="V", dest=f"_{key}.{sub.name}",
                                       help=_help(sub), default=argparse.SUPPRESS)
            _add_section_help(p, tp, key + ".")
        elif not prefix and not _has_flag(tp):
            how = f"{key}.N.FIELD=VALUE" if typing.get_origin(tp) in (list, tuple) else f"{key}.KEY=VALUE"
            p.epilog = (p.epilog or "") + (f" {key} ({f.metadata.get('help', '')}): set it in the recipe, or "
                                           f"with {how} or {key}='YAML'.")


def command_parser(cmd: Command, cls: type) -> tuple[argparse.ArgumentParser, dict[str, Flag]]:
    """The parser of one command and its option table (the command's module is imported by the caller)."""
    p = argparse.ArgumentParser(prog="kolm " + " ".join(cmd.path), description=cmd.help, epilog=EPILOG,
                                allow_abbrev=False)
    if cmd.positional_is_config:
        p.add_argument("recipe", nargs="?", default=None, metavar="RECIPE", help="recipe YAML (or --config)")
    p.add_argument("--config", default=None, metavar="RECIPE", help="recipe YAML; flags and overrides win over it")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    table = {"--config": Flag("config", 1), "--dry-run": Flag("dry_run", 0), "-h": Flag(None, 0),
             "--help": Flag(None, 0)}
    table.update(_add_config_flags(p, cls, cmd.positional))
    _add_section_help(p, cls)
    return p, table


def main_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """``kolm --help``: the commands and their one-line help (no command module is imported); and the parser
    of each command group (``kolm vocab``)."""
    parser = argparse.ArgumentParser(prog="kolm", description="Korean continual pretraining toolkit.",
                                     epilog="Run `kolm COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"kolm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    top = parser.add_subparsers(dest="_cmd0", metavar="COMMAND")
    groups: dict[str, argparse.ArgumentParser] = {}
    subs: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS:
        if len(cmd.path) == 1:
            top.add_parser(cmd.path[0], help=cmd.help, description=cmd.help)
            continue
        if cmd.path[0] not in groups:
            groups[cmd.path[0]] = top.add_parser(cmd.path[0], help=f"{cmd.path[0]} commands")
            subs[cmd.path[0]] = groups[cmd.path[0]].add_subparsers(dest="_cmd1", metavar="COMMAND")
        subs[cmd.path[0]].add_parser(cmd.path[1], help=cmd.help, description=cmd.help)
    return parser, groups


def find_command(argv: list[str]) -> Command | None:
    return next((c for c in COMMANDS if tuple(argv[: len(c.path)]) == c.path), None)


# ----------------------------------------------------------------------------------------------- argument splitting
def _is_option(token: str) -> bool:
    if not token.startswith("-") or token in ("-", "--"):
        return False
    try:
        float(token)
        return False  # a negative number is a value
    except ValueError:
        return True


def _override(token: str, cls: type, strict: bool) -> tuple[str, Any] | None:
    """``key=value`` with a key of ``cls`` as (key, value); None for any other token.

    An unknown key is an error when ``strict`` (where a value cannot stand) unless a file of that name exists;
    after a list flag (``--text ko=ko.txt``) it is a value.
    """
    m = OVERRIDE_RE.fullmatch(token)
    if not m:
        return None
    try:
        key, tp = key_type(cls, m[1])
    except ConfigError as e:
        if strict and not Path(token).exists():
            raise ConfigError(f"{token}: {e}") from None
        return None
    return key, parse_value(m[2], tp)


def _list_values(tokens: list[str], j: int, cls: type, recipe_positional: bool) -> list[str]:
    """The values of a list option from ``tokens[j]`` on: up to the next option, override or ``--``; in a command
    whose positional argument is the recipe, a ``.yaml`` after the first value is that recipe."""
    out: list[str] = []
    for t in tokens[j:]:
        if t == "--" or _is_option(t) or _override(t, cls, strict=False):
            break
        if out and recipe_positional and t.endswith((".yaml", ".yml")):
            break
        out.append(t)
    return out


def _field_option(tokens: list[str], i: int, cls: type, table: dict[str, Flag], recipe_positional: bool
                  ) -> tuple[int, tuple[str, Any]]:
    """An option that is no flag but names a field (``--optim.lr``, ``--min_frequency``, ``--stages``): an override.

    Its value follows after ``=`` or as the next token(s); a boolean field alone means true (``--no-`` false).
    """
    name, eq, raw = tokens[i].partition("=")
    key = name[2:] if name.startswith("--") else ""
    negate = key.startswith(("no-", "no_"))
    try:
        key, tp = key_type(cls, key[3:] if negate else key)
    except ConfigError as e:
        if "." in key and key.split(".")[0].replace("-", "_") in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"{name}: {e}") from None  # --optim.lrr: say what is wrong inside the section
        tp = None
    base, _ = strip_optional(tp)
    if tp is None or (negate and (base is not bool or eq)):
        names = dict.fromkeys([*table, *("--" + f.name.replace("_", "-") for f in dataclasses.fields(cls))])
        close = difflib.get_close_matches(name.replace("_", "-"), list(names), n=3)
        raise ConfigError(f"unrecognized option {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    rest = tokens[i + 1:]
    if eq or negate:
        return i + 1, (key, False if negate else parse_value(raw, tp))
    if base is bool:
        take = bool(rest) and rest[0].lower() in BOOL_WORDS
        return i + 1 + take, (key, rest[0] if take else True)
    if typing.get_origin(base) in (list, tuple):
        values = _list_values(tokens, i + 1, cls, recipe_positional)
        if values:
            one = len(values) == 1 and values[0].lstrip().startswith("[")
            return i + 1 + len(values), (key, parse_value(values[0] if one else values, tp))
    elif rest and not _is_option(rest[0]):
        return i + 2, (key, parse_value(rest[0], tp))
    raise ConfigError(f"{name} needs a value ({name} VALUE or {name}=VALUE)")


def split_args(tokens: list[str], cls: type, table: dict[str, Flag], *, recipe_positional: bool = False
               ) -> tuple[list[str], list[tuple[str, Any]]]:
    """Separate a command's arguments into what argparse parses (its flags, their values, positionals) and
    overrides (``key=value``, ``--key.sub value``, ``--field_name value``), as (key, value) pairs in order.

    A flag's value is never taken for an override: the word after a one-value flag is its value (unless it is an
    option), and a list flag takes values only up to the next option or override (or ``--``). What argparse gets is
    ``--flag=value`` per value, so that it cannot take a positional argument for a flag's value.
    """
    kept: list[str] = []
    overrides: list[tuple[str, Any]] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        name, eq, raw = t.partition("=")
        flag = table.get(name)
        if t == "--":
            kept += tokens[i:]
            break
        word = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1].lower() in BOOL_WORDS else None
        if flag is not None and flag.value is not None and (eq or word is not None):
            if not flag.value:  # --no-x=... / --no-x false
                raise ConfigError(f"{name} takes no value (use --{name[5:]}={raw or word})")
            overrides.append((flag.dest, raw if eq else word))  # --morpheme-aware=false, --morpheme-aware false
            i += 1 if eq else 2
        elif flag is not None and (eq or flag.arity == 0):
            if flag.arity == "+":  # --corpus=a.txt,b.txt splits at commas, as corpus=a.txt,b.txt does
                value = coerce(parse_value(raw, key_type(cls, flag.dest)[1]), list[str], name)
                kept += [f"{name}={v}" for v in value]
            else:
                kept.append(t)
            i += 1
        elif flag is not None:  # the values are chosen here and passed on as --flag=value: argparse takes no more
            values = ([v for v in tokens[i + 1: i + 2] if not _is_option(v) and v != "--"] if flag.arity == 1
                      else _list_values(tokens, i + 1, cls, recipe_positional))
            kept += [f"{name}={v}" for v in values] or [t]
            i += 1 + len(values)
        elif _is_option(t):
            i, ov = _field_option(tokens, i, cls, table, recipe_positional)
            overrides.append(ov)
        else:
            ov = _override(t, cls, strict=True)
            if ov:
                overrides.append(ov)
            else:
                kept.append(t)
            i += 1
    return kept, overrides


def resolve_command(argv: list[str]) -> tuple[Command, Any, bool]:
    """The command named by ``argv``, its resolved config and whether ``--dry-run`` was given."""
    cmd = find_command(argv)
    if cmd is None:
        parser, groups = main_parser()
        args = parser.parse_args(argv)  # --help, --version and unknown commands exit here
        groups.get(args._cmd0, parser).print_help()  # `kolm` or `kolm vocab` alone
        raise SystemExit(2)
    cls = getattr(importlib.import_module(cmd.module), cmd.config)
    parser, table = command_parser(cmd, cls)
    kept, overrides = split_args(argv[len(cmd.path):], cls, table, recipe_positional=cmd.positional_is_config)
    args = vars(parser.parse_intermixed_args(kept))
    recipe, config = args.pop("recipe", None), args.pop("config")
    if recipe and config and Path(recipe).resolve() != Path(config).resolve():
        raise ConfigError(f"two recipes given ({recipe} and --config {config}); give one")
    dry_run = args.pop("dry_run")
    if cmd.positional and args.get(cmd.positional) in (None, []):
        args.pop(cmd.positional, None)
    cfg = resolve(cls, yaml_path=recipe or config, flags=args, overrides=overrides)
    return cmd, cfg, dry_run


def _take_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``-v``/``--verbose`` (before or after the command, up to a ``--``), and whether it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a not in VERBOSE_FLAGS]
    return kept + argv[end:], len(kept) < end


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


# Framework warnings that say nothing to a kolm user (kolm's output is progress bars and one line per step):
# the Trainer's CPU pin_memory note, deprecations inside transformers/trl and torch.distributed's own calls.
QUIET_WARNINGS = [
    (UserWarning, r".*'pin_memory' argument is set as true but no accelerator is found"),
    (FutureWarning, r".*`is_gradient_checkpointing` is deprecated"),
    (FutureWarning, r".*`torch\.distributed\.all_gather_into_tensor` is deprecated"),
]


def main(argv: list[str] | None = None) -> int:
    argv, verbose = _take_verbose(_strip_launcher_args(list(sys.argv[1:] if argv is None else argv)))
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    cfg = None
    try:
        cmd, cfg, dry_run = resolve_command(argv)
        from kolm import console

        folder = getattr(cfg, "output", None) if cmd.log_in_output and not dry_run else None
        with console.session(" ".join(cmd.path), verbose=verbose, folder=folder):
            if dry_run:  # (a dry run that another command runs, as the demo's push, prints into its log)
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
    except Exception as e:  # a full disk that the command did not name itself is one line too
        from kolm.io.files import disk_full_line

        line = disk_full_line(e, getattr(cfg, "output", None))
        if line is None:
            raise
        print(f"kolm: error: {line}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # a command that ran on several ranks: close its group (see entry)
            from kolm.train.run_state import close_process_group

            close_process_group()


def entry() -> NoReturn:
    """The ``kolm`` console script and ``python -m kolm.cli`` (how launchers start ranks): :func:`main`, then leave
    through :func:`kolm.train.run_state.exit_process`, also when a command stops with ``SystemExit`` (a stop signal's
    128 + signal), so that a rank's exit status is the command's."""
    try:
        code: int | str | None = main()
    except SystemExit as e:
        code = e.code
    from kolm.train.run_state import exit_process

    exit_process(code)


if __name__ == "__main__":
    entry()
