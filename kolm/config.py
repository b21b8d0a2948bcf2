"""Typed configs for every kolm stage: dataclasses, YAML recipes, dotted overrides.

Each subcommand maps to one dataclass. A config is resolved in this order, later wins:
field defaults < ``--config recipe.yaml`` < explicit command-line flags < dotted overrides
(``optim.lr=1e-4`` or ``--optim.lr 1e-4``). Checks live in each dataclass's ``__post_init__``. Relative paths in a
recipe are relative to the recipe's folder (:mod:`kolm.paths`, applied once here by :func:`rebase_paths`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kolm.paths import rebase

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, mistyped or inconsistent. The message names the field."""


def field(default: Any = dataclasses.MISSING, *, help: str = "", default_factory: Any = dataclasses.MISSING,
          cli: bool = True, flag: str | None = None, path: bool = False, hub: bool = False,
          keywords: tuple[str, ...] = (), sep: str | None = None) -> Any:
    """A dataclass field with a help text (shown by ``--help``) and CLI options.

    ``flag`` overrides the long flag name; ``cli=False`` keeps a field out of the flags (it can still be
    set from YAML or a dotted override). ``path=True``: a relative path written in a recipe YAML is taken
    relative to the recipe's folder (on the command line, relative to the working directory as usual; the
    rule is :mod:`kolm.paths`). ``hub=True``: the value may also be a Hugging Face hub id (``ORG/NAME``, see
    :func:`kolm.paths.is_hub_id`). ``keywords``: values that are names, not paths (``auto``, ``zero3``).
    ``sep``: the path is the part after this separator in each value (``ko=ko.txt`` with ``sep="="``).
    """
    meta = {"help": help, "cli": cli, "flag": flag, "path": path, "hub": hub, "keywords": keywords, "sep": sep}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _resolve_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[name]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a string on the command line) to type ``tp``."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: a value is required (got null)")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if "," in value else [value]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {coerce(k, k_tp, where): coerce(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys (typos fail loudly)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = coerce(data[f.name], _resolve_type(cls, f.name), f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, JSON/YAML-serialisable view of a config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "optim.lr", 1e-4)`` sets ``d["optim"]["lr"]``, creating mappings on the way."""
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """Parse ``a.b=1``, ``--a.b=1`` and ``--a.b 1`` into (key, YAML-parsed value) pairs."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        a = args[i]
        key = a[2:] if a.startswith("--") else a
        if "=" in key:
            k, v = key.split("=", 1)
        elif a.startswith("--") and i + 1 < len(args):
            k, v = key, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"cannot parse override {a!r}: use key.sub=value or --key.sub value")
        out.append((k.replace("-", "_"), yaml.safe_load(v) if v != "" else ""))
        i += 1
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    return data


def rebase_paths(cls: type, data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Make relative values of ``path=True`` fields (also in nested sections) relative to ``folder``."""
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue
        tp, _ = _strip_optional(_resolve_type(cls, f.name))
        v = out[f.name]
        if f.metadata.get("path"):
            kw = {"hub": bool(f.metadata.get("hub")), "keywords": f.metadata.get("keywords", ()),
                  "sep": f.metadata.get("sep")}
            out[f.name] = [rebase(x, folder, **kw) for x in v] if isinstance(v, list) else rebase(v, folder, **kw)
        elif dataclasses.is_dataclass(tp) and isinstance(v, dict):
            out[f.name] = rebase_paths(tp, v, folder)
        elif typing.get_origin(tp) is list and isinstance(v, list):
            (item,) = typing.get_args(tp) or (Any,)
            if dataclasses.is_dataclass(item):
                out[f.name] = [rebase_paths(item, x, folder) if isinstance(x, dict) else x for x in v]
    return out


def resolve(cls: type[T], *, yaml_path: str | None = None, flags: dict[str, Any] | None = None,
            overrides: list[tuple[str, Any]] | None = None) -> T:
    """Merge defaults, a YAML recipe, explicit flags and dotted overrides into a validated ``cls``.

    Relative paths in the recipe are made relative to its folder (:mod:`kolm.paths`); flags and overrides are
    taken as given (relative to the working directory).
    """
    data: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
    if yaml_path:
        data = rebase_paths(cls, data, Path(yaml_path).resolve().parent)
    for k, v in (flags or {}).items():
        data[k] = v
    for k, v in overrides or []:
        set_dotted(data, k, v)
    return from_dict(cls, data, where=Path(yaml_path).name if yaml_path else "config")


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def save(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(dump_yaml(cfg), encoding="utf-8")
