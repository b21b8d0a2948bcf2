"""kolm upscale (SOLAR depth up-scaling): layers copied by the map, the model loads and generates with a KV cache,
the identity map reproduces the logits exactly, extended/tied vocabularies, dry-run counts, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, make_sp_tokenizer, tiny_llama

from kolm.cli import main
from kolm.config import ConfigError, resolve
from kolm.errors import KolmError
from kolm.model.upscale import (
    UpscaleConfig,
    count_parameters,
    format_layer_map,
    load_source,
    parse_layer_map,
    parse_size,
    read_header,
    run,
    upscale_config,
)

N = 6  # source layers of the tiny models
DUS = [0, 1, 2, 3, 2, 3, 4, 5]  # drop 2 of 6: the SOLAR stack in miniature


def tiny(arch: str, vocab: int = 96, **kw):
    """A tiny decoder of each supported family, built from config (no download)."""
    from transformers import (
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(0)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=N, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    common.update(kw)
    if arch == "llama":
        return tiny_llama(vocab, layers=N, **kw)
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(**common))
    if arch == "qwen2":  # sliding-window layers from layer 3 on: layer_types must follow the map
        return Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=True, sliding_window=4, max_window_layers=3))
    if arch == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=8))
    raise ValueError(arch)


def save(model, path: Path, shard: str = "20KB") -> Path:
    model.save_pretrained(path, max_shard_size=shard)  # several shards: the index path is exercised
    return path


def load(path: Path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return model.eval()


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def nothing_left(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


# ----------------------------------------------------------------------------------------------- the stack
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_dus_copies_layers_by_the_map_and_generates(arch, tmp_path):
    src_model = tiny(arch).eval()
    src = save(src_model, tmp_path / "src")
    out = tmp_path / "out"
    stats = run(UpscaleConfig(model=str(src), output=str(out), drop_layers=2, max_shard_size="30KB"))
    assert stats["layers"] == DUS and stats["layer_map"] == "0-3,2-5"

    # Files: every output tensor is its mapped source tensor, bit for bit; nothing missing, nothing extra.
    s, o = file_tensors(src), file_tensors(out)
    expected = {}
    for k in s:
        if k.startswith("model.layers."):
            i, rest = k.split(".", 3)[2:]
            expected.update({f"model.layers.{j}.{rest}": k for j, m in enumerate(DUS) if m == int(i)})
        else:
            expected[k] = k
    assert set(o) == set(expected)
    for k, sk in expected.items():
        assert o[k].dtype == s[sk].dtype and torch.equal(o[k], s[sk]), k
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(o)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in o.values())
    for shard in set(index["weight_map"].values()):  # streaming holds one shard: each stays within the limit
        infos = read_header(out / shard).values()
        assert len(infos) == 1 or sum(i.nbytes for i in infos) <= parse_size("30KB")

    # config.json: identical but for the depth and the per-layer fields.
    sc, oc = json.loads((src / "config.json").read_text()), json.loads((out / "config.json").read_text())
    assert oc.pop("num_hidden_layers") == len(DUS) and sc.pop("num_hidden_layers") == N
    if "layer_types" in sc:
        types = sc.pop("layer_types")
        assert oc.pop("layer_types") == [types[i] for i in DUS]
    if arch == "qwen2":
        assert "sliding_attention" in json.loads((out / "config.json").read_text())["layer_types"]
        assert oc.pop("max_window_layers") == 4 and sc.pop("max_window_layers") == 3
    assert oc == sc
    assert (out / "generation_config.json").read_bytes() == (src / "generation_config.json").read_bytes()

    # The model loads (no missing/unexpected keys), each layer is its source layer and knows its new index.
    model = load(out)
    assert model.config.num_hidden_layers == len(DUS)
    assert model.num_parameters() == stats["parameters"][1] and src_model.num_parameters() == stats["parameters"][0]
    for j, i in enumerate(DUS):
        layer, ref = model.model.layers[j], src_model.model.layers[i]
        assert layer.self_attn.layer_idx == j
        for (n1, p1), (n2, p2) in zip(layer.state_dict().items(), ref.state_dict().items(), strict=True):
            assert n1 == n2 and torch.equal(p1, p2), (j, n1)
    ids = torch.tensor([[1, 5, 7, 9, 11, 13, 17, 19, 23, 29]])  # longer than qwen2's sliding window of 4
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], 96)
        kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        cached = model.generate(ids, use_cache=True, **kw)
        uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape[1] == ids.shape[1] + 6 and torch.equal(cached, uncached)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_identity_map_reproduces_logits_exactly(arch, tmp_path):
    src = save(tiny(arch), tmp_path / "src")
    out = tmp_path / "out"
    run(UpscaleConfig(model=str(src), output=str(out), layer_map=f"0-{N - 1}"))
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    ids = torch.tensor([[1, 4, 9, 16, 25, 36, 49, 64, 81, 3, 7, 11]])
    with torch.no_grad():
        assert torch.equal(load(src)(ids).logits, load(out)(ids).logits)


@pytest.mark.parametrize("tie", [False, True])
def test_extended_vocabulary(tie, tmp_path):
    model = tiny_llama(100, layers=N, tie=tie)
    model.resize_token_embeddings(164)  # an extended tokenizer's rows past the base ones
    src = save(model, tmp_path / "src")
    out = tmp_path / "out"
    run(UpscaleConfig(model=str(src), output=str(out), drop_layers=1, max_shard_size="25KB"))
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 164
    assert ("lm_head.weight" in file_tensors(out)) == ("lm_head.weight" in file_tensors(src)) == (not tie)
    up = load(out)
    assert up.model.embed_tokens.weight.shape == (164, 32)
    assert torch.equal(up.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert torch.equal(up.lm_head.weight, model.lm_head.weight)
    assert (up.lm_head.weight.data_ptr() == up.model.embed_tokens.weight.data_ptr()) == tie
    with torch.no_grad():
        logits = up(torch.tensor([[1, 150, 163, 7]])).logits
    assert logits.shape == (1, 4, 164) and torch.isfinite(logits).all()


def test_tokenizer_and_extras_are_copied(tmp_path):
    src = tmp_path / "src"
    texts = [f"안녕하세요 세계 {i} hello world 한국어 모델" for i in range(50)]
    make_sp_tokenizer(texts, src, vocab_size=300)
    save(tiny_llama(320, layers=N), src)
    (src / "extension.json").write_text('{"added": []}\n')
    (src / "resize.json").write_text('{"base_tokenizer_size": 259}\n')
    out = tmp_path / "out"
    assert main(["upscale", "--model", str(src), "--output", str(out), "--layer-map", "0-5,3-5"]) == 0
    for name in ("tokenizer.json", "tokenizer_config.json", "extension.json", "resize.json", "generation_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    from transformers import AutoTokenizer

    text = "안녕하세요 hello"
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == AutoTokenizer.from_pretrained(src)(text).input_ids
    meta = json.loads((out / "upscale.json").read_text())
    assert meta["layers"] == [0, 1, 2, 3, 4, 5, 3, 4, 5] and meta["config"]["layer_map"] == "0-5,3-5"


def test_recipe_with_relative_paths_and_overwrite(tmp_path, capsys):
    save(tiny("mistral"), tmp_path / "models" / "src")
    recipe = tmp_path / "recipes" / "dus.yaml"
    recipe.parent.mkdir()
    recipe.write_text("model: ../models/src\noutput: ../models/up\ndrop_layers: 2\nmax_shard_size: 40KB\n")
    assert main(["upscale", "--config", str(recipe)]) == 0
    assert json.loads((tmp_path / "models" / "up" / "config.json").read_text())["num_hidden_layers"] == 8
    assert main(["upscale", "--config", str(recipe)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["upscale", "--config", str(recipe), "--overwrite", "drop_layers=null", "--layer-map", "0-5"]) == 0
    assert json.loads((tmp_path / "models" / "up" / "config.json").read_text())["num_hidden_layers"] == 6


# ----------------------------------------------------------------------------------------------- dry run / counts
LLAMA2_7B = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                 tie_word_embeddings=False)
MISTRAL_7B = dict(model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=4096,
                  intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  vocab_size=32000, tie_word_embeddings=False)


@pytest.mark.parametrize(("config", "before", "after", "with_index"), [
    (LLAMA2_7B, "(6.74B)", "(9.98B)", False),  # ~6.7B -> ~10.0B
    (MISTRAL_7B, "(7.24B)", "(10.73B)", True),  # SOLAR: 7.2B -> 10.7B
])
def test_dry_run_on_config_only(config, before, after, with_index, tmp_path, capsys):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    if with_index:  # an index whose shards are not here: the dry run must not need them
        wm = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    out = tmp_path / "out"
    assert main(["upscale", "--model", str(d), "--output", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"{before} -> " in text and text.rstrip().endswith(f"{after} (from config.json)")
    assert "layer map: 0-23,8-31 -> 48 layers" in text and "output 24-47 <- source 8-31" in text
    assert yaml.safe_load(text)["drop_layers"] == 8  # the extra lines are comments: still a loadable recipe
    assert nothing_left(out)


@pytest.mark.parametrize("config", [LLAMA2_7B, MISTRAL_7B, dict(  # a Qwen2.5-7B shape: q/k/v biases, tied heads
    model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=True)], ids=["llama2", "mistral", "qwen2"])
def test_config_count_matches_transformers_on_real_shapes(config, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    counts = count_parameters(load_source(d, need_weights=False), list(range(config["num_hidden_layers"])))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    assert counts.before == counts.after == model.num_parameters()


@pytest.mark.parametrize("arch,kw", [("llama", {}), ("llama", {"tie": True}), ("mistral", {}), ("qwen2", {}),
                                     ("qwen3", {}), ("qwen3", {"attention_bias": True})])
def test_header_and_config_counts_agree(arch, kw, tmp_path):
    if arch == "llama" and kw.get("tie"):
        model = tiny_llama(96, layers=N, tie=True)
    else:
        model = tiny(arch, **kw)
    src = save(model, tmp_path / "src")
    from_headers = count_parameters(load_source(src), DUS)
    shutil.copytree(src, tmp_path / "cfg", ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    from_config = count_parameters(load_source(tmp_path / "cfg", need_weights=False), DUS)
    assert from_headers.source == "safetensors headers" and from_config.source == "config.json"
    assert from_headers.before == from_config.before == model.num_parameters()
    assert from_headers.after == from_config.after


# ----------------------------------------------------------------------------------------------- pieces
def test_layer_map_syntax_and_sizes():
    assert parse_layer_map("0-23,8-31") == [*range(24), *range(8, 32)]
    assert parse_layer_map(" 0 - 2 , 5, 1-1") == [0, 1, 2, 5, 1]
    assert format_layer_map([*range(24), *range(8, 32)]) == "0-23,8-31"
    assert format_layer_map([0, 1, 2, 5, 1]) == "0-2,5,1"
    for bad in ("", "0-", "a-3", "3-1", "0-3;4-5", "-1"):
        with pytest.raises(ValueError):
            parse_layer_map(bad)
    assert parse_size("2GB") == 2 * 10**9 and parse_size("512MiB") == 512 * 2**20 and parse_size(1000) == 1000
    assert parse_size("1.5kb") == 1500
    with pytest.raises(ValueError):
        parse_size("2 lots")


def test_qwen_sliding_layers_without_layer_types_are_spelled_out():
    from transformers import Qwen2Config

    src = dict(num_hidden_layers=N, use_sliding_window=True, sliding_window=4,
               max_window_layers=3, hidden_size=32, num_attention_heads=4)
    out = upscale_config(src, DUS)  # flags full,full,full,sliding,full,sliding,...: not a prefix -> explicit list
    derived = Qwen2Config(**src).layer_types
    assert out["layer_types"] == [derived[i] for i in DUS] == Qwen2Config(**out).layer_types
    prefix = upscale_config(src, [0, 1, 2, 1, 2, 3, 4, 5])  # still "full first, then sliding": a count says it
    assert "layer_types" not in prefix and prefix["max_window_layers"] == 5
    assert Qwen2Config(**prefix).layer_types == [derived[i] for i in [0, 1, 2, 1, 2, 3, 4, 5]]


def test_shipped_recipes():
    cfg = resolve(UpscaleConfig, yaml_path=str(REPO / "train" / "solar_dus.yaml"))
    assert cfg.drop_layers == 8 and cfg.layer_map is None
    assert cfg.model == "mistralai/Mistral-7B-v0.1" and Path(cfg.output).is_absolute()
    from kolm.train.config import CptConfig

    cpt = resolve(CptConfig, yaml_path=str(REPO / "train" / "solar_dus_cpt.yaml"))
    assert cpt.model == cfg.output  # the CPT step trains what the upscale step wrote


# ----------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def llama_src(tmp_path_factory):
    return save(tiny_llama(96, layers=N), tmp_path_factory.mktemp("up") / "src")


@pytest.mark.parametrize(("flags", "match"), [
    (["--drop-layers", "3"], "drop_layers: 3 must be less than half"),
    (["--drop-layers", "5"], "drop_layers"),
    (["--layer-map", "0-3,2-6"], "layer 6 is out of range"),
])
def test_bad_plans_fail_clearly_and_write_nothing(llama_src, flags, match, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["upscale", "--model", str(llama_src), "--output", str(out), *flags]) == 2
    assert match in capsys.readouterr().err
    assert nothing_left(out)
    assert main(["upscale", "--model", str(llama_src), "--output", str(out), *flags, "--dry-run"]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layer_map": "0-3,x"}, "layer_map"),
    ({"layer_map": "3-1"}, "backwards"),
    ({"layer_map": "0-5", "drop_layers": 2}, "not both"),
    ({"drop_layers": -1}, "drop_layers"),
    ({"max_shard_size": "big"}, "max_shard_size"),
])
def test_bad_config_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        UpscaleConfig(model="m", output="o", **kwargs)


def test_unknown_architecture_pickles_and_quantized(llama_src, tmp_path):
    out = tmp_path / "out"
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(llama_src, gpt2)
    cfg = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(KolmError, match="unknown architecture.*gpt2"):
        run(UpscaleConfig(model=str(gpt2), output=str(out)))
    quant = tmp_path / "quant"
    shutil.copytree(llama_src, quant)
    (quant / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(KolmError, match="quantized"):
        run(UpscaleConfig(model=str(quant), output=str(out), drop_layers=1))
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    shutil.copy(llama_src / "config.json", pickles)
    torch.save({}, pickles / "pytorch_model.bin")
    with pytest.raises(KolmError, match="pickle"):
        run(UpscaleConfig(model=str(pickles), output=str(out), drop_layers=1))
    mismatch = tmp_path / "mismatch"
    shutil.copytree(llama_src, mismatch)
    (mismatch / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 8}))
    with pytest.raises(KolmError, match="num_hidden_layers is 8 but the weights hold layers 0-5"):
        run(UpscaleConfig(model=str(mismatch), output=str(out), drop_layers=1))
    assert nothing_left(out)
    with pytest.raises(KolmError, match="must not be the source"):
        run(UpscaleConfig(model=str(llama_src), output=str(llama_src), drop_layers=1, overwrite=True))


def test_failure_while_writing_leaves_nothing(llama_src, tmp_path, monkeypatch):
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", flaky)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        run(UpscaleConfig(model=str(llama_src), output=str(out), drop_layers=2, max_shard_size="20KB"))
    assert len(calls) == 3 and nothing_left(out)
