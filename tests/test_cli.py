"""The CLI and config layer: --help, --dry-run, every override form for every command, recipe paths, hub ids,
every README and docs/ command line, every shipped recipe validates."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO

from kolm.cli import COMMANDS, main, resolve_command, split_args
from kolm.config import ConfigError, coerce, dump_yaml, key_type, parse_value, resolve, resolve_type, strip_optional
from kolm.vocab.extend import ExtendConfig

CMDS = {" ".join(c.path): c for c in COMMANDS}


def dry_run(argv: list[str]) -> dict[str, Any]:
    """What ``kolm ARGV --dry-run`` prints, as data (without the plan some commands print after it)."""
    cmd, cfg, dry = resolve_command([*argv, "--dry-run"])
    assert dry
    return yaml.safe_load(dump_yaml(cfg))


def get(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c.path))
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd.path, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--config" in out
    assert "--stages" not in out.replace("--stages.", "") and "--sources" not in out  # lists of sections: no flag


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "kolm.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in COMMANDS:
        assert cmd.path[0] in out.stdout
    group = subprocess.run([sys.executable, "-m", "kolm.cli", "vocab"], capture_output=True, text=True)
    assert group.returncode == 2 and "extend" in group.stdout and "report" in group.stdout


def test_help_does_not_import_command_modules():
    code = ("import sys; from kolm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('kolm.', 'torch', 'transformers'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['kolm.cli', 'kolm.config', 'kolm.errors', 'kolm.paths']"


def test_resolution_order(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: tok\ncorpus: [a.txt, b.txt]\nnum_new_tokens: 5\noutput: out\nmin_frequency: 4\n")
    # YAML < flags < dotted overrides; relative recipe paths are relative to the recipe's folder
    assert main(["vocab", "extend", "--config", str(recipe), "--num-new-tokens", "9", "min_frequency=7",
                 "--dry-run"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert got["num_new_tokens"] == 9 and got["min_frequency"] == 7
    assert got["corpus"] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert got["base"] == str(tmp_path / "tok")
    got = dry_run(["vocab", "extend", "--config", str(recipe), "min_frequency=7", "--min-frequency", "3"])
    assert got["min_frequency"] == 7  # an override wins over a flag wherever it stands


def test_bad_config_values_name_the_field(tmp_path, capsys):
    assert main(["vocab", "extend", "--base", "b", "--corpus", "c.txt", "--num-new-tokens", "x", "--output", "o",
                 "--dry-run"]) == 2
    assert "num_new_tokens" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: b\ncorpus: [c.txt]\nnum_new_tokens: 3\noutput: o\nmin_frequncy: 2\n")
    assert main(["vocab", "extend", "--config", str(recipe), "--dry-run"]) == 2
    assert "min_frequncy" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        resolve(ExtendConfig, flags={"base": "b", "corpus": ["c"], "num_new_tokens": 1, "output": "o"},
                overrides=[("morpheme_aware", "maybe")])


# ------------------------------------------------------- command lines that the splitter once read wrong
def test_override_after_a_list_flag_is_an_override():
    got = dry_run(["vocab", "extend", "--base", "b", "--corpus", "a.txt", "min_frequency=3", "--num-new-tokens", "5",
                   "--output", "o"])
    assert got["corpus"] == ["a.txt"] and got["min_frequency"] == 3
    got = dry_run(["push", "out/final", "--repo-id", "org/m", "--datasets", "org/ds", "license=mit"])
    assert got["datasets"] == ["org/ds"] and got["license"] == "mit" and got["dir"] == "out/final"


def test_override_is_not_taken_for_the_recipe():
    got = dry_run(["train", "cpt", "--model", "a", "--data", "b", "--output", "c", "optim.lr=1e-3", "max_steps=5"])
    assert got["optim"]["lr"] == 0.001 and (got["model"], got["data"], got["output"]) == ("a", "b", "c")


def test_dotted_flag_keeps_its_value():
    got = dry_run(["train", "cpt", "--model", "a", "--data", "b", "--output", "c", "--optim.lr", "1e-3",
                   "--eval.every", "7", "--max-steps", "5"])
    assert got["optim"]["lr"] == 0.001 and got["eval"]["every"] == 7


def test_lists_of_sections_have_no_flag_and_take_indices(tmp_path, capsys):
    base = ["train", "cpt", "--model", "a", "--data", "b", "--output", "c"]
    got = dry_run([*base, "stages.0.max_steps=7", "--stages.0.lr", "0.5", "stages.1.name=more", "stages.1.kind=lora",
                   "--stages.1.lora.r=4"])
    assert [(s["name"], s["kind"], s["max_steps"], s["lr"]) for s in got["stages"]] == [
        ("stage", "full", 7, 0.5), ("more", "lora", 100, None)]
    assert got["stages"][1]["lora"]["r"] == 4
    got = dry_run([*base, "--stages", "[{name: e, kind: embeddings}, {name: f}]", "stages.1.max_steps=3"])
    assert [(s["name"], s["kind"], s["max_steps"]) for s in got["stages"]] == [("e", "embeddings", 100),
                                                                              ("f", "full", 3)]
    for bad, msg in ((["--stages", "x"], "a list of sections"), (["stages.5.name=x"], "index from 0 to 0"),
                     (["stages.x=1"], "name an item by its index"), (["stages.0.bogus=1"], "stages.0.bogus")):
        assert main([*base, *bad, "--dry-run"]) == 2
        assert msg in capsys.readouterr().err, bad
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ndata: d\noutput: o\nstages: [{name: e, kind: embeddings}, {name: f, kind: full}]\n")
    got = dry_run(["train", "cpt", str(recipe), "stages.1.max_steps=9"])
    assert [s["max_steps"] for s in got["stages"]] == [100, 9] and got["stages"][0]["kind"] == "embeddings"


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    """(exit status, stderr) of ``kolm ARGV``, whether the error came from kolm or from argparse."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err


def test_unknown_options_and_fields_are_refused_with_a_hint(capsys):
    base = ["vocab", "extend", "--base", "b", "--corpus", "c.txt", "--num-new-tokens", "5", "--output", "o"]
    cases = [(["--min-frequenc", "3"], "did you mean --min-frequency"),
             (["min_frequenc=3"], "did you mean min_frequency"),
             (["--optim.lr", "1"], "unrecognized option '--optim.lr'"),
             (["--no-base"], "unrecognized option '--no-base'"),
             (["--base.x=1"], "base is a single value"),
             (["--morpheme-aware=maybe"], "morpheme_aware: expected true/false"),
             (["--no-morpheme-aware=true"], "takes no value"),
             (["stray"], "unrecognized arguments: stray")]
    for extra, msg in cases:
        rc, err = run_cli([*base, *extra, "--dry-run"], capsys)
        assert rc == 2 and msg in err, (extra, err)
    rc, err = run_cli([*base[:-2], "--output", "--dry-run"], capsys)
    assert rc == 2 and "expected one argument" in err
    rc, err = run_cli(["train", "cpt", "--model", "a", "--data", "b", "--output", "c", "--optim.lr", "--dry-run"],
                      capsys)
    assert rc == 2 and "--optim.lr needs a value" in err
    assert run_cli(["train", "cpt", "r.yaml", "--config", "s.yaml"], capsys) == (
        2, "kolm: error: two recipes given (r.yaml and --config s.yaml); give one\n")
    rc, err = run_cli(["data", "inspect", "a", "b"], capsys)
    assert rc == 2 and "unrecognized arguments: b" in err  # one folder only


def test_split_args_keeps_flag_values_and_orders_overrides():
    from kolm.cli import command_parser
    from kolm.train.config import CptConfig

    _, table = command_parser(CMDS["train cpt"], CptConfig)
    kept, ov = split_args(["r.yaml", "optim.lr=1", "--report-to", "tensorboard", "wandb", "eval.every=3",
                           "--model", "grad_accum=2", "--eval.max_docs", "4", "--optim.scheduler=linear",
                           "--resume", "--", "x=y"], CptConfig, table, recipe_positional=True)
    assert kept == ["r.yaml", "--report-to=tensorboard", "--report-to=wandb", "--model=grad_accum=2", "--resume",
                    "--", "x=y"]
    assert ov == [("optim.lr", "1"), ("eval.every", "3"), ("eval.max_docs", "4"), ("optim.scheduler", "linear")]
    kept, _ = split_args(["--report-to", "tensorboard", "r.yaml"], CptConfig, table, recipe_positional=True)
    assert kept == ["--report-to=tensorboard", "r.yaml"]  # the recipe ends a list (checked in the matrix too)


def test_launcher_local_rank_is_taken_out(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")  # so that monkeypatch removes what main() sets: later tests run one rank
    monkeypatch.delenv("LOCAL_RANK")
    argv = ["--local_rank=1", "vocab", "extend", "--base", "b", "--corpus", "c.txt", "--num-new-tokens", "5",
            "--output", "o", "--local-rank", "1", "--dry-run"]
    assert main(argv) == 0
    assert os.environ["LOCAL_RANK"] == "1"


# ----------------------------------------------------------------------------------------------- the form matrix
@dataclass
class Case:
    """One command: a valid config (``base``), one field of each kind with a value that differs from its default,
    a multi-value flag to put right before the form under test, and its positional field."""

    base: dict[str, Any]
    kinds: dict[str, tuple[str, Any]]
    mix: tuple[str, list[str]] | None = None
    positional: tuple[str, Any] | None = None


SFT_BASE = {"model": "m", "output": "o", "data": {"train": ["t.jsonl"]}}
CASES: dict[str, Case] = {
    "demo": Case({}, {"scalar": ("seed", 7), "bool": ("align", False), "float": ("lr", 0.002),
                      "literal": ("model", "tiny")}),
    "vocab extend": Case({"base": "b", "corpus": ["c.txt"], "num_new_tokens": 5, "output": "o"},
                         {"scalar": ("min_frequency", 3), "bool": ("morpheme_aware", True),
                          "list": ("corpus", ["k1.txt", "k2.txt"]), "float": ("max_char_share", 0.5),
                          "literal": ("mode", "syllables")},
                         mix=("corpus", ["m1.txt", "m2.txt"])),
    "vocab report": Case({"tokenizer": ["t"], "text": ["x.txt"]},
                         {"scalar": ("max_docs", 5), "bool": ("morphemes", False),
                          "list": ("tokenizer", ["t1", "org/t2"])}, mix=("text", ["a.txt", "b.txt"])),
    "train cpt": Case({"model": "m", "data": "d", "output": "o", "stages": [{"name": "full", "kind": "full"}]},
                      {"scalar": ("grad_accum", 4), "bool": ("resume", True), "list": ("report_to", ["tb", "wandb"]),
                       "literal": ("precision", "fp32"), "nested": ("optim.lr", 0.002),
                       "nested_literal": ("optim.scheduler", "linear"), "index": ("stages.0.max_steps", 7)},
                      mix=("report_to", ["tensorboard", "wandb"]), positional=("recipe", None)),
    "model init": Case({"tokenizer": "t", "output": "o"},
                       {"scalar": ("hidden_size", 32), "bool": ("tie_word_embeddings", True)}),
    "model resize": Case({"model": "m", "tokenizer": "t", "output": "o"},
                         {"scalar": ("pad_to_multiple_of", 64), "bool": ("overwrite", True),
                          "string": ("init", "mean"), "list": ("corpus", ["k1.txt", "k2.txt"])},
                         mix=("corpus", ["m1.txt", "m2.txt"])),
    "model import": Case({"gguf": "m.gguf", "output": "o"},
                         {"literal": ("dtype", "bfloat16"), "bool": ("verify", False), "scalar": ("gguf", "x.gguf")}),
    "data build": Case({"tokenizer": "t", "sources": [{"lang": "ko", "paths": ["k.txt"]}], "mix": {"ko": 1.0}},
                       {"scalar": ("seq_len", 512), "bool": ("add_bos", True), "nested": ("cleaning.min_chars", 5),
                        "nested_bool": ("dedup.near", False), "nested_list": ("cleaning.pii.types", ["email", "ip"]),
                        "mapping": ("cleaning.pii.tokens.email", "[EMAIL]"), "index": ("sources.0.max_docs", 9)},
                       positional=("recipe", None)),
    "data inspect": Case({}, {"scalar": ("samples", 3)}, positional=("dir", "out/data")),
    "train sft": Case(SFT_BASE, {"scalar": ("chat_template", "default"), "bool": ("packing", True),
                                 "nested": ("lora.r", 8), "nested_bool": ("lora.train_new_tokens", True),
                                 "nested_list": ("lora.target_modules", ["q_proj", "v_proj"]),
                                 "nested_literal": ("train.precision", "fp32"), "list": ("report_to", ["tensorboard"]),
                                 "mapping": ("trl.neftune_noise_alpha", 5)},
                      mix=("report_to", ["tensorboard", "wandb"]), positional=("recipe", None)),
    "train dpo": Case(SFT_BASE, {"scalar": ("beta", 0.05), "bool": ("trust_remote_code", True),
                                 "list": ("loss_type", ["sigmoid", "ipo"]), "nested": ("train.learning_rate", 1e-5),
                                 "nested_list": ("data.train", ["a.jsonl", "b.jsonl"]),
                                 "mapping": ("trl.rpo_alpha", 0.5)},
                      mix=("loss_type", ["sigmoid", "hinge"]), positional=("recipe", None)),
    "merge-lora": Case({"base": "b", "adapter": "a", "output": "o"},
                       {"bool": ("overwrite", True), "literal": ("dtype", "bf16"), "scalar": ("base", "org/base")}),
    "upscale": Case({"model": "m", "output": "o"}, {"scalar": ("drop_layers", 4), "bool": ("overwrite", True),
                                                    "string": ("max_shard_size", "2GB")}),
    "eval": Case({"model": ["m"], "text": ["ko=k.txt"]},
                 {"scalar": ("batch_size", 4), "bool": ("nfc", False), "list": ("text", ["ko=a.txt", "en=b.txt"]),
                  "literal": ("dtype", "float32")}, mix=("model", ["m1", "m2"])),
    "dashboard": Case({"title": "runs"}, {"scalar": ("watch", 5.0), "string": ("output", "r2.html"),
                           "list": ("eval", ["e1.json", "e2.json"])},
                      mix=("eval", ["e3.json", "e4.json"]), positional=("runs", ["run1", "run2"])),
    "push": Case({"repo_id": "org/m"}, {"bool": ("private", True), "scalar": ("license", "mit"),
                                        "list": ("datasets", ["org/ds1", "org/ds2"])},
                 mix=("datasets", ["org/a", "org/b"]), positional=("dir", "out/final")),
}


def _kind(cls: type, key: str) -> str:
    tp, _ = strip_optional(key_type(cls, key)[1])
    if tp is bool:
        return "bool"
    return "list" if typing.get_origin(tp) in (list, tuple) else "scalar"


def _word(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def forms(cls: type, key: str, value: Any) -> dict[str, list[str]]:
    """Every way to write ``key`` = ``value`` on the command line, by name of the form."""
    kind, dotted = _kind(cls, key), "." in key
    opt = "--" + (key if dotted else key.replace("_", "-"))
    if kind == "bool":
        w = _word(value)
        out = {"--flag": [opt if value else "--no-" + opt[2:]], "--flag v": [opt, w], "--flag=v": [f"{opt}={w}"],
               "key=value": [f"{key}={w}"]}
    elif kind == "list":
        items = [str(v) for v in value]
        out = {"--flag v": [opt, *items], "--flag=v": [f"{opt}={','.join(items)}"],
               "key=value": [f"{key}={','.join(items)}"], "key=[yaml]": [f"{key}=[{', '.join(items)}]"]}
    else:
        out = {"--flag v": [opt, str(value)], "--flag=v": [f"{opt}={value}"], "key=value": [f"{key}={value}"]}
    if not dotted and "_" in key:
        out["--key_name v"] = ["--" + key, *(out["--flag v"][1:])]
    return out


def flow(v: Any) -> str:
    """A value as one command-line word: lists and mappings as YAML flow (JSON is YAML), scalars as they print."""
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def base_args(case: Case, cls: type, skip: set[str]) -> list[str]:
    """``case.base`` as command-line arguments (flags where a field has one, else ``key=value`` per leaf), leaving
    out ``skip``: the field under test and the list flag mixed in (a list flag given twice extends its list)."""

    def leaves(prefix: str, v: Any) -> list[tuple[str, Any]]:
        if isinstance(v, dict):
            return [leaf for k, x in v.items() for leaf in leaves(f"{prefix}.{k}", x)]
        if isinstance(v, list) and v and isinstance(v[0], dict):  # a list of sections: sources.0.lang=ko, ...
            return [leaf for n, x in enumerate(v) for leaf in leaves(f"{prefix}.{n}", x)]
        return [(prefix, v)]

    out: list[str] = []
    for k, v in case.base.items():
        f = next(f for f in dataclasses.fields(cls) if f.name == k)
        tp, _ = strip_optional(resolve_type(cls, k))
        sections = typing.get_origin(tp) in (list, tuple) and dataclasses.is_dataclass((typing.get_args(tp) or (0,))[0])
        if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict or sections or not f.metadata.get("cli", True):
            out += [f"{key}={flow(x)}" for key, x in leaves(k, v) if key not in skip]
        elif k in skip:
            continue
        else:
            out += ["--" + k.replace("_", "-"), *(v if isinstance(v, list) else [str(v)])]
    return out


def positional_forms(key: str, value: Any) -> dict[str, list[str]]:
    items = list(value) if isinstance(value, list) else [value]
    return {"bare": items, "--flag v": ["--" + key, *items], "key=value": [f"{key}={','.join(items)}"]}


MATRIX = [(name, kind) for name, case in CASES.items()
          for kind in [*case.kinds, *(["positional"] if case.positional and case.positional[1] else [])]]


@pytest.mark.parametrize("name,kind", MATRIX, ids=["-".join(x) for x in MATRIX])
def test_every_form_of_every_field_kind(name, kind, tmp_path):
    """Each form sets the field, with and without a recipe, after a multi-value flag and around positionals."""
    cmd, case = CMDS[name], CASES[name]
    cls = getattr(__import__(cmd.module, fromlist=["x"]), cmd.config)
    pos_field, pos_value = case.positional or (None, None)
    key, value = (pos_field, pos_value) if kind == "positional" else case.kinds[kind]
    all_forms = positional_forms(key, value) if kind == "positional" else forms(cls, key, value)
    tokens_pos = [] if not pos_value else (list(pos_value) if isinstance(pos_value, list) else [pos_value])
    mix = case.mix if case.mix and case.mix[0] != key.split(".")[0] else None
    mix_tokens = ["--" + mix[0].replace("_", "-"), *mix[1]] if mix else []
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in case.base.items() if k != key}))
    rec = [str(recipe)] if pos_field == "recipe" else ["--config", str(recipe)]
    for form, tokens in all_forms.items():
        for base in (base_args(case, cls, {key, mix[0] if mix else ""}), rec):
            if kind == "positional":
                orders = [[*tokens, *base, *mix_tokens], [*base, *tokens, *mix_tokens]] if form == "bare" else \
                    [[*base, *mix_tokens, *tokens], [*tokens, *mix_tokens, *base]]
            else:  # a list flag's values end at an option or override, not at a positional: that goes first
                orders = [[*tokens_pos, *base, *mix_tokens, *tokens], [*tokens, *base, *tokens_pos, *mix_tokens]]
            for argv in orders:
                got = dry_run([*cmd.path, *argv])
                assert get(got, key) == value, (form, argv, get(got, key))
                if mix:
                    assert got[mix[0]] == mix[1], (form, argv)  # the multi-value flag kept exactly its own values
                if pos_value and kind != "positional":
                    assert got[pos_field] == pos_value, (form, argv)


def test_the_matrix_covers_every_kind_of_every_command():
    """Every command is in the table, with every kind of field its config has (a new command or field kind must
    be added to CASES)."""
    assert set(CASES) == set(CMDS)
    for name, cmd in CMDS.items():
        cls = getattr(__import__(cmd.module, fromlist=["x"]), cmd.config)
        have: set[str] = set()
        for f in dataclasses.fields(cls):
            tp, _ = strip_optional(resolve_type(cls, f.name))
            origin, item = typing.get_origin(tp), (typing.get_args(tp) or (None,))[0]
            if f.name == cmd.positional:
                have.add("positional")
            elif dataclasses.is_dataclass(tp):
                have.add("nested")
            elif origin is dict:
                have.add("mapping")
            elif origin in (list, tuple):
                have.add("index" if dataclasses.is_dataclass(item) else "list")
            elif origin is typing.Literal:
                have.add("literal")
            elif tp is bool:
                have.add("bool")
            else:
                have.add("scalar")
        covered = set(CASES[name].kinds) | ({"positional"} if CASES[name].positional else set())
        assert have <= covered, (name, have - covered)
        list_flags = [f.name for f in dataclasses.fields(cls)
                      if f.name != cmd.positional and f.metadata.get("cli", True) and _kind(cls, f.name) == "list"
                      and not dataclasses.is_dataclass((typing.get_args(resolve_type(cls, f.name)) or (None,))[0])]
        assert bool(list_flags) == bool(CASES[name].mix), (name, list_flags)  # mixed in where the command has one


# ----------------------------------------------------------------------------------------------- shipped recipes
@pytest.mark.parametrize("recipe", sorted((REPO / "vocab").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_vocab_recipes_validate(recipe):
    cfg = resolve(ExtendConfig, yaml_path=str(recipe))
    assert cfg.num_new_tokens > 0
    assert Path(cfg.base).is_absolute() and Path(cfg.output).is_absolute()


CPT_RECIPES = sorted((REPO / "train").glob("cpt_*.yaml")) + [REPO / "train" / "solar_dus_cpt.yaml"]


@pytest.mark.parametrize("recipe", CPT_RECIPES, ids=lambda p: p.name)
def test_shipped_cpt_recipes_validate(recipe):
    from kolm.train.config import CptConfig
    from kolm.train.cpt import deepspeed_config

    cfg = resolve(CptConfig, yaml_path=str(recipe))
    assert cfg.stages and Path(cfg.output).is_absolute()
    deepspeed_config(cfg.deepspeed)  # the preset exists and parses


@pytest.mark.parametrize("preset", ["zero2", "zero3", "zero3_offload"])
def test_deepspeed_presets_are_valid_json(preset):
    from kolm.train.cpt import deepspeed_config

    ds = deepspeed_config(preset)
    assert ds["zero_optimization"]["stage"] in (2, 3)
    assert ds["train_micro_batch_size_per_gpu"] == "auto"


def test_command_line_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch, capsys):
    """``kolm data build RECIPE tokenizer=out/smoke/tok`` looks in ./out/smoke/tok, not next to the recipe
    (train/cpu_smoke.sh passes a relative tokenizer like this); the recipe's own paths stay relative to the recipe."""
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("tokenizer: tok\nmix: {ko: 1.0}\nsources: [{lang: ko, paths: [ko.txt]}]\n")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "build", str(recipe), "--output", "out/data", "tokenizer=out/smoke/tok"]) == 2
    assert f"tokenizer folder not found: {tmp_path / 'out' / 'smoke' / 'tok'}" in capsys.readouterr().err
    assert main(["data", "build", str(recipe), "--output", "out/data"]) == 2
    assert f"tokenizer folder not found: {tmp_path / 'recipes' / 'tok'}" in capsys.readouterr().err
    got = dry_run(["data", "build", str(recipe), "sources.0.paths=[en.txt]"])
    assert got["sources"][0]["paths"] == ["en.txt"]
    got = dry_run(["train", "cpt", "--model", "m", "--data", "d", "--output", "o",
                   "stages=[{name: e, kind: embeddings}, {name: f, max_steps: 3}]"])
    assert [(x["name"], x["kind"], x["max_steps"]) for x in got["stages"]] == [("e", "embeddings", 100),
                                                                              ("f", "full", 3)]


# ------------------------------------------------------------------------------------ README and docs/ lines
def documented_lines() -> list[tuple[str, str]]:
    """(where, command line) for every `kolm ...` line in the code blocks of README.md and docs/*.md and in the
    shipped recipes' comments (continuation lines joined; `deepspeed ... -m kolm.cli ...` included)."""
    out: list[tuple[str, str]] = []
    sources = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        blocks = re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
        sources += [(page.relative_to(REPO).as_posix(), b.splitlines()) for b in blocks]
    for recipe in sorted([*REPO.glob("train/*.yaml"), *REPO.glob("vocab/*.yaml"), *REPO.glob("data_recipes/*.yaml")]):
        comments = [x.lstrip("#") for x in recipe.read_text(encoding="utf-8").splitlines() if x.startswith("#")]
        sources.append((recipe.relative_to(REPO).as_posix(), comments))
    groups = "|".join(sorted({c.path[0] for c in COMMANDS}))
    for where, lines in sources:
        joined = "\n".join(lines).replace("\\\n", " ")
        for line in joined.splitlines():
            m = re.search(rf"(?:^|\s)(kolm(?:\.cli)? (?:{groups})\b.*)", line)
            if m:
                out.append((where, re.sub(r"\s+(#|\(corpus).*$", "", m[1]).strip()))
    return out


def as_argv(line: str) -> list[str]:
    """The arguments of a documented line, with each optional ``[...]`` group filled in with its first choice."""
    line = re.sub(r"\[([^\[\]{}]*)\]", lambda m: " ".join(w.split("|")[0] for w in m[1].split() if w != "..."), line)
    return shlex.split(line)[1:]


DOCUMENTED = documented_lines()


def test_documented_lines_are_found():
    names = {" ".join(as_argv(line)[:2]) for _, line in DOCUMENTED}
    assert len(DOCUMENTED) >= 30 and {"vocab extend", "train cpt", "data build", "eval --model"} <= names
    assert {w.split("/")[0] for w, _ in DOCUMENTED} >= {"README.md", "docs", "train"}


@pytest.mark.parametrize("where,line", DOCUMENTED, ids=[f"{w}:{x[:60]}" for w, x in DOCUMENTED])
def test_every_documented_command_line_resolves(where, line, monkeypatch):
    """Each documented line parses and resolves (as --dry-run would print it), and every value it writes on the
    command line, as a flag or an override, is the value of that field in the resolved config."""
    monkeypatch.chdir(REPO)  # recipes are named relative to the repository root
    from kolm.cli import command_parser, find_command

    argv = as_argv(line)
    cmd = find_command(argv)
    assert cmd is not None, line
    cls = getattr(__import__(cmd.module, fromlist=["x"]), cmd.config)
    got = dry_run(argv)
    _, table = command_parser(cmd, cls)
    rest = argv[len(cmd.path):]

    def same(key: str, raw: str) -> bool:
        tp = key_type(cls, key)[1]
        value, typed = get(got, key), coerce(parse_value(raw, tp), tp, key)
        return set(typed) <= set(value) if isinstance(value, list) else value == typed

    for i, tok in enumerate(rest):
        m = re.fullmatch(r"([a-z_.]+)=(.*)", tok)
        flag = table.get(tok)
        if flag is not None and flag.arity in (1, "+") and flag.dest in got:
            assert same(flag.dest, rest[i + 1]), (tok, rest[i + 1])
        elif flag is not None and flag.arity == 0 and flag.dest in got:
            assert got[flag.dest] is flag.value, tok
        elif m and not (i and table.get(rest[i - 1])):  # an override, not the value of a flag (--text ko=...)
            assert same(m[1], m[2]), tok


# ----------------------------------------------------------------------------------------------- paths and hub ids
def test_is_hub_id(tmp_path, monkeypatch):
    from kolm.paths import is_hub_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "local").mkdir(parents=True)
    hub = ["meta-llama/Llama-2-7b-hf", "Qwen/Qwen2.5-7B", "org/name_1.v2"]
    local = ["name", "./org/name", "../org/name", "/org/name", "~/org", "a/b/c", "org/local", "org/na--me",
             "org/name.git", "org/train.jsonl", "org/recipe.yaml", "-org/x", "org/", "", "org\\name"]
    assert [v for v in hub if not is_hub_id(v)] == []
    assert [v for v in local if is_hub_id(v)] == []
    assert is_hub_id("org/local", tmp_path / "elsewhere") and not is_hub_id("org/local", tmp_path)
    assert not is_hub_id(None) and not is_hub_id(3)


def test_rebase():
    from kolm.paths import rebase

    base = Path("/recipes/sub")
    assert rebase("data/a.txt", base) == "/recipes/sub/data/a.txt"
    assert rebase("../a.txt", base) == "/recipes/a.txt"
    assert rebase("/abs/a.txt", base) == "/abs/a.txt" and rebase("~/a.txt", base) == "~/a.txt"
    assert rebase("org/model", base) == "/recipes/sub/org/model"  # not a hub field
    assert rebase("org/model", base, hub=True) == "org/model"
    assert rebase("org/model.jsonl", base, hub=True) == "/recipes/sub/org/model.jsonl"
    assert rebase("zero3", base, keywords=("zero3",)) == "zero3" and rebase("ds.json", base, keywords=("zero3",)) \
        == "/recipes/sub/ds.json"
    assert rebase("ko=k.txt", base, sep="=") == "ko=/recipes/sub/k.txt" and rebase("k.txt", base, sep="=") == "k.txt"
    assert rebase("", base) == ""


def path_fields(cls: type, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every field declared a path, with its metadata, by dotted name (``sources.paths`` for lists of sections)."""
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cls):
        tp, _ = strip_optional(resolve_type(cls, f.name))
        item = (typing.get_args(tp) or (None,))[0] if typing.get_origin(tp) is list else None
        if f.metadata.get("path"):
            out[prefix + f.name] = dict(f.metadata)
        elif dataclasses.is_dataclass(tp) or dataclasses.is_dataclass(item):
            out.update(path_fields(tp if dataclasses.is_dataclass(tp) else item, prefix + f.name + "."))
    return out


PATH_FIELDS = {
    "demo": {"output", "ko_text", "en_text"},
    "vocab extend": {"base", "corpus", "output"},
    "vocab report": {"tokenizer", "text"},
    "train cpt": {"model", "data", "output", "deepspeed", "eval.sets", "teacher.model"},
    "model init": {"tokenizer", "output"},
    "model resize": {"model", "tokenizer", "output", "base_tokenizer", "corpus"},
    "model import": {"gguf", "output"},
    "data build": {"tokenizer", "output", "sources.paths"},
    "data inspect": {"dir"},
    "train sft": {"model", "output", "tokenizer", "chat_template", "deepspeed", "data.train", "eval.sets"},
    "train dpo": {"model", "output", "tokenizer", "chat_template", "deepspeed", "data.train", "eval.sets"},
    "merge-lora": {"base", "adapter", "output"},
    "upscale": {"model", "output"},
    "eval": {"model", "text", "data", "output", "include_path"},
    "dashboard": {"runs", "output", "base_eval", "eval"},
    "push": {"dir", "run", "eval", "output", "stage"},
}


REL = {"output": "out/x.html", "deepspeed": "ds/zero.json", "chat_template": "tpl/chat.jinja"}


def put(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        data = data[int(p)] if isinstance(data, list) else data.setdefault(p, {})
    data[parts[-1]] = value


@pytest.mark.parametrize("name", list(CMDS))
def test_one_path_rule_for_every_command(name, tmp_path, monkeypatch):
    """In a recipe, every path field (nested ones too) is relative to the recipe's folder, while hub ids and keywords
    stay as written; on the command line the same values stay relative to the working directory."""
    cmd, case = CMDS[name], CASES[name]
    cls = getattr(__import__(cmd.module, fromlist=["x"]), cmd.config)
    fields = path_fields(cls)
    assert set(fields) == PATH_FIELDS[name]
    rdir = tmp_path / "recipes"
    for d in (rdir, tmp_path):
        (d / "rel").mkdir(parents=True, exist_ok=True)
        for f in ("ko_text", "en_text"):  # the demo checks that its text files exist
            (d / "rel" / f).write_text("x\n")
    data, given, want = json.loads(json.dumps(case.base)), {}, {}
    for key, meta in fields.items():
        key = key.replace("sources.", "sources.0.")  # an item of a list of sections
        rel = REL.get(key.split(".")[-1], "rel/" + key.split(".")[-1])
        value, expect = (f"ko={rel}", f"ko={rdir / rel}") if meta.get("sep") else (rel, str(rdir / rel))
        origin = typing.get_origin(strip_optional(key_type(cls, key)[1])[0])
        given[key], want[key] = ([value], [expect]) if origin is list else (value, expect)
        if origin is dict:  # a mapping of paths (eval.sets: {LANG: [FILES]})
            given[key], want[key] = {"ko": [value]}, {"ko": [expect]}
        put(data, key, given[key])
        if meta.get("hub"):  # ORG/NAME that does not exist is a hub id: this one is a local folder
            (rdir / rel).mkdir(parents=True, exist_ok=True)
    recipe = rdir / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    rec = [str(recipe)] if cmd.positional_is_config else ["--config", str(recipe)]
    got = dry_run([*cmd.path, *rec])
    assert {k: get(got, k) for k in want} == want
    got = dry_run([*cmd.path, *rec, *(f"{k}={flow(v)}" for k, v in given.items())])
    assert {k: get(got, k) for k in given} == given
    for key, meta in fields.items():
        key = key.replace("sources.", "sources.0.")
        many = isinstance(given[key], list)
        for kept in [*meta.get("keywords", ()), *(["org/name"] if meta.get("hub") else [])]:
            put(data, key, [kept] if many else kept)
            recipe.write_text(yaml.safe_dump(data))
            assert get(dry_run([*cmd.path, *rec]), key) == ([kept] if many else kept), (key, kept)
            put(data, key, given[key])


def test_framework_noise_is_silenced_and_other_warnings_are_not(tmp_path):
    """kolm's output is progress bars and one line per step: the framework warnings in QUIET_WARNINGS are dropped
    once a command runs, any other warning still shows."""
    import warnings

    from kolm.cli import QUIET_WARNINGS

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        main(["vocab", "extend", "--base", "b", "--corpus", "c.txt", "--num-new-tokens", "5", "--output",
              str(tmp_path / "o"), "--dry-run"])
        warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device pinned memory "
                      "won't be used.", UserWarning, stacklevel=1)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                      stacklevel=1)
        warnings.warn("something a user must see", UserWarning, stacklevel=1)
    assert len(QUIET_WARNINGS) == 3
    assert [str(w.message) for w in seen] == ["something a user must see"]
