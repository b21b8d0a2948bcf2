"""Does the Korean extension pay on a real model? kolm against plain continual pretraining at equal wall-clock.

    python bench/extension_pays.py [--parallel] [--more-korean] [--budgets 2,5,10,20] [--seeds 0] [--quick]
                                   [--set FIELD=VALUE ...]

SmolLM2-135M-Instruct (kolm.model.zoo) on the same Korean text with 20% English replay, the same tokens per step
(``micro_batch x seq_len``), the same learning rate for the body, on this machine, in two arms:

- **plain**: the base tokenizer, one full fine-tuning stage (what any trainer's pretraining stage does);
- **kolm**: ``kolm vocab extend`` + ``kolm model resize`` (subword-mean init) + kolm's staged CPT (a short
  embeddings stage that trains only the new rows at a high learning rate, then full fine-tuning).

Each arm's clock starts before its first command and counts everything it runs (``kolm data build`` in both;
extend and resize in kolm's), not the scoring. One run per arm and seed, at a constant learning rate after warm-up,
is snapshotted when its clock passes each budget (saving is not counted): the snapshot at minute m is where an
m-minute run would be, without a final decay. Every snapshot, the base, and kolm's model right after resize are
scored on held-out text: Korean in-domain (every 10th paragraph of the training sources: GIMP help, Debian FAQ,
Korean bills), Korean out-of-domain (the Constitution of the Republic of Korea, the last 327 paragraphs of
ko_dev.txt, never used for extension, init or training) and English (every 10th paragraph of en_dev.txt), in bits
per byte (:mod:`kolm.eval.bpb`, comparable across tokenizers); and on greedy continuations of 50 held-out Korean
prompts (:mod:`kolm.eval.generation`: broken characters, off-tokenization, repetition). Speed is timed after both
arms, one model at a time, with every model writing the same number of tokens (Korean chars/s as generated, and at
the tokenizer's compression of held-out Korean). ``--more-korean`` adds 1.6 MB of Korean help text from Debian to
the training text (not to the held-out sets), so that neither arm repeats its Korean within 20 minutes.
Prints the tables and a ``BENCH_JSON`` line. Needs ../shared (or KOLM_SHARED); takes about
``2 x max(budget) + 10`` minutes per seed (``--parallel``: about ``max(budget) + 20``).
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
    emb_steps: int = 20  # kolm's embeddings stage before the full one (0: none)
    emb_lr: float = 1e-2
    embedding_lr: float = 0.0  # embeddings/head in kolm's full stage (0: the body's lr)
    new_rows_lr: float = 0.0  # only the added rows in kolm's full stage (0: as the other embedding rows)
    eval_docs: int = 100
    prompts: int = 50
    gen_tokens: int = 32
    prompt_chars: int = 24


@dataclass
class Point:
    arm: str
    seed: int
    minute: float  # the budget (or, for "resize", when the resize finished)
    seconds: float  # the arm's clock when snapshotted
    step: int
    scores: dict[str, float] = field(default_factory=dict)
    gen: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the snapshot's folder (speed() loads it again after both arms)


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


def snapshot_callback(clock: Clock, marks: list[float], out: Path, tokenizer: Path, taken: list[dict]) -> Any:
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        """Saves the model when the arm's clock passes each mark; stops training after the last one."""

        stage_steps = 0

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> Any:
            step = self.stage_steps + state.global_step
            while len(taken) < len(marks) and clock() >= marks[len(taken)]:
                save(model, clock, marks[len(taken)], out, tokenizer, taken, step)
            if len(taken) == len(marks):
                control.should_training_stop = True
            return control

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.stage_steps += state.global_step
            return control

    return Snapshots()


def save(model: Any, clock: Clock, mark: float, out: Path, tokenizer: Path, taken: list[dict], step: int) -> None:
    with clock.pause():
        seconds = clock()
        folder = out / f"at-{mark / 60:g}min"
        model.save_pretrained(folder, safe_serialization=True)
        copy_tokenizer(tokenizer, folder)
        taken.append({"minute": mark / 60, "seconds": round(seconds, 1), "step": step, "model": str(folder)})


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


def train(out: Path, model: Path, data: Path, stages: list[dict], s: Settings, seed: int, callback: Any) -> None:
    from kolm.config import resolve
    from kolm.train import cpt
    from kolm.train.config import CptConfig

    recipe = {"model": str(model), "data": str(data), "output": str(out / "run"), "micro_batch_size": s.micro_batch,
              "grad_accum": 1, "seed": seed, "precision": s.precision, "overwrite": True,
              "optim": {"lr": s.lr, "warmup_steps": s.warmup_steps, "scheduler": "constant_with_warmup"},
              "stages": stages, "eval": {"every": 0}, "checkpoint": {"every": 1_000_000, "keep": 2},
              "logging_steps": 10}
    (out / "cpt.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    cpt.run(resolve(CptConfig, yaml_path=str(out / "cpt.yaml")), callbacks=(callback,))


def run_arm(arm: str, base: Path, out: Path, text: dict[str, Path], s: Settings, seed: int,
            marks: list[float]) -> list[dict]:
    """Runs one arm on its own clock; returns the snapshots (``at-Nmin`` folders; kolm's also ``resize``)."""
    import torch

    torch.manual_seed(seed)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    clock, taken = Clock(), []
    if arm == "plain":
        tok, model = base, base
        stages = [{"name": "full", "kind": "full", "max_steps": 1_000_000}]
    else:
        kolm("vocab", "extend", "--base", base, "--corpus", text["ko_train"], "--num-new-tokens", s.new_tokens,
             "--min-frequency", 1, "--allow-fewer", "--output", out / "tok-ko", "--overwrite")
        init = ["--init", s.init] if s.init else []
        kolm("model", "resize", "--model", base, "--tokenizer", out / "tok-ko", "--output", out / "model-ko",
             "--init-budget-s", s.init_budget_s, *init, "--overwrite")
        taken.append({"minute": "resize", "seconds": round(clock(), 1), "step": 0, "model": str(out / "model-ko")})
        tok, model = out / "tok-ko", out / "model-ko"
        stages = ([{"name": "embeddings", "kind": "embeddings", "max_steps": s.emb_steps, "lr": s.emb_lr}]
                  if s.emb_steps else [])
        stages.append({"name": "full", "kind": "full", "max_steps": 1_000_000,
                       **({"embedding_lr": s.embedding_lr} if s.embedding_lr else {}),
                       **({"new_rows_lr": s.new_rows_lr} if s.new_rows_lr else {})})
    data = data_build(out, tok, text, s, seed)
    snaps: list[dict] = []
    late = [m for m in marks if clock() >= m]  # budgets spent before training starts: the untrained model
    for m in late:
        from transformers import AutoModelForCausalLM

        save(AutoModelForCausalLM.from_pretrained(model), clock, m, out, tok, snaps, 0)
    if len(late) < len(marks):
        train(out, model, data, stages, s, seed, snapshot_callback(clock, marks, out, tok, snaps))
    return taken + snaps


def score(model_dir: Path, text: dict[str, Path], s: Settings,
          generate: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.eval.bpb import bits_per_byte
    from kolm.eval.generation import generation_stats

    torch.set_grad_enabled(False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    scores = {}
    for name in ("ko_heldout", "ko_ood", "en_heldout"):
        docs = [x for x in text[name].read_text(encoding="utf-8").splitlines() if x.strip()][:s.eval_docs]
        scores[name] = round(bits_per_byte(model, tok, docs, max_length=512, batch_size=8).bpb, 4)
    if not generate:
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.eval.generation import generation_stats
    from kolm.vocab.chars import has_hangul

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
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


def tables(base: Point, points: list[Point], budgets: list[float], s: Settings) -> str:
    """The bpb table (ratios to the base, kolm / plain) and the generation table, medians over seeds."""
    from kolm.tables import text_table

    everything = [base, *points]

    def med(arm: str, minute: Any, key: str, where: str = "scores") -> float | None:
        vals = [getattr(p, where)[key] for p in everything if p.arm == arm and p.minute == minute]
        return statistics.median(vals) if vals else None

    b = base.scores
    rows = []
    for minute in ["resize", *budgets]:
        row = [f"{minute:g}" if minute != "resize" else "resize"]
        for key in ("ko_heldout", "ko_ood", "en_heldout"):
            p, k = med("plain", minute, key), med("kolm", minute, key)
            row += [f"{p / b[key]:.3f}x" if p else "", f"{k / b[key]:.3f}x" if k else "",
                    f"{k / p:.3f}" if p and k and key != "en_heldout" else ""]
        steps = [statistics.median([q.step for q in points if q.arm == a and q.minute == minute] or [0])
                 for a in ("plain", "kolm")]
        secs = statistics.median([q.seconds for q in points if q.arm == "kolm" and q.minute == minute] or [0])
        row.append(f"{steps[0]:g} / {steps[1]:g}" + (f" (at {secs:.0f} s)" if minute == "resize" else ""))
        rows.append([c for i, c in enumerate(row) if i != 9])  # English: no kolm/plain column
    bpb = text_table(["minutes", "plain ko", "kolm ko", "kolm/plain", "plain ood", "kolm ood", "kolm/plain",
                      "plain en", "kolm en", "steps plain / kolm"], rows)
    gen_rows = []
    for name, arm, minute in [("base", "base", 0), ("kolm resize", "kolm", "resize")] + \
            [(f"{a} {m:g} min", a, m) for m in budgets for a in ("plain", "kolm")]:
        if med(arm, minute, "broken_share", "gen") is None:
            continue
        vs = [med(arm, minute, k, "gen") / med("base", 0, k, "gen") for k in ("korean_chars_per_s",
                                                                                "heldout_chars_per_s")]
        gen_rows.append([name, *(format(med(arm, minute, key, "gen"), fmt) for key, _, fmt in GEN_COLUMNS),
                         f"{vs[0]:.2f}x", f"{med(arm, minute, 'heldout_chars_per_s', 'gen'):.1f}", f"{vs[1]:.2f}x"])
    gen = text_table(["model", *(header for _, header, _ in GEN_COLUMNS), "chars/s vs base", "held-out chars/s",
                      "vs base"], gen_rows)
    return (f"held-out bits per byte, each arm / the base ({b['ko_heldout']:.4f} Korean in-domain, {b['ko_ood']:.4f} "
            f"Korean out-of-domain, {b['en_heldout']:.4f} English); kolm/plain < 1: kolm ahead\n{bpb}\n\n"
            f"greedy continuations of held-out Korean prompts, decoded as kolm decodes (WholeCharacters) (broken: "
            f"share with an invalid UTF-8 sequence; unguarded: the same through a plain generate; off-token: "
            f"generated tokens a re-encoding would not give; rep4: repeated character 4-grams; Korean chars/s, "
            f"chars/token, tokens/s: every model writes {s.gen_tokens} tokens per prompt, EOS held back, timed one "
            f"model at a time; held-out chars/s: tokens/s x the Hangul per token of held-out Korean under the "
            f"model's tokenizer)"
            f"\n{gen}")


def arm_points(arm: str, seed: int, base: Path, out: Path, text: dict[str, Path], s: Settings,
               budgets: list[float]) -> list[Point]:
    """One arm and seed: train with snapshots, then score every snapshot."""
    points = []
    for snap in run_arm(arm, base, out / f"{arm}-seed{seed}", text, s, seed, [m * 60 for m in budgets]):
        scores, gen = score(Path(snap["model"]), text, s)
        points.append(Point(arm, seed, snap["minute"], snap["seconds"], snap["step"], scores, gen, snap["model"]))
        print(f"[extension_pays] {arm} seed {seed} at {snap['minute']} ({snap['seconds']} s, step {snap['step']}): "
              f"{scores} broken {gen['broken_share']:.1%} sample {gen['sample']!r}", flush=True)
    return points


def side_by_side(args: argparse.Namespace, out: Path, seed: int) -> list[Point]:
    """Both arms at once, each in its own process on one thread (one core each on a 2-core machine): the same
    hardware share for both, half the wall time of running them one after the other."""
    import subprocess

    procs = []
    for arm in args.arms.split(","):
        cmd = [sys.executable, __file__, "--arms", arm, "--seeds", str(seed), "--budgets", args.budgets,
               "--output", str(out), "--threads", "1", "--points-json", str(out / f"{arm}-seed{seed}.json"),
               "--set", *args.set] + (["--quick"] if args.quick else []) + \
            (["--more-korean"] if args.more_korean else [])
        log = (out / f"{arm}-seed{seed}.log").open("w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"}), arm, log))
    points = []
    for proc, arm, log in procs:
        if proc.wait() != 0:
            sys.exit(f"the {arm} arm failed (exit {proc.returncode}): see {log.name}")
        log.close()
        points += [Point(**p) for p in json.loads((out / f"{arm}-seed{seed}.json").read_text(encoding="utf-8"))]
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="2,5,10,20", help="minutes, comma-separated")
    ap.add_argument("--seeds", default="0", help="seeds, comma-separated (the table shows medians)")
    ap.add_argument("--arms", default="plain,kolm")
    ap.add_argument("--parallel", action="store_true",
                    help="run the arms at the same time, one thread each (one core each on this 2-core machine)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--points-json", default="", help=argparse.SUPPRESS)  # --parallel's worker: write the points
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
    if args.threads or args.parallel:  # --parallel: the base is scored on one thread too, as the arms' workers
        import torch

        torch.set_num_threads(args.threads or 1)
    s = Settings()
    budgets = [float(x) for x in args.budgets.split(",")]
    if args.quick:
        budgets, s.eval_docs, s.prompts, s.init_budget_s, s.emb_steps = [0.5, 1.0], 12, 6, 10.0, 4
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(s, name):
            sys.exit(f"--set {item}: no field {name!r}; fields: {', '.join(asdict(s))}")
        setattr(s, name, type(getattr(s, name))(value))
    from kolm.model.zoo import smollm2

    out = Path(args.output).resolve()  # recipes resolve relative paths against their own folder
    base = smollm2()
    more = None
    if args.more_korean:
        from common import harvest_distinct

        more = harvest_distinct(HERE / "out" / "ko_distinct.txt", SHARED / "corpora" / "ko_dev.txt")
        if more is None:
            sys.exit("--more-korean: needs apt-get (Debian's gimp-help-ko and libreoffice-help-ko)")
    text = split_corpora(out / "text", more)
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.points_json:  # a worker of --parallel: one arm, one seed, no base
        points = arm_points(args.arms, seeds[0], base, out, text, s, budgets)
        Path(args.points_json).write_text(json.dumps([asdict(p) for p in points], ensure_ascii=False))
        return
    t0 = time.time()
    scores, gen = score(base, text, s)
    base_point = Point("base", 0, 0, 0.0, 0, scores, gen, str(base))
    print(f"[extension_pays] base: {scores}", flush=True)
    points: list[Point] = []
    for seed in seeds:
        if args.parallel:
            points += side_by_side(args, out, seed)
        else:
            for arm in args.arms.split(","):
                points += arm_points(arm, seed, base, out, text, s, budgets)
    for p in [base_point, *points]:  # speed, one model at a time on this process's threads
        p.gen.update(speed(Path(p.model), text, s))
    mode = "both arms at once, one core each" if args.parallel else "one arm after the other"
    ko_mb = text["ko_train"].stat().st_size / 1e6
    print(f"\nSmolLM2-135M-Instruct, plain vs kolm at equal wall-clock ({mode}; {time.time() - t0:.0f} s in all; "
          f"Korean training text {ko_mb:.2f} MB{' with --more-korean' if args.more_korean else ''}; "
          f"settings: {asdict(s)})")
    print(tables(base_point, points, budgets, s))
    print("BENCH_JSON " + json.dumps({"settings": asdict(s), "budgets": budgets, "parallel": args.parallel,
                                     "more_korean": args.more_korean, "ko_train_mb": round(ko_mb, 3),
                                     "base": asdict(base_point), "points": [asdict(p) for p in points]},
                                    ensure_ascii=False))


if __name__ == "__main__":
    main()
