"""Read ``kolm train cpt`` run folders into plain dictionaries: the numbers behind ``kolm dashboard``.

A run folder (see :mod:`kolm.train.cpt`) holds ``recipe.yaml``, ``data_manifest.json``, ``metrics.jsonl``
(schema in :mod:`kolm.train.callbacks`), ``stages/NN-name/`` and, once finished, ``final/``. Optional:
``base_eval.json``, the ``results.json`` of ``kolm eval`` on the original base model.

The reference of a run is the base model's bits per byte: ``base_eval.json`` when it was measured on the same
text as the run's online evaluation (same bytes per language), else the evaluation at step 0 of the first stage
(the model the run started from). With ``ko``/``en``:

* Korean gain = reference bpb - latest bpb (positive: Korean got better);
* English forgetting = latest bpb - reference bpb (positive: English got worse).

Broken ``metrics.jsonl`` lines (a truncated last line while the run writes, a hand edit) are skipped and counted,
never fatal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kolm.artifacts import EXTENSION_FILE, DataManifest, RunFolder, TokenizerExtension
from kolm.errors import KolmError
from kolm.io.files import read_json_object

MAX_LISTED = 20  # broken line numbers listed per run


def _num(v: Any) -> float | None:
    """A finite float, or None (a diverged run logs nan/inf: kept as a gap, not as a number)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_metrics(path: Path) -> dict[str, Any]:
    """Parse ``metrics.jsonl``: eval points, train points, and the broken lines skipped (line numbers)."""
    evals: dict[int, dict[str, Any]] = {}
    train: list[dict[str, Any]] = []
    skipped: list[int] = []
    nonfinite = 0
    n = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            n += 1
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
                kind, step = row.get("kind"), row.get("step")
                if isinstance(step, bool) or not isinstance(step, int):
                    raise ValueError("no integer step")
                base = {"step": step, "stage": str(row.get("stage", "")),
                        "stage_index": int(row.get("stage_index", 0)), "stage_step": row.get("stage_step"),
                        "tokens_seen": _int(row.get("tokens_seen")), "time": _num(row.get("time"))}
                if kind == "eval":
                    ev = row["eval"]
                    if not isinstance(ev, dict) or not ev:
                        raise ValueError("no eval results")
                    point = {**base, "bpb": {}, "docs": {}, "bytes": {}}
                    for lang, res in ev.items():
                        if not isinstance(res, dict) or "bpb" not in res:
                            raise ValueError(f"no bpb for {lang}")
                        point["bpb"][lang] = _num(res["bpb"])
                        nonfinite += point["bpb"][lang] is None
                        point["docs"][lang] = res.get("docs")
                        point["bytes"][lang] = res.get("bytes")
                    # a resumed run may repeat a step: the last line wins (it is what training continued from)
                    evals[step] = point
                elif kind == "train":
                    train.append({**base, "loss": _num(row.get("loss")), "lr": _num(row.get("lr"))})
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                skipped.append(lineno)
    return {"evals": [evals[s] for s in sorted(evals)], "train": train, "lines": n, "skipped": len(skipped),
            "skipped_lines": skipped[:MAX_LISTED], "nonfinite": nonfinite}


def read_base_eval(path: Path) -> dict[str, Any]:
    """The first model of a ``kolm eval`` results.json: ``{"model", "path", "bpb": {lang}, "bytes": {lang}}``."""
    data = read_json_object(path, "base_eval (kolm eval results.json)")
    try:
        m = data["models"][0]  # type: ignore[index]
        return {"model": m.get("model", ""), "path": str(path),
                "bpb": {lang: _num(r["bpb"]) for lang, r in m["bpb"].items()},
                "bytes": {lang: r.get("bytes") for lang, r in m["bpb"].items()}}
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise KolmError(f"{path}: not a `kolm eval` results.json (no models[0].bpb: {e})") from None


def _stages(recipe: dict[str, Any], run: RunFolder, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipe's stages with their step range, progress (from eval and train points) and completion marker."""
    optim = recipe.get("optim") or {}
    out, offset = [], 0
    for i, s in enumerate(recipe.get("stages") or []):
        if not isinstance(s, dict):
            continue
        steps = [e["step"] for e in points if e["stage_index"] == i]
        max_steps = int(s.get("max_steps") or 0)
        name = str(s.get("name", f"stage{i}"))
        done = run.stage(i, name).done
        lora = s.get("lora") or {}
        out.append({"index": i, "name": name, "kind": s.get("kind", "full"), "max_steps": max_steps,
                    "first_step": offset, "last_step": offset + max_steps,
                    "lr": s.get("lr") if s.get("lr") is not None else optim.get("lr"),
                    "warmup_steps": s.get("warmup_steps") if s.get("warmup_steps") is not None
                    else optim.get("warmup_steps"),
                    "lora_r": lora.get("r") if s.get("kind") == "lora" else None,
                    "steps_done": max_steps if done else max([x - offset for x in steps], default=0),
                    "done": done})
        offset += max_steps
    return out


def _data_mix(manifest: DataManifest | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    langs = {lang: {"target_share": v.target_share, "achieved_share": v.achieved_share,
                    "train_tokens": v.train_tokens} for lang, v in manifest.languages.items()}
    raw = manifest.raw
    hub = {s.get("name"): s.get("hub") for s in (raw.get("recipe") or {}).get("sources") or [] if isinstance(s, dict)}
    sources = [{"name": name, "lang": s.get("lang"), "kept_docs": s.get("kept"), "tokens_kept": s.get("tokens_kept"),
                "train_tokens": s.get("train_tokens_sampled"), "epochs": s.get("epochs"), "hub": hub.get(name)}
               for name, s in (raw.get("sources") or {}).items() if isinstance(s, dict)]
    return {"seq_len": manifest.seq_len, "train_tokens": manifest.train_tokens,
            "train_sequences": manifest.train_sequences, "tokenizer_vocab_size": manifest.vocab_size,
            "languages": langs, "sources": sources}


def find_extension(run: RunFolder, recipe: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``extension.json`` of the run's model: final/, a stage's final/, or the recipe's input model folder."""
    cands = [run.final, *run.stage_finals()] + ([Path(str(recipe["model"]))] if recipe.get("model") else [])
    for folder in cands:
        ext = TokenizerExtension.read(folder) if folder.is_dir() else None
        if ext is not None:
            ko_base, ko_ext = ext.korean_chars_per_token()
            out = {"base": ext.base, "family": ext.family, "base_vocab_size": ext.base_vocab_size,
                   "vocab_size": ext.vocab_size, "num_added": ext.num_added, "num_new_chars": ext.num_new_chars,
                   "num_new_merge_tokens": ext.num_new_merge_tokens, "morpheme_aware": ext.morpheme_aware,
                   "corpus_documents": ext.corpus_documents, "ko_chars_per_token_base": ko_base,
                   "ko_chars_per_token_extended": ko_ext}
            return out, str(folder / EXTENSION_FILE)
    return None, None


def _bytes_of(evals: list[dict[str, Any]]) -> dict[str, Any]:
    for e in evals:
        if e["bytes"]:
            return e["bytes"]
    return {}


def _run_metrics(rf: RunFolder, allow_missing: bool, warnings: list[str]) -> dict[str, Any]:
    """The run's parsed metrics.jsonl (empty when it is missing and ``allow_missing``); what was skipped or is
    suspicious goes into ``warnings``."""
    mpath, run = rf.metrics, rf.path
    if mpath.is_file():
        metrics = read_metrics(mpath)
    elif allow_missing:
        metrics = {"evals": [], "train": [], "lines": 0, "skipped": 0, "skipped_lines": [], "nonfinite": 0}
        warnings.append("no metrics.jsonl yet")
    else:
        what = "it has recipe.yaml, so training has not logged yet" if rf.recipe.is_file() else \
            "is this a `kolm train cpt` run folder?"
        raise KolmError(f"{run}: no metrics.jsonl ({what})")
    if metrics["skipped"]:
        more = " ..." if metrics["skipped"] > MAX_LISTED else ""
        warnings.append(f"skipped {metrics['skipped']} broken line(s) of metrics.jsonl (lines "
                        f"{', '.join(map(str, metrics['skipped_lines']))}{more})")
    if metrics["nonfinite"]:
        warnings.append(f"{metrics['nonfinite']} evaluation value(s) are nan/inf (diverged?)")
    evals = metrics["evals"]
    if mpath.is_file() and not evals:
        warnings.append("no evaluations in metrics.jsonl yet (eval.every: 0, or the run just started)")
    return metrics


def _reference(rf: RunFolder, evals: list[dict[str, Any]], step0: dict[str, Any] | None, base_eval: Path | None,
               warnings: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The bpb reference of a run and its base_eval.json (if any): base_eval.json when it was measured on the same
    text as the run's evaluation (same bytes per language), else the step-0 evaluation."""
    reference = {"source": "step 0", "bpb": dict(step0["bpb"])} if step0 else None
    base = None
    be_path = base_eval or (rf.base_eval if rf.base_eval.is_file() else None)
    if be_path is not None:
        base = read_base_eval(Path(be_path))
        run_bytes = _bytes_of(evals)
        same = [lang for lang in run_bytes if base["bytes"].get(lang) == run_bytes[lang]]
        base["comparable"] = bool(run_bytes) and len(same) == len(run_bytes)
        if base["comparable"]:
            reference = {"source": "base_eval.json", "model": base["model"], "bpb": dict(base["bpb"])}
        elif run_bytes and base["bpb"]:  # a base_eval.json with task scores only is no bpb reference
            diff = ", ".join(f"{lang} {base['bytes'].get(lang)} vs {run_bytes[lang]} bytes" for lang in run_bytes
                             if base["bytes"].get(lang) != run_bytes[lang])
            warnings.append(f"{be_path} was measured on other text than the run's evaluation ({diff}); not used "
                            f"as the reference (run `kolm eval --data DATA --max-docs N` on the base model)")
    return reference, base


def load_run(path: str | Path, *, name: str, base_eval: Path | None = None, gain_lang: str = "ko",
             forget_lang: str = "en", allow_missing_metrics: bool = False) -> dict[str, Any]:
    """Everything the dashboard shows about one run folder."""
    rf = RunFolder(path)
    run = rf.path
    if not run.is_dir():
        raise KolmError(f"run folder not found: {run}")
    warnings: list[str] = []
    metrics = _run_metrics(rf, allow_missing_metrics, warnings)
    evals = metrics["evals"]
    recipe = rf.read_recipe()
    manifest = DataManifest.read(rf.data_manifest) if rf.data_manifest.is_file() else None
    extension, ext_path = find_extension(rf, recipe)
    order = {gain_lang: 0, forget_lang: 1}
    langs = sorted({lang for e in evals for lang in e["bpb"]}, key=lambda x: (order.get(x, 2), x))

    step0 = next((e for e in evals if e["step"] == 0 and e["stage_index"] == 0), None)
    reference, base = _reference(rf, evals, step0, base_eval, warnings)
    latest = next((e for e in reversed(evals) if all(v is not None for v in e["bpb"].values())), None)
    summary = summarize(reference, latest, gain_lang, forget_lang)
    stages = _stages(recipe, rf, evals + metrics["train"])
    last_train = metrics["train"][-1] if metrics["train"] else None
    steps_done = max([e["step"] for e in evals] + ([last_train["step"]] if last_train else []), default=0)
    finished = rf.final.is_dir()
    times = [x["time"] for x in evals + metrics["train"] if x.get("time")]
    return {
        "name": name, "path": str(run.resolve()), "status": "finished" if finished else "in progress",
        "finished": finished, "langs": langs, "evals": evals,
        "train_points": len(metrics["train"]),  # not embedded: a long run logs every step (megabytes of page)
        "metrics": {"lines": metrics["lines"], "skipped": metrics["skipped"],
                    "skipped_lines": metrics["skipped_lines"], "nonfinite": metrics["nonfinite"]},
        "last_update": max(times) if times else None,
        "reference": reference, "step0": step0["bpb"] if step0 else None, "base_eval": base,
        "latest": {"step": latest["step"], "bpb": latest["bpb"]} if latest else None, "summary": summary,
        "stages": stages, "total_steps": sum(s["max_steps"] for s in stages) or None, "steps_done": steps_done,
        "tokens_seen": max([x.get("tokens_seen") or 0 for x in evals + metrics["train"]], default=0),
        "train_loss": last_train["loss"] if last_train else None,
        "recipe": {k: recipe.get(k) for k in ("model", "data", "micro_batch_size", "grad_accum", "deepspeed",
                                              "precision", "seed")} | {"optim": recipe.get("optim") or {}},
        "data": _data_mix(manifest), "extension": extension, "extension_path": ext_path, "warnings": warnings,
    }


def summarize(reference: dict[str, Any] | None, latest: dict[str, Any] | None, gain_lang: str,
              forget_lang: str) -> dict[str, Any]:
    """Gain (reference - latest, gain_lang) and forgetting (latest - reference, forget_lang), absolute and in %."""
    out: dict[str, Any] = {"gain_lang": gain_lang, "forget_lang": forget_lang,
                           "step": latest["step"] if latest else None}
    for key, lang, sign in (("gain", gain_lang, -1.0), ("forgetting", forget_lang, 1.0)):
        ref = (reference or {}).get("bpb", {}).get(lang)
        last = (latest or {}).get("bpb", {}).get(lang)
        out[f"{key}_ref_bpb"], out[f"{key}_latest_bpb"] = ref, last
        ok = ref is not None and last is not None
        out[key] = sign * (last - ref) + 0.0 if ok else None  # + 0.0: no "-0.0000" for an unchanged value
        out[f"{key}_pct"] = 100 * sign * (last - ref) / ref + 0.0 if ok and ref else None
    return out


def rank(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final table: runs by Korean gain (best first), with their rank by English forgetting (least first)."""
    def key(v: float | None, best_first: bool) -> tuple[int, float]:
        return (1, 0.0) if v is None else (0, -v if best_first else v)

    by_forget = sorted(range(len(runs)), key=lambda i: key(runs[i]["summary"]["forgetting"], False))
    f_rank = {i: r + 1 for r, i in enumerate(by_forget) if runs[i]["summary"]["forgetting"] is not None}
    order = sorted(range(len(runs)), key=lambda i: key(runs[i]["summary"]["gain"], True))
    table = []
    for r, i in enumerate(order, 1):
        s = runs[i]["summary"]
        table.append({"rank_gain": r if s["gain"] is not None else None, "rank_forgetting": f_rank.get(i),
                      "run": runs[i]["name"], "status": runs[i]["status"], "step": s["step"],
                      "steps_total": runs[i]["total_steps"], "tokens_seen": runs[i]["tokens_seen"],
                      "reference": (runs[i]["reference"] or {}).get("source"),
                      **{k: s[k] for k in ("gain_ref_bpb", "gain_latest_bpb", "gain", "gain_pct", "forgetting_ref_bpb",
                                           "forgetting_latest_bpb", "forgetting", "forgetting_pct")}})
    return table



EvalFiles = list[tuple[Path, list[dict[str, Any]]]]  # (results.json, its models as read by read_task_models)


def runs_models(run: Path, evals: EvalFiles) -> list[tuple[Path, int, Path]]:
    """(file, index, model folder) of every model with task scores in the ``kolm eval`` results files that lies
    inside ``run`` (its ``final/`` or a stage's model)."""
    from kolm.eval.harness import model_folder

    run = run.resolve()
    out = []
    for path, models in evals:
        for i, m in enumerate(models):
            folder = model_folder(m)
            if m["tasks"] and folder is not None and (folder == run or run in folder.parents):
                out.append((path, i, folder))
    return out


def task_scores(rf: RunFolder, evals: EvalFiles, base_eval: Path | None) -> dict[str, Any]:
    """The benchmark task scores of a run's models, each compared with its base: the first model of the same
    results file when that is not one of the run's, else the tasks of ``base_eval.json``. Without scores of the
    run's models, the base's own scores (when ``base_eval.json`` has them)."""
    from kolm.eval.harness import read_task_models, task_rows

    run = rf.path.resolve()
    be = base_eval or (rf.base_eval if rf.base_eval.is_file() else None)
    base = next(iter(read_task_models(be)), None) if be is not None else None
    base = base if base and base["tasks"] else None
    mine = runs_models(run, evals)
    out = []
    for path, i, folder in mine:
        models = next(ms for p, ms in evals if p == path)
        own_first = any(p == path and j == 0 for p, j, _ in mine)
        ref, where = (models[0], path.name) if i > 0 and not own_first and models[0]["tasks"] else (
            base, be.name if be else None)
        out.append({"label": folder.relative_to(run).as_posix(), "source": str(path),
                    "reference": f"{ref['name']} ({where})" if ref else None,
                    "rows": task_rows([models[i]], reference=ref)})
    if not out and base is not None:
        out.append({"label": f"base {base['name']}", "source": str(be), "reference": None, "rows": task_rows([base])})
    return {"models": out}
