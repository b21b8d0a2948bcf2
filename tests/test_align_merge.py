"""``kolm merge-lora`` against foreign and corrupt inputs, and the tokenizer fingerprint it compares
(:func:`kolm.io.tokenizers.tokenizer_fingerprint`): a tokenizer of the same size but other content (Mistral's over
Llama-2, both 32,000) is refused, and each planted fault (a broken ``adapter_config.json``, cut adapter weights, a
truncated or missing base shard) gives one line naming the file, with no traceback and no output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import real_tokenizer, tiny_llama
from test_align_data import sp_tokenizer

from kolm.cli import main
from kolm.errors import KolmError
from kolm.io.models import check_safetensors
from kolm.io.tokenizers import tokenizer_content, tokenizer_fingerprint


def save_lora(model, folder: Path) -> Path:
    """A LoRA adapter of ``model`` with non-zero B matrices (as after training), saved as peft does."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(folder)
    return folder


def base_and_adapter(work: Path, tokenizer: Path) -> tuple[Path, Path]:
    """A tiny base model folder with ``tokenizer`` and a LoRA adapter for it (without a tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    tok.save_pretrained(work / "base")
    tiny_llama(len(tok), hidden=16).save_pretrained(work / "base")
    save_lora(tiny_llama(len(tok), hidden=16), work / "adapter")
    return work / "base", work / "adapter"


def merge(base: Path, adapter: Path, out: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["merge-lora", "--base", str(base), "--adapter", str(adapter), "--output", str(out)])
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_content_not_bytes(tmp_path):
    """Same content, other bytes (transformers' save, the old "a b" merge format, another normalizer): same
    fingerprint. One merge, one swapped id or one special flag changed: another fingerprint."""
    from transformers import AutoTokenizer

    llama2, mistral = real_tokenizer("llama2"), real_tokenizer("mistral")
    fp = tokenizer_fingerprint(llama2)
    assert len(fp) == 64 and fp != tokenizer_fingerprint(mistral)
    tok = AutoTokenizer.from_pretrained(llama2)
    tok.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").read_bytes() != (llama2 / "tokenizer.json").read_bytes()
    assert tokenizer_fingerprint(tmp_path / "saved") == tokenizer_fingerprint(tok) == fp
    assert tokenizer_fingerprint(tok.backend_tokenizer) == tokenizer_fingerprint(llama2 / "tokenizer.json") == fp

    data = json.loads((llama2 / "tokenizer.json").read_text(encoding="utf-8"))

    def variant(name: str, change) -> str:
        d = json.loads(json.dumps(data))
        change(d)
        (tmp_path / name).write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
        return tokenizer_fingerprint(tmp_path / name)

    def old_merges(d):
        d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]

    def new_merges(d):
        d["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in d["model"]["merges"]]

    def swap_ids(d):
        v = d["model"]["vocab"]
        v["▁the"], v["▁and"] = v["▁and"], v["▁the"]

    assert variant("old.json", old_merges) == variant("new.json", new_merges) == fp
    assert variant("norm.json", lambda d: d.update(normalizer=None)) == fp
    assert variant("merge.json", lambda d: d["model"]["merges"].pop()) != fp
    assert variant("swap.json", swap_ids) != fp
    assert variant("special.json", lambda d: d["added_tokens"][0].update(special=False)) != fp
    assert tokenizer_content(tmp_path / "swap.json")["vocab"] != tokenizer_content(llama2)["vocab"]

    (tmp_path / "broken.json").write_text(json.dumps(data)[:5000])
    with pytest.raises(KolmError, match="broken.json: not a readable tokenizer.json: not valid JSON"):
        tokenizer_fingerprint(tmp_path / "broken.json")
    with pytest.raises(KolmError, match="not found"):
        tokenizer_fingerprint(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------- foreign tokenizer
def test_same_size_foreign_tokenizer_is_refused(tmp_path, capsys):
    """Mistral's tokenizer in the adapter over a Llama-2 base (both 32,000 tokens) is refused, naming the first id
    that differs; so is an adapter whose kolm_adapter.json says it was trained with Mistral's. The base's own
    tokenizer, saved by transformers (other bytes), merges, and merge.json records both fingerprints."""
    from transformers import AutoTokenizer

    base, adapter = base_and_adapter(tmp_path, real_tokenizer("llama2"))
    AutoTokenizer.from_pretrained(real_tokenizer("mistral")).save_pretrained(adapter)
    code, err = merge(base, adapter, tmp_path / "out", capsys)
    assert code == 2 and "belongs to another tokenizer" in err and "vocabulary of 32000 vs 32000 entries" in err
    assert "first id " in err and "Traceback" not in err and not (tmp_path / "out").exists()

    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)  # the base's tokenizer, written anew
    (adapter / "kolm_adapter.json").write_text(json.dumps(
        {"vocab_size": 32000, "tokenizer_fingerprint": tokenizer_fingerprint(real_tokenizer("mistral"))}))
    code, err = merge(base, adapter, tmp_path / "out", capsys)
    assert code == 2 and "kolm_adapter.json" in err and "another tokenizer" in err

    (adapter / "kolm_adapter.json").write_text(json.dumps(
        {"vocab_size": 32000, "tokenizer_fingerprint": tokenizer_fingerprint(base)}))
    code, err = merge(base, adapter, tmp_path / "out", capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "merge.json").read_text())
    fp = tokenizer_fingerprint(real_tokenizer("llama2"))
    assert record["tokenizer_fingerprint"] == {"base": fp, "adapter": fp, "trained_with": fp}
    assert tokenizer_fingerprint(tmp_path / "out") == fp
    assert any(c.startswith("tokenizer content") for c in record["vocab_checked_against"])


# ----------------------------------------------------------------------------------------------- corrupt inputs
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("pair")
    return base_and_adapter(work, sp_tokenizer(work / "tok"))


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _shard(base: Path) -> None:
    """Split the base into two shards with an index, then delete the second shard."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(base / "model.safetensors"))
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, str(base / shard), metadata={"format": "pt"})
    (base / "model.safetensors").unlink()
    (base / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for shard, keys in halves.items() for k in keys}}))
    (base / "model-00002-of-00002.safetensors").unlink()


FAULTS = {
    "adapter-config-not-json": ("adapter", lambda a: _cut(a / "adapter_config.json", 0.5),
                                "adapter_config.json: not a readable peft adapter config: not valid JSON"),
    "adapter-config-not-peft": ("adapter", lambda a: (a / "adapter_config.json").write_text('{"r": 8}'),
                                "adapter_config.json: not a valid peft adapter config"),
    "adapter-weights-cut": ("adapter", lambda a: _cut(a / "adapter_model.safetensors", 0.6),
                            "adapter_model.safetensors: not a complete safetensors file"),
    "adapter-weights-pickle": ("adapter", lambda a: (a / "adapter_model.safetensors").rename(a / "adapter_model.bin"),
                               "pickle"),
    "base-weights-truncated": ("base", lambda b: _cut(b / "model.safetensors", 0.9),
                               "model.safetensors: not a complete safetensors file"),
    "base-shard-missing": ("base", _shard, "lists shards that are missing: model-00002-of-00002.safetensors"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_corrupt_inputs_give_one_line(fault, tiny_pair, tmp_path, capsys):
    base, adapter = (shutil.copytree(p, tmp_path / p.name) for p in tiny_pair)
    which, plant, message = FAULTS[fault]
    plant(base if which == "base" else adapter)
    code, err = merge(base, adapter, tmp_path / "out", capsys)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and not (tmp_path / "out").exists()
    assert str(base if which == "base" else adapter) in err  # the line names the file


def test_intact_pair_merges_and_check_safetensors_lists_files(tiny_pair, tmp_path, capsys):
    base, adapter = tiny_pair
    code, err = merge(base, adapter, tmp_path / "out", capsys)
    assert code == 0, err
    assert check_safetensors(base) == [base / "model.safetensors"]
    assert check_safetensors(adapter, "adapter_model*.safetensors") == [adapter / "adapter_model.safetensors"]
    with pytest.raises(KolmError, match="no \\*.bin weights"):
        check_safetensors(base, "*.bin")


def test_sft_refuses_a_truncated_base_by_name(tiny_pair, tmp_path):
    from test_align import sft_cfg

    from kolm.align import sft

    base = shutil.copytree(tiny_pair[0], tmp_path / "base")
    _cut(base / "model.safetensors", 0.9)
    with pytest.raises(KolmError, match=f"{base / 'model.safetensors'}: not a complete safetensors file"):
        sft.build_trainer(sft_cfg(base, tmp_path / "out", steps=1))
