"""Benchmark tasks for ``kolm eval`` through lm-evaluation-harness: kolm's local Korean task, the forgetting suite,
and the task scores that ``kolm eval``, ``kolm dashboard`` and ``kolm push`` show beside bits per byte.

    kolm eval --model base --model run/final --tasks kolm_ko_mc --output eval/      # offline: kolm's own task
    kolm eval --model base --model run/final --suite forgetting --output eval/      # online: KoBEST ... MMLU
    kolm eval --model run/final --tasks my_task --include-path my_tasks/            # your own task configs

``kolm_ko_mc`` (``kolm/eval/tasks/``) is 44 Korean multiple-choice questions written for kolm; it needs no
download. The ``forgetting`` suite (:data:`SUITES`) runs public Korean and English benchmarks whose data lm-eval
downloads from the Hugging Face Hub; each task keeps its own few-shot count and example limit so that every model
is scored the same way. Everything is checked before any model is loaded: task names against lm-eval's registry,
and every task's data (an offline machine fails here, in one line, naming each dataset it could not reach).

A model's scores in ``results.json`` (``models[i].tasks``): ``{task: {"metrics": {name: value}, "stderr": {...},
"higher_is_better": {...}, "samples": N, "num_fewshot": K, "lang": "ko"|"en"|None, "group": bool}}`` for the tasks
asked for (a group such as ``kmmlu`` carries lm-eval's aggregate), and the same for the tasks inside groups under
``models[i].subtasks``. :func:`task_rows` compares every model with the first (the base); two scores compare only
when they were measured on the same number of examples with the same few-shot count.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.errors import KolmError
from kolm.tables import text_table

LOCAL_TASKS = Path(__file__).resolve().parent / "tasks"
MIN_LM_EVAL = (0, 4, 10)  # 0.4.9 and older import names that transformers 5 removed
BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (KoBEST's macro F1); lm-eval's 100,000 take minutes per task


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite, with the settings every model is scored under."""

    name: str  # lm-eval task or group name
    lang: str
    num_fewshot: int
    limit: int | None  # at most N examples (per subtask of a group); None: all
    metric: str  # the headline metric


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[SuiteTask, ...]


# Few-shot counts follow the Open LLM / Open Ko-LLM leaderboards (ARC 25, HellaSwag 10, (K)MMLU 5) and the KoBEST
# paper's 5-shot; HAE-RAE is zero-shot (its only split is the test split). The limits (the first 100 questions of
# every (K)MMLU subject, the first 1,000 HellaSwag contexts) aim at about an hour for one pass of a 7B model on one
# GPU: about 75,000 scored choices (an estimate from the dataset sizes, not a measurement).
SUITES: dict[str, Suite] = {
    "forgetting": Suite("forgetting", "Korean gain and English forgetting on public benchmarks", (
        SuiteTask("kobest_boolq", "ko", 5, None, "acc"),
        SuiteTask("kobest_copa", "ko", 5, None, "acc"),
        SuiteTask("kobest_hellaswag", "ko", 5, None, "acc_norm"),
        SuiteTask("kobest_sentineg", "ko", 5, None, "acc"),
        SuiteTask("kobest_wic", "ko", 5, None, "acc"),
        SuiteTask("kmmlu", "ko", 5, 100, "acc"),
        SuiteTask("haerae", "ko", 0, None, "acc_norm"),
        SuiteTask("hellaswag", "en", 10, 1000, "acc_norm"),
        SuiteTask("arc_easy", "en", 25, None, "acc_norm"),
        SuiteTask("arc_challenge", "en", 25, None, "acc_norm"),
        SuiteTask("mmlu", "en", 5, 100, "acc"),
    )),
}
TASK_LANGS = {"kolm_ko_mc": "ko"} | {t.name: t.lang for s in SUITES.values() for t in s.tasks}


@dataclass(frozen=True)
class TaskBatch:
    """Tasks that run in one ``lm_eval.simple_evaluate`` call (same few-shot count and limit)."""

    names: tuple[str, ...]
    num_fewshot: int | None
    limit: int | None


def plan(tasks: list[str], suite: str | None, num_fewshot: int | None, limit: int | None) -> list[TaskBatch]:
    """The ``simple_evaluate`` calls for ``--tasks`` and ``--suite``; ``--num-fewshot``/``--task-limit`` override
    the suite's settings."""
    batches: dict[tuple[int | None, int | None], list[str]] = {}
    if tasks:
        batches[(num_fewshot, limit)] = list(dict.fromkeys(tasks))
    for t in SUITES[suite].tasks if suite else ():
        key = (t.num_fewshot if num_fewshot is None else num_fewshot, t.limit if limit is None else limit)
        if not any(t.name in names for names in batches.values()):
            batches.setdefault(key, []).append(t.name)
    return [TaskBatch(tuple(names), k, n) for (k, n), names in batches.items()]


def require_lm_eval() -> Any:
    """The ``lm_eval`` module, or a one-line error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise KolmError("--tasks/--suite need lm-evaluation-harness, which is not installed "
                        "(pip install 'lm-eval[hf]>=0.4.10,<0.5'); bits per byte works without it") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = tuple(int(x) for x in re.findall(r"\d+", version("lm_eval"))[:3])
    except PackageNotFoundError:
        found = MIN_LM_EVAL
    if found < MIN_LM_EVAL:
        raise KolmError(f"lm-evaluation-harness {'.'.join(map(str, found))} is too old for kolm eval; install "
                        f"lm-eval>={'.'.join(map(str, MIN_LM_EVAL))},<0.5")
    return lm_eval


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval, datasets and transformers log every step at INFO/WARNING: keep their progress bars, drop the rest."""
    names = ("lm_eval", "lm-eval", "datasets", "transformers", "evaluate", "DeepSpeed")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@functools.lru_cache(maxsize=4)
def _manager(include: tuple[str, ...], defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    with quiet():
        return TaskManager(include_path=list(include), include_defaults=defaults)


def task_manager(names: list[str], include_path: str | None) -> Any:
    """An lm-eval ``TaskManager`` that knows every name: kolm's tasks and ``--include-path`` alone when that is enough
    (indexing lm-eval's 14,000 bundled configs takes seconds), else everything. Unknown names are refused."""
    include = (str(LOCAL_TASKS),) + ((str(Path(include_path).resolve()),) if include_path else ())
    if include_path and not Path(include_path).is_dir():
        raise KolmError(f"include_path: {include_path} is not a folder of lm-eval task configs")
    manager = _manager(include, False)
    if set(names) <= set(manager.all_tasks):
        return manager
    manager = _manager(include, True)
    known = set(manager.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        hints = [f"{n} (did you mean {', '.join(m)}?)" if (m := difflib.get_close_matches(n, known, 3)) else n
                 for n in unknown]
        raise KolmError(f"tasks: unknown to lm-evaluation-harness: {'; '.join(hints)}. Local task configs go in "
                        f"--include-path DIR")
    return manager


def check_task_data(manager: Any, names: list[str]) -> None:
    """Build every task (this loads its data, from the Hub or the datasets cache) before any model is loaded, so
    that an offline machine, a gated dataset or a broken local file fails now, naming each task, rather than after
    hours of scoring."""
    failed, remote = [], False
    with quiet():
        for name in names:
            try:
                manager.load_task_or_group([name])
            except Exception as e:  # noqa: BLE001 - datasets/hub/network/file errors of many types, reported per task
                text = str(e).splitlines()[0] if str(e) else ""
                failed.append(f"{name} ({type(e).__name__}: {text})")
                remote |= isinstance(e, (ConnectionError, TimeoutError)) or "hub" in text.lower()
    if failed:
        from huggingface_hub import constants

        hint = ""
        if remote:
            offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
            hint = (f". These tasks download their datasets from the Hugging Face Hub: run online once{offline}; "
                    f"the datasets cache keeps them for offline runs. Local tasks (--tasks kolm_ko_mc, --include-path "
                    f"DIR) need no network")
        raise KolmError(f"cannot load the data of {len(failed)} task(s): {'; '.join(failed)}{hint}")


@dataclass
class Prepared:
    """Checked tasks, ready to run on every model."""

    batches: list[TaskBatch]
    manager: Any
    langs: dict[str, str]

    @property
    def names(self) -> list[str]:
        return [n for b in self.batches for n in b.names]


def prepare(tasks: list[str], suite: str | None, num_fewshot: int | None, limit: int | None,
            include_path: str | None) -> Prepared:
    """Plan the task runs and check names and data (no model is loaded yet)."""
    require_lm_eval()
    batches = plan(tasks, suite, num_fewshot, limit)
    names = [n for b in batches for n in b.names]
    manager = task_manager(names, include_path)
    check_task_data(manager, names)
    langs = {n: TASK_LANGS[n] for n in names if n in TASK_LANGS}
    return Prepared(batches, manager, langs)


def evaluate(model: Any, tok: Any, prepared: Prepared, *, batch_size: int,
             samples_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run the prepared tasks on one loaded model: ``{"tasks": {...}, "subtasks": {...}}`` (format: module doc).

    ``samples_dir``: also write every example's per-choice log-likelihoods, prediction and score there
    (``TASK.jsonl``)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with quiet():
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    out: dict[str, dict[str, Any]] = {"tasks": {}, "subtasks": {}}
    for batch in prepared.batches:
        with quiet():
            res = lm_eval.simple_evaluate(model=lm, tasks=list(batch.names), num_fewshot=batch.num_fewshot,
                                          limit=batch.limit, task_manager=prepared.manager,
                                          bootstrap_iters=BOOTSTRAP_ITERS, log_samples=samples_dir is not None)
        if not res or not res.get("results"):
            raise KolmError(f"lm-evaluation-harness returned no results for {', '.join(batch.names)}")
        tasks, subtasks = normalize(res, batch.names, prepared.langs)
        out["tasks"].update(tasks)
        out["subtasks"].update(subtasks)
        if samples_dir is not None:
            write_samples(res.get("samples") or {}, samples_dir)
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _entry(name: str, metrics: dict[str, Any], res: dict[str, Any], subtasks: dict[str, list[str]],
           langs: dict[str, str]) -> dict[str, Any]:
    """One task's (or group's) scores, stderr, example count and few-shot count, from lm-eval's result layout."""
    values: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for key, v in metrics.items():
        metric, _, filt = key.partition(",")
        if not filt or _num(v) is None:
            continue  # alias, name, sample_len, "N/A" stderr
        label = metric if filt == "none" else f"{metric} ({filt})"
        if metric.endswith("_stderr"):
            label = label.replace("_stderr", "", 1)
            stderr[label] = _num(v)  # type: ignore[assignment]
        else:
            values[label] = _num(v)  # type: ignore[assignment]

    def leaves(n: str) -> list[str]:
        return [x for s in subtasks.get(n, []) for x in (leaves(s) if s in subtasks else [s])]

    members = leaves(name) or [name]
    counts = [((res.get("n-samples") or {}).get(m) or {}).get("effective") for m in members]
    shots = {(res.get("n-shot") or {}).get(m) for m in members}
    hib = (res.get("higher_is_better") or {}).get(name) or {}
    return {"metrics": values, "stderr": stderr,
            "higher_is_better": {m: bool(hib.get(m.split(" (")[0], True)) for m in values},
            "samples": sum(counts) if all(isinstance(c, int) for c in counts) else None,
            "num_fewshot": shots.pop() if len(shots) == 1 else None,
            "lang": langs.get(name) or next((langs[m] for m in members if m in langs), None),
            "group": name in subtasks}


def normalize(res: dict[str, Any], requested: tuple[str, ...] | list[str], langs: dict[str, str] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """lm-eval's ``simple_evaluate`` output as kolm's task entries: (the tasks asked for, the tasks inside groups)."""
    langs = dict(langs or {})
    subtasks = {k: list(v) for k, v in (res.get("group_subtasks") or {}).items() if v}
    for group, members in subtasks.items():  # a subtask has its group's language
        for m in members:
            if group in langs:
                langs.setdefault(m, langs[group])
    tasks, inner = {}, {}
    for name, metrics in (res.get("results") or {}).items():
        entry = _entry(name, metrics, res, subtasks, langs)
        parent = next((g for g, m in subtasks.items() if name in m), None)
        if name in requested or parent is None:  # a tag (e.g. `kolm`) is no group: its tasks are listed themselves
            tasks[name] = entry
        else:
            inner[name] = {**entry, "parent": parent}
    return tasks, inner


def safe_name(name: str) -> str:
    """A model label (``run1/final``) as one folder name (``run1_final``)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "model"


def write_samples(samples: dict[str, list[dict[str, Any]]], folder: Path) -> None:
    """Per task, one JSON line per example: the document, the target, each choice's log-likelihood (or the generated
    text), the prediction and the example's metric values."""
    folder.mkdir(parents=True, exist_ok=True)
    for task, rows in samples.items():
        with (folder / f"{task}.jsonl").open("w", encoding="utf-8") as fh:
            for s in rows:
                resps = s.get("filtered_resps") or []
                args = s.get("arguments") or []
                row: dict[str, Any] = {"doc_id": s.get("doc_id"), "doc": s.get("doc"), "target": s.get("target")}
                if args and isinstance(args[0], (list, tuple)) and args[0] and isinstance(args[0][0], str):
                    row["prompt"] = args[0][0]  # with the few-shot examples
                if resps and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in resps):
                    row["continuations"] = [a[1] for a in args] if len(args) == len(resps) else None
                    row["loglikelihoods"] = [float(r[0]) for r in resps]
                    row["prediction"] = max(range(len(resps)), key=lambda i: resps[i][0])
                else:
                    row["responses"] = resps
                row |= {k: v for k, v in s.items() if _num(v) is not None and k != "doc_id"}
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("samples") == b.get("samples") and a.get("num_fewshot") == b.get("num_fewshot")


def task_rows(models: list[dict[str, Any]], reference: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Flat rows model x task x metric with the change vs the reference (default: the first model).

    ``models``: entries with ``name`` and ``tasks`` (as in ``results.json``). A change is given only when both
    scores were measured on the same number of examples with the same few-shot count (``comparable``)."""
    ref = reference if reference is not None else (models[0] if models else None)
    out = []
    for m in models:
        for task, e in (m.get("tasks") or {}).items():
            r = None if ref is None or m is ref else (ref.get("tasks") or {}).get(task)
            same = r is not None and _comparable(e, r)
            for metric, score in e["metrics"].items():
                ref_score = r["metrics"].get(metric) if r else None
                ok = same and ref_score is not None
                out.append({"model": m.get("name", m.get("model")), "task": task, "lang": e.get("lang"),
                            "metric": metric, "score": score, "stderr": e["stderr"].get(metric),
                            "samples": e.get("samples"), "num_fewshot": e.get("num_fewshot"),
                            "higher_is_better": e["higher_is_better"].get(metric, True),
                            "reference": None if ref is None or m is ref else ref.get("name", ref.get("model")),
                            "ref_score": ref_score, "delta": score - ref_score if ok else None,
                            "comparable": ok if r is not None else None})
    return out


def _cells(r: dict[str, Any]) -> list[str]:
    if r["delta"] is not None:
        delta = f"{r['delta']:+.4f}"
    else:
        delta = "settings differ" if r["comparable"] is False and r["ref_score"] is not None else "-"
    def opt(v: Any, fmt: str = "{}") -> str:
        return "-" if v is None else fmt.format(v)

    return [str(r["model"]), r["task"], r["lang"] or "-", r["metric"], f"{r['score']:.4f}",
            opt(r["stderr"], "{:.4f}"), delta, opt(r["samples"]), opt(r["num_fewshot"])]


TASK_HEAD = ["model", "task", "lang", "metric", "score", "stderr", "vs first", "n", "shots"]


def format_task_table(rows: list[dict[str, Any]]) -> str:
    """The task rows as an aligned text table (stdout of ``kolm eval``)."""
    return text_table(TASK_HEAD, [_cells(r) for r in rows], left=4)


def format_task_markdown(rows: list[dict[str, Any]]) -> str:
    """The task rows as a Markdown table (``results.md``, the model card)."""
    out = ["| " + " | ".join(TASK_HEAD) + " |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


def read_task_models(path: str | Path) -> list[dict[str, Any]]:
    """The models of a ``kolm eval`` results.json as ``[{"name", "model", "path", "tasks"}]`` (tasks may be {})."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KolmError(f"{p}: not found (a `kolm eval --output DIR` results.json)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise KolmError(f"{p}: not valid JSON ({e})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise KolmError(f"{p}: not a `kolm eval` results.json (no models list)")
    out = []
    for i, m in enumerate(models):
        tasks = m.get("tasks") or {}
        bad = [t for t, e in tasks.items() if not isinstance(e, dict) or not isinstance(e.get("metrics"), dict)]
        if not isinstance(tasks, dict) or bad:
            raise KolmError(f"{p}: models[{i}].tasks is not in kolm's task format ({', '.join(bad) or 'not a map'}); "
                            f"re-run `kolm eval --tasks ...` with this kolm version")
        out.append({"name": m.get("name") or m.get("model") or f"model{i}", "model": m.get("model"),
                    "path": m.get("path"), "abspath": m.get("abspath"), "tasks": tasks})
    return out


def model_folder(m: dict[str, Any]) -> Path | None:
    """The absolute model folder of a :func:`read_task_models` entry (None for a hub id)."""
    for key in ("abspath", "path", "model"):
        v = m.get(key)
        if isinstance(v, str) and v and (Path(v).is_absolute() or Path(v).exists()):
            return Path(v).resolve()
    return None
