"""A real pretrained model through every kolm stage: ``kolm demo`` (its default model), ``bench/real_model.py`` and
real-model tests all run this pipeline, with different budgets.

    kolm demo                                       # SmolLM2-135M-Instruct (kolm.model.zoo), output ./kolm-demo/smollm2
                                                    # (planned to --minutes: kolm.demo.real_plan)
    python bench/real_model.py [--quick]            # the same stages on ../shared text, with a table

Stages, each a real ``kolm`` command run in-process (``kolm.cli.main``), each output folder under the output dir:

1. ``extend``: ``kolm vocab extend`` on the model's own byte-level BPE (Korean tokens from the training text);
2. ``resize``: ``kolm model resize`` with the budget's init (its default, distill, unless the budget names one);
3. ``data``: ``kolm data build``, Korean with 20% English replay, packed at ``seq_len``;
4. ``cpt``: ``kolm train cpt``, an embeddings stage then a full stage or a LoRA stage (new rows trainable, merged
   into ``final/``), one stage per call into one run folder (the later ones with ``--resume``), so that ``kolm
   demo`` plans each stage from the time the ones before took;
5. ``sft``: ``kolm train sft`` with the model's own ChatML template (assistant-only loss), ``kolm merge-lora``;
6. ``dpo``: ``kolm train dpo`` on the merged SFT model, ``kolm merge-lora``;
7. ``upscale``: ``kolm upscale`` (SOLAR depth up-scaling, 30 -> 40 layers for SmolLM2);
8. ``push``: ``kolm push --dry-run`` (model card, no upload).

Every end point is then checked the way a user would: the folder loads with ``AutoModelForCausalLM`` and
``AutoTokenizer``, generates greedily from a Korean prompt (through the chat template after SFT), and the
continuation must contain Hangul. ``kolm eval`` scores it on held-out Korean and English (bits per byte), and the
tokenizer's Korean characters per token are measured on the held-out Korean. A finished stage (and check) is
reused on a second run with the same settings, unless a stage it depends on ran again (:class:`kolm.demo.run.Steps`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
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

    def cpt_stages(self) -> list[tuple[str, dict[str, Any]]]:
        """The CPT recipe's stages in order, each with the budget field that holds its step count."""
        body: dict[str, Any] = {"name": self.body, "kind": self.body, "max_steps": self.body_steps}
        if self.body == "lora":
            body["lora"] = {"r": self.lora_r, "alpha": 2 * self.lora_r, "train_new_embeddings": True}
        if not self.emb_steps:  # kolm's recipe for an extended model: full fine-tuning from the first step
            return [("body_steps", body)]
        emb = {"name": "embeddings", "kind": "embeddings", "max_steps": self.emb_steps, "lr": self.emb_lr}
        return [("emb_steps", emb), ("body_steps", body)]


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
    docs, tokens = _doc_tokens(model_dir, path)
    return round(sum(map(len, docs)) / sum(tokens), 4)


def held_out_tokens(path: Path, model_dir: Path) -> list[int]:
    """Tokens of each document of a text file (one per line) under ``model_dir``'s tokenizer: what an evaluation
    of its first n documents costs."""
    return _doc_tokens(model_dir, path)[1]


def _doc_tokens(model_dir: Path, path: Path) -> tuple[list[str], list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return docs, [len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"]]


class Pipeline:
    """Runs the stages of the module docstring on ``base`` (a model folder) into ``out``. With a ``planner``
    (:mod:`kolm.demo.plan`, ``kolm demo``) each sized stage takes its counts from a fresh plan just before it runs;
    without one, the budget's counts are used as they are."""

    def __init__(self, base: Path, out: Path, text: dict[str, Path], budget: Budget, log: Any = print,
                 steps: Steps | None = None):
        self.base, self.out, self.text, self.b = Path(base), Path(out), text, budget
        self.out.mkdir(parents=True, exist_ok=True)
        self.steps, self.log, self.tag = steps or Steps(self.out), log, "[kolm real]"
        self.planner: Any = None
        self.points: list[EndPoint] = []
        self.key = {"base": str(Path(base).resolve()), "seed": budget.seed,
                    "text": {k: [str(p), p.stat().st_size] for k, p in text.items()}}

    def take(self, *fields: str) -> None:
        """With a planner, fix the counts of these budget fields (their items) from a plan made now."""
        if self.planner is None:
            return
        names = {f: item_name(self.b, f) for f in fields}
        counts = self.planner.take(*names.values())
        self.b = replace(self.b, **{f: counts[n] for f, n in names.items()})

    # -- the stages -------------------------------------------------------------------------------------------
    def extend(self) -> Path:
        b, out = self.b, self.out

        def fn() -> tuple[Any, str]:
            _kolm("vocab", "extend", "--base", self.base, "--corpus", self.text["ko_train"], "--num-new-tokens",
                  b.new_tokens, "--min-frequency", 1, "--allow-fewer", "--output", out / "tok-ko", "--overwrite")
            from kolm.artifacts import TokenizerExtension

            ext = TokenizerExtension.read(out / "tok-ko")
            return None, f"+{ext.num_added} Korean tokens, {ext.checks['unreachable_tokens']} unreachable"

        return self._stage("extend", {**self.key, "new_tokens": b.new_tokens}, fn, out / "tok-ko", check=False)

    def resize(self) -> Path:
        b, out = self.b, self.out

        def fn() -> tuple[Any, str]:
            steps = [] if b.init_steps is None else ["--init-steps", b.init_steps]
            init = ["--init", b.init] if b.init else []
            _kolm("model", "resize", "--model", self.base, "--tokenizer", out / "tok-ko", "--output", out / "model-ko",
                  "--init-budget-s", b.init_budget_s, *steps, *init, "--overwrite")
            from kolm.artifacts import ResizeRecord

            rec = ResizeRecord.read(out / "model-ko")
            return None, f"{rec.old_vocab_size} -> {rec.new_vocab_size} rows, init {rec.init}, tied {rec.tied}"

        key = {**self.key, "init": [b.init, b.init_budget_s, b.init_steps]}
        return self._stage("resize", key, fn, out / "model-ko", after=("extend",))

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

        return self._stage("data", {**self.key, "recipe": recipe}, fn, out / "data-ko-en", after=("extend",),
                           check=False)

    def cpt(self) -> Path:
        """``kolm train cpt``, one stage at a time into one run folder (each later stage with ``--resume``, which
        skips the finished ones), so that the plan is made again before each stage."""
        from kolm.artifacts.run_folder import RunFolder

        out, run = self.out, self.out / "run-cpt"
        after: tuple[str, ...] = ("resize", "data")
        stages = self.b.cpt_stages()
        for i, (steps_field, _) in enumerate(stages):
            self.take(steps_field)
            stages = self.b.cpt_stages()
            stage = stages[i][1]
            recipe = self._cpt_recipe([s for _, s in stages[:i + 1]])

            def fn(i: int = i, recipe: dict = recipe, stage: dict = stage) -> tuple[Any, str]:
                if i == 0:
                    shutil.rmtree(run, ignore_errors=True)
                else:  # what an earlier plan left of this stage
                    shutil.rmtree(RunFolder(run).stage(i, stage["name"]).path, ignore_errors=True)
                (out / "cpt.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
                _kolm("train", "cpt", out / "cpt.yaml", "--resume" if i else "--no-resume")
                return None, f"{stage['kind']} {stage['max_steps']} steps of {self.b.micro_batch} x {self.b.seq_len}"

            name = f"cpt/{stage['name']}"
            self._stage(name, {**self.key, "recipe": recipe}, fn, run / "final", after=after, check=False)
            after = (name,)
        seconds = sum(self.steps.seconds[name] for name in self.cpt_steps())
        self.points.append(self.check("cpt", run / "final", seconds, chat=False, after=after[0]))
        return run / "final"

    def _cpt_recipe(self, stages: list[dict[str, Any]]) -> dict[str, Any]:
        b, out = self.b, self.out
        return {"model": str(out / "model-ko"), "data": str(out / "data-ko-en"), "output": str(out / "run-cpt"),
                "micro_batch_size": b.micro_batch, "grad_accum": 1, "seed": b.seed, "precision": b.precision,
                "optim": {"lr": b.body_lr, "warmup_steps": max(1, min(10, (b.emb_steps or b.body_steps) // 5))},
                "stages": stages,
                # held-out bpb at the start and at the end of each stage (the dashboard's curves)
                "eval": {"every": 100_000, "max_docs": 8},
                "checkpoint": {"every": 100_000, "keep": 2}, "logging_steps": 5}

    def align(self, kind: str, model: Path, after: str) -> Path:
        """``kolm train sft|dpo`` with the model's own chat template, then ``kolm merge-lora``."""
        self.take(f"{kind}_steps")
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

        return self._stage(kind, {**self.key, "recipe": recipe}, fn, out / f"{kind}-merged", after=(after,),
                           chat=True)

    def upscale(self, model: Path, after: str) -> Path:
        out, drop = self.out, self.b.upscale_drop

        def fn() -> tuple[Any, str]:
            _kolm("upscale", "--model", model, "--output", out / "upscaled", "--drop-layers", drop, "--overwrite")
            return None, f"SOLAR depth up-scaling, {drop} layers dropped per copy"

        # a plain continuation: the new seam is not healed yet (that is CPT's job), and asked in chat right after
        # DUS the model may answer a Korean question in English
        return self._stage("upscale", {**self.key, "drop": drop, "model": str(model)}, fn, out / "upscaled",
                           after=(after,), chat=False)

    def push(self, model: Path, after: str) -> Path:
        card = self.out / "card" / "README.md"

        def fn() -> tuple[Any, str]:
            card.parent.mkdir(exist_ok=True)
            _kolm("push", model, "--repo-id", "kolm-demo/smollm2-135m-ko", "--dry-run", "--output", card)
            if not card.is_file():
                raise KolmError(f"kolm push --dry-run wrote no model card at {card}")
            return None, f"model card {card} (dry run, no upload)"

        self.steps.run("push", {**self.key, "model": str(model)}, fn, after=(after,))
        return card

    # -- running and checking ---------------------------------------------------------------------------------
    def _stage(self, name: str, key: dict[str, Any], fn: Any, result: Path, *, after: tuple[str, ...] = (),
               check: bool = True, chat: bool = False) -> Path:
        self.steps.run(name, key, fn, after=after)
        if check:
            self.points.append(self.check(name, result, self.steps.seconds[name], chat, after=name))
        return result

    def check(self, stage: str, model: Path, seconds: float, chat: bool, after: str | None = None) -> EndPoint:
        """Load, generate from a Korean prompt, measure chars/token and bits per byte (a step of its own, reused
        while the model it checks is)."""
        settings = {**self.key, "stage": stage, "model": str(model), "chat": chat, "mtime": _mtime(model),
                    "eval_docs": self.b.eval_docs, "gen_tokens": self.b.gen_tokens}

        def fn() -> tuple[Any, str]:
            point = self._check(stage, model, chat)
            return asdict(point), f"{'PASS' if point.passed else 'FAIL'} {point.generated.strip()!r}"

        saved = self.steps.run(f"check-{stage}", settings, fn, after=(after,) if after else (), quiet=True)
        point = EndPoint(**{**saved, "seconds": round(seconds, 1)})
        bpb = f"; ko {point.ko_bpb:.3f} en {point.en_bpb:.3f} bpb" if point.ko_bpb is not None else ""
        self.log(f"{self.tag} {stage}: {'PASS' if point.passed else 'FAIL'}{bpb}; {point.prompt!r} -> "
                 f"{point.generated.strip()!r}" + (f" ({point.note})" if point.note else ""))
        return point

    def _check(self, stage: str, model: Path, chat: bool) -> EndPoint:
        point = EndPoint(stage=stage, model=str(model), seconds=0.0)
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
        final, last = self.cpt(), self.cpt_steps()[-1]
        if align:
            final = self.align("sft", final, after=last)
            final, last = self.align("dpo", final, after="sft"), "dpo"
        if upscale:
            final, last = self.upscale(final, after=last), "upscale"
        if push:
            self.push(final, after=last)
        self.final = final
        return self.points

    def cpt_steps(self) -> list[str]:
        """The CPT stages' step names, in order."""
        return [f"cpt/{stage['name']}" for _, stage in self.b.cpt_stages()]


def demo_budget() -> Budget:
    """``kolm demo``'s recipe (SmolLM2) at its reference size, what 6 minutes buy on 2 cores of a CPU with bf16
    units: the counts of :data:`DEMO_SIZED` are then scaled to this machine and ``--minutes``
    (:mod:`kolm.demo.real_plan`). The CPT recipe is kolm's for an extended model as bench/extension_pays.py
    measured it (:mod:`kolm.train.recipes`): subword-mean init, then full fine-tuning from the first step at 2e-4 on
    2 x 256 tokens a step. The embeddings stage the demo used to start with (20 steps at 1e-2) left Korean at 1.49x
    the base after 19 steps where full fine-tuning was at 0.96x after 20: on a slow machine, whose plan has room for
    a few dozen steps, it could end above the base."""
    return Budget(new_tokens=4000, init="subword-mean", seq_len=256, micro_batch=2, emb_steps=0, body="full",
                  body_steps=75, body_lr=2e-4, sft_steps=16, dpo_steps=4, sft_lr=2e-4, align_batch=2,
                  eval_docs=100, gen_tokens=32)


# What the plan may size in demo_budget, and the fewest of each that still do the job: CPT steps that take the model
# below the base on held-out Korean and English (measured on the demo's text, full fine-tuning from the resize:
# Korean 2.920 -> 2.164 / 2.022 / 1.950 / 1.885 bpb after 12 / 18 / 24 / 30 steps against the base's 1.998, English
# below the base from the first steps; 28 leaves a margin), LoRA steps that move the adapter, documents that give a
# stable bits per byte.
DEMO_SIZED = {"emb_steps": 4, "body_steps": 28, "sft_steps": 4, "dpo_steps": 2, "eval_docs": 16}


def item_name(b: Budget, field: str) -> str:
    """The plan's name of a sized budget field: the name of the step that runs it (``eval docs``: the checks')."""
    for name, stage in b.cpt_stages():
        if name == field:
            return f"cpt/{stage['name']}"
    return {"sft_steps": "sft", "dpo_steps": "dpo", "eval_docs": "eval docs"}[field]


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
