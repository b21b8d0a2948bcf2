"""What stopping `kolm train cpt` does under each launcher: exit status, checkpoint, steps lost, processes left.

    python bench/signals.py [--cases ds-group-INT,sh-group-INT,...] [--tree DIR] [--steps 60]

Each case starts a 2-rank ZeRO-3 run on the CPU (DS_ACCELERATOR=cpu; a tiny Llama with the Llama-2 tokenizer on
../shared text), waits for its third training step and sends one signal, then records what happened. A case is
LAUNCHER-TARGET-SIGNAL:

- LAUNCHER: `ds` (deepspeed --num_gpus 2), `tr` (torchrun --nproc_per_node 2), `sh` (train/cpt.sh RECIPE 2);
- TARGET: `group` (the launcher's process group, as Ctrl-C in a terminal or `kill -TERM -PGID` do) or `launcher`
  (the launcher process alone, as `kill PID` does);
- SIGNAL: INT, TERM or KILL.

Columns: the launcher's exit status (negative: killed by that signal), the step at which the signal was sent, the
last step trained, the complete checkpoints, the steps lost (trained but in no complete checkpoint), the processes
of the run still alive when the launcher returned, the seconds until none was left (processes alive 180 s after
the signal are killed and counted), and whether the output has "kolm: interrupted" or a traceback.
`--tree DIR` runs another checkout's kolm and train/cpt.sh (the "before" of a change). Several minutes per case
on 2 cores; needs ../shared (or KOLM_SHARED). Not part of bench/run_all.py: it checks behaviour, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, need_shared, print_table  # noqa: E402

CASES = ("ds-group-TERM", "ds-group-INT", "ds-launcher-TERM", "tr-group-TERM", "tr-launcher-KILL",
         "sh-group-INT", "sh-group-TERM", "sh-launcher-TERM")


def build(root: Path, tree: Path) -> None:
    """model/ (tiny Llama, Llama-2 tokenizer) and data/ (ko 0.8 / en 0.2, seq_len 64) with the tree's kolm."""
    shared = need_shared()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    kolm = [sys.executable, "-m", "kolm.cli"]
    subprocess.run([*kolm, "model", "init", "--tokenizer", str(shared / "tokenizers" / "llama2"), "--output",
                    str(root / "model"), "--hidden-size", "32", "--max-position-embeddings", "128"],
                   env=env, check=True, capture_output=True)
    recipe = {"tokenizer": "model", "seq_len": 64, "seed": 0, "mix": {"ko": 0.8, "en": 0.2},
              "sources": [{"name": "ko", "lang": "ko", "paths": [str(shared / "corpora" / "ko_dev.txt")]},
                          {"name": "en", "lang": "en", "paths": [str(shared / "corpora" / "en_dev.txt")]}],
              "validation": {"fraction": 0.02, "max_docs": 20}, "num_proc": 1, "progress": False}
    (root / "data.yaml").write_text(yaml.safe_dump(recipe))
    subprocess.run([*kolm, "data", "build", str(root / "data.yaml"), "--output", str(root / "data")],
                   env=env, check=True, capture_output=True)


def _default_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(name: str) -> list[str]:
    out = subprocess.run(["pgrep", "-a", "-f", name], capture_output=True, text=True).stdout
    return [x for x in out.splitlines() if "pgrep" not in x]


def steps(run: Path) -> list[int]:
    try:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [r["step"] for r in rows if r["kind"] == "train"]


def command(launcher: str, recipe: str, tree: Path, port: int) -> list[str]:
    if launcher == "ds":
        return ["deepspeed", "--num_gpus", "2", "--master_port", str(port), "--module", "kolm.cli", "train", "cpt",
                recipe]
    if launcher == "tr":
        return ["torchrun", "--nproc_per_node", "2", "--master_port", str(port), "--module", "kolm.cli", "train",
                "cpt", recipe]
    return ["bash", str(tree / "train" / "cpt.sh"), recipe, "2"]


def run_case(case: str, root: Path, tree: Path, n_steps: int) -> dict[str, Any]:
    """Start the run, signal it at its third step, wait for everything to end; one row of the table."""
    launcher, target, signame = case.split("-")
    sig = getattr(signal, "SIG" + signame)
    name = f"sig_{case}_{os.getpid()}"
    r = {"model": "model", "data": "data", "output": f"runs/{name}", "micro_batch_size": 2, "grad_accum": 2,
         "optim": {"lr": 3e-3, "warmup_steps": 1}, "stages": [{"name": "full", "kind": "full", "max_steps": n_steps}],
         "eval": {"every": 0}, "checkpoint": {"every": 1000, "keep": 2}, "deepspeed": "zero3"}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(r))
    port = free_port()
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree),
           "MASTER_PORT": str(port)}
    log = root / f"{name}.log"
    with open(log, "w") as fh:
        # as from a terminal: SIGINT and SIGTERM at their defaults even when this script was started in the background
        # (a background job inherits an ignored SIGINT, and bash cannot trap a signal ignored at its start)
        p = subprocess.Popen(command(launcher, f"{name}.yaml", tree, port), cwd=root, env=env, stdout=fh,
                             stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_default_signals)
    run = root / "runs" / name
    while len(steps(run)) < 3:
        if p.poll() is not None:
            raise SystemExit(f"{case}: the run ended before its third step:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    at = max(steps(run))
    (os.killpg if target == "group" else os.kill)(p.pid, sig)
    t = time.time()
    rc = p.wait()
    left = len(alive(name))
    while alive(name) and time.time() - t < 180:
        time.sleep(0.5)
    killed = len(alive(name))
    if killed:
        subprocess.run(["pkill", "-KILL", "-f", name])
    ckpts = sorted(int(c.parent.name.split("-")[1]) for c in run.glob("stages/*/checkpoint-*/kolm_complete.json"))
    last, text = max(steps(run) or [0]), log.read_text()
    return {"case": case, "exit": rc, "signal at step": at, "last step": last,
            "checkpoints": ",".join(map(str, ckpts)) or "none", "steps lost": last - max(ckpts or [0]),
            "left at exit": left, "all gone (s)": round(time.time() - t, 1), "killed at 180 s": killed,
            "interrupted": "kolm: interrupted" in text, "traceback": "Traceback" in text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated LAUNCHER-TARGET-SIGNAL cases")
    ap.add_argument("--tree", default=str(REPO), help="the kolm checkout to run (PYTHONPATH and train/cpt.sh)")
    ap.add_argument("--steps", type=int, default=60, help="max_steps of each run")
    args = ap.parse_args()
    tree = Path(args.tree).resolve()
    with tempfile.TemporaryDirectory(prefix="kolm-signals-") as tmp:
        root = Path(tmp)
        build(root, tree)
        rows = [run_case(c, root, tree, args.steps) for c in args.cases.split(",")]
    print_table(rows, f"stop signals under launchers ({tree})")
    print("BENCH_JSON " + json.dumps({"tree": str(tree), "cases": rows}))


if __name__ == "__main__":
    main()
