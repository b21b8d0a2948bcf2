"""One voice in the terminal: kolm's own lines and progress there, what the frameworks print in a log file.

    kolm train cpt RECIPE          # kolm's lines and one progress bar per long stage; framework output in RUN/kolm.log
    kolm -v train cpt RECIPE       # (or `kolm train cpt RECIPE -v`, or KOLM_VERBOSE=1) the frameworks print as usual

:func:`kolm.cli.main` runs every command inside :func:`session`. At the default verbosity the session

- sends what transformers, trl, datasets, huggingface_hub, accelerate, peft, torch and DeepSpeed log, and Python
  warnings, to the command's log (:class:`LogFile`). The libraries that put a terminal handler of their own on their
  logger (transformers, datasets, huggingface_hub, DeepSpeed, torch) are taken over when they are imported
  (:class:`_AfterImport`; torch at the points that call :func:`_sweep`) and given back as they were at the end;
- turns transformers' progress bars (``Loading weights``, ``Writing model shards``) into one line each in the log
  and switches off datasets' (trl's ``Building labels``, ``Truncating``, ...) and the Hub's;
- lets :func:`trainer_output` replace the HF Trainer's printing callbacks (its tqdm bar with the raw log dicts, or
  the printer of those dicts) by :class:`TrainerProgress`, which writes each log dict to the log instead. The
  metrics themselves are untouched: they reach ``metrics.jsonl``, TensorBoard and W&B through the Trainer's ``log``
  (:mod:`kolm.train.metrics`) as before.

Where the log goes: a command that writes a run or report folder (``train cpt`` its run folder, ``train sft|dpo``
and ``eval --output`` their output, ``demo`` its output) keeps ``kolm.log`` there, appended to on ``--resume``; it is
written from the moment the command calls :func:`attach` (its folder is then its own: ``train cpt|sft|dpo`` do so
before training), else when the command succeeds. Every other command (those that write a model, tokenizer or data
folder, which other tools read, hash and upload as they are, and those without an output folder), and a command that
fails before its folder is its own, writes ``$KOLM_CACHE/logs/kolm-COMMAND.log`` (``~/.cache/kolm``; the latest run
of each command). A command that another runs in-process (the demo's steps) logs into that command's log.

kolm's own long stages show a :class:`Progress` at every verbosity: a one-line bar on a terminal; otherwise (CI,
``| tee``, nohup, a pipe) a plain line every ``KOLM_PROGRESS_SECONDS`` (30) seconds and never ``\\r`` frames. Only
rank 0 of a distributed run shows progress; every rank logs to the same file, its lines marked with its rank.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

LOG_FILE = "kolm.log"
VERBOSE_ENV = "KOLM_VERBOSE"  # 1: as -v
PROGRESS_ENV = "KOLM_PROGRESS_SECONDS"  # seconds between progress lines where stdout is not a terminal
PROGRESS_SECONDS = 30.0
MAX_PENDING = 20_000  # log lines kept in memory until the log file's folder exists (the oldest are dropped)

log = logging.getLogger("kolm")  # kolm's own records in the log: the Trainer's log dicts, the frameworks' bars


def env_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_rank0() -> bool:
    """Rank 0 of a launched run (``RANK``), or a single process."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def quiet() -> bool:
    """Whether a kolm command is running at the default verbosity (framework output goes to its log)."""
    return _current is not None and _current.handler is not None


# -------------------------------------------------------------------------------------------------------- the log file
class LogFile(logging.Handler):
    """The command's log. Records are kept in memory until :meth:`open_in` names the file, then appended to it; the
    file is opened for each write, so a folder replaced under it (``--overwrite``) gets the lines that follow, and
    lines that cannot be written (the folder is gone) stay in memory for the end of the command."""

    def __init__(self, command: str) -> None:
        super().__init__()
        rank = os.environ.get("RANK")
        tag = f"[rank {rank}] " if rank is not None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""
        self.setFormatter(logging.Formatter(f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s",
                                            "%Y-%m-%d %H:%M:%S"))
        self.pending = [f"{time.strftime('%Y-%m-%d %H:%M:%S')} {tag}kolm {command} (pid {os.getpid()})"]
        self.path: Path | None = None
        self.mode = "a"
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own rule: a bad record never stops the program
            self.handleError(record)
            return
        self.records += 1
        self.pending = [*self.pending[-MAX_PENDING:], line]
        if self.path is not None:
            self._write()

    def open_in(self, path: Path, mode: str = "a", now: bool = True) -> bool:
        """Write to ``path`` from now on (``mode`` "w": afresh), what was kept first; ``now`` False waits for the
        next record. False when the file cannot be written (the lines stay in memory)."""
        self.acquire()
        try:
            self.path, self.mode = path, mode
            return self._write() if now else True
        finally:
            self.release()

    def _write(self) -> bool:
        try:
            with open(self.path, self.mode, encoding="utf-8") as fh:  # type: ignore[arg-type]
                fh.write("".join(x + "\n" for x in self.pending))
        except OSError:  # never fail a command over its log
            return False
        self.pending, self.mode = [], "a"
        return True


def cache_log(command: str) -> Path:
    """``$KOLM_CACHE/logs/kolm-COMMAND.log``: the log of a command that keeps none in its output folder."""
    from kolm.model.zoo import cache_root

    return cache_root() / "logs" / f"kolm-{command.replace(' ', '-')}.log"


# ------------------------------------------------------------------------------------------- taking over the libraries
def _take_over(name: str) -> Callable[[], None] | None:
    """Remove the terminal handlers a library put on its logger ``name`` and let its records reach the root logger
    (kolm's log); returns how to undo it (None when the logger has no terminal handler)."""
    lg = logging.getLogger(name)
    handlers = [h for h in lg.handlers if type(h) is logging.StreamHandler]
    if not handlers:
        return None
    propagate = lg.propagate
    for h in handlers:
        lg.removeHandler(h)
    lg.propagate = True

    def undo() -> None:
        lg.propagate = propagate
        for h in handlers:
            lg.addHandler(h)

    return undo


def _transformers(mod: ModuleType) -> Callable[[], None]:
    """transformers.utils.logging: its handler off, its records to the root, its bars one line each in the log."""
    lib = logging.getLogger("transformers")
    propagate = lib.propagate
    mod.disable_default_handler()
    mod.enable_propagation()
    hook = getattr(mod, "set_tqdm_hook", None)
    if hook is not None:
        hook(_bar_to_log)

    def undo() -> None:
        if hook is not None:
            hook(None)
        mod.enable_default_handler()
        lib.propagate = propagate

    return undo


def _datasets_bars(mod: ModuleType) -> Callable[[], None] | None:
    """datasets.utils.tqdm: its bars (``Dataset.map``, trl's data preparation) off."""
    if mod.are_progress_bars_disabled():
        return None
    mod.disable_progress_bars()
    return mod.enable_progress_bars


def _hub_bars(mod: ModuleType) -> Callable[[], None] | None:
    """huggingface_hub.utils.tqdm: the Hub's own bars (downloads, uploads) off; bars of other groups stay."""
    if mod.are_progress_bars_disabled("huggingface_hub"):
        return None
    mod.disable_progress_bars("huggingface_hub")
    return functools.partial(mod.enable_progress_bars, "huggingface_hub")


# module -> what taking it over does (run once it has been imported); each returns its undo
TAKE_OVER: dict[str, Callable[[ModuleType], Callable[[], None] | None]] = {
    "transformers.utils.logging": _transformers,
    "datasets.utils.logging": lambda mod: _take_over("datasets"),
    "datasets.utils.tqdm": _datasets_bars,
    "huggingface_hub.utils.logging": lambda mod: _take_over("huggingface_hub"),
    "huggingface_hub.utils.tqdm": _hub_bars,
    "deepspeed.utils.logging": lambda mod: _take_over("DeepSpeed"),
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Takes a module of :data:`TAKE_OVER` over as soon as it has been imported: the libraries add their terminal
    handlers at import time, before any of their records."""

    def __init__(self, session: _Session) -> None:
        self.session = session

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in TAKE_OVER or name in self.session.taken:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenTakeOver(spec.loader, self.session)
        return spec


class _ThenTakeOver(importlib.abc.Loader):
    """The module's own loader, then :meth:`_Session.take` (the module's ``__loader__`` is its own loader again)."""

    def __init__(self, loader: Any, session: _Session) -> None:
        self.loader, self.session = loader, session

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.session.take(module.__name__, module)


class _ToLog(io.TextIOBase):
    """A text stream whose lines become log records ``[source] LINE`` (``LINE`` without a source); of a line
    redrawn with ``\\r`` (a bar's frames) only the last frame counts."""

    encoding = "utf-8"

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source, self.line = source, ""

    def write(self, text: str) -> int:  # type: ignore[override]
        for i, chunk in enumerate(text.split("\n")):
            if i:
                self.finish()
            frame = chunk.rsplit("\r", 1)[-1].rstrip()
            if frame:
                self.line = frame if "\r" in chunk else self.line + chunk
        return len(text)

    def flush(self) -> None:  # tqdm flushes after every frame: a line is logged once it ends
        pass

    def finish(self) -> None:
        """Log the line written so far (the end of a redirection)."""
        if self.line.strip():
            log.info(f"[{self.source}] %s" if self.source else "%s", self.line.strip())
        self.line = ""


def _bar_to_log(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """transformers' tqdm hook: the bar draws only its first and last frame, into the log (:class:`_ToLog`)."""
    return factory(*args, **{**kwargs, "file": _ToLog("transformers"), "mininterval": math.inf, "ascii": True,
                             "leave": True, "dynamic_ncols": False, "ncols": 100})


@contextlib.contextmanager
def prints_to_log(source: str, stderr: bool = False) -> Iterator[None]:
    """At the default verbosity, what ``source`` (a library) prints to stdout (``stderr``: to stderr) inside goes to
    the log instead, one record per line (a bar's last frame): e.g. DeepSpeed's ``print("DeepSpeed ... built
    successfully")`` on every rank when its communication starts, or the tqdm bar transformers' GGUF loader draws on
    stderr with a tqdm of its own. Only around such a call: stdout and stderr are the process's own."""
    if not quiet():
        yield
        return
    stream = _ToLog(source)
    redirect = contextlib.redirect_stderr if stderr else contextlib.redirect_stdout
    try:
        with redirect(stream):  # type: ignore[type-var]
            yield
    finally:
        stream.finish()


# ---------------------------------------------------------------------------------------------------------- a session
class _Session:
    def __init__(self, command: str, verbose: bool, folder: str | Path | None) -> None:
        self.command, self.verbose = command, verbose
        self.stdout = sys.stdout  # the terminal, also while a command run in-process prints into the log
        self.folder = Path(folder).expanduser().resolve() if folder else None
        self.handler: LogFile | None = None
        self.taken: set[str] = set()
        self.undo: list[Callable[[], None]] = []

    def start(self) -> None:
        handler = self.handler = LogFile(self.command)
        if self.folder is None:  # the cache log, written from the first record on
            path = cache_log(self.command)
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
            handler.open_in(path, "w", now=False)
        root = logging.getLogger()
        root.addHandler(handler)
        self.undo.append(functools.partial(root.removeHandler, handler))
        level = log.level
        log.setLevel(logging.INFO)
        self.undo.append(functools.partial(log.setLevel, level))
        logging.captureWarnings(True)
        self.undo.append(functools.partial(logging.captureWarnings, False))
        finder = _AfterImport(self)
        sys.meta_path.insert(0, finder)
        self.undo.append(functools.partial(sys.meta_path.remove, finder))
        for name in TAKE_OVER:
            if name in sys.modules:
                self.take(name, sys.modules[name])
        self.sweep()

    def take(self, name: str, module: ModuleType) -> None:
        if name in self.taken:
            return
        self.taken.add(name)
        undo = TAKE_OVER[name](module)
        if undo is not None:
            self.undo.append(undo)

    def sweep(self) -> None:
        """Take over torch's loggers: torch gives its own handlers to "torch", "torch.distributed", ... at the very
        end of its import, so this runs where kolm knows it is loaded (session start, :func:`attach`,
        :func:`trainer_output`, :class:`Progress`)."""
        if self.handler is None or "torch" not in sys.modules:
            return
        for name in list(logging.root.manager.loggerDict):
            if (name == "torch" or name.startswith("torch.")) and name not in self.taken:
                self.taken.add(name)
                undo = _take_over(name)
                if undo is not None:
                    self.undo.append(undo)

    def attach(self) -> None:
        handler = self.handler
        if handler is None or self.folder is None or handler.path is not None or not self.folder.is_dir():
            return
        handler.open_in(self.folder / LOG_FILE)
        self.sweep()

    def stop(self, ok: bool) -> None:
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception:  # noqa: BLE001 - giving a library back its handler must not hide the command's result
                pass
        handler = self.handler
        if handler is None:
            return
        if handler.path is None and ok and handler.records:
            self.attach()
        if handler.pending and handler.records and (handler.path is None or not handler._write()):
            path = cache_log(self.command)  # failed before its folder was its own, or the folder is gone
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
            handler.open_in(path, "w")
        handler.close()


_current: _Session | None = None


@contextlib.contextmanager
def session(command: str, *, verbose: bool = False, folder: str | Path | None = None) -> Iterator[None]:
    """Run a kolm command (``command``: its words, e.g. "train cpt") at the default verbosity, or ``verbose`` (also
    :data:`VERBOSE_ENV`): the frameworks' output as they print it. ``folder``: the run or report folder that keeps
    ``kolm.log`` (None: the cache, see the module docstring). A command that another runs in-process (the demo's
    steps) joins its session: at the default verbosity what it prints goes to that command's log, as one of its
    steps, except its progress (and its error line, printed after it ends); the outer command says what it did."""
    global _current
    if _current is not None:
        log.info("kolm %s", command)
        if _current.handler is None:  # -v
            yield
            return
        out, err = _ToLog(""), _ToLog("")
        try:  # its lines go to the log; its progress still to the terminal (Progress writes to terminal())
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[type-var]
                yield
        finally:
            out.finish()
            err.finish()
        return
    s = _Session(command, verbose or env_verbose(), folder)
    _current = s
    ok = False
    try:
        if not s.verbose:
            s.start()
        yield
        ok = True
    finally:
        _current = None
        s.stop(ok)


def terminal() -> Any:
    """Where progress is shown: the command's stdout (also inside a command that another runs in-process)."""
    return _current.stdout if _current is not None else sys.stdout


def attach() -> None:
    """Say that the command's folder now exists and is its own (a run folder after its checks, an output folder
    after ``--overwrite`` was honoured): its ``kolm.log`` is written from now on, what was logged before first. A
    no-op with ``-v``, outside a command, once attached, for a command that logs to the cache, or when the folder
    is not there."""
    if _current is not None:
        _current.attach()


def _sweep() -> None:
    if _current is not None:
        _current.sweep()


# ------------------------------------------------------------------------------------------------------------ progress
def progress_seconds() -> float:
    """Seconds between two progress lines where stdout is not a terminal (:data:`PROGRESS_ENV`, else 30)."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_ENV) or PROGRESS_SECONDS))
    except ValueError:
        return PROGRESS_SECONDS


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _columns(stream: Any) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def si(x: float) -> str:
    """A count in few characters: 950, 12.3k, 4.1M, 2.0G."""
    for suffix, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


def duration(seconds: float) -> str:
    """``seconds`` as 42s, 3m07s or 2h05m."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The progress of one long stage (training steps, the distill init, scoring, a data build's reading).

    On a terminal a one-line bar (tqdm, on stdout); elsewhere a plain line every :func:`progress_seconds`, never
    ``\\r`` frames. Both show the count, the rate, the time left and ``info``: texts set by the caller, each under
    its key (``loss="loss 2.31"``, ``ko="ko 1.21 bpb"``), the latest of each kept. Shown on rank 0 only and when
    ``enabled``; ``scale`` counts in k/M/G (bytes). :meth:`close` ends it with one line, the stage's summary.
    """

    def __init__(self, desc: str, total: float | None = None, *, unit: str = "step", initial: float = 0,
                 scale: bool = False, enabled: bool = True, info: dict[str, str] | None = None) -> None:
        self.desc, self.total, self.unit, self.scale = desc, total, unit, scale
        self.n = self.start = initial
        self.t0 = self.last = time.monotonic()
        self.info: dict[str, str] = dict(info or {})
        self.enabled = enabled and is_rank0()
        self.every = progress_seconds()
        self.out = terminal()
        self.bar: Any = None
        _sweep()
        if self.enabled and is_terminal(self.out):
            from tqdm.auto import tqdm

            # a terminal without a size (a bare pty) would get no bar at all from tqdm: give it 80 x 24
            size = {"dynamic_ncols": True} if _columns(self.out) > 0 else {"ncols": 80, "nrows": 24}
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=scale, file=self.out,
                            leave=False, mininterval=0.5, **size)
            self._postfix()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        self.close(kind is None)

    def update(self, n: float = 1, **info: str) -> None:
        self.set(self.n + n, **info)

    def set(self, n: float, **info: str) -> None:
        """Move to ``n`` done; ``info`` replaces the texts under its keys."""
        self.n = n
        self.info.update(info)
        if not self.enabled:
            return
        if self.bar is not None:
            self._postfix()
            self.bar.update(n - self.bar.n)
        elif time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(self.line(), file=self.out, flush=True)

    def _postfix(self) -> None:
        self.bar.set_postfix_str(", ".join(v for v in self.info.values() if v), refresh=False)

    def _count(self, x: float) -> str:
        return f"{si(x)}{self.unit}" if self.scale else f"{int(x)}"

    def line(self, done: bool = False) -> str:
        """The plain line: "DESC: 120/600 steps (20%), 1.52 steps/s, ETA 5m16s, INFO" (done: "... in 6m35s")."""
        elapsed = time.monotonic() - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        count = self._count(self.n) + (f"/{self._count(self.total)}" if self.total else "")
        count += "" if self.scale else f" {self.unit}s"
        if self.scale:
            speed = f"{si(rate)}{self.unit}/s"
        else:
            speed = f"{rate:.2f} {self.unit}s/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/{self.unit}"
        if done:
            parts = [f"{count} in {duration(elapsed)} ({speed})"]
        else:
            parts = [count + (f" ({100 * self.n / self.total:.0f}%)" if self.total else ""), speed]
            if self.total and rate > 0:
                parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        return f"{self.desc}: " + ", ".join(parts + [v for v in self.info.values() if v])

    def close(self, summary: bool | str = True) -> None:
        """End the display; print ``summary`` (a text, or True: the done line) unless it is False, as the command's
        other lines (into the log for a command another runs in-process)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled and summary:
            print(summary if isinstance(summary, str) else self.line(done=True), flush=True)
        self.enabled = False


# ------------------------------------------------------------------------------------------------- the HF Trainer
def trainer_output(trainer: Any, desc: str) -> None:
    """At the default verbosity, replace the Trainer's printing callbacks (its tqdm bar and raw log dicts, or the
    printer of those dicts) by :class:`TrainerProgress` ``desc``; with ``-v``, or outside a kolm command (a script
    calling kolm's functions), the Trainer prints as it does. Its loggers (TensorBoard, W&B, ``metrics.jsonl``) are
    other callbacks and stay."""
    if not quiet():
        return
    from transformers.trainer import DEFAULT_PROGRESS_CALLBACK
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in {DEFAULT_PROGRESS_CALLBACK, ProgressCallback, PrinterCallback}:
        trainer.remove_callback(cls)
    trainer.add_callback(trainer_progress_class()(desc))
    _sweep()


def log_numbers(logs: dict[str, Any], tokens: list[float]) -> dict[str, str]:
    """What :class:`TrainerProgress` shows of a Trainer log: the loss, bits per byte per language and tokens/s
    (``tokens``: time and count of the first log that counted tokens, set here)."""
    from kolm.train.metrics import TOKENS_SEEN, read_eval_logs

    out = {}
    count = logs.get(TOKENS_SEEN, logs.get("num_tokens"))  # kolm train cpt / trl
    if isinstance(count, (int, float)):
        now = time.monotonic()
        if not tokens:
            tokens[:] = [now, float(count)]
        elif now > tokens[0] and count > tokens[1]:
            out["tokens"] = f"{si((count - tokens[1]) / (now - tokens[0]))} tok/s"
    if isinstance(logs.get("loss"), (int, float)):
        out["loss"] = f"loss {logs['loss']:.4g}"
    for lang, r in read_eval_logs(logs).items():
        out[f"bpb_{lang}"] = f"{lang} {r['bpb']:.4f} bpb"
    return out


@functools.cache
def trainer_progress_class() -> type:
    """:class:`TrainerProgress` (built on first use: ``transformers`` is imported only by commands that train)."""
    from transformers import TrainerCallback

    class TrainerProgress(TrainerCallback):
        """kolm's display of a Trainer's training, on rank 0: a :class:`Progress` over the optimizer steps with
        tokens/s, the latest loss and bits per byte, closed with the stage's summary line; every log call goes to
        the log file as one line (``step N: {...}``), where the Trainer's own callback printed it."""

        def __init__(self, desc: str) -> None:
            self.desc, self.bar, self.tokens = desc, None, []
            self.info = {"tokens": "", "loss": ""}  # shown in this order, bits per byte after

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                self.bar = Progress(self.desc, state.max_steps, initial=state.global_step, info=self.info)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.set(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            log.info("step %d: %s", state.global_step, json.dumps(logs, default=str))
            self.info.update(log_numbers(logs, self.tokens))  # an evaluation at the start comes before the bar
            if self.bar is not None:
                self.bar.set(state.global_step, **self.info)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.set(state.global_step)
                self.bar.close()
                self.bar = None

    return TrainerProgress
