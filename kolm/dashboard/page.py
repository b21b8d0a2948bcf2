"""Write the dashboard: one self-contained HTML file (inline CSS, inline JS drawing SVG charts from embedded JSON,
no network; the CSS and JS live in ``assets/``, where a new chart is one function added to ``assets/charts.js``),
plus the same numbers as ``<name>.json``, ``<name>.csv`` (one row per run: the ranking) and ``<name>_curves.csv``
(one row per run x evaluation step x language) and ``<name>_tasks.csv`` (one row per run x model x benchmark task x
metric). Files are replaced atomically, so a browser refreshing during ``--watch`` never reads half a page.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from kolm.io.files import atomic_write_text

SUMMARY_COLUMNS = ["rank_gain", "rank_forgetting", "run", "status", "step", "steps_total", "tokens_seen", "reference",
                   "gain_ref_bpb", "gain_latest_bpb", "gain", "gain_pct", "forgetting_ref_bpb",
                   "forgetting_latest_bpb", "forgetting", "forgetting_pct"]
CURVE_COLUMNS = ["run", "stage_index", "stage", "step", "tokens_seen", "lang", "bpb", "reference_bpb",
                 "change_vs_reference"]
TASK_COLUMNS = ["run", "model", "task", "lang", "metric", "score", "stderr", "samples", "num_fewshot", "reference",
                "ref_score", "delta", "comparable"]

ASSETS = Path(__file__).with_name("assets")
# The page's script, in order: helpers, the chart registry (CHARTS, RUN_CHARTS), the page itself. A new chart is a
# function in assets/charts.js added to CHARTS or RUN_CHARTS; see that file's header.
SCRIPTS = ["base.js", "charts.js", "page.js"]


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _json_for_html(data: Any) -> str:
    """JSON that is safe inside <script> (no `</script>`, `<!--` or `&` can end or confuse the element)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_page(data: dict[str, Any], refresh: int | None = None) -> str:
    title = html.escape(data["title"])
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    watching = (f'<div class="warn">Watching: this page reloads every {int(refresh)} s while the runs train.</div>'
                if refresh else "")
    script = "\n".join(_asset(name) for name in SCRIPTS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{meta}<title>{title}</title><style>{_asset('style.css')}</style></head>
<body><header><h1>{title}</h1><div class="mut">generated {html.escape(data["generated"])} by kolm {html.escape(
        data["kolm_version"])} &middot; {len(data["runs"])} run(s) &middot; numbers also in
{html.escape(data["files"]["json"])}, {html.escape(data["files"]["csv"])}, {html.escape(data["files"]["curves_csv"])},
{html.escape(data["files"]["tasks_csv"])}
</div>{watching}<div class="warn" id="js-error" hidden></div>
<noscript><div class="warn">The charts are drawn by JavaScript; the numbers are in the JSON/CSV files beside this
page.</div></noscript></header>
<main id="app"></main>
<script type="application/json" id="kolm-data">{_json_for_html(data)}</script>
<script>{script}</script>
</body></html>
"""


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
    return buf.getvalue()


def curve_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in runs:
        ref = (r["reference"] or {}).get("bpb", {})
        for e in r["evals"]:
            for lang, v in e["bpb"].items():
                out.append({"run": r["name"], "stage_index": e["stage_index"], "stage": e["stage"], "step": e["step"],
                            "tokens_seen": e["tokens_seen"], "lang": lang, "bpb": v, "reference_bpb": ref.get(lang),
                            "change_vs_reference": None if v is None or ref.get(lang) is None else v - ref[lang]})
    return out


def task_csv_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "run": r["name"], "model": m["label"]} for r in runs for m in r.get("tasks", {}).get("models", [])
            for row in m["rows"]]


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text, unique=True)  # unique: a watching dashboard and a one-off one may write at once


def write_report(data: dict[str, Any], html_path: Path, refresh: int | None = None) -> None:
    """Write the HTML page and, beside it, the JSON and the two CSV files named in ``data["files"]``."""
    html_path.parent.mkdir(parents=True, exist_ok=True)
    folder = html_path.parent
    _write(folder / data["files"]["json"], json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    _write(folder / data["files"]["csv"], _csv(data["ranking"], SUMMARY_COLUMNS))
    _write(folder / data["files"]["curves_csv"], _csv(curve_rows(data["runs"]), CURVE_COLUMNS))
    _write(folder / data["files"]["tasks_csv"], _csv(task_csv_rows(data["runs"]), TASK_COLUMNS))
    _write(html_path, html_page(data, refresh))
