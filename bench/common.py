"""Shared bits of the benchmark scripts: locating ../shared, timing with medians, printing tables."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kolm.tables import text_table

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KOLM_SHARED", REPO.parent / "shared"))


def need_shared() -> Path:
    if not (SHARED / "corpora" / "ko_dev.txt").is_file():
        sys.exit(f"benchmark needs the shared corpora at {SHARED} (set KOLM_SHARED)")
    return SHARED


def lines(name: str) -> list[str]:
    return [x for x in (need_shared() / "corpora" / name).read_text(encoding="utf-8").splitlines() if x.strip()]


def median_time(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def train_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The training rows of a `kolm train cpt` run folder's metrics.jsonl, in order."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def step_times(rows: list[dict[str, Any]]) -> list[float]:
    """Seconds between consecutive training rows (one per step with logging_steps=1)."""
    return [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]


def print_table(rows: list[dict[str, Any]], title: str = "") -> None:
    if title:
        print(f"\n{title}")
    cols = list(rows[0])
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in (r.get(c, "") for c in cols)] for r in rows]
    print(text_table(cols, cells, left=len(cols)))


def print_json(name: str, payload: dict[str, Any]) -> None:
    print("BENCH_JSON " + json.dumps({"bench": name, **payload}, ensure_ascii=False))
