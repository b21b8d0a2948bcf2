"""``kolm dashboard``: Korean gain vs English forgetting of CPT runs, side by side, in one self-contained HTML file.

    kolm dashboard runs/emb-full runs/lora --output report.html
    kolm dashboard runs/emb-full --output report.html --watch 30        # re-render while the run trains
    kolm dashboard runs/emb-full runs/lora --eval eval/results.json     # + benchmark task scores

Per run: Korean and English bits per byte over training steps (``metrics.jsonl``) with the base model's values as
reference lines, gain and forgetting, the data mix (``data_manifest.json``), the tokenizer extension
(``extension.json``), the stages and their hyper-parameters; then a table ranking the runs by Korean gain and by
English forgetting. The page needs no network (inline CSS/JS, data embedded as JSON). The same numbers are written
beside it: ``report.json``, ``report.csv`` (the ranking) and ``report_curves.csv`` (every evaluation point).

The reference is ``base_eval.json`` in the run folder (or ``--base-eval FILE``: ``results.json`` of ``kolm eval`` on
the base model, measured on the run's validation text, e.g. ``kolm eval --model BASE --data DATA --max-docs N``),
else the evaluation at step 0 (the model the run started from). See :mod:`kolm.dashboard.collect`.

Benchmark task scores (``kolm eval --tasks/--suite``) are shown per run when ``--eval FILE`` gives a ``kolm eval``
``results.json`` holding scores of the run's models (``RUN/final``, a stage's model): each is compared with the first
model of that file (the base, e.g. ``kolm eval --model BASE --model RUN/final --suite forgetting --output eval/``),
or with the tasks of ``base_eval.json``. A run without task scores of its own shows those of ``base_eval.json``.

``--watch SECONDS`` re-renders whenever a run's ``metrics.jsonl`` changes (the page reloads itself meanwhile), and
stops when every run has its ``final/`` folder or after ``--watch-max-iterations`` polls.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kolm.artifacts import RunFolder
from kolm.config import ConfigError, field

__all__ = ["DashboardConfig", "run", "collect_all"]


@dataclass
class DashboardConfig:
    """Options of ``kolm dashboard``."""

    runs: list[str] = field(default_factory=list, path=True, help="run folders of `kolm train cpt`")
    output: str = field("report.html", path=True, help="the HTML file (JSON/CSV files are written beside it)")
    base_eval: str | None = field(None, path=True,
                                  help="`kolm eval` results.json of the base model, for every run (default: each "
                                       "run's base_eval.json, else its step-0 evaluation)")
    eval: list[str] = field(default_factory=list, path=True,
                            help="`kolm eval` results.json file(s) with benchmark task scores (--tasks/--suite) of "
                                 "the runs' models; the first model of a file is their base")
    title: str = field("kolm: Korean gain vs English forgetting", help="page title")
    gain_lang: str = field("ko", help="the language being taught (its bpb drop is the gain)")
    forget_lang: str = field("en", help="the language to keep (its bpb rise is the forgetting)")
    watch: float = field(0.0, help="re-render every SECONDS while metrics.jsonl changes (0: render once)")
    watch_max_iterations: int | None = field(None, help="with --watch: stop after N polls (default: until every "
                                                        "run has final/)")

    def __post_init__(self) -> None:
        if not self.runs:
            raise ConfigError("runs: give at least one run folder (kolm dashboard RUN_DIR [RUN_DIR ...])")
        if not self.output or not self.output.endswith((".html", ".htm")):
            raise ConfigError(f"output: must be an .html file, got {self.output!r}")
        if not math.isfinite(self.watch) or self.watch < 0:
            raise ConfigError(f"watch: seconds must be >= 0, got {self.watch}")
        if self.watch_max_iterations is not None and self.watch_max_iterations < 0:
            raise ConfigError("watch_max_iterations: must be >= 0")
        if self.gain_lang == self.forget_lang:
            raise ConfigError("gain_lang and forget_lang must differ")


def run_names(paths: list[str]) -> list[str]:
    from kolm.eval.run import short_names

    return short_names([str(Path(p).resolve()) for p in paths])


def collect_all(cfg: DashboardConfig, *, watching: bool = False) -> dict[str, Any]:
    """The dashboard's data: every run, the ranking, and the file names written beside the HTML."""
    import kolm
    from kolm.dashboard.collect import load_run, rank

    out = Path(cfg.output)
    runs = [load_run(p, name=n, base_eval=Path(cfg.base_eval) if cfg.base_eval else None, gain_lang=cfg.gain_lang,
                     forget_lang=cfg.forget_lang, allow_missing_metrics=watching)
            for p, n in zip(cfg.runs, run_names(cfg.runs))]
    warnings = add_task_scores(cfg, runs)
    sources = {(r["reference"] or {}).get("source") for r in runs if r["reference"]}
    if len(sources) > 1:
        warnings.append("the runs use different references (" + ", ".join(sorted(sources)) + "): gains and "
                        "forgetting of runs with different references do not compare directly")
    return {
        "format": "kolm.dashboard/1", "warnings": warnings, "kolm_version": kolm.__version__, "title": cfg.title,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "gain_lang": cfg.gain_lang, "forget_lang": cfg.forget_lang, "watching": watching,
        "files": {"html": out.name, "json": out.with_suffix(".json").name, "csv": out.with_suffix(".csv").name,
                  "curves_csv": f"{out.stem}_curves.csv", "tasks_csv": f"{out.stem}_tasks.csv"},
        "skipped_total": sum(r["metrics"]["skipped"] for r in runs),
        "runs": runs, "ranking": rank(runs),
    }


def add_task_scores(cfg: DashboardConfig, runs: list[dict[str, Any]]) -> list[str]:
    """Put each run's benchmark task scores (from ``--eval`` files and base_eval.json) into ``run["tasks"]``; warn
    about a file none of whose models belongs to a run."""
    from kolm.dashboard.collect import runs_models, task_scores
    from kolm.eval.harness import read_task_models

    evals = [(Path(p), read_task_models(p)) for p in cfg.eval]
    for r, p in zip(runs, cfg.runs):
        r["tasks"] = task_scores(RunFolder(p), evals, Path(cfg.base_eval) if cfg.base_eval else None)
    warnings = []
    for path, models in evals:
        if not any(runs_models(Path(p), [(path, models)]) for p in cfg.runs):
            names = ", ".join(m["name"] for m in models if m["tasks"]) or "none"
            warnings.append(f"{path}: none of its models with task scores ({names}) is inside the runs given; "
                            f"evaluate RUN/final (kolm eval --model BASE --model RUN/final --tasks ...)")
    return warnings


def render(cfg: DashboardConfig, *, watching: bool = False, live: bool = False) -> dict[str, Any]:
    """Collect, write the files, print a one-line summary per run (and the skipped-line warnings).

    ``watching``: a run without metrics.jsonl yet is shown as waiting instead of failing; ``live``: the page
    reloads itself (until every run has finished)."""
    from kolm.dashboard.page import write_report

    data = collect_all(cfg, watching=watching)
    refresh = max(1, math.ceil(cfg.watch)) if live and not all(r["finished"] for r in data["runs"]) else None
    write_report(data, Path(cfg.output), refresh=refresh)
    for w in data["warnings"]:
        print(f"kolm dashboard: warning: {w}")
    for r in data["runs"]:
        for w in r["warnings"]:
            print(f"kolm dashboard: {r['name']}: {w}")
    for row in data["ranking"]:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:+.4f}"

        print(f"kolm dashboard: {row['run']}: step {row['step'] if row['step'] is not None else '-'}, "
              f"{cfg.gain_lang} gain {f(row['gain'])} bpb, {cfg.forget_lang} forgetting {f(row['forgetting'])} bpb "
              f"({row['status']}){_task_note(data, row['run'])}")
    print(f"kolm dashboard: {len(data['runs'])} run(s) -> {cfg.output}")
    return data


def _task_note(data: dict[str, Any], run: str) -> str:
    r = next(x for x in data["runs"] if x["name"] == run)
    n = sum(len(m["rows"]) for m in r["tasks"]["models"])
    return f", {n} task score(s)" if n else ""


def _signature(cfg: DashboardConfig) -> tuple[Any, ...]:
    """What a re-render depends on: metrics.jsonl size/mtime and whether final/ exists, per run."""
    sig = []
    for p in cfg.runs:
        run = RunFolder(p)
        st = run.metrics.stat() if run.metrics.is_file() else None
        sig.append((st.st_size if st else -1, st.st_mtime_ns if st else -1, run.final.is_dir()))
    return tuple(sig)


def run(cfg: DashboardConfig) -> dict[str, Any]:
    """Render once; with ``--watch`` keep re-rendering on changes until the runs finish (or N polls)."""
    watching = cfg.watch > 0
    data = render(cfg, watching=watching, live=watching)
    if not watching:
        return data
    sig, polls = _signature(cfg), 0
    while not all(r["finished"] for r in data["runs"]):
        if cfg.watch_max_iterations is not None and polls >= cfg.watch_max_iterations:
            print(f"kolm dashboard: stopped watching after {polls} poll(s)")
            return render(cfg, watching=True)  # a last page that no longer reloads itself
        time.sleep(cfg.watch)
        polls += 1
        new = _signature(cfg)
        if new != sig:
            sig = new
            data = render(cfg, watching=True, live=True)
    else:
        print("kolm dashboard: every run has finished (final/); stopped watching")
    return data
