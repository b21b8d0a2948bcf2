// kolm dashboard, part 1 of 3: the data, DOM/SVG helpers, number formats, the line chart, legends and tables.
// kolm/dashboard/page.py inlines base.js, charts.js and page.js, in that order, into one <script>.
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

