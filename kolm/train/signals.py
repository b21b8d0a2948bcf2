"""Stop requests of ``kolm train cpt``: SIGTERM, SIGINT, SIGHUP, or the launcher that started the rank going away.

A stop request makes every rank finish its step, save a complete checkpoint and exit with ``128 + signal`` (143 for
SIGTERM, 130 for SIGINT, 129 for SIGHUP). How launchers deliver signals shapes the rules:

- **One interruption arrives several times.** A process-group signal (Ctrl-C in a terminal, ``kill -TERM -PGID``,
  Slurm's ``scancel``) reaches every rank directly *and* through the launcher, which forwards it (DeepSpeed's
  ``launch.py`` and ``torchrun`` both do; the multi-node ``deepspeed`` runner sends SIGINT, then SIGTERM, then a
  ``pkill`` over pdsh). Every stop signal within :data:`REPEAT_WINDOW_S` of the first is that same request.
- **A launcher can die alone.** ``kill <pid of deepspeed>`` kills the runner (it has no handler on one node) and
  leaves its ``launch.py`` and the ranks training on as orphans; a launcher killed with SIGKILL forwards nothing.
  Each rank therefore watches the chain of launcher processes above it (deepspeed, torchrun, accelerate) once a
  second and treats the death of any of them as SIGTERM.
- **Insisting stops at once.** A stop signal more than :data:`REPEAT_WINDOW_S` after the first exits immediately,
  without a checkpoint (the previous complete checkpoint stays valid). Once the stop checkpoint is written, signals
  are ignored: DeepSpeed's launcher signals the remaining ranks as soon as the first one exits.
- SIGINT and SIGHUP that were ignored when the process started (``nohup``, background jobs of a script) stay
  ignored, as Python itself does for SIGINT.

DeepSpeed's ``launch.py`` sends SIGKILL 30 s after it forwards a signal (hard-coded in DeepSpeed 0.19), so under the
raw ``deepspeed`` launcher a step plus its checkpoint must fit in 30 s; ``train/cpt.sh`` signals the ranks itself,
and torchrun's 30 s is a setting from torch 2.12 on (``--shutdown-timeout``, ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

REPEAT_WINDOW_S = 10.0  # repeats of a stop signal within this many seconds are the same request
LAUNCHER_POLL_S = 1.0  # how often a rank checks that its launchers are alive
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")

# how launcher processes look on their command line: a script name, or a module run with -m
_LAUNCHER_SCRIPTS = {"deepspeed": "deepspeed", "ds": "deepspeed", "torchrun": "torchrun", "accelerate": "accelerate"}
_LAUNCHER_MODULES = {"deepspeed.launcher.launch": "deepspeed", "deepspeed.launcher.runner": "deepspeed",
                     "torch.distributed.run": "torchrun", "torch.distributed.launch": "torchrun",
                     "accelerate.commands.launch": "accelerate"}


def launcher_name(cmdline: list[str]) -> str | None:
    """``deepspeed``, ``torchrun`` or ``accelerate`` when ``cmdline`` is one of those launchers, else None."""
    args = list(cmdline)
    if args and Path(args[0]).name.startswith(("python", "pypy")):
        args = args[1:]
        while args and args[0].startswith("-") and args[0] != "-m":
            args = args[1:]  # interpreter flags such as -u
        if args[:1] == ["-m"]:
            return _LAUNCHER_MODULES.get(args[1]) if len(args) > 1 else None
    return _LAUNCHER_SCRIPTS.get(Path(args[0]).name) if args else None


def launcher_ancestors() -> list[tuple[Any, str]]:
    """The launcher processes above this one, nearest first (psutil processes with their launcher name); the
    chain ends at the first ancestor that is not a launcher (a shell, a scheduler, a test)."""
    import psutil

    out: list[tuple[Any, str]] = []
    try:
        proc = psutil.Process().parent()
        while proc is not None and (name := launcher_name(proc.cmdline())):
            out.append((proc, name))
            proc = proc.parent()
    except psutil.Error:
        pass
    return out


def _alive(proc: Any) -> bool:
    import psutil

    try:  # a killed launcher whose parent has not reaped it yet is a zombie: gone for our purpose
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class StopSignals:
    """Context manager that turns stop signals and launcher deaths into one stop request (see the module doc).

    ``received`` is the signal number of the request (None before one); :meth:`stop_requested` is the same answer
    on every rank; :meth:`stopped` marks the stop checkpoint written, after which signals are ignored.
    """

    def __init__(self, window: float = REPEAT_WINDOW_S, poll: float = LAUNCHER_POLL_S) -> None:
        self.received: int | None = None
        self.window, self.poll = window, poll
        self._first = 0.0
        self._done = False
        self._old: dict[int, Any] = {}
        self._quit = threading.Event()
        self._why = ""  # set by the launcher watch just before it signals this process

    def __enter__(self) -> StopSignals:
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None or (sig != signal.SIGTERM and signal.getsignal(sig) is signal.SIG_IGN):
                continue
            self._old[sig] = signal.signal(sig, self._handle)
        launchers = launcher_ancestors()
        if launchers:
            threading.Thread(target=self._watch, args=(launchers,), name="kolm-launcher-watch", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._quit.set()
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        """The first stop signal is the request; repeats within the window are the same one; a later repeat
        exits at once (before the stop checkpoint is written; after it, nothing is left to wait for)."""
        why, self._why = self._why or f"received {signal.Signals(signum).name}", ""
        now = time.monotonic()
        if self.received is None:
            self.received, self._first = signum, now
            _say(f"kolm: {why}: saving a checkpoint at the end of this step, then exiting "
                 f"(a second signal after {self.window:.0f} s stops at once, without it)")
            return
        if self._done or now - self._first < self.window:
            return
        _say(f"kolm: {why} again: stopping now, without a checkpoint")
        raise SystemExit(128 + signum)

    def stop_requested(self) -> bool:
        """True on every rank when any rank has a stop request (all ranks must call it at the same point)."""
        return any_rank(self.received is not None)

    def stopped(self) -> int:
        """Mark the stop checkpoint written; returns the exit status (128 + signal)."""
        self._done = True
        return 128 + (self.received or signal.SIGTERM)

    def _watch(self, launchers: list[tuple[Any, str]]) -> None:
        while not self._quit.wait(self.poll):
            for proc, name in launchers:
                if not _alive(proc):  # handled like SIGTERM, by the main thread's handler
                    self._why = f"the {name} launcher (pid {proc.pid}) is gone"
                    os.kill(os.getpid(), signal.SIGTERM)
                    return


def _say(msg: str) -> None:
    """Print on rank 0 only (every rank gets the same signals)."""
    from kolm.train.run_state import is_main

    if is_main():
        print(msg, flush=True)


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (so that all ranks stop at the same step)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
