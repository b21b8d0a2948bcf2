"""Launching `kolm train cpt`: stop requests under launchers, torchrun and Slurm without ssh, the wheel, leftovers.

The distributed tests run 2 CPU ranks (DS_ACCELERATOR=cpu, ZeRO-3) under the real launchers: the deepspeed launcher,
torchrun (one node, and two "nodes" on this machine through a c10d rendezvous, started by train/cpt_slurm.sbatch with
a fake srun), and train/cpt.sh. Each signals a run the way users and schedulers do (process group, launcher alone,
every process of a job) and checks: a complete checkpoint, the exit status, no process left, and that resuming
through every interruption gives the losses, evaluations and final weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import REPO, free_port, ko_en_data, read_lines, real_tokenizer, tiny_llama
from test_cpt import metrics, safetensors

from kolm.cli import main

STEPS = 20


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Path:
    """model/ (a tiny Llama with the Llama-2 tokenizer) and data/ (ko 0.8 / en 0.2, seq_len 64)."""
    root = tmp_path_factory.mktemp("launch")
    (root / "ko.txt").write_text("\n".join(read_lines("ko_dev.txt", 800)) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n".join(read_lines("en_dev.txt", 800)) + "\n", encoding="utf-8")
    model = tiny_llama(32000, hidden=32)
    model.config.max_position_embeddings = 128
    model.save_pretrained(str(root / "model"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(real_tokenizer("llama2") / f, root / "model" / f)
    ko_en_data(root, "model", 64)
    return root


def cpt_recipe(root: Path, name: str, **extra) -> Path:
    r = {"model": "model", "data": "data", "output": f"runs/{name}", "micro_batch_size": 2, "grad_accum": 2,
         "optim": {"lr": 3e-3, "warmup_steps": 1}, "stages": [{"name": "full", "kind": "full", "max_steps": STEPS}],
         "eval": {"every": 5, "max_docs": 4}, "checkpoint": {"every": 1000, "keep": 2}, "deepspeed": "zero3", **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


ENV = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def launch(root: Path, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a launcher in a session of its own (as a terminal's job: its process group gets the signals, SIGINT
    included, even where pytest itself runs as a background job of a shell, which ignores SIGINT)."""
    env = {**os.environ, **ENV, **(env or {})}
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                            start_new_session=True, umask=0o022,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def deepspeed_cmd(recipe: Path, *extra: str) -> list[str]:
    return ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "--module", "kolm.cli",
            "train", "cpt", str(recipe), *extra]


def torchrun_cmd(recipe: Path, *extra: str) -> list[str]:
    return ["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), "--module", "kolm.cli",
            "train", "cpt", str(recipe), *extra]


def train_steps(run: Path) -> list[int]:
    try:
        return [x["step"] for x in metrics(run) if x["kind"] == "train"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def complete_steps(run: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in (run / "stages").glob("*/checkpoint-*/kolm_complete.json"))


def processes_of(name: str) -> list[str]:
    """Command lines of every process still running for the run ``name`` (launchers and ranks)."""
    out = subprocess.run(["pgrep", "-a", "-f", name], capture_output=True, text=True).stdout
    return [x for x in out.splitlines() if "pgrep" not in x]


def wait_all_gone(name: str, timeout: float = 120) -> None:
    t = time.time()
    while processes_of(name):
        if time.time() - t > timeout:
            left = processes_of(name)
            subprocess.run(["pkill", "-KILL", "-f", name])
            pytest.fail(f"processes left {timeout:.0f} s after the launcher ended: {left}")
        time.sleep(0.5)


def interrupt(proc: subprocess.Popen, run: Path, name: str, send, log: Path, timeout: float = 600) -> int:
    """Wait until the run has done a step past its last checkpoint, ``send()`` the signal(s), wait for the
    launcher and for every process of the run; returns the launcher's exit status. The run must then have a new
    complete checkpoint at the step where it stopped (nothing lost) and have written no metrics past it."""
    before = max(complete_steps(run) or [0])
    t = time.time()
    while not [s for s in train_steps(run) if s > before]:
        assert proc.poll() is None, f"the run ended early (rc {proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.time() - t < timeout, "no training step"
        time.sleep(0.2)
    send()
    rc = proc.wait(timeout=300)
    wait_all_gone(name)
    saved = complete_steps(run)
    assert saved and before < max(saved) < STEPS, (saved, log.read_text()[-3000:])
    assert max(train_steps(run)) == max(saved), "steps after the checkpoint would be lost"
    return rc


@pytest.fixture(scope="module")
def reference(pipe) -> list[dict]:
    """An uninterrupted 2-rank ZeRO-3 run (torchrun)."""
    log = pipe / "ref.log"
    proc = launch(pipe, torchrun_cmd(cpt_recipe(pipe, "ref")), log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    rows = metrics(pipe / "runs" / "ref")
    assert [x["step"] for x in rows if x["kind"] == "train"] == list(range(1, STEPS + 1))
    return rows


def assert_same_run(pipe: Path, name: str, ref: list[dict], *, finished: bool = True) -> None:
    """Every metric row equals the uninterrupted run's, and so do the final weights of a finished run (an
    unfinished one has the reference's first rows)."""
    got = metrics(pipe / "runs" / name)
    ref = ref if finished else ref[:len(got)]
    assert [(x["kind"], x["step"]) for x in got] == [(x["kind"], x["step"]) for x in ref]
    for x, y in zip(ref, got, strict=True):
        if x["kind"] == "train":
            assert y["loss"] == pytest.approx(x["loss"], abs=1e-5), (x, y)
        else:
            for lang in x["eval"]:
                assert y["eval"][lang]["bpb"] == pytest.approx(x["eval"][lang]["bpb"], abs=1e-5), (x, y)
    if not finished:
        return
    a, b = safetensors(pipe / "runs" / "ref" / "final"), safetensors(pipe / "runs" / name / "final")
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def assert_readable(run: Path) -> None:
    """Every folder and file of the run is readable by others (umask 022), safetensors' 0600 files included."""
    private = [str(p.relative_to(run)) for p in [run, *run.rglob("*")]
               if not p.is_symlink() and (p.stat().st_mode & 0o044) != 0o044]
    assert not private, private


def plant_killed_write(stage: Path, step: int) -> Path:
    """What a kill during a checkpoint write leaves in a stage folder: a checkpoint without marker, a safetensors
    temporary file and a half-written partition."""
    ckpt = stage / f"checkpoint-{step}"
    (ckpt / f"global_step{step}").mkdir(parents=True)
    (ckpt / ".tmpQ3xZ9a").write_bytes(b"\0" * 1_000_000)
    (ckpt / f"global_step{step}" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\0" * 1000)
    return ckpt


# -- stop requests: unit level ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmdline,name", [
    (["/usr/bin/python3.11", "/venv/bin/deepspeed", "--num_gpus", "2"], "deepspeed"),
    (["/usr/bin/python3.11", "-u", "-m", "deepspeed.launcher.launch", "--world_info=e30="], "deepspeed"),
    (["/venv/bin/python", "/venv/bin/torchrun", "--nproc_per_node", "8"], "torchrun"),
    (["python", "-m", "torch.distributed.run", "--nnodes", "2"], "torchrun"),
    (["/venv/bin/python", "/venv/bin/accelerate", "launch", "x.py"], "accelerate"),
    (["bash", "train/cpt.sh"], None), (["python", "-m", "pytest"], None), (["python", "-u"], None), ([], None),
    (["python", "-u", "-m", "kolm.cli", "--local_rank=0", "train", "cpt"], None),
])
def test_launcher_name(cmdline, name):
    from kolm.train.signals import launcher_name

    assert launcher_name(cmdline) == name


@pytest.fixture
def python_sigint():
    """SIGINT with Python's own handler for the test: a shell starts a background job (`pytest ... &`, nohup) with
    SIGINT ignored, and kolm keeps an ignored SIGINT ignored (test_ignored_signals_stay_ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_repeats_within_the_window_are_one_request(capsys, python_sigint):
    """A process-group signal plus the launcher's copy of it (even SIGINT then SIGTERM) is one request; a repeat
    after the window stops at once; after the stop checkpoint nothing stops the exit; handlers are restored."""
    from kolm.train.signals import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(window=0.5) as s:
        assert s.received is None and not s.stop_requested()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert s.received == signal.SIGINT and s.stop_requested()
        assert capsys.readouterr().out.count("saving a checkpoint at the end of this step") == 1
        time.sleep(0.6)
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert e.value.code == 128 + signal.SIGTERM and "stopping now, without a checkpoint" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before
    with StopSignals(window=0.1) as s:
        os.kill(os.getpid(), signal.SIGTERM)
        assert s.stopped() == 143
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)  # the deepspeed launcher signals a rank that is already leaving
        os.kill(os.getpid(), signal.SIGINT)


def test_ignored_signals_stay_ignored():
    """nohup (SIGHUP ignored) and background jobs of scripts (SIGINT ignored) keep them ignored; SIGTERM never is."""
    from kolm.train.signals import StopSignals

    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    try:
        with StopSignals() as s:
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGINT)
            assert s.received is None
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            assert s.received == signal.SIGTERM
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def test_release_shared_memory_unlinks_only_this_ranks_buffer(monkeypatch):
    """The name DeepSpeed's shm.cpp gives a rank's buffer (uid, MASTER_ADDR, MASTER_PORT, rank): this rank's is
    unlinked (after a barrier), another rank's and another run's stay; a second call and no process group do nothing.
    close_process_group (the end of every command) unlinks what is left of this rank's and destroys the group.
    The real runs are checked by conftest's _no_shared_memory_left around every distributed test."""
    import torch.distributed as dist

    from kolm.train.run_state import close_process_group, release_shared_memory

    assert release_shared_memory() is None  # no process group
    port = free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    shm = Path("/dev/shm")
    mine, peer, other = (shm / f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{p}_{r}"
                         for p, r in ((port, 0), (port, 1), (port + 1, 0)))
    for f in (mine, peer, other):
        f.write_bytes(b"x")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        assert release_shared_memory() == mine and not mine.exists()
        assert peer.exists() and other.exists()
        assert release_shared_memory(wait=False) is None
        mine.write_bytes(b"x")  # what a rank initialised outside kolm's commands still holds at the end
        close_process_group()
        assert not dist.is_initialized() and not mine.exists() and peer.exists()
        close_process_group()  # a second call: nothing left to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for f in (mine, peer, other):
            f.unlink(missing_ok=True)


EXIT_RANK = textwrap.dedent("""
    import atexit, sys, types
    import torch.distributed as dist
    from kolm.train.run_state import close_process_group, exit_process
    wandb = types.ModuleType("wandb")  # a stand-in with a live run: exit_process must finish it
    wandb.run, wandb.finish = object(), lambda exit_code=0: print(f"wandb finished {exit_code}", end=" ")
    sys.modules["wandb"] = wandb
    atexit.register(lambda: print("interpreter shutdown ran", flush=True))
    if sys.argv[1] == "rank":
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[2]}", rank=0, world_size=1)
        close_process_group()
    print("unflushed output", end=" ")
    exit_process(int(sys.argv[3]))
""")


def test_exit_process_skips_interpreter_shutdown_only_on_a_closed_rank(tmp_path, monkeypatch):
    """A rank whose group close_process_group closed leaves with its code, W&B's run finished and its output flushed,
    without interpreter shutdown (where C++ threads can abort a finished rank); any other process exits normally."""
    from kolm.train import run_state
    from kolm.train.run_state import exit_process

    script = tmp_path / "exit_rank.py"
    script.write_text(EXIT_RANK)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rank = subprocess.run([sys.executable, str(script), "rank", str(free_port()), "7"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert rank.returncode == 7 and rank.stdout == "unflushed output wandb finished 7 ", rank.stdout + rank.stderr
    plain = subprocess.run([sys.executable, str(script), "plain", "0", "3"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode == 3 and "interpreter shutdown ran" in plain.stdout
    assert "wandb finished" not in plain.stdout  # a normal exit leaves W&B to its own shutdown hook
    monkeypatch.setattr(run_state, "_WAS_RANK", False)  # this pytest process closed test groups of its own
    with pytest.raises(SystemExit) as e:
        exit_process(None)
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        exit_process("kolm: a message")
    assert e.value.code == 1


RANK = textwrap.dedent("""
    import sys, time
    from kolm.train.signals import StopSignals
    with StopSignals() as s:
        print("ready", flush=True)
        for step in range(600):
            time.sleep(0.05)
            if s.stop_requested():
                print(f"stopped at step {step}, exit {s.stopped()}", flush=True)
                sys.exit(s.stopped())
    sys.exit(3)
""")


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_a_dead_launcher_is_a_stop_request(tmp_path, launcher):
    """A rank whose launcher dies (SIGKILL: it forwards nothing) stops like after SIGTERM: 143, no orphan. The
    fake launcher is named like the real one; for deepspeed the rank's parent (launch.py) stays alive and its
    parent, the runner, dies, as with `kill <pid of deepspeed>`."""
    (tmp_path / "rank.py").write_text(RANK)
    wrap = "import subprocess, sys\nsys.exit(subprocess.call(sys.argv[1:]))\n"
    (tmp_path / launcher).write_text(wrap)
    (tmp_path / "launch_py").mkdir()
    inner = [sys.executable, "-u", str(tmp_path / "rank.py")]
    if launcher == "deepspeed":  # runner -> `python -m deepspeed.launcher.launch` (a stand-in module) -> rank
        pkg = tmp_path / "launch_py" / "deepspeed" / "launcher"
        pkg.mkdir(parents=True)
        (pkg.parent / "__init__.py").write_text("")
        (pkg / "__init__.py").write_text("")
        (pkg / "launch.py").write_text(wrap)
        inner = [sys.executable, "-m", "deepspeed.launcher.launch", *inner]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'launch_py'}:{REPO}"}
    top = subprocess.Popen([sys.executable, str(tmp_path / launcher), *inner], env=env, stdout=subprocess.PIPE,
                           text=True, cwd=tmp_path)
    import psutil

    t = time.time()
    while not [p for p in psutil.Process(top.pid).children(recursive=True) if "rank.py" in " ".join(p.cmdline())]:
        assert time.time() - t < 60
        time.sleep(0.1)
    rank = [p for p in psutil.Process(top.pid).children(recursive=True) if "rank.py" in " ".join(p.cmdline())][0]
    time.sleep(1.5)  # "ready": the watch runs
    top.kill()
    top.wait()
    rank.wait(timeout=30)  # no orphan
    out = top.stdout.read()
    assert f"the {launcher} launcher (pid {top.pid}) is gone" in out and "exit 143" in out, out


# -- run state ----------------------------------------------------------------------------------------------------
def test_rewind_metrics_never_repeats_a_row(tmp_path):
    from kolm.train.run_state import rewind_metrics

    rows = [{"kind": "eval", "stage_index": 0, "step": 0}, {"kind": "train", "stage_index": 0, "step": 1},
            {"kind": "train", "stage_index": 0, "step": 2}, {"kind": "eval", "stage_index": 0, "step": 2},
            {"kind": "train", "stage_index": 1, "step": 3}]
    path = tmp_path / "metrics.jsonl"

    def rewound(stage: int, step: int | None) -> list[tuple]:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        rewind_metrics(path, stage, step)
        return [(r["stage_index"], r["step"]) for r in map(json.loads, path.read_text().splitlines())]

    # stage 0 starts over (no checkpoint): its step-0 evaluation is produced again, so it goes too
    assert rewound(0, None) == []
    assert rewound(0, 1) == [(0, 0), (0, 1)]
    assert rewound(1, None) == [(0, 0), (0, 1), (0, 2), (0, 2)]
    assert rewound(1, 3) == [(0, 0), (0, 1), (0, 2), (0, 2), (1, 3)]


def test_resume_point_removes_incomplete_checkpoints(tmp_path, capsys):
    from kolm.train.run_state import MARKER, resume_point, write_marker

    stage = tmp_path / "00-full"
    good = stage / "checkpoint-3"
    good.mkdir(parents=True)
    (good / "model.safetensors").write_bytes(b"x" * 10)
    os.chmod(good / "model.safetensors", 0o600)  # as safetensors writes it
    old = os.umask(0o022)
    try:
        write_marker(good, 3)
    finally:
        os.umask(old)
    assert stat.S_IMODE((good / "model.safetensors").stat().st_mode) == 0o644
    assert json.loads((good / MARKER).read_text())["files"] == {"model.safetensors": 10}
    killed = plant_killed_write(stage, 6)
    assert resume_point(stage) == (good, 3)
    assert not killed.exists() and good.is_dir()
    assert "removing incomplete checkpoint" in capsys.readouterr().out
    assert resume_point(tmp_path / "nothing") is None


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_output_folders_follow_the_umask(tmp_path, umask):
    """atomic_output_dir's folder (mkdtemp: 0700) and files written private (safetensors: 0600) end with what the
    umask gives new files; a strict umask is kept strict."""
    from kolm.io.files import atomic_output_dir

    old = os.umask(umask)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "w.safetensors").write_bytes(b"x")
            os.chmod(tmp / "sub" / "w.safetensors", 0o600)
            (tmp / "run.sh").write_text("#!/bin/sh\n")
            os.chmod(tmp / "run.sh", 0o700)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "sub").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "sub" / "w.safetensors").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((out / "run.sh").stat().st_mode) == 0o700 | (0o666 & ~umask)


@pytest.mark.slow
def test_single_process_restart_has_one_step0_eval(pipe):
    """A run killed before its first checkpoint starts over on --resume; metrics.jsonl then holds every row once
    (the first stage's step-0 evaluation was written twice before)."""
    r = cpt_recipe(pipe, "restart", deepspeed=None, eval={"every": 2, "max_docs": 4},
                   stages=[{"name": "full", "kind": "full", "max_steps": 4}])
    run = pipe / "runs" / "restart"
    proc = launch(pipe, [sys.executable, "-m", "kolm.cli", "train", "cpt", str(r)], pipe / "restart.log")
    t = time.time()
    while not (run / "metrics.jsonl").is_file() or not metrics(run):
        assert proc.poll() is None and time.time() - t < 300, (pipe / "restart.log").read_text()[-2000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["train", "cpt", str(r), "--resume"]) == 0
    rows = [(x["kind"], x["step"]) for x in metrics(run)]
    assert rows == [("eval", 0), ("train", 1), ("eval", 2), ("train", 2), ("train", 3), ("eval", 4), ("train", 4)]
    assert_readable(run)


# -- launchers: signals, resume, torchrun, Slurm ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.distributed
def test_deepspeed_launcher_and_cpt_sh_signals(pipe, reference):
    """deepspeed launcher: SIGINT to the process group (Ctrl-C), then SIGTERM to the launcher alone (its ranks used
    to train on as orphans); train/cpt.sh: Ctrl-C returns the ranks' 130, without a traceback.
    Each stop saves a checkpoint at the step it was asked, and every resumed segment reproduces the reference's
    losses and evaluations (the full run to the end is test_torchrun_and_slurm_signals_and_resume's)."""
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not installed")
    name = "ds_sig"
    r, run, log = cpt_recipe(pipe, name), pipe / "runs" / name, pipe / f"{name}.log"

    p = launch(pipe, deepspeed_cmd(r), log)
    assert interrupt(p, run, name, lambda: os.killpg(p.pid, signal.SIGINT), log) == -signal.SIGINT
    p = launch(pipe, deepspeed_cmd(r, "--resume"), log)
    rc = interrupt(p, run, name, lambda: os.kill(p.pid, signal.SIGTERM), log)
    assert rc == -signal.SIGTERM
    assert "the deepspeed launcher" in log.read_text() and "is gone" in log.read_text()

    killed = plant_killed_write(run / "stages" / "00-full", max(complete_steps(run)) + 2)
    sh = ["bash", str(REPO / "train" / "cpt.sh"), str(r), "2", "--resume"]
    start = len(log.read_text())
    p = launch(pipe, sh, log, {"MASTER_PORT": str(free_port())})
    assert interrupt(p, run, name, lambda: os.killpg(p.pid, signal.SIGINT), log) == 130
    assert not (killed / ".tmpQ3xZ9a").exists() and "removing incomplete checkpoint" in log.read_text()[start:]
    assert "Traceback" not in log.read_text()[start:]
    assert_same_run(pipe, name, reference, finished=False)
    for marker in run.rglob("kolm_complete.json"):
        assert not [f for f in json.loads(marker.read_text())["files"] if ".tmp" in f], marker
    assert not [p for p in run.rglob(".tmp*")]
    assert_readable(run)


FAKE_SRUN = """#!/usr/bin/env bash
# srun --ntasks-per-node=1 on a fake allocation: one task per "node", all on this machine; like srun, it forwards
# SIGINT/SIGTERM to the tasks and waits for them
while [[ "$1" == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
trap 'kill -INT "${pids[@]}" 2>/dev/null' INT
status=0
for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do wait "$p" || true; done
    wait "$p" || status=$?
done
exit "$status"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" ]] || exit 2
for ((i = 0; i < SLURM_NNODES; i++)); do echo localhost; done
"""


def slurm_env(tmp: Path, restart: int) -> dict:
    """A fake 2-node allocation on this machine: srun and scontrol stand-ins first on PATH."""
    bin_ = tmp / "fakebin"
    bin_.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return {"PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NNODES": "2",
            "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_RESTART_COUNT": str(restart), "KOLM_GPUS_PER_NODE": "1",
            "MASTER_PORT": str(free_port())}


def signal_every_process(top: int, sig: int) -> None:
    """What Slurm does at the time limit or on scancel: the signal to every process of the job."""
    import psutil

    procs = [psutil.Process(top), *psutil.Process(top).children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_and_slurm_signals_and_resume(pipe, reference, tmp_path):
    """torchrun --nproc_per_node 2: SIGTERM to its process group; then train/cpt_slurm.sbatch on a fake 2-node
    allocation (srun runs one torchrun per "node", c10d rendezvous on the first) stopped as Slurm stops a job
    (SIGTERM to every process) and requeued (it adds --resume itself); then torchrun to the end. The losses,
    evaluations and final weights are the uninterrupted run's."""
    name = "tr_sig"
    r, run, log = cpt_recipe(pipe, name), pipe / "runs" / name, pipe / f"{name}.log"
    p = launch(pipe, torchrun_cmd(r), log)
    interrupt(p, run, name, lambda: os.killpg(p.pid, signal.SIGTERM), log)

    sbatch = ["bash", str(REPO / "train" / "cpt_slurm.sbatch"), str(r)]
    p = launch(pipe, sbatch, log, slurm_env(tmp_path, restart=1))
    interrupt(p, run, name, lambda: signal_every_process(p.pid, signal.SIGTERM), log)
    assert yaml.safe_load((run / "recipe.yaml").read_text())["resume"] is True  # the script resumed by itself

    p = launch(pipe, torchrun_cmd(r, "--resume"), log)
    assert p.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert_same_run(pipe, name, reference)
    assert_readable(run)


def test_sbatch_script_command_line(tmp_path):
    """The sbatch script's torchrun command line on a fake allocation: one torchrun per node (srun), the c10d
    rendezvous on the first node of the list, the GPUs per node, the job id as rendezvous id, --resume only on a
    restart; torchrun's shutdown timeout raised so that it does not SIGKILL a checkpoint."""
    env = slurm_env(tmp_path, restart=0)
    bin_ = tmp_path / "fakebin"
    (bin_ / "srun").write_text('#!/usr/bin/env bash\necho "srun $*"; echo "TIMEOUT=$TORCH_ELASTIC_SHUTDOWN_TIMEOUT"\n')
    (bin_ / "scontrol").write_text('#!/usr/bin/env bash\nprintf "gpu-a07\\ngpu-a08\\n"\n')
    script = str(REPO / "train" / "cpt_slurm.sbatch")

    def run_script(restart: int) -> str:
        out = subprocess.run(["bash", script, "r.yaml", "lr=1"], env={**os.environ, **env, "SLURM_RESTART_COUNT":
                             str(restart), "KOLM_GPUS_PER_NODE": "8"}, capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    first = run_script(0)
    assert (f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend "
            f"c10d --rdzv_endpoint gpu-a07:{env['MASTER_PORT']} --rdzv_id 4242 --module kolm.cli train cpt r.yaml "
            f"lr=1\n") in first
    assert "TIMEOUT=1800" in first
    assert run_script(1).splitlines()[0].endswith("r.yaml lr=1 --resume")
    for sh in [*sorted((REPO / "train").glob("*.sh")), REPO / "train" / "cpt_slurm.sbatch"]:
        assert subprocess.run(["bash", "-n", str(sh)]).returncode == 0, sh


# -- the installed wheel ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_wheel_carries_the_deepspeed_presets(tmp_path):
    """`pip install .` (a wheel, not editable): installed outside the checkout and run from elsewhere, kolm
    resolves every DeepSpeed preset and carries every data file of the package."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "kolm", src / "kolm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".",
                            "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("kolm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {str(p.relative_to(REPO)) for p in (REPO / "kolm").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert data and data <= names, data - names
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    code = textwrap.dedent("""
        import kolm, json
        from kolm.train.config import DEEPSPEED_PRESETS
        from kolm.train.cpt import deepspeed_config
        print(json.dumps({"file": kolm.__file__,
                          "stages": {p: deepspeed_config(p)["zero_optimization"]["stage"] for p in DEEPSPEED_PRESETS}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(target)
    assert got["stages"] == {"zero2": 2, "zero3": 3, "zero3_offload": 3}
