"""Write the dashboard: one self-contained HTML file (inline CSS, inline JS drawing SVG charts from embedded JSON,
no network), plus the same numbers as ``<name>.json``, ``<name>.csv`` (one row per run: the ranking) and
``<name>_curves.csv`` (one row per run x evaluation step x language) and ``<name>_tasks.csv`` (one row per run x
model x benchmark task x metric). Files are replaced atomically, so a browser
refreshing during ``--watch`` never reads half a page.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = ["rank_gain", "rank_forgetting", "run", "status", "step", "steps_total", "tokens_seen", "reference",
                   "gain_ref_bpb", "gain_latest_bpb", "gain", "gain_pct", "forgetting_ref_bpb",
                   "forgetting_latest_bpb", "forgetting", "forgetting_pct"]
CURVE_COLUMNS = ["run", "stage_index", "stage", "step", "tokens_seen", "lang", "bpb", "reference_bpb",
                 "change_vs_reference"]
TASK_COLUMNS = ["run", "model", "task", "lang", "metric", "score", "stderr", "samples", "num_fewshot", "reference",
                "ref_score", "delta", "comparable"]

CSS = """
:root{--fg:#1d2330;--mut:#5b6475;--bd:#d9dee7;--bg:#f6f7fa;--warn:#fff4d6;--warnbd:#e7c65b}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans KR",
sans-serif;color:var(--fg);background:var(--bg)}header{padding:18px 24px 8px}h1{margin:0 0 4px;font-size:22px}
h2{font-size:17px;margin:22px 0 8px}h3{font-size:15px;margin:14px 0 6px}h4{font-size:13px;margin:12px 0 4px;
color:var(--mut);text-transform:uppercase;letter-spacing:.04em}main{padding:0 24px 32px}.mut{color:var(--mut)}
.box{background:#fff;border:1px solid var(--bd);border-radius:8px;padding:12px 14px}
.warn{background:var(--warn);border:1px solid var(--warnbd);border-radius:8px;padding:8px 12px;margin:8px 0}
.charts{display:flex;flex-wrap:wrap;gap:14px}.charts .box{flex:1 1 520px;min-width:420px;max-width:760px}
.runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:14px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}th,td{padding:3px 8px;
border-bottom:1px solid var(--bd);text-align:right;white-space:nowrap}
th{font-weight:600;background:#fafbfc;white-space:normal}
th:first-child,td:first-child,table.rank th:nth-child(3),table.rank td:nth-child(3){text-align:left}
table.kv td:first-child{color:var(--mut)}
table.tasks th:nth-child(-n+3),table.tasks td:nth-child(-n+3){text-align:left}
th.sortable{cursor:pointer}th.sortable:hover{background:#eef1f6}.good{color:#17803d}.bad{color:#b42318}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin-top:4px}
.sw{display:inline-block;width:18px;height:0;border-top:3px solid;vertical-align:middle;margin-right:5px}
.sw.dash{border-top-style:dashed}svg{display:block;width:100%;height:auto}
svg text{font-size:11px;fill:var(--mut)}.scroll{overflow-x:auto}
"""

JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("kolm-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f6fd1", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#5f3dc4", "#e67700"];
const LANG_COLORS = {};
LANG_COLORS[D.gain_lang] = "#d9480f"; LANG_COLORS[D.forget_lang] = "#1f6fd1";
const OTHER = ["#2b8a3e", "#862e9c", "#0b7285", "#5f3dc4"];
let charts = 0;
window.addEventListener("error", ev => {
  const b = document.getElementById("js-error");
  if (b) { b.hidden = false; b.textContent = "The dashboard script failed: " + ev.message; }
});
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function sv(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
const isNum = v => typeof v === "number" && isFinite(v);
const fmt = (v, d) => isNum(v) ? v.toFixed(d === undefined ? 4 : d) : "\u2013";
const fmtS = (v, d) => isNum(v) ? (v > 0 ? "+" : "") + v.toFixed(d === undefined ? 4 : d) : "\u2013";
const fmtI = v => isNum(v) ? Math.round(v).toLocaleString("en-US") : "\u2013";
const fmtP = v => isNum(v) ? (v > 0 ? "+" : "") + v.toFixed(1) + "%" : "\u2013";
function langColor(lang, i) { return LANG_COLORS[lang] || OTHER[i % OTHER.length]; }

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { const d = Math.abs(lo) * 0.05 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let i = Math.ceil(lo / step); i * step <= hi + step * 1e-9; i++) {
    out.push(i === 0 ? 0 : +(i * step).toPrecision(12));
  }
  return {lo: lo, hi: hi, ticks: out, step: step};
}

// series: {label, color, dash, points: [[x, y|null]], attrs}; vlines: [{x, label}]
function lineChart(o) {
  const W = o.width || 560, H = o.height || 300, m = {l: 58, r: 14, t: 14, b: 40};
  const svg = sv("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "class": "chart", "aria-label": o.title || ""});
  const pts = o.series.flatMap(s => s.points.filter(p => isNum(p[1])));
  if (!pts.length) {
    svg.appendChild(sv("text", {x: W / 2, y: H / 2, "text-anchor": "middle", "class": "empty"}, "no evaluations yet"));
    return svg;
  }
  let x0 = Math.min(...pts.map(p => p[0]), ...(o.vlines || []).map(v => v.x));
  let x1 = Math.max(...pts.map(p => p[0]), ...(o.vlines || []).map(v => v.x));
  if (x1 === x0) { x1 = x0 + 1; }
  const ys = pts.map(p => p[1]);
  let y0 = Math.min(...ys), y1 = Math.max(...ys), pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.05 || 0.1;
  const yt = niceTicks(y0 - pad, y1 + pad, 5), xt = niceTicks(x0, x1, 6);
  y0 = yt.lo; y1 = yt.hi;
  const X = x => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
  const Y = y => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
  const g = sv("g", {"class": "axes"});
  for (const t of yt.ticks) {
    if (t < y0 || t > y1) continue;
    g.appendChild(sv("line", {x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), stroke: "#e6e9ef"}));
    g.appendChild(sv("text", {x: m.l - 6, y: Y(t) + 4, "text-anchor": "end"}, +t.toPrecision(6)));
  }
  for (const t of xt.ticks) {
    if (t < x0 || t > x1) continue;
    g.appendChild(sv("text", {x: X(t), y: H - m.b + 15, "text-anchor": "middle"}, fmtI(t)));
  }
  g.appendChild(sv("line", {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, stroke: "#9aa3b2"}));
  g.appendChild(sv("line", {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, stroke: "#9aa3b2"}));
  g.appendChild(sv("text", {x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle"}, o.xlabel || "step"));
  g.appendChild(sv("text", {x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
                            transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`}, o.ylabel || "bits per byte"));
  svg.appendChild(g);
  for (const v of o.vlines || []) {
    svg.appendChild(sv("line", {x1: X(v.x), x2: X(v.x), y1: m.t, y2: H - m.b, stroke: "#c3c9d4",
                                "stroke-dasharray": "2 3", "class": "stage-line"}));
    svg.appendChild(sv("text", {x: X(v.x) + 3, y: m.t + 10}, v.label));
  }
  for (const s of o.series) {
    let d = "", pen = false;
    for (const p of s.points) {
      if (!isNum(p[1])) { pen = false; continue; }
      d += (pen ? "L" : "M") + X(p[0]).toFixed(2) + " " + Y(p[1]).toFixed(2) + " ";
      pen = true;
    }
    if (!d) continue;
    const path = sv("path", Object.assign({d: d.trim(), fill: "none", stroke: s.color, "stroke-width": s.dash ? 1.5 : 2,
                                           "class": "series"}, s.attrs));
    if (s.dash) path.setAttribute("stroke-dasharray", "6 4");
    path.appendChild(sv("title", {}, s.label));
    svg.appendChild(path);
    if (!s.dash && s.points.length <= 300) {
      for (const p of s.points) {
        if (!isNum(p[1])) continue;
        const c = sv("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.6, fill: s.color, "class": "pt"});
        c.appendChild(sv("title", {}, `${s.label}: step ${fmtI(p[0])}, ${fmt(p[1])} bpb`));
        svg.appendChild(c);
      }
    }
  }
  charts += 1;
  return svg;
}

function legend(items) {
  const div = el("div", {"class": "legend"});
  for (const it of items) {
    const span = el("span");
    const sw = el("span", {"class": "sw" + (it.dash ? " dash" : "")});
    sw.style.borderTopColor = it.color;
    span.appendChild(sw); span.appendChild(document.createTextNode(it.label));
    div.appendChild(span);
  }
  return div;
}

function refSeries(run, lang, color, x0, x1, label) {
  const v = run.reference && run.reference.bpb[lang];
  if (!isNum(v)) return null;
  return {label: label, color: color, dash: true, points: [[x0, v], [x1, v]],
          attrs: {"data-run": run.name, "data-lang": lang, "data-kind": "ref"}};
}

function stepRange(runs) {
  const steps = runs.flatMap(r => r.evals.map(e => e.step));
  const ends = runs.map(r => r.total_steps).filter(isNum);
  return [Math.min(0, ...steps), Math.max(1, ...steps, ...ends)];
}

function overviewChart(lang) {
  const [x0, x1] = stepRange(D.runs);
  const series = [], items = [];
  D.runs.forEach((r, i) => {
    const c = COLORS[i % COLORS.length];
    series.push({label: `${r.name} ${lang}`, color: c, points: r.evals.map(e => [e.step, e.bpb[lang]]),
                 attrs: {"data-run": r.name, "data-lang": lang, "data-kind": "bpb"}});
    items.push({label: r.name, color: c});
    const ref = refSeries(r, lang, c, x0, x1, `${r.name} reference (${r.reference ? r.reference.source : ""})`);
    if (ref) series.push(ref);
  });
  items.push({label: "reference (base)", color: "#777", dash: true});
  const box = el("div", {"class": "box"});
  box.appendChild(el("h3", {}, `${lang} bits per byte over training` +
    (lang === D.gain_lang ? " (lower is better: gain)" : lang === D.forget_lang ? " (rise = forgetting)" : "")));
  box.appendChild(lineChart({series: series, title: `${lang} bpb`}));
  box.appendChild(legend(items));
  return box;
}

function scatter() {
  const W = 560, H = 300, m = {l: 58, r: 14, t: 14, b: 40};
  const pts = D.runs.map((r, i) => ({r: r, i: i, x: r.summary.forgetting, y: r.summary.gain}))
    .filter(p => isNum(p.x) && isNum(p.y));
  const box = el("div", {"class": "box"});
  box.appendChild(el("h3", {}, `${D.gain_lang} gain vs ${D.forget_lang} forgetting (bpb, latest vs reference)`));
  const svg = sv("svg", {viewBox: `0 0 ${W} ${H}`, "class": "chart scatter"});
  if (!pts.length) {
    svg.appendChild(sv("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "no evaluations yet"));
  } else {
    const xs = pts.map(p => p.x).concat([0]), ys = pts.map(p => p.y).concat([0]);
    const xpad = (Math.max(...xs) - Math.min(...xs)) * 0.15 || 0.01;
    const ypad = (Math.max(...ys) - Math.min(...ys)) * 0.15 || 0.01;
    const xt = niceTicks(Math.min(...xs) - xpad, Math.max(...xs) + xpad, 5);
    const yt = niceTicks(Math.min(...ys) - ypad, Math.max(...ys) + ypad, 5);
    const X = x => m.l + (x - xt.lo) / (xt.hi - xt.lo) * (W - m.l - m.r);
    const Y = y => H - m.b - (y - yt.lo) / (yt.hi - yt.lo) * (H - m.t - m.b);
    for (const t of yt.ticks) {
      svg.appendChild(sv("text", {x: m.l - 6, y: Y(t) + 4, "text-anchor": "end"}, +t.toPrecision(4)));
    }
    for (const t of xt.ticks) {
      svg.appendChild(sv("text", {x: X(t), y: H - m.b + 15, "text-anchor": "middle"}, +t.toPrecision(4)));
    }
    svg.appendChild(sv("line", {x1: X(0), x2: X(0), y1: m.t, y2: H - m.b, stroke: "#9aa3b2"}));
    svg.appendChild(sv("line", {x1: m.l, x2: W - m.r, y1: Y(0), y2: Y(0), stroke: "#9aa3b2"}));
    svg.appendChild(sv("text", {x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle"},
                       `${D.forget_lang} forgetting (bpb; right = worse)`));
    svg.appendChild(sv("text", {x: 12, y: H / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${H / 2})`},
                       `${D.gain_lang} gain (bpb; up = better)`));
    for (const p of pts) {
      const c = sv("circle", {cx: X(p.x), cy: Y(p.y), r: 6, fill: COLORS[p.i % COLORS.length], "class": "point",
                              "data-run": p.r.name});
      c.appendChild(sv("title", {}, `${p.r.name}: gain ${fmtS(p.y)}, forgetting ${fmtS(p.x)}`));
      svg.appendChild(c);
      svg.appendChild(sv("text", {x: X(p.x) + 9, y: Y(p.y) + 4, fill: "#1d2330"}, p.r.name));
    }
    charts += 1;
  }
  box.appendChild(svg);
  return box;
}

function table(head, rows, opts) {
  const t = el("table", opts && opts.cls ? {"class": opts.cls} : {});
  if (head) {
    const tr = el("tr");
    head.forEach((h, j) => {
      const th = el("th", opts && opts.sortable ? {"class": "sortable", title: "sort"} : {}, h);
      if (opts && opts.sortable) th.addEventListener("click", () => sortBy(t, j));
      tr.appendChild(th);
    });
    t.appendChild(el("thead")).appendChild(tr);
  }
  const tb = t.appendChild(el("tbody"));
  for (const r of rows) {
    const tr = tb.appendChild(el("tr"));
    for (const c of r) {
      const cell = (c && typeof c === "object") ? c : {text: c};
      const td = el("td", cell.cls ? {"class": cell.cls} : {}, cell.text);
      if (cell.sort !== undefined) td.dataset.sort = cell.sort;
      tr.appendChild(td);
    }
  }
  return t;
}
function sortBy(t, j) {
  const tb = t.tBodies[0], rows = Array.from(tb.rows), asc = t.dataset.sorted !== String(j);
  const val = r => {
    const c = r.cells[j], s = c.dataset.sort;
    return s !== undefined && s !== "" ? +s : c.textContent;
  };
  rows.sort((a, b) => { const u = val(a), v = val(b); const k = (typeof u === "number" && typeof v === "number") ?
    u - v : String(u).localeCompare(String(v)); return asc ? k : -k; });
  rows.forEach(r => tb.appendChild(r));
  t.dataset.sorted = asc ? String(j) : "";
}
const signed = (v, goodWhenPositive) => ({text: fmtS(v), sort: isNum(v) ? v : "",
  cls: !isNum(v) || v === 0 ? "" : ((v > 0) === goodWhenPositive ? "good" : "bad")});

function ranking() {
  const box = el("div", {"class": "box scroll", id: "ranking"});
  box.appendChild(el("h2", {}, `Ranking: ${D.gain_lang} gain and ${D.forget_lang} forgetting`));
  const g = D.gain_lang, f = D.forget_lang;
  box.appendChild(table(
    ["#gain", "#forgetting", "run", "status", "step", `${g} ref`, `${g} latest`, `${g} gain`, `${g} gain %`,
     `${f} ref`, `${f} latest`, `${f} forgetting`, `${f} forgetting %`, "reference"],
    D.ranking.map(r => [
      {text: r.rank_gain ?? "\u2013", sort: r.rank_gain ?? ""},
      {text: r.rank_forgetting ?? "\u2013", sort: r.rank_forgetting ?? ""},
      r.run, r.status, {text: `${fmtI(r.step)} / ${fmtI(r.steps_total)}`, sort: r.step ?? ""},
      {text: fmt(r.gain_ref_bpb), sort: r.gain_ref_bpb ?? ""},
      {text: fmt(r.gain_latest_bpb), sort: r.gain_latest_bpb ?? ""},
      signed(r.gain, true), {text: fmtP(r.gain_pct), sort: r.gain_pct ?? ""},
      {text: fmt(r.forgetting_ref_bpb), sort: r.forgetting_ref_bpb ?? ""},
      {text: fmt(r.forgetting_latest_bpb), sort: r.forgetting_latest_bpb ?? ""},
      signed(r.forgetting, false), {text: fmtP(r.forgetting_pct), sort: r.forgetting_pct ?? ""},
      r.reference || "\u2013"]),
    {sortable: true, cls: "rank"}));
  box.appendChild(el("p", {"class": "mut"}, `gain = reference \u2212 latest ${g} bits per byte (higher is better); ` +
    `forgetting = latest \u2212 reference ${f} bits per byte (lower is better). Reference: the base model ` +
    "(base_eval.json from `kolm eval` on the same text) or else the evaluation at step 0 (the input model). " +
    "Bits per byte do not depend on the tokenizer, so extended and base vocabularies compare directly."));
  return box;
}

function taskTables(box, r) {
  box.appendChild(el("h4", {}, "Benchmark tasks"));
  const models = (r.tasks && r.tasks.models) || [];
  if (!models.length) {
    box.appendChild(el("div", {"class": "mut"}, "no task scores (kolm eval --model BASE --model RUN/final " +
      "--tasks ... --output DIR, then kolm dashboard --eval DIR/results.json)"));
    return;
  }
  for (const m of models) {
    const div = box.appendChild(el("div", {"class": "tasks", "data-run": r.name, "data-model": m.label}));
    div.appendChild(el("div", {"class": "mut"}, `${m.label}` + (m.reference ? ` vs ${m.reference}` : "")));
    div.appendChild(table(["task", "lang", "metric", "score", "base", "change", "n", "shots"], m.rows.map(x => [
      x.task, x.lang || "\u2013", x.metric, fmt(x.score), fmt(x.ref_score),
      x.comparable === false ? {text: "settings differ", cls: "mut"} : signed(x.delta, x.higher_is_better),
      fmtI(x.samples), x.num_fewshot ?? "\u2013"]), {cls: "tasks"}));
  }
}

function runCard(r, i) {
  const box = el("div", {"class": "box run", "data-run": r.name});
  const h = box.appendChild(el("h3"));
  const sw = el("span", {"class": "sw"}); sw.style.borderTopColor = COLORS[i % COLORS.length];
  h.appendChild(sw); h.appendChild(document.createTextNode(r.name));
  box.appendChild(el("div", {"class": "mut"}, `${r.path} \u00b7 ${r.status}` +
    (r.last_update ? " \u00b7 last metrics " +
      new Date(r.last_update * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "")));
  for (const w of r.warnings) box.appendChild(el("div", {"class": "warn"}, w));
  const langs = r.langs.length ? r.langs : [D.gain_lang, D.forget_lang];
  const [x0, x1] = stepRange([r]);
  const series = [], items = [];
  langs.forEach((lang, j) => {
    const c = langColor(lang, j);
    series.push({label: `${r.name} ${lang}`, color: c, points: r.evals.map(e => [e.step, e.bpb[lang]]),
                 attrs: {"data-run": r.name, "data-lang": lang, "data-kind": "bpb"}});
    items.push({label: `${lang} bpb`, color: c});
    const ref = refSeries(r, lang, c, x0, x1, `${lang} reference`);
    if (ref) { series.push(ref); items.push({label: `${lang} reference`, color: c, dash: true}); }
  });
  const vlines = r.stages.filter(s => s.index > 0).map(s => ({x: s.first_step, label: s.name}));
  box.appendChild(lineChart({series: series, vlines: vlines, width: 520, height: 260, title: r.name}));
  box.appendChild(legend(items));
  const s = r.summary, k = r.latest ? r.latest.bpb : {};
  box.appendChild(el("h4", {}, "Latest vs reference"));
  box.appendChild(table(["", "reference", "step 0", `latest (step ${fmtI(s.step)})`, "change"], langs.map(lang => {
    const ref = r.reference ? r.reference.bpb[lang] : null, last = k[lang];
    const ch = isNum(ref) && isNum(last) ? last - ref : null;
    return [`${lang} bpb`, fmt(ref), fmt(r.step0 ? r.step0[lang] : null), fmt(last), signed(ch, false)];
  })));
  box.appendChild(el("div", {"class": "mut"}, "reference: " + (r.reference ? r.reference.source +
    (r.reference.model ? ` (${r.reference.model})` : "") : "none (no step-0 evaluation)")));
  taskTables(box, r);
  box.appendChild(el("h4", {}, "Stages"));
  box.appendChild(table(["stage", "kind", "steps", "lr", "warm-up", "progress"], r.stages.map(st =>
    [`${st.index}: ${st.name}`, st.kind + (st.lora_r ? ` (r=${st.lora_r})` : ""), fmtI(st.max_steps), st.lr ?? "\u2013",
     st.warmup_steps ?? "\u2013", st.done ? "done" : `${fmtI(st.steps_done)} / ${fmtI(st.max_steps)}`])));
  const rc = r.recipe || {}, op = rc.optim || {};
  box.appendChild(table(null, [
    ["micro batch x grad accum", `${rc.micro_batch_size ?? "\u2013"} x ${rc.grad_accum ?? "\u2013"}`],
    ["optimiser", `lr ${op.lr ?? "\u2013"}, wd ${op.weight_decay ?? "\u2013"}, ${op.scheduler ?? ""}`],
    ["tokens seen", fmtI(r.tokens_seen)], ["last train loss", fmt(r.train_loss)], ["deepspeed", rc.deepspeed ?? "none"],
    ["metrics lines (skipped)", `${r.metrics.lines} (${r.metrics.skipped})`]], {cls: "kv"}));
  box.appendChild(el("h4", {}, "Data mix"));
  if (r.data) {
    box.appendChild(table(["language", "target", "achieved", "train tokens"], Object.entries(r.data.languages).map(
      ([lang, v]) => [lang, fmt(v.target_share, 3), fmt(v.achieved_share, 3), fmtI(v.train_tokens)])));
    box.appendChild(table(["source", "lang", "kept docs", "tokens kept", "train tokens", "epochs"], r.data.sources.map(
      x => [x.hub ? `${x.name} (${x.hub})` : x.name, x.lang, fmtI(x.kept_docs), fmtI(x.tokens_kept),
            fmtI(x.train_tokens), fmt(x.epochs, 3)])));
    box.appendChild(el("div", {"class": "mut"}, `seq_len ${fmtI(r.data.seq_len)}, ${fmtI(r.data.train_sequences)} ` +
      `train sequences, ${fmtI(r.data.train_tokens)} tokens, tokenizer ${fmtI(r.data.tokenizer_vocab_size)} ids`));
  } else box.appendChild(el("div", {"class": "mut"}, "no data_manifest.json"));
  box.appendChild(el("h4", {}, "Tokenizer extension"));
  const x = r.extension;
  if (x) {
    box.appendChild(table(null, [["base", x.base], ["family", x.family],
      ["vocabulary", `${fmtI(x.base_vocab_size)} \u2192 ${fmtI(x.vocab_size)} (+${fmtI(x.num_added)})`],
      ["new tokens", `${fmtI(x.num_new_chars)} characters, ${fmtI(x.num_new_merge_tokens)} merges`],
      ["Korean chars / token", `${fmt(x.ko_chars_per_token_base, 3)} \u2192 ${fmt(x.ko_chars_per_token_extended, 3)}`],
      ["morpheme-aware", String(x.morpheme_aware)]], {cls: "kv"}));
  } else box.appendChild(el("div", {"class": "mut"}, "no extension.json (vocabulary not extended)"));
  return box;
}

function main() {
  const root = document.getElementById("app");
  const skipped = D.runs.filter(r => r.metrics.skipped > 0);
  if (skipped.length) {
    root.appendChild(el("div", {"class": "warn", id: "skipped"}, `Skipped ${D.skipped_total} broken metrics line(s): ` +
      skipped.map(r => `${r.name}: ${r.metrics.skipped} (lines ${r.metrics.skipped_lines.join(", ")})`).join("; ")));
  }
  for (const w of D.warnings) root.appendChild(el("div", {"class": "warn"}, w));
  root.appendChild(ranking());
  root.appendChild(el("h2", {}, "Bits per byte over training steps"));
  const ch = root.appendChild(el("div", {"class": "charts"}));
  const langs = [D.gain_lang, D.forget_lang];
  for (const r of D.runs) for (const l of r.langs) if (!langs.includes(l)) langs.push(l);
  for (const l of langs) ch.appendChild(overviewChart(l));
  ch.appendChild(scatter());
  root.appendChild(el("h2", {}, "Runs side by side"));
  const rs = root.appendChild(el("div", {"class": "runs"}));
  D.runs.forEach((r, i) => rs.appendChild(runCard(r, i)));
  root.appendChild(el("div", {id: "kolm-status", "data-rendered": "1", "data-charts": charts,
                              "data-runs": D.runs.length}));
}
main();
"""


def _json_for_html(data: Any) -> str:
    """JSON that is safe inside <script> (no `</script>`, `<!--` or `&` can end or confuse the element)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_page(data: dict[str, Any], refresh: int | None = None) -> str:
    title = html.escape(data["title"])
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    watching = (f'<div class="warn">Watching: this page reloads every {int(refresh)} s while the runs train.</div>'
                if refresh else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{meta}<title>{title}</title><style>{CSS}</style></head>
<body><header><h1>{title}</h1><div class="mut">generated {html.escape(data["generated"])} by kolm {html.escape(
        data["kolm_version"])} &middot; {len(data["runs"])} run(s) &middot; numbers also in
{html.escape(data["files"]["json"])}, {html.escape(data["files"]["csv"])}, {html.escape(data["files"]["curves_csv"])},
{html.escape(data["files"]["tasks_csv"])}
</div>{watching}<div class="warn" id="js-error" hidden></div>
<noscript><div class="warn">The charts are drawn by JavaScript; the numbers are in the JSON/CSV files beside this
page.</div></noscript></header>
<main id="app"></main>
<script type="application/json" id="kolm-data">{_json_for_html(data)}</script>
<script>{JS}</script>
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(data: dict[str, Any], html_path: Path, refresh: int | None = None) -> None:
    """Write the HTML page and, beside it, the JSON and the two CSV files named in ``data["files"]``."""
    html_path.parent.mkdir(parents=True, exist_ok=True)
    folder = html_path.parent
    _write(folder / data["files"]["json"], json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    _write(folder / data["files"]["csv"], _csv(data["ranking"], SUMMARY_COLUMNS))
    _write(folder / data["files"]["curves_csv"], _csv(curve_rows(data["runs"]), CURVE_COLUMNS))
    _write(folder / data["files"]["tasks_csv"], _csv(task_csv_rows(data["runs"]), TASK_COLUMNS))
    _write(html_path, html_page(data, refresh))
