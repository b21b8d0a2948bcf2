"""``kolm dashboard``: numbers from fake run folders, broken metrics lines, references, --watch, a real browser."""

from __future__ import annotations

import csv
import html.parser
import json
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from kolm.cli import main
from kolm.dashboard import DashboardConfig
from kolm.dashboard import run as dashboard_run
from kolm.dashboard.collect import load_run, read_metrics

CHROMIUM = Path("/usr/bin/chromium")


def make_run(root: Path, name: str, *, ko: list[float], en: list[float], stages=(("embeddings", "embeddings", 6),
             ("full", "full", 6)), every: int = 3, finished: bool = True, extension: bool = True,
             tokens_per_step: int = 512, val_bytes=(4572, 4207)) -> Path:
    """A run folder as `kolm train cpt` writes it (no training): recipe, manifest, metrics.jsonl, stages, final/.

    ``ko``/``en``: bpb at steps 0, every, 2*every, ... (the schema of kolm/train/callbacks.py)."""
    run = root / name
    run.mkdir(parents=True)
    recipe = {"model": str(root / "model-ko"), "data": str(root / "data"), "output": str(run),
              "stages": [{"name": n, "kind": k, "max_steps": s, "lr": 0.01 if k == "embeddings" else None,
                          "warmup_steps": None, "lora": {"r": 8}} for n, k, s in stages],
              "optim": {"lr": 0.003, "weight_decay": 0.1, "warmup_steps": 2, "scheduler": "cosine_with_min_lr"},
              "eval": {"every": every, "max_docs": 20}, "micro_batch_size": 4, "grad_accum": 1, "deepspeed": None}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    manifest = {
        "format": "kolm.data/1", "seq_len": 128, "train": {"sequences": 1233, "tokens": 157824, "path": "train"},
        "tokenizer": {"path": "tok", "sha256": "ab" * 32, "vocab_size": 32500, "eos_id": 2, "bos_id": 1},
        "languages": {"ko": {"target_share": 0.8, "achieved_share": 0.800214, "train_tokens": 126293,
                             "validation": {"path": "validation/ko", "docs": 20, "bytes": val_bytes[0]}},
                      "en": {"target_share": 0.2, "achieved_share": 0.199786, "train_tokens": 31531,
                             "validation": {"path": "validation/en", "docs": 20, "bytes": val_bytes[1]}}},
        "sources": {"ko_wiki": {"lang": "ko", "kept": 2290, "tokens_kept": 128433, "train_tokens_sampled": 126317,
                                "epochs": 1.0},
                    "en_web": {"lang": "en", "kept": 11558, "tokens_kept": 537355, "train_tokens_sampled": 31599,
                               "epochs": 0.06}},
        "recipe": {"sources": [{"name": "ko_wiki", "lang": "ko", "hub": "org/ko-wiki"},
                               {"name": "en_web", "lang": "en", "paths": ["en.txt"]}]},
    }
    (run / "data_manifest.json").write_text(json.dumps(manifest))
    bounds, off = [], 0
    for i, (_, _, s) in enumerate(stages):
        bounds.append((i, off, off + s))
        off += s
    lines = []
    for j, (k, e) in enumerate(zip(ko, en)):
        step = j * every
        idx, first, _ = next(b for b in bounds if b[1] <= step <= b[2] and (step < b[2] or b is bounds[-1]))
        if step > 0:
            lines.append({"kind": "train", "stage": stages[idx][0], "stage_index": idx, "step": step,
                          "stage_step": step - first, "tokens_seen": step * tokens_per_step, "time": 1.7e9 + step,
                          "loss": 10.0 - step * 0.01, "lr": 0.003, "grad_norm": 0.5})
        lines.append({"kind": "eval", "stage": stages[idx][0], "stage_index": idx, "step": step,
                      "stage_step": step - first, "tokens_seen": step * tokens_per_step, "time": 1.7e9 + step,
                      "eval": {"ko": {"bpb": k, "loss": 1.0, "nats": 1.0, "bytes": val_bytes[0], "tokens": 1426,
                                      "docs": 20},
                               "en": {"bpb": e, "loss": 1.0, "nats": 1.0, "bytes": val_bytes[1], "tokens": 933,
                                      "docs": 20}}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ext = {"base": "meta-llama/Llama-2-7b-hf", "family": "sentencepiece", "base_vocab_size": 32000, "vocab_size": 32500,
           "num_added": 500, "num_new_chars": 125, "num_new_merge_tokens": 375, "morpheme_aware": False,
           "compression_base": {"korean_chars_per_token": 0.7086},
           "compression_extended": {"korean_chars_per_token": 1.4152}, "added": []}
    if finished:
        for i, (n, _, _) in enumerate(stages):
            (run / "stages" / f"{i:02d}-{n}" / "final").mkdir(parents=True)
            (run / "stages" / f"{i:02d}-{n}" / "final" / "KOLM_DONE").write_text("complete\n")
        final = run / "final"
        final.mkdir()
        (final / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32500}))
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(16, dtype=np.float32)}, str(final / "model.safetensors"))  # complete: push reads it
        (final / "tokenizer.json").write_text("{}")
        (final / "tokenizer_config.json").write_text("{}")
        if extension:
            (final / "extension.json").write_text(json.dumps(ext))
    return run


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path, "emb-full", ko=[4.69, 4.68, 4.65, 4.54, 4.40], en=[3.3268, 3.3267, 3.3266, 3.32, 3.35])
    b = make_run(tmp_path, "lora", ko=[4.69, 4.60, 4.50, 4.45, 4.30], en=[3.3268, 3.33, 3.34, 3.36, 3.40])
    return a, b


def test_numbers_ranking_and_files(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    out = tmp_path / "out" / "report.html"
    assert main(["dashboard", str(a), str(b), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "emb-full" in printed and "lora" in printed and str(out) in printed
    data = json.loads((out.parent / "report.json").read_text())
    ra, rb = data["runs"]
    assert ra["reference"]["source"] == "step 0" and ra["reference"]["bpb"] == {"ko": 4.69, "en": 3.3268}
    assert ra["summary"]["gain"] == pytest.approx(4.69 - 4.40) and ra["summary"]["forgetting"] == pytest.approx(
        3.35 - 3.3268)
    assert rb["summary"]["gain"] == pytest.approx(4.69 - 4.30)
    assert rb["summary"]["forgetting_pct"] == pytest.approx(100 * (3.40 - 3.3268) / 3.3268)
    # ranking: lora has more Korean gain but forgets more English
    assert [(r["run"], r["rank_gain"], r["rank_forgetting"]) for r in data["ranking"]] == [("lora", 1, 2),
                                                                                          ("emb-full", 2, 1)]
    assert ra["status"] == "finished" and [s["done"] for s in ra["stages"]] == [True, True]
    assert [(s["name"], s["kind"], s["max_steps"], s["lr"], s["first_step"]) for s in ra["stages"]] == [
        ("embeddings", "embeddings", 6, 0.01, 0), ("full", "full", 6, 0.003, 6)]
    assert ra["data"]["languages"]["ko"]["target_share"] == 0.8 and ra["data"]["sources"][0]["hub"] == "org/ko-wiki"
    assert ra["extension"]["num_added"] == 500 and ra["extension"]["ko_chars_per_token_extended"] == 1.4152
    assert ra["tokens_seen"] == 12 * 512 and ra["steps_done"] == 12
    # the same numbers as CSV beside the page
    rows = list(csv.DictReader((out.parent / "report.csv").open()))
    assert [r["run"] for r in rows] == ["lora", "emb-full"]
    assert float(rows[0]["gain"]) == pytest.approx(rb["summary"]["gain"])
    curves = list(csv.DictReader((out.parent / "report_curves.csv").open()))
    assert len(curves) == 2 * 5 * 2
    last = [r for r in curves if r["run"] == "emb-full" and r["lang"] == "en"][-1]
    assert float(last["bpb"]) == 3.35 and float(last["change_vs_reference"]) == pytest.approx(3.35 - 3.3268)
    # ... and as JSON embedded in the page, identical to report.json
    page = out.read_text()
    m = re.search(r'<script type="application/json" id="kolm-data">(.*?)</script>', page, re.S)
    assert json.loads(m.group(1)) == data
    # self-contained: no external resources
    assert not re.search(r"<link|\bsrc=|@import|url\(", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "http-equiv" not in page  # no auto-refresh outside --watch


def test_broken_lines_are_skipped_and_counted(tmp_path, capsys):
    a = make_run(tmp_path, "r", ko=[4.0, 3.9, 3.8], en=[3.0, 3.01, 3.02])
    good = (a / "metrics.jsonl").read_text().splitlines()
    nan_row = json.loads(good[-1])
    nan_row["step"] = 9
    nan_row["eval"]["ko"]["bpb"] = float("nan")
    odd_train = '{"kind": "train", "stage": "embeddings", "stage_index": 0, "step": 1, "tokens_seen": "x", "loss": 1}'
    lines = [good[0], "{not json", "[1, 2]", '{"kind": "eval", "step": "x"}', *good[1:], json.dumps(nan_row),
             odd_train, good[-1][: len(good[-1]) // 2]]  # a truncated last line, as while the run is writing
    (a / "metrics.jsonl").write_text("\n".join(lines))
    m = read_metrics(a / "metrics.jsonl")
    assert m["skipped"] == 4 and m["skipped_lines"] == [2, 3, 4, len(lines)] and m["nonfinite"] == 1
    assert [e["step"] for e in m["evals"]] == [0, 3, 6, 9]
    info = load_run(a, name="r")
    assert info["latest"]["step"] == 6  # the nan evaluation is not the latest usable one
    assert info["summary"]["gain"] == pytest.approx(0.2)
    out = tmp_path / "report.html"
    assert main(["dashboard", str(a), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 4 broken line(s)" in printed and "nan/inf" in printed
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["skipped_total"] == 4
    ranking = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert ranking[0]["step"] == "6"


def test_korean_only_run_with_eval_sets_ranks_on_english(tmp_path):
    """A Korean-only data mix evaluated on ``eval.sets`` (kolm train cpt): the dashboard takes the languages from
    the evaluations, not from the training mix, so the run gets an English forgetting number and a rank; without
    English evaluations (the data's validation splits only) it has none."""
    runs = {}
    for name, ko_last, en in (("ko-sets", 4.30, [3.3268, 3.33, 3.34, 3.36, 3.41]), ("ko-splits", 4.35, None)):
        run = make_run(tmp_path, name, ko=[4.69, 4.60, 4.50, 4.45, ko_last], en=en or [0.0] * 5)
        manifest = json.loads((run / "data_manifest.json").read_text())
        del manifest["languages"]["en"]  # trained on Korean only
        (run / "data_manifest.json").write_text(json.dumps(manifest))
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        recipe["eval"]["sets"] = {"en": [str(tmp_path / "en_heldout.txt")]} if en else {}
        (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        if en is None:  # no English evaluation at all
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            for row in rows:
                row.get("eval", {}).pop("en", None)
            (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        runs[name] = run
    a = make_run(tmp_path, "ko-en", ko=[4.69, 4.62, 4.55, 4.50, 4.40], en=[3.3268, 3.3267, 3.33, 3.33, 3.34])
    out = tmp_path / "out" / "report.html"
    assert main(["dashboard", str(runs["ko-sets"]), str(a), str(runs["ko-splits"]), "--output", str(out)]) == 0
    data = json.loads((out.parent / "report.json").read_text())
    by_name = {r["name"]: r for r in data["runs"]}
    assert by_name["ko-sets"]["langs"] == ["ko", "en"] and by_name["ko-splits"]["langs"] == ["ko"]
    assert by_name["ko-sets"]["summary"]["forgetting"] == pytest.approx(3.41 - 3.3268)
    assert by_name["ko-splits"]["summary"]["forgetting"] is None
    ranking = {r["run"]: (r["rank_gain"], r["rank_forgetting"]) for r in data["ranking"]}
    # the Korean-only runs gain most; the one evaluated on English forgets more than the replay run and is ranked
    # on it, the one without English evaluations has no forgetting rank
    assert ranking == {"ko-sets": (1, 2), "ko-splits": (2, None), "ko-en": (3, 1)}


def test_base_eval_reference(tmp_path, capsys):
    a = make_run(tmp_path, "r", ko=[4.69, 4.40], en=[3.3268, 3.35])
    res = {"format": "kolm.eval/1", "models": [{"model": "base", "bpb": {
        "ko": {"bpb": 9.18, "bytes": 4572, "docs": 20, "tokens": 2793},
        "en": {"bpb": 3.32, "bytes": 4207, "docs": 20, "tokens": 933}}}]}
    (a / "base_eval.json").write_text(json.dumps(res))
    info = load_run(a, name="r")
    assert info["reference"]["source"] == "base_eval.json" and info["base_eval"]["comparable"]
    assert info["summary"]["gain"] == pytest.approx(9.18 - 4.40)
    assert info["step0"] == {"ko": 4.69, "en": 3.3268}
    # measured on other text: shown as a warning, not used
    res["models"][0]["bpb"]["ko"]["bytes"] = 999
    other = tmp_path / "other.json"
    other.write_text(json.dumps(res))
    info = load_run(a, name="r", base_eval=other)
    assert info["reference"]["source"] == "step 0" and not info["base_eval"]["comparable"]
    assert any("other text" in w for w in info["warnings"])
    other.write_text('{"models": []}')
    assert main(["dashboard", str(a), "--base-eval", str(other), "--output", str(tmp_path / "x.html")]) == 2
    assert "not a `kolm eval` results.json" in capsys.readouterr().err



def task_entry(scores: dict[str, float], n: int = 44, shots: int = 0, lang: str = "ko") -> dict:
    """One task's scores as `kolm eval --tasks` writes them into results.json (kolm.eval.harness)."""
    return {"metrics": scores, "stderr": {k: 0.05 for k in scores}, "higher_is_better": {k: True for k in scores},
            "samples": n, "num_fewshot": shots, "lang": lang, "group": False}


def eval_results(path: Path, models: list[tuple[str, Path, dict]]) -> Path:
    """A `kolm eval` results.json with task scores only (no --text): (name, model folder, tasks) per model."""
    path.write_text(json.dumps({"format": "kolm.eval/1", "texts": {}, "rows": [], "models": [
        {"name": n, "model": str(f), "path": str(f), "abspath": str(f.resolve()), "bpb": {}, "tasks": t}
        for n, f, t in models]}))
    return path


def test_task_scores_beside_bpb(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    base_tasks = {"kolm_ko_mc": task_entry({"acc": 0.25, "acc_norm": 0.3}),
                  "arc_easy": task_entry({"acc": 0.6}, n=100, shots=25, lang="en")}
    res = eval_results(tmp_path / "results.json", [
        ("base", tmp_path / "base-model", base_tasks),
        ("emb-full/final", a / "final", {"kolm_ko_mc": task_entry({"acc": 0.5, "acc_norm": 0.45}),
                                         "arc_easy": task_entry({"acc": 0.55}, n=100, shots=25, lang="en")}),
        ("lora/final", b / "final", {"kolm_ko_mc": task_entry({"acc": 0.75, "acc_norm": 0.7}),
                                     "arc_easy": task_entry({"acc": 0.5}, n=50, shots=25, lang="en")}),
        ("00-embeddings", a / "stages" / "00-embeddings" / "final", {"kolm_ko_mc": task_entry({"acc": 0.3})})])
    out = tmp_path / "report.html"
    assert main(["dashboard", str(a), str(b), "--eval", str(res), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "emb-full: step 12" in printed and "4 task score(s)" in printed  # final: 3 rows, the stage's model: 1
    data = json.loads(out.with_suffix(".json").read_text())
    ta, tb = (r["tasks"]["models"] for r in data["runs"])
    assert [m["label"] for m in ta] == ["final", "stages/00-embeddings/final"] and [m["label"] for m in tb] == ["final"]
    assert ta[0]["reference"] == "base (results.json)"
    rows = {(x["task"], x["metric"]): x for x in ta[0]["rows"]}
    assert rows[("kolm_ko_mc", "acc")]["score"] == 0.5 and rows[("kolm_ko_mc", "acc")]["ref_score"] == 0.25
    assert rows[("kolm_ko_mc", "acc")]["delta"] == pytest.approx(0.25)
    assert rows[("arc_easy", "acc")]["delta"] == pytest.approx(-0.05) and rows[("arc_easy", "acc")]["lang"] == "en"
    lora = {(x["task"], x["metric"]): x for x in tb[0]["rows"]}
    assert lora[("arc_easy", "acc")]["delta"] is None and lora[("arc_easy", "acc")]["comparable"] is False  # 50 vs 100
    csv_rows = list(csv.DictReader(out.with_name("report_tasks.csv").open()))
    assert len(csv_rows) == 3 + 1 + 3
    assert {(r["run"], r["model"], r["task"], r["metric"], r["delta"]) for r in csv_rows} >= {
        ("emb-full", "final", "kolm_ko_mc", "acc", "0.25"), ("lora", "final", "arc_easy", "acc", "")}
    assert data["warnings"] == []
    # base_eval.json with task scores: the reference when the results file holds only the run's model
    (a / "base_eval.json").write_text(json.dumps({"models": [{"model": "base", "bpb": {}, "tasks": base_tasks}]}))
    alone = eval_results(tmp_path / "alone.json", [("final", a / "final", {
        "kolm_ko_mc": task_entry({"acc": 0.5, "acc_norm": 0.45})})])
    other = eval_results(tmp_path / "other.json", [("x", tmp_path / "elsewhere", base_tasks)])
    assert main(["dashboard", str(a), str(b), "--eval", str(alone), str(other), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.with_suffix(".json").read_text())
    (m,) = data["runs"][0]["tasks"]["models"]
    assert m["reference"] == "base (base_eval.json)" and m["rows"][0]["delta"] == pytest.approx(0.25)
    assert data["runs"][0]["reference"]["source"] == "step 0"  # a base_eval.json without bpb: no bpb reference
    assert not any("other text" in w for w in data["runs"][0]["warnings"])
    assert data["runs"][1]["tasks"]["models"] == []
    assert any("other.json: none of its models" in w for w in data["warnings"]) and "other.json" in printed
    # without --eval: the base's own scores from base_eval.json
    assert main(["dashboard", str(a), "--output", str(out)]) == 0
    (m,) = json.loads(out.with_suffix(".json").read_text())["runs"][0]["tasks"]["models"]
    assert m["label"] == "base base" and [x["score"] for x in m["rows"]] == [0.25, 0.3, 0.6]
    assert all(x["delta"] is None for x in m["rows"])
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": [{"tasks": {"t": 0.5}}]}')
    assert main(["dashboard", str(a), "--eval", str(broken), "--output", str(out)]) == 2
    assert "kolm's task format" in capsys.readouterr().err

def test_bad_input_errors(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "nope"), "--output", str(tmp_path / "r.html")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["dashboard", str(empty), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "no metrics.jsonl" in err and str(empty) in err
    a = make_run(tmp_path, "r", ko=[4.0], en=[3.0])
    assert main(["dashboard", str(a), "--output", str(tmp_path / "r.txt")]) == 2
    assert "output" in capsys.readouterr().err
    assert main(["dashboard", "--output", str(tmp_path / "r.html")]) == 2
    assert "runs" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_watch_rerenders_until_final(tmp_path, capsys):
    a = make_run(tmp_path, "live", ko=[4.69, 4.6], en=[3.3, 3.31], finished=False)
    out = tmp_path / "report.html"
    seen: dict[str, str] = {}
    row = json.loads((a / "metrics.jsonl").read_text().splitlines()[-1])

    def train() -> None:
        time.sleep(0.6)
        seen["before"] = out.read_text()
        for step, ko in ((6, 4.5), (9, 4.4)):
            row.update(step=step, stage_step=step)
            row["eval"]["ko"]["bpb"] = ko
            with open(a / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            time.sleep(0.5)
        seen["during"] = out.read_text()
        (a / "final").mkdir()

    t = threading.Thread(target=train)
    t.start()
    t0 = time.time()
    data = dashboard_run(DashboardConfig(runs=[str(a)], output=str(out), watch=0.1, watch_max_iterations=300))
    t.join()
    assert time.time() - t0 < 20
    assert "http-equiv=\"refresh\" content=\"1\"" in seen["before"] and '"step": 9' not in seen["before"]
    assert "http-equiv" in seen["during"]
    assert [e["step"] for e in data["runs"][0]["evals"]] == [0, 3, 6, 9] and data["runs"][0]["finished"]
    final = out.read_text()
    assert "http-equiv" not in final  # a finished run's page stops reloading
    assert json.loads(out.with_suffix(".json").read_text())["runs"][0]["latest"]["step"] == 9
    assert "stopped watching" in capsys.readouterr().out


def test_watch_stops_after_max_iterations(tmp_path, capsys):
    a = make_run(tmp_path, "stalled", ko=[4.69], en=[3.3], finished=False)
    b = make_run(tmp_path, "starting", ko=[], en=[], finished=False)
    (b / "metrics.jsonl").unlink()  # launched, nothing logged yet: shown as waiting while watching
    out = tmp_path / "report.html"
    data = dashboard_run(DashboardConfig(runs=[str(a), str(b)], output=str(out), watch=0.05, watch_max_iterations=3))
    printed = capsys.readouterr().out
    assert "stopped watching after 3 poll(s)" in printed and "starting: no metrics.jsonl yet" in printed
    assert data["runs"][1]["evals"] == [] and data["ranking"][-1]["gain"] is None
    assert "http-equiv" not in out.read_text()


class _Dom(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_renders_in_headless_chromium(tmp_path):
    a, b = two_runs(tmp_path)
    odd = make_run(tmp_path, 'x<script><b id="inj">&<!--', ko=[4.7, 4.5], en=[3.3, float("nan")], finished=False)
    with open(odd / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "eval", "step": 12, "ev')  # truncated
    res = eval_results(tmp_path / "results.json", [
        ("base", tmp_path / "base-model", {"kolm_ko_mc": task_entry({"acc": 0.25}), "mmlu": task_entry(
            {"acc": 0.4}, n=5700, shots=5, lang="en")}),
        ("emb-full/final", a / "final", {"kolm_ko_mc": task_entry({"acc": 0.5}), "mmlu": task_entry(
            {"acc": 0.35}, n=5700, shots=5, lang="en")})])
    out = tmp_path / "site" / "report.html"
    assert main(["dashboard", str(a), str(b), str(odd), "--eval", str(res), "--output", str(out)]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0"]
    url = out.as_uri()
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [x for x in dom.stderr.splitlines() if "CONSOLE" in x or "Uncaught" in x]
    assert not console, console
    parser = _Dom()
    parser.feed(dom.stdout)
    els = parser.elements
    status = [at for tag, at in els if at.get("id") == "kolm-status"]
    assert status and status[0]["data-rendered"] == "1" and int(status[0]["data-charts"]) >= 5
    names = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert [r["name"] for r in names] == ["emb-full", "lora", 'x<script><b id="inj">&<!--']
    for name in ("emb-full", "lora", 'x<script><b id="inj">&<!--'):
        for lang in ("ko", "en"):
            paths = [at for tag, at in els if tag == "path" and at.get("data-run") == name
                     and at.get("data-lang") == lang and at.get("data-kind") == "bpb"]
            assert len(paths) == 2, (name, lang)  # overview chart + the run's own chart
            assert all(re.fullmatch(r"M[\d.]+ [\d.]+( L[\d.]+ [\d.]+)*", p["d"]) for p in paths)
        refs = [at for tag, at in els if tag == "path" and at.get("data-run") == name and at.get("data-kind") == "ref"]
        assert len(refs) == 4
    assert not any(at.get("id") == "inj" for _, at in els)  # a run name is text, never markup
    # the scatter: one point per run with a usable latest evaluation (the odd run's is step 0: gain 0)
    assert sum(tag == "circle" and "point" in at.get("class", "") for tag, at in els) == 3
    assert any(at.get("id") == "skipped" for _, at in els)
    assert 'id="js-error" hidden' in dom.stdout
    # benchmark tasks: a table for emb-full's final model, with the change vs the base coloured by direction
    tasks = [at for tag, at in els if tag == "div" and "tasks" in at.get("class", "").split()]
    assert [(at["data-run"], at["data-model"]) for at in tasks] == [("emb-full", "final")]
    assert re.search(r'<td>kolm_ko_mc</td><td>ko</td><td>acc</td><td>0.5000</td><td>0.2500</td>'
                     r'<td class="good"[^>]*>\+0.2500</td>', dom.stdout)
    assert re.search(r'<td>mmlu</td><td>en</td><td>acc</td><td>0.3500</td><td>0.4000</td>'
                     r'<td class="bad"[^>]*>-0.0500</td><td>5,700</td><td>5</td>', dom.stdout)
    assert dom.stdout.count('<div class="mut">no task scores') == 2  # lora and the odd run
    png = tmp_path / "shot.png"
    shot = subprocess.run([str(CHROMIUM), *flags, f"--screenshot={png}", "--window-size=1280,2000",
                           "--hide-scrollbars", url], capture_output=True, text=True, timeout=90)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    assert _png_size(png) == (1280, 2000)
    assert png.stat().st_size > 60_000  # a blank page is a few KB; charts and tables are much more
