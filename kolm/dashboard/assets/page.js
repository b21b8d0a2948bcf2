// kolm dashboard, part 3 of 3: the page: ranking, the CHARTS of charts.js, and one card per run.
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
  const langs = runLanguages(r);
  for (const chart of RUN_CHARTS) {
    const out = chart(r, i);
    if (out) box.appendChild(out);
  }
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
  for (const chart of CHARTS) {
    for (const out of [].concat(chart(D))) if (out) ch.appendChild(out);
  }
  root.appendChild(el("h2", {}, "Runs side by side"));
  const rs = root.appendChild(el("div", {"class": "runs"}));
  D.runs.forEach((r, i) => rs.appendChild(runCard(r, i)));
  root.appendChild(el("div", {id: "kolm-status", "data-rendered": "1", "data-charts": charts,
                              "data-runs": D.runs.length}));
}
main();
