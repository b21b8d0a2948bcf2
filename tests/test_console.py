"""kolm.console: kolm's lines and progress in the terminal, the frameworks' output in the command's kolm.log.

The commands run as subprocesses with stdout and stderr piped (as in CI or `| tee`): the captured output must be
kolm's alone (no `Loading weights`, no Trainer dict, no `\\r` frame, no DeepSpeed or transformers line), the log file
must hold what the frameworks said, and `-v` must bring it back. A pseudo-terminal gets a one-line bar."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from helpers import REPO, make_sp_tokenizer, read_lines, tiny_llama

from kolm import console
from kolm.cli import _take_verbose, main

# what the frameworks print, that the default verbosity keeps out of the terminal
FRAMEWORK = ("Loading weights", "Writing model shards", "{'", "\r", "Setting accelerator", "[WARNING]",
             "Building labels", "Truncating", "Dropping fully masked", "train_runtime", "it/s]", "[transformers]",
             "UserWarning", "FutureWarning", "built successfully")


def kolm_run(*args: str, cwd: Path, seconds: str = "0", timeout: float = 1800) -> subprocess.CompletedProcess:
    """``kolm ARGS`` in a subprocess, stdout and stderr piped; a progress line at every update (seconds "0")."""
    env = {**os.environ, console.PROGRESS_ENV: seconds, "KOLM_CACHE": str(cwd / "cache")}
    env.pop(console.VERBOSE_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "kolm.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)
    # bytes, decoded without newline translation: text=True would turn every \r into \n
    proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_kolm_only(proc: subprocess.CompletedProcess) -> list[str]:
    text = proc.stdout + proc.stderr
    for marker in FRAMEWORK:
        assert marker not in text, f"{marker!r} in the terminal output:\n{text}"
    return text.splitlines()


# ---------------------------------------------------------------------------------------------------------- the flag
def test_verbose_flag_before_or_after_the_command():
    assert _take_verbose(["-v", "train", "cpt", "r.yaml"]) == (["train", "cpt", "r.yaml"], True)
    assert _take_verbose(["train", "cpt", "r.yaml", "--verbose", "x=1"]) == (["train", "cpt", "r.yaml", "x=1"], True)
    assert _take_verbose(["train", "cpt", "r.yaml"]) == (["train", "cpt", "r.yaml"], False)
    assert _take_verbose(["dashboard", "--", "-v"]) == (["dashboard", "--", "-v"], False)  # a positional after --


# ---------------------------------------------------------------------------------------------------------- progress
def test_progress_is_plain_lines_every_n_seconds_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    bar = console.Progress("kolm x: stage a", 4)
    for i in range(4):
        bar.update(1, loss=f"loss {2.5 - i / 10:.2f}")
    bar.close()
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 5 and lines[1].startswith("kolm x: stage a: 2/4 steps (50%), ")
    assert "ETA" in lines[1] and lines[1].endswith("loss 2.40")
    assert lines[-1].startswith("kolm x: stage a: 4/4 steps in ") and lines[-1].endswith("loss 2.20")

    monkeypatch.setenv(console.PROGRESS_ENV, "3600")  # a short stage: its summary line only
    with console.Progress("kolm x: bytes", 3_000_000, unit="B", scale=True) as bar:
        bar.update(1_500_000)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("kolm x: bytes: 1.5MB/3.0MB in ")

    monkeypatch.setenv("RANK", "1")  # other ranks show nothing
    bar = console.Progress("kolm x: rank 1", 2)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().out == ""


def test_progress_on_a_terminal_is_one_bar():
    code = ("import time\nfrom kolm.console import Progress\np = Progress('kolm x: stage a', 3)\n"
            "for _ in range(3):\n    time.sleep(0.6)\n    p.update(1, loss='loss 1.0')\np.close()\n")
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=sub, stderr=sub, cwd=REPO)
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=60) == 0
    out = b"".join(chunks).decode()
    frames = out.split("\r")
    assert len(frames) > 3 and any("2/3" in f and "loss 1.0" in f for f in frames)  # redrawn in place
    assert "kolm x: stage a: 3/3 steps in " in out.splitlines()[-1]  # then the summary line


# ----------------------------------------------------------------------------------------------------------- session
def _restored() -> bool:
    """No kolm log on the root logger; transformers' terminal handler back, if transformers is loaded."""
    hf = "transformers.utils.logging" not in sys.modules or any(
        type(h) is logging.StreamHandler for h in logging.getLogger("transformers").handlers)
    return hf and not any(isinstance(h, console.LogFile) for h in logging.getLogger().handlers)


def test_session_sends_framework_logs_and_warnings_to_the_log(tmp_path, capfd, monkeypatch):
    import transformers.utils.logging  # noqa: F401 - imported before the session: taken over at its start

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setenv("KOLM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    with console.session("train cpt", folder=run):
        assert console.quiet()
        logging.getLogger("transformers.modeling_utils").warning("transformers speaks")
        run.mkdir()
        console.attach()  # from here on the file is written as records come
        assert "transformers speaks" in (run / console.LOG_FILE).read_text()
        logging.getLogger("trl.trainer").warning("trl speaks")
        warnings.warn("a python warning", UserWarning, stacklevel=1)
        for _ in transformers.utils.logging.tqdm(range(3), desc="Loading weights"):  # as from_pretrained's bar
            pass
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    text = (run / console.LOG_FILE).read_text()
    assert text.startswith(text.splitlines()[0]) and "kolm train cpt (pid" in text.splitlines()[0]
    assert "WARNING transformers.modeling_utils: transformers speaks" in text and "trl speaks" in text
    assert "a python warning" in text
    bars = [x for x in text.splitlines() if "Loading weights" in x]  # a bar is one line: its last frame
    assert len(bars) == 1 and "INFO kolm: [transformers] Loading weights: 100%" in bars[0] and "3/3" in bars[0]
    assert _restored() and not console.quiet()

    # a command that fails before its folder is its own logs to the cache; with -v nothing is taken over
    with pytest.raises(RuntimeError), console.session("model resize", folder=None):
        logging.getLogger("transformers").warning("before the failure")
        raise RuntimeError("boom")
    assert "before the failure" in (tmp_path / "cache" / "logs" / "kolm-model-resize.log").read_text()
    # transformers' own handler keeps the sys.stderr of the moment it was made (in a whole pytest run: the capture
    # of whichever test imported it first), so the check listens on that handler rather than on capfd
    own = [h for h in logging.getLogger("transformers").handlers if type(h) is logging.StreamHandler]
    assert len(own) == 1
    shown = io.StringIO()
    stream = own[0].setStream(shown)
    try:
        with console.session("eval", verbose=True, folder=tmp_path / "v"):
            assert not console.quiet()
            logging.getLogger("transformers.x").warning("shown as usual")
    finally:
        own[0].setStream(stream)
    assert "[transformers] shown as usual" in shown.getvalue() and not (tmp_path / "v").exists() and _restored()


def test_a_command_run_by_another_prints_into_its_log_but_shows_its_progress(tmp_path, capfd, monkeypatch):
    """The demo runs kolm commands in-process: their lines go to the demo's log, their progress to the terminal."""
    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    out = tmp_path / "demo"
    out.mkdir()
    with console.session("demo", folder=out):
        print("[kolm demo] cpt ...")
        with console.session("train cpt", folder=tmp_path / "run"):
            print("kolm train cpt: bits per byte every 10 steps")
            print("kolm data build: warning: few documents", file=sys.stderr)
            bar = console.Progress("kolm train cpt: stage full", 2)
            bar.update(2, loss="loss 1.5")
            bar.close()
            console.attach()  # the demo's folder: the outer command's log
        assert main(["vocab", "extend", "--base", "b", "--corpus", "c.txt", "--num-new-tokens", "5", "--output",
                     str(tmp_path / "o"), "--dry-run"]) == 0  # a dry run (the demo's push): into the log too
        print("[kolm demo] cpt: done")
    shown, err = capfd.readouterr()
    lines = shown.splitlines()
    assert err == "" and len(lines) == 3 and lines[0] == "[kolm demo] cpt ..." and lines[2] == "[kolm demo] cpt: done"
    assert lines[1].startswith("kolm train cpt: stage full: 2/2 steps (100%)") and lines[1].endswith("loss 1.5")
    log = (out / console.LOG_FILE).read_text()
    assert "INFO kolm: kolm train cpt\n" in log and "kolm train cpt: bits per byte every 10 steps" in log
    assert "kolm data build: warning: few documents" in log and "stage full: 2/2 steps in " in log
    assert "INFO kolm: kolm vocab extend\n" in log and "num_new_tokens: 5" in log
    assert not (tmp_path / "run").exists() and _restored()


# -------------------------------------------------------------------------------------------------- real commands
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """model/ (tiny Llama with its tokenizer), data/ (Korean, 64-token sequences), cpt.yaml (6 steps)."""
    root = tmp_path_factory.mktemp("console")
    ko = read_lines("ko_dev.txt", 400)
    (root / "ko.txt").write_text("\n".join(ko) + "\n", encoding="utf-8")
    make_sp_tokenizer(ko, root / "model", vocab_size=600)
    from tokenizers import Tokenizer

    n = Tokenizer.from_file(str(root / "model" / "tokenizer.json")).get_vocab_size()
    tiny_llama(n, hidden=32).save_pretrained(root / "model")
    data = {"tokenizer": "model", "seq_len": 64, "seed": 0, "mix": {"ko": 1.0}, "num_proc": 0, "progress": False,
            "sources": [{"name": "ko", "lang": "ko", "paths": ["ko.txt"]}],
            "validation": {"fraction": 0.05, "max_docs": 20}}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    assert main(["data", "build", str(root / "data.yaml"), "--output", str(root / "data")]) == 0
    cpt = {"model": "model", "data": "data", "output": "run", "micro_batch_size": 2, "grad_accum": 1,
           "optim": {"lr": 3e-3, "warmup_steps": 1}, "stages": [{"name": "full", "kind": "full", "max_steps": 6}],
           "eval": {"every": 3, "max_docs": 8}, "checkpoint": {"every": 100, "keep": 2}, "logging_steps": 2}
    (root / "cpt.yaml").write_text(yaml.safe_dump(cpt))
    return root


@pytest.mark.slow
def test_train_cpt_prints_kolm_lines_only_and_logs_the_rest(tiny):
    proc = kolm_run("train", "cpt", "cpt.yaml", cwd=tiny)
    lines = assert_kolm_only(proc)
    assert all(x.startswith("kolm train cpt: ") for x in lines), lines  # one voice
    progress = [x for x in lines if x.startswith("kolm train cpt: stage full: ") and "ETA" in x]
    assert progress and "steps/s" in "".join(progress) or "s/step" in "".join(progress)
    done = next(x for x in lines if x.startswith("kolm train cpt: stage full: 6/6 steps in "))
    assert "loss " in done and "ko " in done and " bpb" in done and "tok/s" in done
    assert lines[-1].startswith("kolm train cpt: 1 stage(s), 6 steps")
    log = (tiny / "run" / console.LOG_FILE).read_text()
    assert "Loading weights" in log and "Writing model shards" in log and "train_runtime" in log
    assert "Setting accelerator to CPU" in log  # DeepSpeed's logger (imported through accelerate/transformers)

    loud = kolm_run("-v", "train", "cpt", "cpt.yaml", "output=run-v", cwd=tiny)
    assert "{'loss': " in loud.stdout and "Loading weights" in loud.stderr and "\r" in loud.stderr
    assert not (tiny / "run-v" / console.LOG_FILE).exists()
    # the metrics channel is the same at both verbosities: only the printing changed
    rows, loud_rows = ([json.loads(x) for x in (tiny / run / "metrics.jsonl").read_text().splitlines()]
                       for run in ("run", "run-v"))
    assert [(r["kind"], r["step"]) for r in rows] == [(r["kind"], r["step"]) for r in loud_rows]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 3, 6] and len(rows) == 7
    assert [r.get("loss") for r in rows] == pytest.approx([r.get("loss") for r in loud_rows], abs=1e-5)


@pytest.mark.slow
def test_train_sft_prints_kolm_lines_only(tiny):
    from test_align import make_model
    from test_align_data import INSTRUCT, sp_tokenizer

    base = make_model(tiny / "chat", sp_tokenizer(tiny / "chat"))
    recipe = {"model": str(base), "output": "sft", "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
              "data": {"train": [str(INSTRUCT)], "max_length": 128},
              "train": {"gradient_checkpointing": False, "logging_steps": 1, "warmup": 0, "scheduler": "constant",
                        "max_steps": 3, "batch_size": 4, "learning_rate": 5e-3}}
    (tiny / "sft.yaml").write_text(yaml.safe_dump(recipe))
    proc = kolm_run("train", "sft", "sft.yaml", cwd=tiny)
    lines = assert_kolm_only(proc)
    assert any(x.startswith("kolm train sft: 3/3 steps in ") and "loss " in x for x in lines), lines
    assert any(x.startswith("data: ") for x in lines) and any(x.startswith("saved the SFT adapter") for x in lines)
    log = (tiny / "sft" / console.LOG_FILE).read_text()
    assert "Loading weights" in log and "train_runtime" in log and '"loss": ' in log
    assert len(json.loads((tiny / "sft" / "train_log.json").read_text())) == 4  # 3 steps + the summary


@pytest.mark.slow
def test_demo_prints_kolm_lines_only(tmp_path):
    proc = kolm_run("demo", "--model", "tiny", "--minutes", "0.5", "--no-align", "--hidden-size", "32", "--layers",
                    "1", "--output", "demo", cwd=tmp_path, seconds="30", timeout=3600)
    lines = assert_kolm_only(proc)
    assert len(lines) <= 60, proc.stdout
    assert all(x.startswith(("[kolm demo]", "kolm ")) for x in lines if x.strip() and "ETA" in x)
    log = (tmp_path / "demo" / console.LOG_FILE).read_text()
    for said in ("Loading weights", "kolm train cpt: stage full: ", "kolm model resize", "kolm eval: 3 model(s)"):
        assert said in log, said


def test_push_leaves_the_log_out(tmp_path):
    from kolm.push import upload_files

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / console.LOG_FILE).write_text("2026-01-01 kolm train sft (pid 1)\n")  # local paths, not for the Hub
    keep, left = upload_files(tmp_path)
    assert keep == [Path("config.json")] and left == [console.LOG_FILE]
