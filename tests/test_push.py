"""``kolm push``: the model card, the file list, the upload calls (mocked HfApi, no network), the token's secrecy."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
from huggingface_hub import HfApi, ModelCard
from test_dashboard import eval_results, make_run, task_entry

from kolm.cli import main

SECRET = "hf_kolmTestSecret0123456789abcdefABCDEF"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # hermetic
    r = make_run(tmp_path, "run-emb-full", ko=[4.69, 4.68, 4.65, 4.54, 4.40], en=[3.3268, 3.3267, 3.3266, 3.32, 3.35])
    final = r / "final"
    # training leftovers that must not be uploaded
    (final / "training_args.bin").write_bytes(b"pickle")
    (final / "KOLM_DONE").write_text("complete\n")
    (final / "checkpoint-6").mkdir()
    (final / "checkpoint-6" / "optimizer.pt").write_bytes(b"x")
    (final / "pytorch_model.bin").write_bytes(b"pickle weights")
    (final / "generation_config.json").write_text("{}")
    # the base model: a hub snapshot in the HF cache layout, with its card
    base = tmp_path / "hf" / "models--meta-llama--Llama-2-7b-hf" / "snapshots" / "abc123"
    base.mkdir(parents=True)
    (base / "README.md").write_text("---\nlicense: llama2\nlanguage: [en]\n---\n# Llama 2\n")
    (final / "resize.json").write_text(json.dumps({"init": "subword-mean", "old_vocab_size": 32000,
                                                   "new_vocab_size": 32500, "config": {"model": str(base)}}))
    return r


EXPECTED = ["config.json", "extension.json", "generation_config.json", "model.safetensors", "resize.json",
            "tokenizer.json", "tokenizer_config.json"]


def test_dry_run_writes_card_and_lists_files(run, tmp_path, capsys):
    card_path = tmp_path / "card" / "README.md"
    assert main(["push", str(run), "--repo-id", "my-org/llama2-ko", "--dry-run", "--output", str(card_path)]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == [*EXPECTED, "README.md"]
    assert "left out (4)" in out and "training_args.bin" in out and "checkpoint-6/optimizer.pt" in out
    assert not (run / "final" / "README.md").exists()  # --output: the model folder is left alone
    card = ModelCard(card_path.read_text())
    meta = card.data.to_dict()
    assert meta["language"] == ["ko", "en"] and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "llama2"  # from the base model's card
    assert meta["base_model"] == "meta-llama/Llama-2-7b-hf"
    assert meta["datasets"] == ["org/ko-wiki"]  # hub sources of the data manifest
    text = card.text
    # how it was made: extension numbers, data mix, stages, steps, tokens
    assert "| 32,000 | 32,500 | 500 | 125 | 375 | 0.709 → 1.415 |" in text
    assert "| ko | 0.800 | 0.800 | 126,293 |" in text and "| ko-wiki" not in text and "| org/ko-wiki | ko |" in text
    assert "| 0 | embeddings | embeddings | 6 | 0.01 | 2 |" in text and "| 1 | full | full | 6 | 0.003 | 2 |" in text
    assert "12 optimizer steps, 6,144 tokens seen" in text
    # the bits-per-byte table: reference (step 0) vs the last evaluation
    assert "| model | ko bpb | en bpb |" in text
    assert "| base (step 0) | 4.6900 | 3.3268 |" in text and "| this model (step 12) | 4.4000 | 3.3500 |" in text
    assert 'AutoModelForCausalLM.from_pretrained("my-org/llama2-ko"' in text
    # an extended vocabulary: the usage generates through WholeCharacters, and the snippet runs as written
    assert "logits_processor=[WholeCharacters(tokenizer)]" in text
    snippet = text.split("```python\n")[1].split("```")[0]
    compile(snippet, "card", "exec")
    assert "from kolm.eval.generation import WholeCharacters, whole_text" in snippet
    assert "print(whole_text(tokenizer, output[0, inputs['input_ids'].shape[1]:].tolist()))" in snippet
    # the card of a real push is the same; without --output it goes into the model folder
    assert main(["push", str(run / "final"), "--repo-id", "my-org/llama2-ko", "--dry-run"]) == 0
    assert (run / "final" / "README.md").read_text() == card_path.read_text()


def test_eval_results_table_and_license_fallbacks(run, tmp_path, capsys):
    res = {"texts": {"ko": {"docs": 20, "bytes": 4572}, "en": {"docs": 20, "bytes": 4207}},
           "rows": [{"model": "/m/base", "name": "base", "lang": "ko", "bpb": 9.1761, "delta_bpb": None,
                     "delta_pct": None, "docs": 20, "bytes": 4572, "tokens": 2793, "bytes_per_token": 1.64},
                    {"model": "/m/final", "name": "final", "lang": "ko", "bpb": 4.3989, "delta_bpb": -4.7772,
                     "delta_pct": -52.1, "docs": 20, "bytes": 4572, "tokens": 1426, "bytes_per_token": 3.21}]}
    (tmp_path / "results.json").write_text(json.dumps(res))
    (run / "final" / "resize.json").unlink()  # no base card: the license is unknown
    card = tmp_path / "c.md"
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run", "--output", str(card), "--eval",
                 str(tmp_path / "results.json"), "--license", "apache-2.0"]) == 0
    text = card.read_text()
    assert ModelCard(text).data.license == "apache-2.0"
    assert "| final | ko | 4.3989 | -4.7772 (-52.1%) | 20 | 4572 | 1426 | 3.21 |" in text
    # extension.json names the base tokenizer's hub id: the base model
    assert ModelCard(text).data.base_model == "meta-llama/Llama-2-7b-hf"
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run", "--output", str(card)]) == 0
    text = card.read_text()
    assert ModelCard(text).data.license == "other" and "set it with --license" in text


def test_task_scores_on_the_card(run, tmp_path):
    base_tasks = {"kolm_ko_mc": task_entry({"acc": 0.25}), "mmlu": task_entry({"acc": 0.4}, n=5700, shots=5, lang="en")}
    res = eval_results(tmp_path / "results.json", [
        ("base", tmp_path / "base-model", base_tasks),
        ("run-emb-full/final", run / "final", {"kolm_ko_mc": task_entry({"acc": 0.5}),
                                               "mmlu": task_entry({"acc": 0.35}, n=570, shots=5, lang="en")})])
    card = tmp_path / "c.md"
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run", "--output", str(card), "--eval", str(res)]) == 0
    text = card.read_text()
    assert ModelCard(text).data.base_model == "meta-llama/Llama-2-7b-hf"  # the card still parses
    tasks = text[text.index("## Evaluation: benchmark tasks"):]
    assert "This model is `run-emb-full/final`." in tasks
    assert "| base | kolm_ko_mc | ko | acc | 0.2500 | 0.0500 | - | 44 | 0 |" in tasks
    assert "| run-emb-full/final | kolm_ko_mc | ko | acc | 0.5000 | 0.0500 | +0.2500 | 44 | 0 |" in tasks
    assert "| run-emb-full/final | mmlu | en | acc | 0.3500 | 0.0500 | settings differ | 570 | 5 |" in tasks
    # a results.json with task scores only: the bits-per-byte table comes from the run's own evaluation
    assert "| base (step 0) | 4.6900 | 3.3268 |" in text and text.index("bits per byte") < text.index("benchmark tasks")
    # the same file given to a model it does not hold: every model's scores, none called "this model"
    other = tmp_path / "other.json"
    other.write_text(res.read_text().replace(str((run / "final").resolve()), str(tmp_path / "x")))
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run", "--output", str(card), "--eval", str(other)]) == 0
    assert "This model is" not in card.read_text() and "| run-emb-full/final | kolm_ko_mc |" in card.read_text()
    (tmp_path / "empty.json").write_text('{"models": [{"model": "m", "bpb": {}}], "rows": []}')
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run", "--eval", str(tmp_path / "empty.json")]) == 2


@pytest.mark.parametrize("repo_id", ["bad id/name", "org/na--me", "a/b/c", "org/name.git", "org/n@me"])
def test_invalid_repo_id(run, repo_id, capsys):
    assert main(["push", str(run), "--repo-id", repo_id, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "repo_id" in err and "not a valid Hub repo id" in err


def test_model_without_tokenizer_or_weights(run, tmp_path, capsys):
    unfinished = make_run(tmp_path, "unfinished", ko=[4.0], en=[3.0], finished=False)
    assert main(["push", str(unfinished), "--repo-id", "o/n", "--dry-run"]) == 2
    assert "no final/ model yet" in capsys.readouterr().err
    (run / "final" / "tokenizer.json").unlink()
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run"]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    (run / "final" / "model.safetensors").unlink()
    assert main(["push", str(run), "--repo-id", "o/n", "--dry-run"]) == 2
    assert "safetensors" in capsys.readouterr().err


staged: list[str] = []


def _upload_folder(self, *, folder_path, **kw):
    """Record the files of the staged upload folder (a temporary folder, gone after the push)."""
    staged[:] = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
    return mock.Mock(commit_url="https://huggingface.co/my-org/llama2-ko/commit/1")


def _patched():
    return (mock.patch.object(HfApi, "create_repo", autospec=True,
                              return_value="https://huggingface.co/my-org/llama2-ko"),
            mock.patch.object(HfApi, "create_branch", autospec=True),
            mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=_upload_folder))


def test_push_calls_the_hub_api_and_never_leaks_the_token(run, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    p1, p2, p3 = _patched()
    with p1 as create_repo, p2 as create_branch, p3 as upload:
        assert main(["push", str(run), "--repo-id", "my-org/llama2-ko", "--private", "--revision", "v1"]) == 0
        assert main(["push", str(run), "--repo-id", "my-org/llama2-ko", "--dry-run"]) == 0
    (api, repo), kw = create_repo.call_args
    assert api.token == SECRET  # the token is used ...
    assert repo == "my-org/llama2-ko" and kw["private"] is True and kw["exist_ok"] is True
    assert create_branch.call_args.args[1] == "my-org/llama2-ko" and create_branch.call_args.kwargs["branch"] == "v1"
    kw = upload.call_args.kwargs
    assert kw["repo_id"] == "my-org/llama2-ko" and kw["revision"] == "v1"
    # a staged folder holding exactly the intended files (read while the mock ran: it is removed afterwards)
    assert staged == sorted([*EXPECTED, "README.md"])
    assert ModelCard((run / "final" / "README.md").read_text()).data.base_model == "meta-llama/Llama-2-7b-hf"
    # ... but never shown, logged or written
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text
    assert "token: found" in out.out
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_push_to_main_without_branch_and_errors_are_scrubbed(run, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    p1, p2, p3 = _patched()
    with p1, p2 as create_branch, p3 as upload:
        assert main(["push", str(run / "final"), "--repo-id", "my-org/llama2-ko"]) == 0
        assert not create_branch.called and upload.call_args.kwargs["revision"] is None
        upload.side_effect = RuntimeError(f"401 Unauthorized: token {SECRET} is invalid")
        assert main(["push", str(run), "--repo-id", "my-org/llama2-ko"]) == 2
    err = capsys.readouterr().err
    assert "push to my-org/llama2-ko failed" in err and "***" in err and SECRET not in err


def test_no_token_and_foreign_readme(run, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    p1, p2, p3 = _patched()
    with p1 as create_repo, p2, p3:
        assert main(["push", str(run), "--repo-id", "o/n"]) == 2
        assert "no Hugging Face token" in capsys.readouterr().err and not create_repo.called
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: SECRET)
        (run / "final" / "README.md").write_text("# my own card\n")
        assert main(["push", str(run), "--repo-id", "o/n"]) == 2
        assert "--overwrite-card" in capsys.readouterr().err and not create_repo.called
        assert main(["push", str(run), "--repo-id", "o/n", "--overwrite-card"]) == 0
    assert "generated by kolm push" in (run / "final" / "README.md").read_text()


def test_base_model_of_a_gguf_import_is_its_source_repository(run, tmp_path, capsys):
    """A model resized from a folder `kolm model import` wrote names the repository its weights came from
    (import.json's source_repo) as base_model, and the license of that folder's card; an import that names none
    leaves base_model unknown, as before."""
    imported = tmp_path / "imported"
    imported.mkdir()
    (imported / "README.md").write_text("---\nlicense: apache-2.0\n---\n# SmolLM2\n")
    final = run / "final"
    (final / "resize.json").write_text(json.dumps({"init": "distill", "old_vocab_size": 32000,
                                                   "new_vocab_size": 32500, "config": {"model": str(imported)}}))
    ext = json.loads((final / "extension.json").read_text())
    (final / "extension.json").write_text(json.dumps({**ext, "base": str(imported)}))  # extended from the import
    card = tmp_path / "card.md"
    for record, base in (({"source": "m.gguf"}, None),
                         ({"source": "m.gguf", "source_repo": "HuggingFaceTB/SmolLM2-135M-Instruct"},
                          "HuggingFaceTB/SmolLM2-135M-Instruct")):
        (imported / "import.json").write_text(json.dumps(record))
        assert main(["push", str(final), "--repo-id", "my-org/smollm2-ko", "--dry-run",
                     "--output", str(card)]) == 0  # the model folder alone: no run recipe names another base
        meta = ModelCard(card.read_text()).data.to_dict()
        assert meta.get("base_model") == base and meta["license"] == "apache-2.0"
        assert f"base_model {base or 'unknown'}" in capsys.readouterr().out
