// kolm dashboard, part 2 of 3: the charts of the overview section.
// To add a chart: write a function that takes the dashboard data D (see kolm/dashboard/collect.py for its fields)
// and returns a box element (or null to skip), then add it to CHARTS below. A chart drawn per run goes in RUN_CHARTS
// (a function of (run, index)). New numbers come from collect.py (add the field there) and are tested in
// tests/test_dashboard.py (the browser test counts rendered charts in #kolm-status[data-charts]).
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

function scatter(D) {
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


// One run's bits per byte per language over its steps, with its reference lines and stage boundaries.
function runCurves(r, i) {
  const langs = runLanguages(r);
  const div = el("div", {"class": "run-chart"});
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
  div.appendChild(lineChart({series: series, vlines: vlines, width: 520, height: 260, title: r.name}));
  div.appendChild(legend(items));
  return div;
}
function runLanguages(r) { return r.langs.length ? r.langs : [D.gain_lang, D.forget_lang]; }

// The overview charts, in page order: one bits-per-byte curve per language (gain language, forgetting language, then
// any other language a run evaluates), then gain vs forgetting.
const CHARTS = [
  D => chartLanguages(D).map(overviewChart),
  D => scatter(D),
];
// The charts inside each run's card, in order (after its title and warnings).
const RUN_CHARTS = [
  (r, i) => runCurves(r, i),
];
function chartLanguages(D) {
  const langs = [D.gain_lang, D.forget_lang];
  for (const r of D.runs) for (const l of r.langs) if (!langs.includes(l)) langs.push(l);
  return langs;
}
