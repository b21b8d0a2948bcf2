"""``kolm demo`` on SmolLM2 (:func:`run_demo`; the pipeline is :mod:`kolm.demo.real`), planned to ``--minutes`` on
this machine (:func:`plan_demo`): the probes that time it (:mod:`kolm.demo.calibrate`), the items the plan sizes
(the fields of :data:`kolm.demo.real.DEMO_SIZED` in the recipe, :func:`kolm.demo.real.demo_budget`), and the
estimates of every fixed step, priced by what calibration measured (loading the model, a forward pass, a generated
token). The planner itself is :mod:`kolm.demo.plan`. A new recipe changes the recipe (its CPT stages come from
:meth:`kolm.demo.real.Budget.cpt_stages`), not this module, unless it brings a new kind of step, which needs a
probe."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kolm.demo.calibrate import Probe
from kolm.demo.plan import Item, Planner, margin_s, minutes_text

# Padded lengths of kolm's Korean SFT rows and of one side of a DPO pair under SmolLM2's tokenizer (a batch pads to
# its longest row); the extended tokenizer writes them in fewer tokens, so this errs long.
SFT_SEQ, DPO_SEQ = 160, 96
EVAL_PADDING = 1.3  # kolm eval's batches of 8 documents pad to their longest
# Seconds of the steps that are neither training nor a model's forward pass (tokenizer training on the demo's text,
# tokenizing and packing the data, writing the model card), on 2 cores
EXTEND_S, DATA_S, PUSH_S = 8.0, 6.0, 2.0


def probes(b: Any, align: bool, bf16: bool) -> list[Probe]:
    """What to time: every CPT stage's kind at the recipe's shape and precision, SFT and DPO (float32, as the
    recipe trains them), a float32 forward (evaluation) and generation."""
    out = [Probe(stage["kind"], b.micro_batch, b.seq_len, bf16, new_rows=b.new_tokens, lora_r=b.lora_r)
           for _, stage in b.cpt_stages()]
    out += [Probe("forward", 8, 128), Probe("generate", 1, 16)]
    if align:
        out += [Probe("sft", b.align_batch, SFT_SEQ, lora_r=b.lora_r), Probe("dpo", b.align_batch, DPO_SEQ,
                                                                           lora_r=b.lora_r)]
    return list({p.kind: p for p in out}.values())


def checks(align: bool) -> tuple[str, ...]:
    return ("check-base", "check-resize", "check-cpt") + (("check-sft", "check-dpo") if align else ())


def items(b: Any, u: dict[str, float], align: bool, text: dict[str, Any], sized: dict[str, int],
          base: Path) -> list[Item]:
    """The recipe's sized fields as plan items, in the order they run: the CPT stages, SFT and DPO, and the held-out
    documents every check scores."""
    from kolm.demo.real import item_name

    load, fwd = u["load"], u["forward"]
    out = []
    for i, (fld, stage) in enumerate(b.cpt_stages()):
        evals = 2 if i == 0 else 1  # held-out bpb at the start of the run and at the end of each stage
        out.append(Item(item_name(b, fld), stage["kind"], stage["max_steps"], sized[fld],
                        fixed_s=2 * load + 4 + evals * 16 * b.seq_len * fwd))
    if align:
        # never more than the recipe's counts: a faster machine's time goes to CPT, which is what moves the
        # model's Korean (SFT and DPO at 2e-4 move held-out bits per byte by less than 0.01)
        out += [Item(item_name(b, f"{k}_steps"), k, getattr(b, f"{k}_steps"), sized[f"{k}_steps"],
                     max=getattr(b, f"{k}_steps"), fixed_s=4 * load + 6) for k in ("sft", "dpo")]
    ko, en = _cumulative_tokens(text, base)

    def eval_cost(n: int) -> float:
        return EVAL_PADDING * fwd * (ko[min(n, len(ko) - 1)] + en[min(n, len(en) - 1)])

    out.append(Item(item_name(b, "eval_docs"), "forward", b.eval_docs, sized["eval_docs"], max=b.eval_docs,
                    paid_by=checks(align), train=False, cost=eval_cost))
    return out


def fixed(b: Any, u: dict[str, float], align: bool) -> dict[str, float]:
    """Nominal seconds of every step that is not sized, on this machine as calibrated."""
    load, gen = u["load"], u["generate"]
    distill = b.init in ("", "distill")
    out = {"extend": EXTEND_S, "resize": 2 * load + 3 + (b.init_budget_s if distill else 0.0), "data": DATA_S,
           "push": PUSH_S, "final": 3 + 2 * (load + b.gen_tokens * gen)}
    for step in checks(align):
        out[step] = 2 * load + b.gen_tokens * gen + 2
    return out


def _cumulative_tokens(text: dict[str, Any], base: Path) -> tuple[list[int], list[int]]:
    """Tokens (the base tokenizer's) of the first n held-out documents, for n = 0, 1, ... (each language)."""
    from kolm.demo.real import held_out_tokens

    out = []
    for lang in ("ko", "en"):
        sums = [0]
        for n in held_out_tokens(text[f"{lang}_heldout"], base):
            sums.append(sums[-1] + n)
        out.append(sums)
    return out[0], out[1]


def plan_line(planner: Planner, b: Any, u: dict[str, float], bf16: bool, minutes: float, align: bool,
              docs: tuple[int, int]) -> str:
    """The opening line: what the first plan does, and how long it expects to take."""
    plan = planner.first
    assert plan is not None
    from kolm.demo.real import item_name

    cpt = " + ".join(f"{s['name']} {plan.units[item_name(b, f)]}" for f, s in b.cpt_stages())
    parts = [f"+{b.new_tokens} Korean tokens", f"CPT {cpt} steps of {b.micro_batch} x {b.seq_len} tokens"]
    if align:
        parts.append(f"LoRA SFT {plan.units['sft']} + DPO {plan.units['dpo']} steps")
    parts.append(f"bits per byte on {docs[0]} ko + {docs[1]} en held-out documents")
    body = b.cpt_stages()[-1][1]["kind"]
    speed = f"{'bf16 autocast' if bf16 else 'fp32'}, {u[body]:.1f} s per {body} step"
    if plan.fits:
        tail = f"{minutes_text(plan.total_s)} on this machine ({speed}; budget {minutes:g} min)"
    else:
        need = max(plan.total_s + margin_s(plan.total_s), plan.total_s / 0.9)
        tail = (f"{minutes_text(plan.total_s)} on this machine at the fewest steps that train, over the budget of "
                f"{minutes:g} min ({speed}); --minutes {math.ceil(need / 60)} would fit")
    return "[kolm demo] plan: " + "; ".join(parts) + "; " + tail


def plan_demo(pipe: Any, minutes: float, align: bool) -> Planner:
    """Time this machine (a step of its own, reused on this machine), make the first plan, fix the documents every
    check scores, print the opening line; the pipeline then takes its counts from ``pipe.planner``."""
    from kolm.demo.calibrate import machine, measure
    from kolm.demo.real import DEMO_SIZED
    from kolm.precision import use_bf16

    b, steps = pipe.b, pipe.steps
    bf16 = use_bf16(b.precision)
    ps = probes(b, align, bf16)

    def fn() -> tuple[Any, str]:
        u = measure(pipe.base, ps)
        return u, ", ".join(f"{k} {v:.3g} s" for k, v in u.items())

    u = steps.run("calibrate", {"machine": machine(), "base": pipe.key["base"], "probes": [p.key() for p in ps]},
                  fn, quiet=True)
    sized = items(b, u, align, pipe.text, DEMO_SIZED, pipe.base)
    planner = Planner(minutes * 60, u, sized, fixed(b, u, align), clock=steps, row=_row)
    steps.follow(planner)  # the import and the calibration ran before the plan
    pipe.planner = planner
    pipe.take("eval_docs")
    docs = tuple(min(pipe.b.eval_docs, len(_lines(pipe.text[f"{lang}_heldout"]))) for lang in ("ko", "en"))
    print(plan_line(planner, b, u, bf16, minutes, align, docs), flush=True)
    return planner


def run_demo(cfg: Any) -> dict[str, Any]:
    """``kolm demo`` (``--model smollm2``, the default): the pipeline on SmolLM2-135M-Instruct and the demo's text
    (or --ko-text / --en-text), output in ``<output>/smollm2``, planned to ``--minutes`` on this machine
    (:mod:`kolm.demo.real_plan`); prints the plan, a line per stage, the end points, the plan against what it took,
    and a Korean generation of the base and of the final model."""
    from kolm.demo import real
    from kolm.demo.real import Pipeline, demo_text, generate, table
    from kolm.demo.run import Steps, kolm_cmd
    from kolm.model.zoo import SMOLLM2, cache_root, smollm2

    out = Path(cfg.output).resolve() / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out)
    print(f"[kolm demo] planning {cfg.minutes:g} minutes: importing SmolLM2-135M-Instruct (once) and timing "
          "this machine's training steps", flush=True)
    base = steps.run("import", {"model": SMOLLM2.requirement, "cache": str(cache_root())},
                     lambda: (str(smollm2()), SMOLLM2.requirement), always=True, quiet=True)
    text = demo_text(cfg, out / "text")
    pipe = Pipeline(Path(base), out, text, real.demo_budget(), log=print, steps=steps)
    pipe.tag = "[kolm demo] check"
    planner = _this.plan_demo(pipe, cfg.minutes, cfg.align)
    points = pipe.run(align=cfg.align, upscale=False)
    kolm_cmd("dashboard", out / "run-cpt", "--output", out / "report.html")
    before = generate(pipe.base, chat=True, max_new_tokens=pipe.b.gen_tokens)
    after = generate(pipe.final, chat=True, max_new_tokens=pipe.b.gen_tokens)
    steps.charge("final")
    summary = table(points) + "\n\n" + planner.table()
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    print("\n" + summary)
    print(verdict(points, cfg.minutes), flush=True)
    print(f"\nprompt (chat template): {before[0]}\n  before (SmolLM2-135M-Instruct): {before[1].strip()}\n"
          f"  after  ({Path(pipe.final).relative_to(out)}): {after[1].strip()}")
    print(f"\nreport: {out / 'report.html'}", flush=True)
    return {"points": [asdict(p) for p in points], "before": before[1], "after": after[1],
            "report": str(out / "report.html"), "seconds": round(steps.spent, 1),
            "plan": {r.name: asdict(r) for r in planner.rows.values()}}


def verdict(points: list[Any], minutes: float) -> str:
    """Whether the final model ended below the base on held-out Korean and English bits per byte."""
    base, final = points[0], points[-1]
    if None in (base.ko_bpb, base.en_bpb, final.ko_bpb, final.en_bpb):
        return "[kolm demo] no bits per byte to compare (a check failed: see the table)"
    ko, en = final.ko_bpb / base.ko_bpb, final.en_bpb / base.en_bpb
    line = f"[kolm demo] {final.stage} against the base, held-out bits per byte: Korean {ko:.3f}x, English {en:.3f}x"
    if ko < 1 and en < 1:
        return line + " (below the base on both)"
    return line + f": not below the base on both; {minutes:g} minutes is too short on this machine, give it more"


def _lines(path: Any) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _row(step: str) -> str:
    """The closing table's line of a step: the checks share one, the model card goes with the final steps."""
    return "checks" if step.startswith("check-") else "final" if step == "push" else step


_this = sys.modules[__name__]  # run_demo calls plan_demo through the module (tests replace it)
