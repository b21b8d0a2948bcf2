"""``kolm eval --tasks/--suite``: kolm's Korean task through the real lm-evaluation-harness, checked against
log-likelihoods computed here with transformers; a model trained on the answers scores 1.0; the forgetting suite's
names against lm-eval's registry; clear errors offline, for unknown names and for broken local task files."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
from helpers import REPO, make_sp_tokenizer, tiny_llama

from kolm.cli import main
from kolm.eval import harness

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is in the dev extra (pip install -e '.[dev]')")

TASK_DIR = REPO / "kolm" / "eval" / "tasks"
ITEMS = [json.loads(x) for x in (TASK_DIR / "kolm_ko_mc_test.jsonl").read_text(encoding="utf-8").splitlines()]
DEV = [json.loads(x) for x in (TASK_DIR / "kolm_ko_mc_dev.jsonl").read_text(encoding="utf-8").splitlines()]


def _context(item: dict) -> str:
    return f"질문: {item['question']}\n정답:"  # doc_to_text of kolm_ko_mc.yaml


def _memorize(model, tok, rounds: int = 16, steps: int = 25) -> None:
    """Train on "question -> right answer" with the loss on the answer only, in rounds of ``steps``, until every
    item's right answer has the highest log-likelihood by :func:`_choice_lls` (how long that takes depends on the
    BLAS and package versions: 100 steps left one item wrong on one machine)."""
    import torch

    texts = [f"{_context(it)} {it['choices'][it['answer']]}" for it in ITEMS]
    tok.pad_token = tok.eos_token
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = enc.input_ids.clone()
    labels[enc.attention_mask == 0] = -100
    for i, it in enumerate(ITEMS):
        labels[i, : len(tok(_context(it)).input_ids)] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(rounds):
        model.train()
        for _ in range(steps):
            model(**enc, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        if all(_argmax(lls) == it["answer"] for lls, it in zip(_choice_lls(model, tok), ITEMS)):
            return
    raise AssertionError(f"the tiny model did not learn every answer in {rounds * steps} steps")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(an untrained tiny Llama, the same model trained on the task's answers), one tokenizer."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("task_models")
    corpus = [_context(it) + " " + " ".join(it["choices"]) for it in ITEMS + DEV]
    make_sp_tokenizer(corpus * 3, root / "random", vocab_size=3000)
    tok = AutoTokenizer.from_pretrained(str(root / "random"))
    model = tiny_llama(len(tok), hidden=64, seed=1)
    model.save_pretrained(str(root / "random"))
    shutil.copytree(root / "random", root / "trained")
    _memorize(model, tok)
    model.save_pretrained(str(root / "trained"))
    return root / "random", root / "trained"


def _choice_lls(model, tok) -> list[list[float]]:
    """Each choice's log-likelihood as the continuation of the prompt, with transformers alone (lm-eval's
    definition: the tokens of prompt + " " + choice after those of the prompt)."""
    import torch

    out = []
    for it in ITEMS:
        ctx = _context(it)
        n = len(tok(ctx).input_ids)
        lls = []
        for choice in it["choices"]:
            ids = tok(ctx + " " + choice).input_ids
            with torch.no_grad():
                logp = model(torch.tensor([ids])).logits.log_softmax(-1)[0]
            lls.append(sum(logp[i - 1, ids[i]].item() for i in range(n, len(ids))))
        out.append(lls)
    return out


def _reference(folder: Path) -> list[list[float]]:
    """:func:`_choice_lls` of the saved model in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return _choice_lls(model, AutoTokenizer.from_pretrained(str(folder)))


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


@pytest.mark.slow
def test_korean_task_through_lm_eval(models, tmp_path, capsys):
    random_model, trained = models
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(random_model), "--model", str(trained), "--tasks", "kolm_ko_mc",
                 "--output", str(out), "--log-samples"]) == 0  # no --text: tasks alone
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    base, fit = (m["tasks"]["kolm_ko_mc"] for m in res["models"])
    for e in (base, fit):
        assert e["samples"] == len(ITEMS) == 44 and e["num_fewshot"] == 0 and e["lang"] == "ko"
        assert set(e["metrics"]) == {"acc", "acc_norm"} and all(0 <= v <= 1 for v in e["metrics"].values())
        assert e["higher_is_better"] == {"acc": True, "acc_norm": True}
    # trained until transformers ranks every right answer first: lm-eval must agree (a wrong target index, split
    # or tokenizer in the wiring would break this)
    assert fit["metrics"]["acc"] == 1.0
    # the untrained model: lm-eval's scores are the log-likelihoods computed here with transformers
    ref = _reference(random_model)
    samples = [json.loads(x) for x in (out / "samples" / "random" / "kolm_ko_mc.jsonl").read_text().splitlines()]
    assert [s["doc"]["id"] for s in samples] == [it["id"] for it in ITEMS]
    for s, lls, it in zip(samples, ref, ITEMS):
        assert s["target"] == it["answer"] and s["continuations"] == [" " + c for c in it["choices"]]
        assert s["prompt"] == _context(it)  # zero-shot
        assert s["loglikelihoods"] == pytest.approx(lls, abs=2e-3)
        assert s["prediction"] == _argmax(s["loglikelihoods"]) and s["acc"] == float(s["prediction"] == it["answer"])
    acc = sum(_argmax(lls) == it["answer"] for lls, it in zip(ref, ITEMS)) / len(ITEMS)
    acc_norm = sum(_argmax([x / len(c) for x, c in zip(lls, it["choices"])]) == it["answer"]
                   for lls, it in zip(ref, ITEMS)) / len(ITEMS)  # lm-eval normalises by characters
    assert base["metrics"]["acc"] == pytest.approx(acc) and base["metrics"]["acc_norm"] == pytest.approx(acc_norm)
    assert acc < 0.6  # an untrained model is near chance (0.25), far from the trained one
    # the comparison with the first model, on stdout and in results.md
    row = next(r for r in res["task_rows"] if r["model"] == "trained" and r["metric"] == "acc")
    assert row["delta"] == pytest.approx(1.0 - acc) and row["comparable"] and row["reference"] == "random"
    assert f"+{1.0 - acc:.4f}" in printed and "kolm_ko_mc" in printed
    assert "| trained | kolm_ko_mc | ko | acc | 1.0000 |" in (out / "results.md").read_text()
    assert res["config"]["tasks"] == ["kolm_ko_mc"] and res["rows"] == []


def test_limit_and_few_shot_from_the_dev_split(models, tmp_path):
    random_model, _ = models
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(random_model), "--tasks", "kolm_ko_mc", "--task-limit", "5",
                 "--num-fewshot", "2", "--output", str(out), "--log-samples"]) == 0
    e = json.loads((out / "results.json").read_text())["models"][0]["tasks"]["kolm_ko_mc"]
    assert e["samples"] == 5 and e["num_fewshot"] == 2
    samples = [json.loads(x) for x in (out / "samples" / "random" / "kolm_ko_mc.jsonl").read_text().splitlines()]
    assert [s["doc"]["id"] for s in samples] == [it["id"] for it in ITEMS[:5]]  # the first N, for every model
    for s, it in zip(samples, ITEMS):
        shots = [d for d in DEV if d["question"] in s["prompt"]]
        assert len(shots) == 2 and s["prompt"].endswith(_context(it))  # examples from dev, never from test
        assert not any(other["question"] in s["prompt"] for other in ITEMS if other is not it)


def test_task_rows_compare_only_like_with_like():
    def model(name, acc, n=44, shots=0):
        return {"name": name, "tasks": {"t": {"metrics": {"acc": acc}, "stderr": {}, "higher_is_better": {},
                                              "samples": n, "num_fewshot": shots, "lang": "ko"}}}

    rows = harness.task_rows([model("base", 0.25), model("a", 0.5), model("b", 0.75, n=10), model("c", 0.5, shots=5)])
    assert [(r["model"], r["delta"], r["comparable"]) for r in rows] == [
        ("base", None, None), ("a", 0.25, True), ("b", None, False), ("c", None, False)]
    table = harness.format_task_table(rows)
    assert "+0.2500" in table and table.count("settings differ") == 2


def test_normalize_groups_and_filters():
    res = {"results": {"grp": {"alias": "grp", "acc,none": 0.5, "acc_stderr,none": 0.1},
                       "sub_a": {"alias": " - a", "acc,none": 0.4, "acc_stderr,none": "N/A"},
                       "sub_b": {"alias": " - b", "acc,none": 0.6, "exact_match,strict-match": 0.3}},
           "group_subtasks": {"grp": ["sub_a", "sub_b"]},
           "n-samples": {"sub_a": {"original": 10, "effective": 5}, "sub_b": {"original": 10, "effective": 7}},
           "n-shot": {"sub_a": 5, "sub_b": 5}, "higher_is_better": {"grp": {"acc": True}}}
    tasks, inner = harness.normalize(res, ["grp"], {"grp": "ko"})
    assert tasks == {"grp": {"metrics": {"acc": 0.5}, "stderr": {"acc": 0.1}, "higher_is_better": {"acc": True},
                             "samples": 12, "num_fewshot": 5, "lang": "ko", "group": True}}
    assert inner["sub_a"]["stderr"] == {} and inner["sub_a"]["parent"] == "grp" and inner["sub_a"]["lang"] == "ko"
    assert inner["sub_b"]["metrics"] == {"acc": 0.6, "exact_match (strict-match)": 0.3}


def test_forgetting_suite_is_known_to_the_installed_lm_eval():
    """Every task of `--suite forgetting` exists in the installed lm-eval's registry (no network needed)."""
    suite = harness.SUITES["forgetting"]
    names = [t.name for t in suite.tasks]
    manager = harness.task_manager(names, None)
    assert set(names) <= set(manager.all_tasks)
    assert {"kmmlu", "haerae", "mmlu"} <= set(manager.all_groups)
    assert {t.lang for t in suite.tasks} == {"ko", "en"}
    assert any(n.startswith("kobest_") for n in names) and {"hellaswag", "arc_easy", "arc_challenge"} <= set(names)
    batches = harness.plan([], "forgetting", None, None)
    assert sorted(n for b in batches for n in b.names) == sorted(names)
    for b in batches:  # every task runs with its own few-shot count and limit
        for n in b.names:
            t = next(t for t in suite.tasks if t.name == n)
            assert (b.num_fewshot, b.limit) == (t.num_fewshot, t.limit)
    # --num-fewshot/--task-limit override the suite; --tasks adds to it
    batches = harness.plan(["kolm_ko_mc"], "forgetting", 0, 10)
    assert batches == [harness.TaskBatch(("kolm_ko_mc", *names), 0, 10)]


def test_suite_offline_fails_before_any_model_is_loaded(models, tmp_path, monkeypatch, capsys):
    import datasets
    import huggingface_hub

    random_model, _ = models
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the tasks were checked")

    monkeypatch.setattr("kolm.eval.run.load_model", no_model)
    assert main(["eval", "--model", str(random_model), "--suite", "forgetting"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot load the data of 11 task(s)" in err and "HF_HUB_OFFLINE is set" in err
    for dataset in ("skt/kobest_v1", "HAERAE-HUB/KMMLU", "HAERAE-HUB/HAE_RAE_BENCH", "allenai/ai2_arc"):
        assert dataset in err
    assert len([x for x in err.splitlines() if "error" in x.lower()]) == 1


def test_bad_task_input(models, tmp_path, monkeypatch, capsys):
    random_model, _ = models
    assert main(["eval", "--model", str(random_model), "--tasks", "kolm_ko_mcq"]) == 2
    assert "did you mean kolm_ko_mc" in capsys.readouterr().err
    assert main(["eval", "--model", str(random_model), "--suite", "forgeting"]) == 2
    assert "choose one of forgetting" in capsys.readouterr().err
    assert main(["eval", "--model", str(random_model), "--tasks", "kolm_ko_mc", "--log-samples"]) == 2
    assert "--output" in capsys.readouterr().err
    # a local task copied from kolm's, with a broken item: the file and line are named, before any scoring
    mine = tmp_path / "my_tasks"
    mine.mkdir()
    shutil.copy(TASK_DIR / "utils.py", mine)
    yaml_text = (TASK_DIR / "kolm_ko_mc.yaml").read_text(encoding="utf-8").replace("task: kolm_ko_mc", "task: my_mc")
    (mine / "my_mc.yaml").write_text(yaml_text, encoding="utf-8")
    shutil.copy(TASK_DIR / "kolm_ko_mc_dev.jsonl", mine)
    lines = (TASK_DIR / "kolm_ko_mc_test.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[1]) | {"answer": 4}
    (mine / "kolm_ko_mc_test.jsonl").write_text("\n".join([lines[0], json.dumps(bad, ensure_ascii=False)]) + "\n")
    assert main(["eval", "--model", str(random_model), "--tasks", "my_mc", "--include-path", str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"{mine / 'kolm_ko_mc_test.jsonl'}:2" in err and "'answer'" in err and "Hugging Face Hub" not in err


def test_task_files_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11")
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["kolm"]
    files = [str(p.relative_to(REPO / "kolm")) for p in TASK_DIR.iterdir() if p.is_file()]
    assert {"eval/tasks/kolm_ko_mc.yaml", "eval/tasks/utils.py", "eval/tasks/kolm_ko_mc_test.jsonl"} <= set(files)
    for f in files:
        assert any(fnmatch.fnmatch(f, p) for p in patterns), f
    assert any(d.startswith("lm-eval") for d in cfg["project"]["optional-dependencies"]["dev"])

