"""Does the Korean extension pay on a real model? kolm's arms against plain continual pretraining at equal budgets.

    python bench/extension_pays.py [--arms plain,kolm,...] [--budgets 2,5,10,20 | 1M,10M,100M] [--jobs 2]
                                   [--more-korean] [--seeds 0] [--quick] [--set FIELD=VALUE ...]

SmolLM2-135M-Instruct (kolm.model.zoo) on the same Korean text with 20% English replay, the same tokens per step
(``micro_batch x seq_len``), the same learning rate for the body, on this machine. Arms (``--arms``):

- ``plain``: the base tokenizer, one full fine-tuning stage (what any trainer's pretraining stage does);
- ``kolm[:SIZE][:syllables][:teacher][:yamaguchi]``: ``kolm vocab extend`` (+SIZE tokens, default 8,000;
  ``syllables``: ``--mode syllables``, whole Hangul syllables first) + ``kolm model resize`` (subword-mean) +
  ``kolm train cpt``: kolm's recipe for an extended model (:mod:`kolm.train.recipes`: full fine-tuning from the
  first step; ``--set emb_steps=20`` puts the old embeddings stage, only the new rows at ``emb_lr``, before it);
  ``teacher``: the model before the resize as a teacher in every stage
  (``teacher: {model: auto}``, :mod:`kolm.train.teacher`), its forward passes on the arm's clock; ``yamaguchi``:
  Yamaguchi et al.'s recipe instead (embeddings, LM head and layers 0, 1, -2, -1, with a t+2 head).

Budgets are minutes of wall clock (``2,5,10,20``) or tokens trained (``1M,10M,100M``: each arm's own tokens, so
equal compute per token; the form to use on a GPU, where a crossover is expected near 10^8 tokens). Each arm's
clock starts before its first command and counts everything it runs (``kolm data build`` in every arm; extend and
resize in kolm's; the teacher's passes), not the scoring. One run per arm and seed, at a constant learning rate after
warm-up, is snapshotted when it passes each budget (saving is not counted): the snapshot at minute m is where an
m-minute run would be, without a final decay. Every snapshot, the base, and each kolm arm's model right after resize
are scored on held-out text: Korean in-domain (every 10th paragraph of the training sources: GIMP help, Debian FAQ,
Korean bills), Korean out-of-domain (the Constitution of the Republic of Korea, the last 327 paragraphs of
ko_dev.txt, never used for extension, init or training) and English (every 10th paragraph of en_dev.txt), in bits
per byte (:mod:`kolm.eval.bpb`, comparable across tokenizers); and on greedy continuations of 50 held-out Korean
prompts (:mod:`kolm.eval.generation`: broken characters, off-tokenization, repetition). Each arm's tokenizer is
measured on held-out Korean in bytes per token, so the frontier table reads Korean bits per byte at each budget
against Korean bytes per token. Speed is timed after all arms, one model at a time, with every model writing the
same number of tokens. ``--more-korean`` adds 1.6 MB of Korean help text from Debian to the training text (not to
the held-out sets), so that no arm repeats its Korean within 20 minutes. ``--jobs N`` runs N arms at once, one
thread each (``--parallel``: 2, one core each on a 2-core machine); on a GPU leave it at 1. Prints the tables and
a ``BENCH_JSON`` line. Needs ../shared (or KOLM_SHARED); takes about ``arms / jobs x (max(budget) + 5)`` minutes
per seed plus scoring (about 3 minutes per snapshot on one CPU core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("KOLM_SHARED", HERE.parent / ".." / "shared")).resolve()
# the Constitution's preamble opens the out-of-domain set
OOD_FIRST_LINE = "유구한 역사와 전통에 빛나는 우리 대한국민은"


@dataclass
class Settings:
    """The arms' shared budget and kolm's recipe; ``--set`` overrides any field."""

    seq_len: int = 256
    micro_batch: int = 2
    lr: float = 2e-4  # the body's peak lr, both arms
    warmup_steps: int = 10
    precision: str = "auto"  # kolm train cpt's precision, both arms (auto: bf16 autocast where bf16 is fast)
    new_tokens: int = 8000
    # kolm model resize --init ("": its default, distill). On minutes of budget the embeddings stage trains the new
    # rows faster than distill: distill steps take 35 s on one core here, and at 60 s it left Korean at 1.34x the
    # base's bpb (subword-mean: 1.37x) while costing 50 s more before CPT starts
    init: str = "subword-mean"
    init_budget_s: float = 60.0  # distill's time budget, when init is distill
    # 5-minute sweep (one core per run, 50 documents; Korean in-domain / out-of-domain / English bpb, ratio to the
    # base): emb_steps 20 at 1e-2 then the body's lr everywhere 0.859x / 1.030x / 0.928x; no embeddings stage and
    # new_rows_lr 5e-3 0.873x / 1.085x / 0.921x (2e-2: 1.047x / 1.269x); embedding_lr 5e-3 moves the pretrained
    # rows too: English 1.367x; plain at the same budget 0.772x / 0.905x / 0.869x
    # kolm's recipe since 0.2 (kolm.train.recipes.EXTENDED) has no embeddings stage: at 20 to 250 steps it was behind
    # full fine-tuning from the first step at every budget measured (docs/benchmarks.md#what-kolm-trains-by-default)
    emb_steps: int = 0  # an embeddings stage before the full one (0: none)
    emb_lr: float = 1e-2
    embedding_lr: float = 0.0  # embeddings/head in kolm's full stage (0: the body's lr)
    new_rows_lr: float = 0.0  # only the added rows in kolm's full stage (0: as the other embedding rows)
    teacher_kd: float = 1.0  # the teacher arms' terms (kolm.train.teacher)
    teacher_chunk: float = 1.0
    teacher_until: int = 0  # run step after which the teacher is dropped (0: never)
    eval_docs: int = 100
    prompts: int = 50
    gen_tokens: int = 32
    prompt_chars: int = 24


@dataclass
class Arm:
    """One arm of the bench: ``plain`` or ``kolm[:SIZE][:syllables][:teacher][:yamaguchi]``."""

    name: str
    size: int = 0  # new tokens (0: plain)
    syllables: bool = False
    teacher: bool = False
    yamaguchi: bool = False

    @classmethod
    def parse(cls, spec: str, default_size: int) -> Arm:
        head, *opts = spec.split(":")
        if head == "plain" and not opts:
            return cls("plain")
        if head != "kolm":
            raise SystemExit(f"--arms: {spec!r} is neither plain nor kolm[:SIZE][:syllables][:teacher][:yamaguchi]")
        arm = cls(spec, size=default_size)
        for o in opts:
            if o.isdigit():
                arm.size = int(o)
            elif o in ("syllables", "teacher", "yamaguchi"):
                setattr(arm, o, True)
            else:
                raise SystemExit(f"--arms: {spec!r}: unknown option {o!r}")
        return arm

    @property
    def plain(self) -> bool:
        return self.name == "plain"


@dataclass
class Budgets:
    """Snapshot marks: minutes of the arm's clock, or tokens trained (``1M``)."""

    marks: list[float]
    labels: list[str]
    tokens: bool

    @classmethod
    def parse(cls, text: str) -> Budgets:
        items = [x.strip() for x in text.split(",") if x.strip()]
        tokens = any(x[-1:].upper() in "KMG" for x in items)
        marks = []
        for x in items:
            try:
                marks.append(float(x[:-1]) * 1000 ** (1 + "KMG".index(x[-1].upper())) if tokens else float(x) * 60)
            except (ValueError, IndexError):
                raise SystemExit(f"--budgets: {x!r}: give minutes (2,5,10) or tokens (1M,10M), not both") from None
        return cls(marks, [x.upper() if tokens else f"{float(x):g}" for x in items], tokens)

    @property
    def unit(self) -> str:
        return "tokens" if self.tokens else "minutes"


@dataclass
class Point:
    arm: str
    seed: int
    budget: str  # the budget's label ("5", "10M"), or "resize" (the model right after resize)
    seconds: float  # the arm's clock when snapshotted
    step: int
    tokens: int = 0  # tokens trained
    scores: dict[str, float] = field(default_factory=dict)
    gen: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the snapshot's folder (speed() loads it again after every arm)
    bytes_per_token: float = 0.0  # the arm's tokenizer on held-out Korean (in-domain)


class Clock:
    """Wall-clock seconds since start, minus paused spans (snapshots)."""

    def __init__(self) -> None:
        self.t0, self.paused = time.perf_counter(), 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def pause(self) -> Any:
        clock = self

        class _Pause:
            def __enter__(self) -> None:
                self.t = time.perf_counter()

            def __exit__(self, *exc: Any) -> None:
                clock.paused += time.perf_counter() - self.t

        return _Pause()


def snapshot_callback(clock: Clock, budgets: Budgets, out: Path, tokenizer: Path, taken: list[dict],
                      tokens_per_step: int) -> Any:
    from transformers import TrainerCallback

    marks = budgets.marks

    class Snapshots(TrainerCallback):
        """Saves the model when the arm passes each mark (its clock, or the tokens trained); stops training after
        the last one."""

        stage_steps = 0

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> Any:
            step = self.stage_steps + state.global_step
            spent = step * tokens_per_step if budgets.tokens else clock()
            while len(taken) < len(marks) and spent >= marks[len(taken)]:
                save(model, clock, budgets.labels[len(taken)], out, tokenizer, taken, step, tokens_per_step)
            if len(taken) == len(marks):
                control.should_training_stop = True
            return control

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.stage_steps += state.global_step
            return control

    return Snapshots()


def save(model: Any, clock: Clock, label: str, out: Path, tokenizer: Path, taken: list[dict], step: int,
         tokens_per_step: int) -> None:
    """The model as it is (without a t+2 head a recipe may train beside it), off the clock."""
    with clock.pause():
        seconds = clock()
        folder = out / f"at-{label}"
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("kolm_t2_head")}
        model.save_pretrained(folder, state_dict=state, safe_serialization=True)
        copy_tokenizer(tokenizer, folder)
        taken.append({"budget": label, "seconds": round(seconds, 1), "step": step, "tokens": step * tokens_per_step,
                      "model": str(folder)})


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def split_corpora(out: Path, more: Path | None = None) -> dict[str, Path]:
    """ko_train / ko_heldout (in-domain, every 10th), ko_ood (the Constitution), en_train / en_heldout. ``more``:
    Korean paragraphs added to ko_train only (the held-out sets stay as they are), less every line of ko_dev.txt
    and every paragraph that shares a 20-character run with a held-out one."""
    from kolm.demo.text import split
    from kolm.io.files import atomic_write_text

    lines = [x.strip() for x in (SHARED / "corpora" / "ko_dev.txt").read_text(encoding="utf-8").splitlines()]
    cut = next(i for i, x in enumerate(lines) if x.startswith(OOD_FIRST_LINE))
    en = [x.strip() for x in (SHARED / "corpora" / "en_dev.txt").read_text(encoding="utf-8").splitlines()]
    parts = {"ko": split([x for x in lines[:cut] if x]), "en": split([x for x in en if x])}
    if more is not None:
        held = {d[i:i + 20] for d in parts["ko"][1] + lines[cut:] for i in range(len(d) - 19)}
        dev = set(lines)
        parts["ko"][0].extend(x for x in more.read_text(encoding="utf-8").splitlines()
                              if x and x not in dev and not any(x[i:i + 20] in held for i in range(len(x) - 19)))
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, docs in (("ko_train", parts["ko"][0]), ("ko_heldout", parts["ko"][1]),
                       ("ko_ood", [x for x in lines[cut:] if x]), ("en_train", parts["en"][0]),
                       ("en_heldout", parts["en"][1])):
        paths[name], body = out / f"{name}.txt", "\n".join(docs) + "\n"
        if not paths[name].is_file() or paths[name].read_text(encoding="utf-8") != body:  # --parallel's workers
            atomic_write_text(paths[name], body)
    return paths


def kolm(*args: Any) -> None:
    from kolm.cli import main

    rc = main([str(a) for a in args])
    if rc != 0:
        sys.exit(f"kolm {' '.join(map(str, args))}: exit {rc}")


def data_build(out: Path, tokenizer: Path, text: dict[str, Path], s: Settings, seed: int) -> Path:
    recipe = {"tokenizer": str(tokenizer), "seq_len": s.seq_len, "seed": seed, "mix": {"ko": 0.8, "en": 0.2},
              "sources": [{"name": "ko", "lang": "ko", "paths": [str(text["ko_train"])], "max_epochs": 16.0},
                          {"name": "en", "lang": "en", "paths": [str(text["en_train"])], "max_epochs": 1.0}],
              "cleaning": {"min_chars": 20}, "validation": {"fraction": 0.02, "min_docs": 4, "max_docs": 8},
              "num_proc": 1, "progress": False}
    (out / "data.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    kolm("data", "build", out / "data.yaml", "--output", out / "data", "--overwrite")
    return out / "data"


def train(out: Path, model: Path, data: Path, stages: list[dict], teacher: dict | None, s: Settings, seed: int,
          callback: Any) -> None:
    from kolm.config import resolve
    from kolm.train import cpt
    from kolm.train.config import CptConfig

    spec = {"model": str(model), "data": str(data), "output": str(out / "run"), "micro_batch_size": s.micro_batch,
              "grad_accum": 1, "seed": seed, "precision": s.precision, "overwrite": True,
              "optim": {"lr": s.lr, "warmup_steps": s.warmup_steps, "scheduler": "constant_with_warmup"},
              "stages": stages, "eval": {"every": 0}, "checkpoint": {"every": 1_000_000, "keep": 2},
              "logging_steps": 10, **({"teacher": teacher} if teacher else {})}
    (out / "cpt.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    cpt.run(resolve(CptConfig, yaml_path=str(out / "cpt.yaml")), callbacks=(callback,))


def recipe(arm: Arm, s: Settings) -> tuple[list[dict], dict | None]:
    """The CPT stages and teacher section of an arm."""
    big = 1_000_000
    if arm.plain:
        return [{"name": "full", "kind": "full", "max_steps": big}], None
    if arm.yamaguchi:  # embeddings, LM head and layers 0, 1, -2, -1 with a t+2 head, at the body's lr
        stages = [{"name": "layers", "kind": "layers", "max_steps": big, "layers": [0, 1, -2, -1], "t2_head": True}]
    else:
        stages = ([{"name": "embeddings", "kind": "embeddings", "max_steps": s.emb_steps, "lr": s.emb_lr}]
                  if s.emb_steps else [])
        stages.append({"name": "full", "kind": "full", "max_steps": big,
                       **({"embedding_lr": s.embedding_lr} if s.embedding_lr else {}),
                       **({"new_rows_lr": s.new_rows_lr} if s.new_rows_lr else {})})
    teacher = {"model": "auto", "kd": s.teacher_kd, "chunk": s.teacher_chunk,
               **({"until_step": s.teacher_until} if s.teacher_until else {})} if arm.teacher else None
    return stages, teacher


def run_arm(arm: Arm, base: Path, out: Path, text: dict[str, Path], s: Settings, seed: int,
            budgets: Budgets) -> list[dict]:
    """Runs one arm on its own clock; returns the snapshots (``at-BUDGET`` folders; kolm's also ``resize``)."""
    import torch

    torch.manual_seed(seed)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    clock, taken = Clock(), []
    tokens_per_step = s.micro_batch * s.seq_len
    if arm.plain:
        tok, model = base, base
    else:
        kolm("vocab", "extend", "--base", base, "--corpus", text["ko_train"], "--num-new-tokens", arm.size,
             "--min-frequency", 1, "--allow-fewer", "--output", out / "tok-ko", "--overwrite",
             *(["--mode", "syllables"] if arm.syllables else []))
        init = ["--init", s.init] if s.init else []
        kolm("model", "resize", "--model", base, "--tokenizer", out / "tok-ko", "--output", out / "model-ko",
             "--init-budget-s", s.init_budget_s, *init, "--overwrite")
        taken.append({"budget": "resize", "seconds": round(clock(), 1), "step": 0, "tokens": 0,
                      "model": str(out / "model-ko")})
        tok, model = out / "tok-ko", out / "model-ko"
    stages, teacher = recipe(arm, s)
    data = data_build(out, tok, text, s, seed)
    snaps: list[dict] = []
    spent = 0 if budgets.tokens else clock()
    late = [label for m, label in zip(budgets.marks, budgets.labels) if spent >= m]  # spent before training starts
    for label in late:
        from transformers import AutoModelForCausalLM

        save(AutoModelForCausalLM.from_pretrained(model), clock, label, out, tok, snaps, 0, tokens_per_step)
    if len(late) < len(budgets.marks):
        train(out, model, data, stages, teacher, s, seed,
              snapshot_callback(clock, budgets, out, tok, snaps, tokens_per_step))
    return taken + snaps


def load(model_dir: Path) -> Any:
    """A snapshot for scoring, in float32, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model.to("cuda") if torch.cuda.is_available() else model


def bytes_per_token(tokenizer_dir: Path, text: Path) -> float:
    """UTF-8 bytes per token of a tokenizer on the documents of ``text`` that have Hangul."""
    from transformers import AutoTokenizer

    from kolm.vocab.chars import has_hangul

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    docs = [x for x in text.read_text(encoding="utf-8").splitlines() if has_hangul(x)]
    return sum(len(x.encode()) for x in docs) / sum(map(len, tok(docs, add_special_tokens=False)["input_ids"]))


def score(model_dir: Path, text: dict[str, Path], s: Settings,
          generate: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    import torch
    from transformers import AutoTokenizer

    from kolm.eval.bpb import bits_per_byte
    from kolm.eval.generation import generation_stats

    torch.set_grad_enabled(False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load(model_dir)
    scores = {}
    for name in ("ko_heldout", "ko_ood", "en_heldout"):
        docs = [x for x in text[name].read_text(encoding="utf-8").splitlines() if x.strip()][:s.eval_docs]
        scores[name] = round(bits_per_byte(model, tok, docs, max_length=512, batch_size=8).bpb, 4)
    if not generate or not s.prompts:
        torch.set_grad_enabled(True)
        return scores, {}
    asks = prompts(text, s)
    # as kolm generates (WholeCharacters), and unguarded (what a plain model.generate gives) for its broken share;
    # the speed columns are measured again by speed(), one model at a time
    gen = generation_stats(model, tok, asks, max_new_tokens=s.gen_tokens, whole_characters=True).as_dict()
    gen["raw_broken_share"] = generation_stats(model, tok, asks, max_new_tokens=s.gen_tokens).broken_share
    torch.set_grad_enabled(True)
    return scores, gen


def speed(model_dir: Path, text: dict[str, Path], s: Settings) -> dict[str, float]:
    """Generation speed with every model writing exactly ``gen_tokens`` per prompt (EOS held back), as kolm decodes:
    Korean characters and tokens per second, Korean characters per token; and the speed at the tokenizer's own
    compression of held-out Korean (tokens/s x Hangul per token of ko_heldout), which does not depend on what the
    model chooses to write. Measured one model at a time, after the arms have finished, so that no model is timed
    while the other arm trains or scores (``--parallel``)."""
    from transformers import AutoTokenizer

    from kolm.eval.generation import generation_stats
    from kolm.vocab.chars import has_hangul

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load(model_dir)
    st = generation_stats(model, tok, prompts(text, s), max_new_tokens=s.gen_tokens, min_new_tokens=s.gen_tokens,
                          whole_characters=True)
    heldout = text["ko_heldout"].read_text(encoding="utf-8").splitlines()
    per_token = sum(sum(map(has_hangul, x)) for x in heldout) / \
        sum(map(len, tok(heldout, add_special_tokens=False)["input_ids"]))
    return {"korean_chars_per_s": st.korean_chars_per_s, "tokens_per_s": st.tokens_per_s,
            "korean_chars_per_token": st.korean_chars_per_token, "heldout_chars_per_token": per_token,
            "heldout_chars_per_s": st.tokens_per_s * per_token}


def prompts(text: dict[str, Path], s: Settings) -> list[str]:
    """The first ``prompt_chars`` characters of the first ``prompts`` held-out Korean paragraphs long enough."""
    ko = [x for x in text["ko_heldout"].read_text(encoding="utf-8").splitlines() if len(x) > s.prompt_chars + 10]
    return [x[:s.prompt_chars] for x in ko[:s.prompts]]


# the generation table's columns after the model's name: GenerationStats field, header, format
GEN_COLUMNS = [("broken_share", "broken", ".1%"), ("raw_broken_share", "broken unguarded", ".1%"),
               ("off_token_share", "off-token", ".1%"), ("repetition", "rep4", ".3f"),
               ("korean_chars_per_s", "Korean chars/s", ".1f"), ("korean_chars_per_token", "chars/token", ".2f"),
               ("tokens_per_s", "tokens/s", ".1f")]


def tables(base: Point, points: list[Point], budgets: Budgets, s: Settings) -> str:
    """The bits-per-byte table (every arm and budget: ratios to the base and, for a kolm arm, to plain at the same
    budget), the frontier (Korean bits per byte against Korean bytes per token), and the generation table; medians
    over seeds."""
    from kolm.tables import text_table

    everything = [base, *points]
    arms = list(dict.fromkeys(p.arm for p in points))

    def med(arm: str, budget: str, key: str, where: str = "scores") -> float | None:
        vals = [getattr(p, where)[key] for p in everything if p.arm == arm and p.budget == budget and
                key in getattr(p, where)]
        return statistics.median(vals) if vals else None

    def of(arm: str, budget: str, attr: str) -> float:
        return statistics.median([getattr(q, attr) for q in points if q.arm == arm and q.budget == budget] or [0])

    b, keys = base.scores, ("ko_heldout", "ko_ood", "en_heldout")
    bpt = {a: statistics.median([q.bytes_per_token for q in points if q.arm == a]) for a in arms}
    rows = []
    for arm in arms:
        for budget in ["resize", *budgets.labels]:
            if med(arm, budget, "ko_heldout") is None:
                continue
            vs = [med(arm, budget, k) / b[k] for k in keys]
            plain = [med("plain", budget, k) for k in keys[:2]]
            rel = [f"{med(arm, budget, k) / p:.3f}" if p and arm != "plain" else "" for k, p in zip(keys, plain)]
            step, secs = of(arm, budget, "step"), of(arm, budget, "seconds")
            tokens = of(arm, budget, "tokens")
            rows.append([arm, budget, f"{step:g}", f"{tokens / 1e6:.2f}", f"{secs:.0f}",
                         f"{secs / step:.2f}" if step and budget != "resize" else "",
                         *(f"{v:.3f}x" for v in vs), *rel])
    bpb = text_table(["arm", budgets.unit, "steps", "M tokens", "seconds", "s/step", "ko", "ood", "en",
                      "ko/plain", "ood/plain"], rows, left=2)
    front = []
    for arm in arms:
        cells = []
        for budget in budgets.labels:
            k, p = med(arm, budget, "ko_heldout"), med("plain", budget, "ko_heldout")
            o, po = med(arm, budget, "ko_ood"), med("plain", budget, "ko_ood")
            cells.append(f"{k / p:.3f} / {o / po:.3f}" if k and p and o and po else "")
        front.append([arm, f"{bpt[arm]:.2f}", f"{bpt[arm] / bpt.get('plain', bpt[arm]):.2f}x", *cells])
    frontier = text_table(["arm", "ko bytes/token", "vs base", *(f"{x} {budgets.unit[:3]}: ko / ood vs plain"
                                                                 for x in budgets.labels)], front, left=1)
    out = (f"held-out bits per byte, each arm / the base ({b['ko_heldout']:.4f} Korean in-domain, {b['ko_ood']:.4f} "
           f"Korean out-of-domain, {b['en_heldout']:.4f} English); ko/plain, ood/plain: a kolm arm / plain at the "
           f"same budget (< 1: kolm ahead)\n{bpb}\n\nthe frontier: Korean bits per byte (in-domain / out-of-domain, "
           f"as a ratio to plain at the same budget) against Korean bytes per token (held-out in-domain Korean; "
           f"vs base: the compression over the base tokenizer's)\n{frontier}")
    gen_rows = []
    for arm in ["base", *arms]:
        for budget in (["0"] if arm == "base" else ["resize", *budgets.labels]):
            if med(arm, budget, "broken_share", "gen") is None or med("base", "0", "korean_chars_per_s", "gen") is None:
                continue
            vs = [med(arm, budget, k, "gen") / med("base", "0", k, "gen") for k in ("korean_chars_per_s",
                                                                                  "heldout_chars_per_s")]
            gen_rows.append([arm if arm == "base" else f"{arm} {budget}",
                             *(format(med(arm, budget, key, "gen"), fmt) for key, _, fmt in GEN_COLUMNS),
                             f"{vs[0]:.2f}x", f"{med(arm, budget, 'heldout_chars_per_s', 'gen'):.1f}", f"{vs[1]:.2f}x"])
    if gen_rows:
        gen = text_table(["model", *(header for _, header, _ in GEN_COLUMNS), "chars/s vs base", "held-out chars/s",
                          "vs base"], gen_rows)
        out += (f"\n\ngreedy continuations of held-out Korean prompts, decoded as kolm decodes (WholeCharacters) "
                f"(broken: share with an invalid UTF-8 sequence; unguarded: the same through a plain generate; "
                f"off-token: generated tokens a re-encoding would not give; rep4: repeated character 4-grams; Korean "
                f"chars/s, chars/token, tokens/s: every model writes {s.gen_tokens} tokens per prompt, EOS held back, "
                f"timed one model at a time; held-out chars/s: tokens/s x the Hangul per token of held-out Korean "
                f"under the model's tokenizer)\n{gen}")
    return out


def arm_points(arm: Arm, seed: int, base: Path, out: Path, text: dict[str, Path], s: Settings,
               budgets: Budgets) -> list[Point]:
    """One arm and seed: train with snapshots, then score every snapshot."""
    points = []
    folder = out / f"{arm.name.replace(':', '-')}-seed{seed}"
    for snap in run_arm(arm, base, folder, text, s, seed, budgets):
        scores, gen = score(Path(snap["model"]), text, s)
        bpt = bytes_per_token(Path(snap["model"]), text["ko_heldout"])
        points.append(Point(arm.name, seed, snap["budget"], snap["seconds"], snap["step"], snap["tokens"], scores,
                            gen, snap["model"], bpt))
        print(f"[extension_pays] {arm.name} seed {seed} at {snap['budget']} ({snap['seconds']} s, step "
              f"{snap['step']}): {scores}" + (f" broken {gen['broken_share']:.1%} sample {gen['sample']!r}"
                                             if gen else ""), flush=True)
    return points


def side_by_side(args: argparse.Namespace, out: Path, seed: int, arms: list[Arm]) -> list[Point]:
    """The arms in waves of ``--jobs``, each in its own process on one thread (one core each on a 2-core machine,
    with two jobs): the same hardware share for every arm of a wave."""
    import subprocess

    points: list[Point] = []
    for k in range(0, len(arms), args.jobs):
        procs = []
        for arm in arms[k:k + args.jobs]:
            name = f"{arm.name.replace(':', '-')}-seed{seed}"
            cmd = [sys.executable, __file__, "--arms", arm.name, "--seeds", str(seed), "--budgets", args.budgets,
                   "--output", str(out), "--threads", "1", "--points-json", str(out / f"{name}.json"),
                   "--set", *args.set] + (["--quick"] if args.quick else []) + \
                (["--more-korean"] if args.more_korean else [])
            log = (out / f"{name}.log").open("w")
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "OMP_NUM_THREADS": "1"}), arm, log, name))
        for proc, arm, log, name in procs:
            if proc.wait() != 0:
                sys.exit(f"the {arm.name} arm failed (exit {proc.returncode}): see {log.name}")
            log.close()
            points += [Point(**p) for p in json.loads((out / f"{name}.json").read_text(encoding="utf-8"))]
    return points


def base_point(base: Path, text: dict[str, Path], s: Settings, out: Path) -> Point:
    """The base model's scores, kept in ``out`` for the next run with the same text and scoring settings."""
    import hashlib

    key = hashlib.sha256(json.dumps([str(base), {k: text[k].read_text(encoding="utf-8") for k in sorted(text)
                                                  if k != "ko_train" and k != "en_train"},
                                     s.eval_docs, s.prompts, s.gen_tokens, s.prompt_chars]).encode()).hexdigest()
    cache = out / "base-scores.json"
    if cache.is_file() and json.loads(cache.read_text(encoding="utf-8")).get("key") == key:
        return Point(**json.loads(cache.read_text(encoding="utf-8"))["point"])
    scores, gen = score(base, text, s)
    point = Point("base", 0, "0", 0.0, 0, 0, scores, gen, str(base), bytes_per_token(base, text["ko_heldout"]))
    cache.write_text(json.dumps({"key": key, "point": asdict(point)}, ensure_ascii=False), encoding="utf-8")
    return point


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="2,5,10,20",
                    help="minutes (2,5,10,20) or tokens trained (1M,10M,100M), comma-separated")
    ap.add_argument("--seeds", default="0", help="seeds, comma-separated (the table shows medians)")
    ap.add_argument("--arms", default="plain,kolm",
                    help="comma-separated: plain, kolm[:SIZE][:syllables][:teacher][:yamaguchi] (e.g. kolm:1000:"
                         "syllables:teacher); kolm alone is +new_tokens (8,000) with kolm's staged recipe")
    ap.add_argument("--jobs", type=int, default=1, help="arms at once, one thread each (0: as many as arms)")
    ap.add_argument("--parallel", action="store_true", help="--jobs 2 (one core per arm on a 2-core machine)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--points-json", default="", help=argparse.SUPPRESS)  # a --jobs worker: write the points
    ap.add_argument("--quick", action="store_true", help="budgets of 0.5 and 1 minute, 12 docs, 6 prompts")
    ap.add_argument("--output", default=str(HERE / "out" / "extension_pays"))
    ap.add_argument("--more-korean", action="store_true",
                    help="add the Korean paragraphs of Debian's gimp-help-ko and libreoffice-help-ko (apt-get "
                         "download, about 1.6 MB more) to the Korean training text; held-out sets unchanged")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override Settings fields")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (SHARED / "corpora" / "ko_dev.txt").is_file():
        sys.exit(f"needs {SHARED}/corpora/ko_dev.txt and en_dev.txt (set KOLM_SHARED)")
    s = Settings()
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(s, name):
            sys.exit(f"--set {item}: no field {name!r}; fields: {', '.join(asdict(s))}")
        setattr(s, name, type(getattr(s, name))(value))
    arms = [Arm.parse(a, s.new_tokens) for a in args.arms.split(",")]
    args.jobs = 2 if args.parallel and args.jobs == 1 else (args.jobs or len(arms))
    if args.threads or args.jobs > 1:  # with jobs, the base is scored on one thread too, as the arms' workers
        import torch

        torch.set_num_threads(args.threads or 1)
    budgets = Budgets.parse(args.budgets)
    if args.quick:
        budgets = Budgets.parse("0.5,1") if not budgets.tokens else budgets
        s.eval_docs, s.prompts, s.init_budget_s, s.emb_steps = 12, 6, 10.0, 4
    from kolm.model.zoo import smollm2

    out = Path(args.output).resolve()  # recipes resolve relative paths against their own folder
    out.mkdir(parents=True, exist_ok=True)
    base = smollm2()
    more = None
    if args.more_korean:
        from common import harvest_distinct

        more = harvest_distinct(HERE / "out" / "ko_distinct.txt", SHARED / "corpora" / "ko_dev.txt")
        if more is None:
            sys.exit("--more-korean: needs apt-get (Debian's gimp-help-ko and libreoffice-help-ko)")
    text = split_corpora(out / "text", more)
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.points_json:  # a worker of --jobs: one arm, one seed, no base
        points = arm_points(arms[0], seeds[0], base, out, text, s, budgets)
        Path(args.points_json).write_text(json.dumps([asdict(p) for p in points], ensure_ascii=False))
        return
    t0 = time.time()
    bp = base_point(base, text, s, out)
    print(f"[extension_pays] base: {bp.scores}", flush=True)
    points: list[Point] = []
    for seed in seeds:
        if args.jobs > 1:
            points += side_by_side(args, out, seed, arms)
        else:
            for arm in arms:
                points += arm_points(arm, seed, base, out, text, s, budgets)
    if s.prompts:
        for p in [bp, *points]:  # speed, one model at a time on this process's threads
            p.gen.update(speed(Path(p.model), text, s))
    mode = f"{args.jobs} arms at once, one thread each" if args.jobs > 1 else "one arm after the other"
    ko_mb = text["ko_train"].stat().st_size / 1e6
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\nSmolLM2-135M-Instruct, plain vs kolm's arms at equal {budgets.unit} ({mode}, {device}; "
          f"{time.time() - t0:.0f} s in all; Korean training text {ko_mb:.2f} MB"
          f"{' with --more-korean' if args.more_korean else ''}; settings: {asdict(s)})")
    print(tables(bp, points, budgets, s))
    print("BENCH_JSON " + json.dumps({"settings": asdict(s), "budgets": budgets.labels, "unit": budgets.unit,
                                     "arms": [a.name for a in arms], "jobs": args.jobs, "device": device,
                                     "more_korean": args.more_korean, "ko_train_mb": round(ko_mb, 3),
                                     "base": asdict(bp), "points": [asdict(p) for p in points]},
                                    ensure_ascii=False))


if __name__ == "__main__":
    main()
