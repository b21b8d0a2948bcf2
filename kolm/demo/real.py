"""A real pretrained model through every kolm stage: ``kolm demo`` (its default model), ``bench/real_model.py`` and
real-model tests all run this pipeline, with different budgets.

    kolm demo                                       # SmolLM2-135M-Instruct (kolm.model.zoo), output ./kolm-demo/smollm2
    python bench/real_model.py [--quick]            # the same stages on ../shared text, with a table

Stages, each a real ``kolm`` command run in-process (``kolm.cli.main``), each output folder under the output dir:

1. ``extend``: ``kolm vocab extend`` on the model's own byte-level BPE (Korean tokens from the training text);
2. ``resize``: ``kolm model resize`` with the budget's init (its default, distill, unless the budget names one);
3. ``data``: ``kolm data build``, Korean with 20% English replay, packed at ``seq_len``;
4. ``cpt``: ``kolm train cpt``, an embeddings stage then a full stage or a LoRA stage (new rows trainable, merged
   into ``final/``);
5. ``sft``: ``kolm train sft`` with the model's own ChatML template (assistant-only loss), ``kolm merge-lora``;
6. ``dpo``: ``kolm train dpo`` on the merged SFT model, ``kolm merge-lora``;
7. ``upscale``: ``kolm upscale`` (SOLAR depth up-scaling, 30 -> 40 layers for SmolLM2);
8. ``push``: ``kolm push --dry-run`` (model card, no upload).

Every end point is then checked the way a user would: the folder loads with ``AutoModelForCausalLM`` and
``AutoTokenizer``, generates greedily from a Korean prompt (through the chat template after SFT), and the
continuation must contain Hangul. ``kolm eval`` scores it on held-out Korean and English (bits per byte), and the
tokenizer's Korean characters per token are measured on the held-out Korean. A finished stage is reused on a
second run with the same settings (:class:`kolm.demo.run.Steps`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from kolm.demo.run import ALIGN_DATA, Steps, lines_text
from kolm.demo.run import kolm_cmd as _kolm
from kolm.errors import KolmError
from kolm.model.inits.base import BUDGET_S
from kolm.vocab.chars import has_hangul

KO_PROMPT = "대한민국의 수도는 서울이다. 서울은"
MIN_NEW_TOKENS = 8  # a plain continuation's end of text is held back this long
KO_CHAT = "한국의 전통 음식 하나를 소개해 주세요."
# The system turn of kolm's Korean SFT rows. Without it SmolLM2 answers a Korean question in English once its
# Korean became new tokens (right after resize, and after a short CPT); the base only echoes the question.
KO_SYSTEM = "당신은 친절한 한국어 도우미입니다. 항상 한국어로 대답합니다."


@dataclass
class Budget:
    """How much each stage does. The defaults are the benchmark's; :func:`quick` and the tests use less."""

    new_tokens: int = 8000
    init: str = ""  # kolm model resize --init ("": its default, distill)
    init_budget_s: float = BUDGET_S  # the resize's distill init (its default)
    init_steps: int | None = None  # a step cap for it (the tests)
    seq_len: int = 128
    micro_batch: int = 4
    emb_steps: int = 100
    body: str = "lora"  # CPT's second stage: "lora" (adapters + new rows, merged) or "full"
    body_steps: int = 200
    emb_lr: float = 1e-3
    body_lr: float = 3e-4
    precision: str = "auto"  # kolm train cpt's (auto: bf16 autocast where bf16 is fast)
    lora_r: int = 16
    sft_steps: int = 30
    dpo_steps: int = 15
    sft_lr: float = 1e-3
    dpo_lr: float = 1e-4
    align_batch: int = 4
    eval_docs: int = 100  # held-out documents per language for bits per byte (0: no bpb)
    gen_tokens: int = 24
    upscale_drop: int = 10  # SOLAR DUS: 2 x (30 - 10) = 40 layers
    seed: int = 0


def quick() -> Budget:
    """A smoke run: every stage, a few steps each."""
    return Budget(new_tokens=2000, init_steps=2, seq_len=128, micro_batch=2, emb_steps=6, body_steps=6, sft_steps=4,
                  dpo_steps=3, align_batch=2, eval_docs=12, gen_tokens=12)


@dataclass
class EndPoint:
    """What was checked on one stage's output model."""

    stage: str
    model: str
    seconds: float
    ko_bpb: float | None = None
    en_bpb: float | None = None
    ko_chars_per_token: float | None = None
    layers: int | None = None
    vocab: int | None = None
    tied: bool | None = None
    prompt: str = ""
    generated: str = ""
    loads: bool = False
    generates: bool = False
    korean_back: bool = False
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.loads and self.generates and self.korean_back


def generate(model_dir: Path, chat: bool, max_new_tokens: int, prompt: str | None = None) -> tuple[str, str, Any]:
    """Greedy generation from a Korean prompt: (prompt, continuation, loaded model). ``chat`` renders the prompt
    with the tokenizer's own chat template after a Korean system turn (generation prompt added); otherwise the
    text is continued as is, with the end of text held back for the first ``MIN_NEW_TOKENS`` tokens (a model
    trained on short paragraphs may end one right after the prompt: the check asks whether it continues in
    Korean). Decoding goes through :class:`kolm.eval.generation.WholeCharacters` (a token that stands for part of a
    character comes only where it completes one: no U+FFFD from untrained new rows) and
    :func:`kolm.eval.generation.whole_text` (no half character where the token cap fell)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kolm.eval.generation import WholeCharacters, whole_text

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, dtype=torch.float32).eval()
    prompt = prompt or (KO_CHAT if chat else KO_PROMPT)
    if chat:
        messages = [{"role": "system", "content": KO_SYSTEM}, {"role": "user", "content": prompt}]
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    else:
        enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             min_new_tokens=0 if chat else min(MIN_NEW_TOKENS, max_new_tokens),
                             logits_processor=[WholeCharacters(tok)],
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return prompt, whole_text(tok, out[0, enc["input_ids"].shape[1]:].tolist()), model


def chars_per_token(model_dir: Path, path: Path) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return round(sum(map(len, docs)) / sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs), 4)


class Pipeline:
    """Runs the stages of the module docstring on ``base`` (a model folder) into ``out``."""

    def __init__(self, base: Path, out: Path, text: dict[str, Path], budget: Budget, log: Any = print):
        self.base, self.out, self.text, self.b = Path(base), Path(out), text, budget
        self.out.mkdir(parents=True, exist_ok=True)
        self.steps, self.log = Steps(self.out), log
        self.points: list[EndPoint] = []
        self.key = {"base": str(Path(base).resolve()), "budget": asdict(budget),
                    "text": {k: [str(p), p.stat().st_size] for k, p in text.items()}}

    # -- the stages -------------------------------------------------------------------------------------------
    def extend(self) -> Path:
        b, out = self.b, self.out

        def fn() -> tuple[Any, str]:
            _kolm("vocab", "extend", "--base", self.base, "--corpus", self.text["ko_train"], "--num-new-tokens",
                  b.new_tokens, "--min-frequency", 1, "--allow-fewer", "--output", out / "tok-ko", "--overwrite")
            from kolm.artifacts import TokenizerExtension

            ext = TokenizerExtension.read(out / "tok-ko")
            return None, f"+{ext.num_added} Korean tokens, {ext.checks['unreachable_tokens']} unreachable"

        return self._stage("extend", fn, out / "tok-ko")

    def resize(self) -> Path:
        out = self.out

        def fn() -> tuple[Any, str]:
            steps = [] if self.b.init_steps is None else ["--init-steps", self.b.init_steps]
            init = ["--init", self.b.init] if self.b.init else []
            _kolm("model", "resize", "--model", self.base, "--tokenizer", out / "tok-ko", "--output", out / "model-ko",
                  "--init-budget-s", self.b.init_budget_s, *steps, *init, "--overwrite")
            from kolm.artifacts import ResizeRecord

            rec = ResizeRecord.read(out / "model-ko")
            return None, f"{rec.old_vocab_size} -> {rec.new_vocab_size} rows, init {rec.init}, tied {rec.tied}"

        return self._stage("resize", fn, out / "model-ko")

    def data(self) -> Path:
        b, out = self.b, self.out
        recipe = {"tokenizer": str(out / "tok-ko"), "seq_len": b.seq_len, "seed": b.seed,
                  "mix": {"ko": 0.8, "en": 0.2},
                  "sources": [{"name": "ko", "lang": "ko", "paths": [str(self.text["ko_train"])], "max_epochs": 8.0},
                              {"name": "en", "lang": "en", "paths": [str(self.text["en_train"])], "max_epochs": 1.0}],
                  "cleaning": {"min_chars": 20}, "validation": {"fraction": 0.05, "min_docs": 4, "max_docs": 32},
                  "num_proc": 1, "progress": False}
        (out / "data.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")

        def fn() -> tuple[Any, str]:
            from kolm.artifacts import DataFolder

            _kolm("data", "build", out / "data.yaml", "--output", out / "data-ko-en", "--overwrite")
            m = DataFolder(out / "data-ko-en").manifest
            shares = ", ".join(f"{k} {v.achieved_share:.3f}" for k, v in m.languages.items())
            return None, f"{m.train_sequences} sequences of {b.seq_len} tokens, token shares {shares}"

        return self._stage("data", fn, out / "data-ko-en")

    def cpt(self) -> Path:
        b, out = self.b, self.out
        body = {"name": b.body, "kind": b.body, "max_steps": b.body_steps}
        if b.body == "lora":
            body["lora"] = {"r": b.lora_r, "alpha": 2 * b.lora_r, "train_new_embeddings": True}
        recipe = {"model": str(out / "model-ko"), "data": str(out / "data-ko-en"), "output": str(out / "run-cpt"),
                  "micro_batch_size": b.micro_batch, "grad_accum": 1, "seed": b.seed, "precision": b.precision,
                  "optim": {"lr": b.body_lr, "warmup_steps": max(1, min(20, b.emb_steps // 5))},
                  "stages": [{"name": "embeddings", "kind": "embeddings", "max_steps": b.emb_steps, "lr": b.emb_lr},
                             body],
                  # held-out bpb at the start and end of each stage (the dashboard's curves); a log line every few steps
                  "eval": {"every": max(b.emb_steps, b.body_steps), "max_docs": 8},
                  "checkpoint": {"every": 100_000, "keep": 2},
                  "logging_steps": max(1, min(10, (b.emb_steps + b.body_steps) // 10))}
        (out / "cpt.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")

        def fn() -> tuple[Any, str]:
            import shutil

            shutil.rmtree(out / "run-cpt", ignore_errors=True)
            _kolm("train", "cpt", out / "cpt.yaml", "--no-resume")
            body_name = "LoRA" if b.body == "lora" else "full"
            return None, f"embeddings {b.emb_steps} + {body_name} {b.body_steps} steps of {b.micro_batch} x {b.seq_len}"

        return self._stage("cpt", fn, out / "run-cpt" / "final")

    def align(self, kind: str, model: Path) -> Path:
        """``kolm train sft|dpo`` with the model's own chat template, then ``kolm merge-lora``."""
        b, out = self.b, self.out
        data = ALIGN_DATA / ("ko_instruct.jsonl" if kind == "sft" else "ko_prefs.jsonl")
        recipe = {"model": str(model), "output": str(out / kind), "chat_template": "auto", "overwrite": True,
                  "data": {"train": [str(data)], "max_length": 256},
                  "lora": {"r": b.lora_r, "alpha": 2 * b.lora_r, "dropout": 0.0},
                  # no warm-up: in a run of a few steps the first one would have lr 0 and leave the adapter at zero
                  "train": {"learning_rate": getattr(b, f"{kind}_lr"), "max_steps": getattr(b, f"{kind}_steps"),
                            "warmup": 0,
                            "batch_size": b.align_batch, "precision": "fp32", "gradient_checkpointing": False,
                            "logging_steps": 5, "seed": b.seed}}
        if kind == "dpo":
            recipe["beta"] = 0.1
        (out / f"{kind}.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")

        def fn() -> tuple[Any, str]:
            _kolm("train", kind, out / f"{kind}.yaml")
            _kolm("merge-lora", "--base", model, "--adapter", out / kind, "--output", out / f"{kind}-merged",
                  "--overwrite")
            return None, f"LoRA {kind.upper()} {getattr(b, f'{kind}_steps')} steps (own chat template), merged"

        return self._stage(kind, fn, out / f"{kind}-merged", chat=True)

    def upscale(self, model: Path) -> Path:
        out, drop = self.out, self.b.upscale_drop

        def fn() -> tuple[Any, str]:
            _kolm("upscale", "--model", model, "--output", out / "upscaled", "--drop-layers", drop, "--overwrite")
            return None, f"SOLAR depth up-scaling, {drop} layers dropped per copy"

        # a plain continuation: the new seam is not healed yet (that is CPT's job), and asked in chat right after
        # DUS the model may answer a Korean question in English
        return self._stage("upscale", fn, out / "upscaled", chat=False)

    def push(self, model: Path) -> Path:
        card = self.out / "card" / "README.md"

        def fn() -> tuple[Any, str]:
            card.parent.mkdir(exist_ok=True)
            _kolm("push", model, "--repo-id", "kolm-demo/smollm2-135m-ko", "--dry-run", "--output", card)
            if not card.is_file():
                raise KolmError(f"kolm push --dry-run wrote no model card at {card}")
            return None, f"model card {card} (dry run, no upload)"

        self.steps.run("push", {**self.key, "model": str(model)}, fn)
        return card

    # -- running and checking ---------------------------------------------------------------------------------
    def _stage(self, name: str, fn: Any, result: Path, chat: bool = False) -> Path:
        t = time.time()
        self.steps.run(name, {**self.key, "stage": name}, fn)
        seconds = time.time() - t
        if name not in ("extend", "data"):
            self.points.append(self.check(name, result, seconds, chat))
        return result

    def check(self, stage: str, model: Path, seconds: float, chat: bool) -> EndPoint:
        """Load, generate from a Korean prompt, measure chars/token and bits per byte (cached per stage)."""
        marker = self.out / ".steps" / f"check-{stage}.json"
        settings = {**self.key, "stage": stage, "chat": chat, "mtime": _mtime(model)}
        if marker.is_file():
            saved = json.loads(marker.read_text(encoding="utf-8"))
            if saved.get("settings") == json.loads(json.dumps(settings, default=str)):
                return EndPoint(**{**saved["point"], "seconds": round(seconds, 1)})
        point = EndPoint(stage=stage, model=str(model), seconds=round(seconds, 1))
        try:
            point.prompt, point.generated, m = generate(model, chat, self.b.gen_tokens)
            point.loads, point.generates = True, bool(point.generated.strip())
            point.korean_back = has_hangul(point.generated)
            c = m.config
            point.layers, point.vocab = c.num_hidden_layers, c.vocab_size
            point.tied = m.get_output_embeddings().weight is m.get_input_embeddings().weight
            del m
            point.ko_chars_per_token = chars_per_token(model, self.text["ko_heldout"])
            if self.b.eval_docs > 0:
                point.ko_bpb, point.en_bpb = self.bpb(stage, model)
        except Exception as e:  # noqa: BLE001 - the table says what failed instead of stopping the whole run
            point.note = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        self.log(f"[kolm real] {stage}: {'PASS' if point.passed else 'FAIL'}; {point.prompt!r} -> "
                 f"{point.generated.strip()!r}" + (f" ({point.note})" if point.note else ""))
        marker.write_text(json.dumps({"settings": settings, "point": asdict(point)}, default=str,
                                     ensure_ascii=False), encoding="utf-8")
        return point

    def bpb(self, stage: str, model: Path) -> tuple[float, float]:
        out = self.out / "eval" / stage
        _kolm("eval", "--model", model, "--text", f"ko={self.text['ko_heldout']}", "--text",
              f"en={self.text['en_heldout']}", "--max-docs", self.b.eval_docs, "--output", out)
        rows = {r["lang"]: r["bpb"] for r in json.loads((out / "results.json").read_text())["rows"]}
        return rows["ko"], rows["en"]

    def base_point(self) -> EndPoint:
        return self.check("base", self.base, 0.0, chat=False)

    def run(self, align: bool = True, upscale: bool = True, push: bool = True) -> list[EndPoint]:
        """Every stage in order; returns the end points (base first)."""
        self.points = [self.base_point()]
        self.extend()
        self.resize()
        self.data()
        final = self.cpt()
        if align:
            final = self.align("dpo", self.align("sft", final))
        if upscale:
            final = self.upscale(final)
        if push:
            self.push(final)
        self.final = final
        return self.points


def demo_budget(minutes: float) -> Budget:
    """``kolm demo`` (SmolLM2) at ``--minutes`` (default 6): the step counts scale with it. The CPT recipe is
    the one bench/extension_pays.py measured (subword-mean init, 20 embeddings steps at 1e-2, then full fine-tuning
    at 2e-4 on 2 x 256 tokens a step); the distill init's minute buys less than a minute of CPT does here."""
    f = minutes / 6.0
    return Budget(new_tokens=4000, init="subword-mean", seq_len=256, micro_batch=2, emb_steps=max(4, int(20 * f)),
                  body="full", body_steps=max(4, int(60 * f)), emb_lr=1e-2, body_lr=2e-4,
                  sft_steps=max(4, int(16 * f)), dpo_steps=max(2, int(4 * f)), sft_lr=2e-4, align_batch=2,
                  eval_docs=100, gen_tokens=32)


def demo_text(cfg: Any, folder: Path) -> dict[str, Path]:
    """The demo's text (embedded, or ``--ko-text``/``--en-text``), every 10th document held out
    (:func:`_write_split`), and ``SOURCES.md`` naming where each language came from."""
    from kolm.demo.run import read_docs as _read_docs
    from kolm.demo.run import write_sources
    from kolm.demo.text import english_documents, korean_documents

    text: dict[str, Path] = {}
    sources = []
    for lang, given, builtin in (("ko", cfg.ko_text, korean_documents), ("en", cfg.en_text, english_documents)):
        docs, src = _read_docs(given) if given else builtin()
        text.update(_write_split(folder, lang, docs))
        sources.append(src)
    write_sources(folder, *sources)
    return text


def run_demo(cfg: Any) -> dict[str, Any]:
    """``kolm demo`` (``--model smollm2``, the default): the pipeline on SmolLM2-135M-Instruct and the demo's text
    (or --ko-text / --en-text), output in ``<output>/smollm2``; prints a Korean generation of the base and of the
    final model."""
    from kolm.model.zoo import smollm2

    out = Path(cfg.output).resolve() / "smollm2"
    text = demo_text(cfg, out / "text")
    pipe = Pipeline(smollm2(), out, text, demo_budget(cfg.minutes), log=print)
    points = pipe.run(align=cfg.align, upscale=False)
    _kolm("dashboard", out / "run-cpt", "--output", out / "report.html")
    before = generate(pipe.base, chat=True, max_new_tokens=pipe.b.gen_tokens)
    after = generate(pipe.final, chat=True, max_new_tokens=pipe.b.gen_tokens)
    summary = table(points)
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    print("\n" + summary)
    print(f"\nprompt (chat template): {before[0]}\n  before (SmolLM2-135M-Instruct): {before[1].strip()}\n"
          f"  after  ({Path(pipe.final).relative_to(out)}): {after[1].strip()}")
    print(f"\nreport: {out / 'report.html'}", flush=True)
    return {"points": [asdict(p) for p in points], "before": before[1], "after": after[1],
            "report": str(out / "report.html")}


def _mtime(model: Path) -> float:
    files = list(Path(model).glob("*.safetensors"))
    return max((f.stat().st_mtime for f in files), default=0.0)


def split_text(src: Path, out: Path, name: str, max_docs: int | None = None) -> dict[str, Path]:
    """Every 10th non-empty line of ``src`` held out, the rest for training (as bench/ and the demo split text)."""
    docs = [x.strip() for x in src.read_text(encoding="utf-8").splitlines() if x.strip()][:max_docs]
    return _write_split(out, name, docs)


def _write_split(folder: Path, name: str, docs: list[str]) -> dict[str, Path]:
    """``NAME_train.txt`` and ``NAME_heldout.txt`` (every 10th document, :func:`kolm.demo.text.split`) in
    ``folder``, one document per line. A file is rewritten only when its content changed, so that finished steps
    stay reusable."""
    from kolm.demo.text import split

    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for part, rows in zip(("train", "heldout"), split(docs), strict=True):
        path = paths[f"{name}_{part}"] = folder / f"{name}_{part}.txt"
        text = lines_text(rows)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return paths


def table(points: list[EndPoint]) -> str:
    """The end points as a fixed-width table."""
    head = f"{'stage':<8} {'seconds':>8} {'ko bpb':>7} {'en bpb':>7} {'ko c/tok':>8} {'layers':>6} {'vocab':>6} " \
           f"{'tied':>5}  {'checked':<28} result"
    lines = [head]
    for p in points:
        checked = "/".join(w for w, ok in (("loads", p.loads), ("generates", p.generates),
                                           ("Korean back", p.korean_back)) if ok) or "-"
        lines.append(f"{p.stage:<8} {p.seconds:>8.1f} {_f(p.ko_bpb, 7, 4)} {_f(p.en_bpb, 7, 4)} "
                     f"{_f(p.ko_chars_per_token, 8, 3)} {p.layers or '-':>6} {p.vocab or '-':>6} "
                     f"{str(p.tied):>5}  {checked:<28} {'PASS' if p.passed else 'FAIL'}")
    return "\n".join(lines)


def _f(x: float | None, width: int, digits: int) -> str:
    return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"
