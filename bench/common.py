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


def harvest_distinct(out: Path, dev: Path) -> Path | None:
    """ko_dev.txt plus the Korean paragraphs of Debian's Korean help packages (no install: `apt-get download`
    into bench/out, HTML stripped, deduplicated, lines with at least 30% Hangul). None without apt."""
    if out.is_file():
        return out
    import html.parser
    import re
    import shutil
    import subprocess
    import unicodedata

    if not shutil.which("apt-get"):
        return None
    work = out.parent / "debian-ko"
    work.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", "gimp-help-ko", "libreoffice-help-ko"], cwd=work,
                         capture_output=True, text=True)
    debs = list(work.glob("*.deb"))
    if got.returncode or not debs:
        return None
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)

    class Text(html.parser.HTMLParser):
        BLOCKS = {"p", "div", "li", "td", "h1", "h2", "h3", "h4", "pre", "br", "tr", "dt", "dd", "title"}

        def __init__(self) -> None:
            super().__init__()
            self.paras: list[str] = []
            self.cur: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.skip += tag in ("script", "style")
            if tag in self.BLOCKS:
                self.flush()

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("script", "style")
            if tag in self.BLOCKS:
                self.flush()

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.cur.append(data)

        def flush(self) -> None:
            t = unicodedata.normalize("NFC", " ".join("".join(self.cur).split()))
            self.cur = []
            if t:
                self.paras.append(t)

    hangul = re.compile("[\uac00-\ud7a3]")
    seen = set(dev.read_text(encoding="utf-8").splitlines())
    lines = sorted(seen - {""})
    for page in sorted((work / "x").rglob("*.html")):
        parser = Text()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        parser.flush()
        for t in parser.paras:
            if len(t) >= 20 and len(hangul.findall(t)) >= 0.3 * len(t.replace(" ", "")) and t not in seen:
                seen.add(t)
                lines.append(t)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
