"""The CLI and config layer: --help, --dry-run, dotted overrides, recipe paths, every shipped recipe validates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from kolm.cli import COMMANDS, main
from kolm.config import ConfigError, parse_overrides, resolve
from kolm.vocab.extend import ExtendConfig


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c.path))
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd.path, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and ("--config" in out or "config" in out)


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "kolm.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in COMMANDS:
        assert cmd.path[0] in out.stdout


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


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "--c.d", "x", "--e=[1, 2]"]) == [("a.b", 1), ("c.d", "x"), ("e", [1, 2])]
    with pytest.raises(ConfigError):
        parse_overrides(["nonsense"])


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
