"""The metrics channel (kolm/train/metrics.py), metrics.jsonl rows (kolm/train/callbacks.py), the online evaluation
sets (kolm/train/online_eval.py) and their recipe section, without training a model (the training runs that read
TensorBoard's event files back are in test_cpt.py and test_align.py)."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest
import yaml
from transformers import TrainerState

from kolm.config import ConfigError, resolve
from kolm.errors import KolmError
from kolm.train.callbacks import MetricsJsonl
from kolm.train.config import CptConfig, CptEvalConfig, OnlineEvalConfig
from kolm.train.metrics import AtRunStep, TokenCounter, eval_logs, read_eval_logs, with_metric_channel
from kolm.train.online_eval import read_eval_sets


class FakeWandb:
    """What the Trainer's WandbCallback calls on the ``wandb`` module, recorded (``logged``: every ``wandb.log``).
    Installed as ``wandb`` in sys.modules by :func:`fake_wandb`: the real client is heavy (a Go service and
    OpenTelemetry), and the code path under test is the Trainer's own callback."""

    def __init__(self) -> None:
        self.logged: list[dict] = []
        self.inits: list[dict] = []

    def install(self, monkeypatch) -> None:
        fake = self

        class Run:
            def __init__(self) -> None:
                self.summary: dict = {}
                self.id, self.name, self.url = "fake", "fake", "http://localhost/fake"

            def _label(self, **kw) -> None:
                pass

        class Config(dict):
            def update(self, d=None, allow_val_change=False) -> None:  # noqa: ARG002
                super().update(d or {})

        mod = types.ModuleType("wandb")
        mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        mod.run = None
        mod.config = Config()

        def init(**kw):
            fake.inits.append(kw)
            mod.run = Run()
            return mod.run

        mod.init = init
        mod.log = lambda d, **kw: fake.logged.append(dict(d))
        mod.define_metric = lambda *a, **k: None
        mod.watch = lambda *a, **k: None
        mod.termwarn = lambda *a, **k: None
        mod.finish = lambda *a, **k: None
        util = types.ModuleType("wandb.sdk.lib.config_util")
        util.ConfigError = type("ConfigError", (Exception,), {})
        monkeypatch.setitem(sys.modules, "wandb", mod)
        monkeypatch.setitem(sys.modules, "wandb.sdk", types.ModuleType("wandb.sdk"))
        monkeypatch.setitem(sys.modules, "wandb.sdk.lib", types.ModuleType("wandb.sdk.lib"))
        monkeypatch.setitem(sys.modules, "wandb.sdk.lib.config_util", util)

    def series(self, key: str) -> dict[int, float]:
        """``{train/global_step: value}`` of one logged key."""
        return {d["train/global_step"]: d[key] for d in self.logged if key in d}


@pytest.fixture
def fake_wandb(monkeypatch) -> FakeWandb:
    fake = FakeWandb()
    fake.install(monkeypatch)
    return fake


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the TensorBoard event files of ``folder`` (one run): ``{tag: {step: value}}``, read back with
    TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


# ----------------------------------------------------------------------------------------------- log names
def test_eval_results_survive_the_flat_log_names():
    res = {"ko": {"bpb": 1.5, "loss": 2.0, "nats": 30.0, "bytes": 29, "tokens": 15, "docs": 2},
           "zh_hant": {"bpb": 2.5, "loss": 3.0, "nats": 60.0, "bytes": 35, "tokens": 20, "docs": 3}}
    logs = {**eval_logs(res), "loss": 4.0, "eval_loss": 9.0, "eval_num_tokens": 100, "eval_runtime": 1.0,
            "eval_samples_per_second": 2.0}
    assert logs["eval_ko_bpb"] == 1.5 and logs["eval_zh_hant_docs"] == 3
    assert read_eval_logs(logs) == res  # trl's eval_num_tokens and the Trainer's eval_loss are no language


def test_metrics_jsonl_rows_from_one_log_call(tmp_path):
    w = MetricsJsonl(tmp_path / "m.jsonl", stage="full", stage_index=1, step_offset=10)
    res = {"ko": {"bpb": 1.5, "loss": 2.0, "nats": 30.0, "bytes": 29, "tokens": 15, "docs": 2}}
    logs = {"loss": 2.5, "learning_rate": 1e-3, "grad_norm": 0.5, "epoch": 0.1, "tokens_seen": 640,
            "tokens_seen_ko": 500, "tokens_seen_en": 140, **eval_logs(res)}
    ev, tr = w.rows(4, logs)
    base = {"stage": "full", "stage_index": 1, "step": 14, "stage_step": 4, "tokens_seen": 640,
            "tokens_seen_by_lang": {"ko": 500, "en": 140}}
    assert ev.pop("time") > 0 and tr.pop("time") > 0
    assert ev == {"kind": "eval", **base, "eval": res}
    assert tr == {"kind": "train", **base, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.5}
    assert [r["kind"] for r in w.rows(4, eval_logs(res))] == ["eval"]
    assert w.rows(4, {"train_runtime": 3.0, "epoch": 1.0}) == []  # the Trainer's end-of-training summary


def test_token_counter_is_exact_across_epochs():
    import numpy as np

    # 4 packed sequences of 8 tokens: per-sequence (ko, en) counts, cumulated
    per_seq = np.array([[8, 0], [6, 2], [0, 8], [5, 3]])
    cum = np.vstack([[0, 0], np.cumsum(per_seq, axis=0)])
    # stages before this one ran 3 steps of 2 sequences: this stage starts at sequence 6 (the data wraps around)
    c = TokenCounter(step_offset=3, tokens_per_step=16, seq_len=8, seq_offset=6, lang_tokens=(["ko", "en"], cum))
    for step, seqs in ((0, [0, 1, 2, 3, 0, 1]), (2, [0, 1, 2, 3] * 2 + [0, 1])):
        want = per_seq[seqs].sum(axis=0)
        got = c.at(step)
        assert got == {"tokens_seen": (3 + step) * 16, "tokens_seen_ko": int(want[0]), "tokens_seen_en": int(want[1])}
        assert got["tokens_seen_ko"] + got["tokens_seen_en"] == got["tokens_seen"]


def test_loggers_see_the_run_step_only_in_on_log():
    seen = []

    class Logger:
        logging_dir = "x"

        def on_log(self, args, state, control, **kw):
            seen.append(("log", state.global_step))

        def on_save(self, args, state, control, **kw):
            seen.append(("save", state.global_step))

    state = TrainerState(global_step=7)
    wrapped = AtRunStep(Logger(), offset=100)
    wrapped.on_log(None, state, None, logs={})
    wrapped.on_save(None, state, None)
    assert seen == [("log", 107), ("save", 7)] and state.global_step == 7 and wrapped.logging_dir == "x"


def test_metric_channel_sends_recorded_numbers_with_the_next_log():
    class Base:
        def __init__(self, **kw):
            self.state, self.logged = TrainerState(global_step=3), []

        def log(self, logs, start_time=None):
            self.logged.append(dict(logs))

    T = with_metric_channel(Base)
    assert with_metric_channel(T) is T and with_metric_channel(Base) is T and T.__name__ == "Base"
    t = T(metric_sources=[lambda state, logs: {"tokens_seen": state.global_step * 10}])
    t.record_metrics({"eval_ko_bpb": 1.0})
    t.log({"loss": 2.0})
    t.log({"loss": 1.5})
    assert t.logged == [{"loss": 2.0, "tokens_seen": 30, "eval_ko_bpb": 1.0}, {"loss": 1.5, "tokens_seen": 30}]


# ----------------------------------------------------------------------------------------------- eval sets
def _tok():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "가": 1, "a": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_eval_sets_read_like_kolm_eval(tmp_path):
    import json
    import unicodedata

    nfd = unicodedata.normalize("NFD", "한국어 문서")
    (tmp_path / "ko.txt").write_text(f"{nfd}\n\n   \n둘째 문서\n셋째 문서\n", encoding="utf-8")
    (tmp_path / "en.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in ("a b", "c")), encoding="utf-8")
    cfg = OnlineEvalConfig(sets={"ko": [str(tmp_path / "ko.txt")], "en": [str(tmp_path / "en.jsonl")]}, max_docs=2,
                           text_field="body")
    ko, en = read_eval_sets(cfg, _tok())
    assert (ko.lang, len(ko.input_ids), en.lang, len(en.input_ids)) == ("ko", 2, "en", 2)
    # NFC as kolm data build and kolm eval: the bytes of the composed text
    assert ko.n_bytes == len("한국어 문서".encode()) + len("둘째 문서".encode())
    assert en.n_bytes == 4 and "en.jsonl" in en.source
    assert read_eval_sets(OnlineEvalConfig(every=0, sets=cfg.sets), _tok()) == []  # evaluation off


@pytest.mark.parametrize("content, name, message", [
    (None, "missing.txt", "eval.sets.en: corpus file not found"),
    ("", "empty.txt", "eval.sets.en: corpus file is empty"),
    ("\n  \n\n", "blank.txt", "eval.sets.en: no documents in"),
    ("text", "en.csv", "eval.sets.en: " + "{path}: unsupported corpus format"),
    ('{"text": 1}\n', "bad.jsonl", "eval.sets.en: {path}:1: no string field 'text'"),
])
def test_bad_eval_sets_are_one_line_errors(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(KolmError) as e:
        read_eval_sets(OnlineEvalConfig(sets={"en": [str(path)]}), _tok())
    assert str(e.value).startswith(message.format(path=path)) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_eval_section_in_recipes(tmp_path):
    sub = tmp_path / "recipes"
    sub.mkdir()
    (sub / "cpt.yaml").write_text(yaml.safe_dump({"model": "m", "data": "d", "output": "o", "max_steps": 10,
                                                  "eval": {"sets": {"ko": "ko.txt", "en": ["a.txt", "/abs/b.txt"]}}}))
    cfg = resolve(CptConfig, yaml_path=str(sub / "cpt.yaml"), overrides=[("eval.sets.ja", "ja.txt")])
    # recipe-relative like every path of a recipe; an override is relative to the working directory
    assert cfg.eval.sets == {"ko": [str(sub / "ko.txt")], "en": [str(sub / "a.txt"), "/abs/b.txt"],
                             "ja": ["ja.txt"]}
    assert cfg.eval.splits and cfg.eval.every == 50
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        CptEvalConfig(splits=False)
    assert CptEvalConfig(splits=False, every=0).every == 0
    with pytest.raises(ConfigError, match="not a language tag"):
        OnlineEvalConfig(sets={"ko en": ["x.txt"]})
    with pytest.raises(ConfigError, match="eval.sets.ko: give a file"):
        OnlineEvalConfig(sets={"ko": []})
    with pytest.raises(ConfigError, match="eval.stride"):
        OnlineEvalConfig(stride=0)


def test_cpt_eval_sets_beside_and_instead_of_the_data_splits(tmp_path, capsys):
    from kolm.artifacts import ValidationSplit
    from kolm.train.online_eval import cpt_eval_sets

    class Data:  # a data folder with ko and en validation splits (as kolm.artifacts.DataFolder reads them)
        manifest = types.SimpleNamespace(languages={"ko": None, "en": None})

        def validation(self, lang, max_docs):
            if lang == "en":
                raise KolmError(f"data: missing validation split for {lang!r}: /d/validation/en")
            return ValidationSplit(lang, Path(f"/d/validation/{lang}"), [], [[5, 6], [7]], 10)

    (tmp_path / "en.txt").write_text("a a\na\n", encoding="utf-8")
    (tmp_path / "ja.txt").write_text("가\n", encoding="utf-8")
    files = {"en": [str(tmp_path / "en.txt")], "ja": [str(tmp_path / "ja.txt")]}
    sets = cpt_eval_sets(CptEvalConfig(every=5, sets=files), Data(), _tok())
    assert [(s.lang, s.input_ids, s.n_bytes) for s in sets] == [("ko", [[5, 6], [7]], 10), ("en", [[2, 2], [2]], 4),
                                                               ("ja", [[1]], 3)]
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "every 5 steps" in line and "ko (2 docs, validation split)" in line
    assert "en (2 docs, eval.sets en.txt, not the data's validation split)" in line
    only = cpt_eval_sets(CptEvalConfig(every=5, sets=files, splits=False), Data(), _tok())
    assert [s.lang for s in only] == ["en", "ja"]
    with pytest.raises(KolmError, match=r"missing validation split for 'en'.*eval.sets.en=FILE"):
        cpt_eval_sets(CptEvalConfig(every=5), Data(), _tok())
    assert cpt_eval_sets(CptEvalConfig(every=0, sets=files), Data(), _tok()) == []
